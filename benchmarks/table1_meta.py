"""Table 1, Figures 4-5 and the timings of Iwata (2021) on MovieLens (and Jester when present).

"Meta-learning for matrix factorization without shared rows or columns".

Protocol
--------
* Ratings z-scored per dataset (:class:`bayesmf.data.Standardizer` on all its ratings).
* Repetition ``r``: users and items split at random into disjoint 70/10/20 meta-train /
  meta-validation / meta-test sets (``disjoint_split(Z, seed=r)``). Meta-training episodes:
  random 30x30 sub-matrices of the meta-train part, half of their observed entries as
  support (``EpisodeSampler(train_ratio=0.5, batch_size=16)``); meta-validation: 64 fixed
  episodes of the validation part (``fixed(64, seed=1000 + r)``); meta-test: ten fixed 30x30
  matrices of meta-test users x items (``fixed(10, seed=2000 + r)``), half of their observed
  ratings hidden. Score: MSE on the hidden entries, pooled over the ten matrices, then
  mean ± standard error over the repetitions.
* Models, all on the identical meta-test matrices:

  - ``Ours``: :class:`bayesmf.models.MetaPriorMF` (3 exchangeable layers of 32 channels,
    f_U/f_V four layers of 32 units, K = 32, T = 10, eta = 1e-2, dropout 0.1) meta-trained
    by :func:`bayesmf.inference.meta_train` (Adam, batch 16, early stopping on the
    meta-validation MSE, best weights kept);
  - ``EML``: :class:`bayesmf.models.ExchangeableMatrixNet` (the same exchangeable layers,
    last layer one channel, predicting entries directly), meta-trained the same way;
  - ``FT``: the meta-trained EML fine-tuned on each test matrix's observed entries
    (``FT_STEPS`` Adam steps; each step hides a random half of them and fits it from the
    other half, the episodic loss on one matrix);
  - ``MF``: per-matrix MAP (ALS with biases, :func:`bayesmf.inference.als`), rank and
    regularisation tuned on 32 meta-validation episodes;
  - ``Mean``: the test matrix's observed mean;
  - ``AutoRecI`` / ``AutoRecU``: :class:`bayesmf.models.AutoRec` (Sedhain et al. 2015), a
    four-layer feed-forward autoencoder (two sigmoid hidden layers of 32 units, linear
    output) over the columns (items) / rows (users) of each meta-test matrix, trained on
    that matrix's train entries only (sum of squared errors + weight decay / 2 ||W||^2,
    ``--autorec-steps`` full-batch Adam steps); all matrices of a batch (and all weight
    decays of the grid) are independent networks fitted at once with batched matrix
    products. Learning rate and weight decay chosen on meta-validation episodes from
    ``AUTOREC_LRS`` x ``AUTOREC_WDS``;
  - ``DMF``: :class:`bayesmf.models.DeepMF` (two branches, hidden 32-32, 32 latent factors,
    cosine output on the scale (-a, a), a = the largest |z-scored rating|) fitted by
    :func:`bayesmf.inference.fit_deep_mf` to each meta-test matrix's train entries
    (``--dmf-epochs`` full-batch epochs), learning rate and weight decay ``gamma`` chosen
    from ``DMF_LRS`` x ``DMF_GAMMAS`` on the first ``--dmf-val-matrices`` meta-validation
    matrices.

  The table gives, for each row, in how many repetitions ``Ours`` has the lower test MSE
  and the paired difference (row minus ``Ours``, mean ± s.e. over repetitions).

  - ``MAML``: MAML of EML (:class:`bayesmf.inference.MAML`): the EML's initialisation
    meta-learned so that 5 plain gradient steps (size ``MAML_KW['inner_lr']``, each on a
    random half of the matrix's observed entries predicting the other half) adapt it to
    a matrix; second-order, Adam on the initialisation, the EML's step budget,
    validation set and early stopping, and at most ``MAML_BUDGET_S`` seconds per
    repetition (``--maml``: runs on the finished repetitions, reusing their splits).

* Posterior calibration (``--posterior``, reusing the checkpoints): the prior precision
  and noise of the posterior under the meta-learned prior
  (:func:`bayesmf.inference.meta_posterior.fit_meta_posterior`, the library's SVI engine)
  chosen by :func:`bayesmf.inference.meta_posterior.calibrate_posterior` on ``CAL_EPISODES``
  meta-validation episodes, then the posterior-mean MSE, 50%/90% interval coverage and
  widths, and log predictive density on the hidden entries of the meta-test matrices,
  against the uncalibrated posterior (meta-learned lambda, noise 1) and the 10-step
  adaptation.
* Figure 5: test MSE of ``Ours`` with T = 0..20 unrolled steps at test time (trained
  with T = 10). Figure 4: trained on 30x30, tested on 10x10 ... 50x50 meta-test matrices.
* Table 3 (``--cross``, after the repetitions of ML100K and Jester): ``Ours`` of
  repetition ``r`` meta-trained on one dataset tested on the other dataset's meta-test
  matrices of repetition ``r``, and ``Ours`` meta-trained on both meta-train parts
  together (one sampler over the two, tasks equally likely; meta-validation: half the
  episodes from each) tested on each.
* Table 6 / timings: meta-training seconds of ``Ours`` (wall and CPU; training loop and
  meta-validation, one thread), and seconds to adapt one meta-test matrix (30x30; Jester
  30x20) (``model.adapt``, eval mode, no grad, one matrix at a time, median over repeats);
  seconds to fit AutoRec / DMF to one matrix.

Deviations from the paper (recorded in the results): Adam learning rate ``LR`` (1e-3
instead of 1e-4) and a budget of ``--steps`` meta-training steps, so that meta-training
fits the compute available on this shared 2-core machine; fewer repetitions when
``--reps`` < 10; the AutoRec/DMF grids are this benchmark's own.

The script is resumable: per-repetition results and meta-training checkpoints go to
``benchmarks/results/table1_meta.work/``; ``--max-seconds`` bounds one invocation (it then
exits with status 3: run it again to continue). The final tables are written from every
finished repetition found there.

Usage::

    python benchmarks/table1_meta.py --quick                 # smoke run -> table1_meta_quick.*
    python benchmarks/table1_meta.py --reps 10 --max-seconds 540   # re-run until it exits 0
    python benchmarks/table1_meta.py --only-reps 0,2 ...     # several processes, disjoint reps
    python benchmarks/table1_meta.py --maml --posterior      # extra parts, no retraining
    python benchmarks/table1_meta.py --cross                 # Table 3, after both datasets
    python benchmarks/table1_meta.py --aggregate             # tables from finished reps only
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, machine_info  # noqa: E402

from bayesmf import inference, models  # noqa: E402
from bayesmf.data import (  # noqa: E402
    DatasetNotFoundError,
    EpisodeSampler,
    Ratings,
    Standardizer,
    disjoint_split,
    load_jester,
    load_movielens,
)
from bayesmf.data.episodes import Episode  # noqa: E402
from bayesmf.inference import files  # noqa: E402
from bayesmf.inference.meta_posterior import (  # noqa: E402
    calibrate_posterior,
    fit_meta_posterior,
)

logger = logging.getLogger("benchmarks.table1_meta")

PAPER = {"ML100K": {"Ours": 0.901, "EML": 0.933, "FT": 1.175, "MAML": 0.941, "MF": 1.014,
                    "Mean": 1.007},
         "Jester": {"Ours": 0.813, "EML": 0.848, "MAML": 0.880, "DMF": 0.852, "AutoRecU": 0.907,
                    "AutoRecI": 0.949, "FT": 0.990, "MF": 1.005, "Mean": 1.004}}
PAPER_SE = {"Jester": {"Ours": 0.009}}
PAPER_TIMING = {"ML100K": {"meta_train_s": 1039.0, "meta_test_s_per_matrix": 0.13},
                "Jester": {"meta_train_s": 376.0}}
#: Table 3 (cross-dataset): meta-trained on the first, tested on the second
PAPER_CROSS = {"ML100K->Jester": 0.825, "Jester->ML100K": 0.900}
#: the ML100K rows of the earlier run of this benchmark (5 repetitions, 2,000-step budget,
#: early stopping with patience 5 x 200 steps; MAML capped at 600 s), kept for comparison
EARLIER = {"ML100K": {"note": "earlier run: 5 repetitions, 2,000-step budget (patience 5 x 200)",
                      "Ours": "0.860 ± 0.068", "EML": "0.871 ± 0.057", "FT": "0.869 ± 0.058",
                      "MAML": "0.875 ± 0.061", "MF": "0.877 ± 0.069", "Mean": "0.957 ± 0.061"}}
#: column order of Table 1 (the paper's)
TABLE1_MODELS = ["Ours", "EML", "MAML", "DMF", "AutoRecU", "AutoRecI", "FT", "MF", "Mean"]

MODEL_KW = dict(channels=32, layers=3, rank=32, steps=10, step_size=1e-2, hidden=32,
                mlp_layers=4, dropout=0.1)
EML_KW = dict(channels=32, layers=3, dropout=0.1)
LR = 1e-3
BATCH = 16
SIZE = 30
RATIO = 0.5
VAL_EPISODES = 64
EVAL_EVERY = 200
PATIENCE = 5
FT_STEPS = 10
FT_LR = 1e-3
MF_RANKS = [1, 2, 5, 10]
MF_REGS = [1.0, 3.0, 10.0, 30.0]
MF_VAL_EPISODES = 32
FIG5_STEPS = list(range(21))
FIG4_SIZES = [10, 20, 30, 40, 50]
AUTOREC_KW = dict(hidden=(32, 32), activation="sigmoid")
AUTOREC_LRS = [1e-4, 1e-3]
AUTOREC_WDS = [1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0]
AUTOREC_STEPS = 300
AUTOREC_VAL_EPISODES = 16
DMF_KW = dict(hidden=(32, 32), rank=32, activation="relu")
DMF_LRS = [1e-3, 3e-3]
DMF_GAMMAS = [1e-1, 1.0]
DMF_EPOCHS = 100
DMF_VAL_MATRICES = 4
MAML_KW = dict(inner_steps=5, inner_lr=0.1)
MAML_BUDGET_S = 600.0
CAL_EPISODES = 32
CAL_PRECISIONS = (3.0, 10.0, 30.0, 100.0, 300.0)
CAL_NOISES = (0.7, 0.8, 0.9, 1.1)
POST_STEPS = 200
POST_SAMPLES = 400
WORK = REPO / "benchmarks" / "results" / "table1_meta.work"


# --------------------------------------------------------------------------- data


def load_datasets(names: list[str]) -> dict[str, Ratings]:
    """The datasets whose files are present (no download); missing ones are logged."""
    out = {}
    for name in names:
        try:
            if name == "ML100K":
                out[name] = load_movielens("100k", download=False).to_ratings()
            elif name == "ML1M":
                out[name] = load_movielens("1m", download=False).to_ratings()
            elif name == "Jester":
                out[name] = load_jester(download=False)
            else:
                raise ValueError(f"unknown dataset {name}")
        except (DatasetNotFoundError, FileNotFoundError) as err:
            logger.warning("skipping %s: %s", name, str(err).splitlines()[0])
    return out


# ---------------------------------------------------------------------- baselines


def _pooled_mse(preds: list[torch.Tensor], episodes: list[Episode]) -> float:
    sse = sum(float(((p - e.X)[e.test_mask] ** 2).sum()) for p, e in zip(preds, episodes,
                                                                       strict=True))
    n = sum(int(e.test_mask.sum()) for e in episodes)
    return sse / max(n, 1)


@torch.no_grad()
def predict_model(model: torch.nn.Module, episodes: list[Episode], **kw: Any) -> list[torch.Tensor]:
    model.eval()
    return [model.predict(e.X_train, e.train_mask.to(e.X.dtype), **kw) for e in episodes]


def predict_mean(episodes: list[Episode]) -> list[torch.Tensor]:
    out = []
    for e in episodes:
        n = e.train_mask.sum((1, 2)).clamp_min(1)
        mu = e.X_train.sum((1, 2)) / n
        out.append(mu[:, None, None].expand_as(e.X))
    return out


def predict_mf(episodes: list[Episode], rank: int, reg: float) -> list[torch.Tensor]:
    out = []
    for e in episodes:
        P = torch.zeros_like(e.X)
        for b in range(len(e)):  # one small ALS per matrix (the per-matrix baseline)
            r, c = e.train_mask[b].nonzero(as_tuple=True)
            R = Ratings(r, c, e.X[b][r, c], shape=tuple(e.train_mask[b].shape))
            f = inference.als(R, rank=rank, reg_u=reg, reg_v=reg, epochs=30, seed=0)
            P[b] = f.U @ f.V.T + f.mean + f.row_bias[:, None] + f.col_bias[None, :]
        out.append(P)
    return out


def tune_mf(val_eps: list[Episode]) -> tuple[dict[str, float], dict[str, float]]:
    grid = {}
    for rank in MF_RANKS:
        for reg in MF_REGS:
            grid[f"rank={rank},reg={reg}"] = _pooled_mse(predict_mf(val_eps, rank, reg), val_eps)
    best = min(grid, key=grid.get)
    rank, reg = (float(kv.split("=")[1]) for kv in best.split(","))
    return {"rank": int(rank), "reg": reg}, grid


def predict_ft(eml: models.ExchangeableMatrixNet, episodes: list[Episode], seed: int
               ) -> list[torch.Tensor]:
    """EML fine-tuned on each test matrix's observed entries (episodic loss on one matrix)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for e in episodes:
        P = torch.zeros_like(e.X)
        for b in range(len(e)):  # fine-tune a copy per test matrix
            net = copy.deepcopy(eml).train()
            opt = torch.optim.Adam(net.parameters(), lr=FT_LR)
            X, S = e.X_train[b:b + 1], e.train_mask[b:b + 1]
            for _ in range(FT_STEPS):
                half = S & (torch.rand(S.shape, generator=gen) < 0.5)
                target = S & ~half
                pred = net.predict(X * half, half.to(X.dtype))
                loss = ((pred - X)[target] ** 2).mean() if target.any() else pred.sum() * 0
                opt.zero_grad()
                loss.backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                P[b] = net.predict(X, S.to(X.dtype))[0]
        out.append(P)
    return out


def _autorec_grid(episodes: list[Episode], by: str, lr: float, wds: list[float],
                  steps: int, seed: int) -> list[list[torch.Tensor]]:
    """Fit AutoRec (``by`` = "item": I-AutoRec, "user": U-AutoRec) to every matrix's train
    entries, one network per (matrix, weight decay), all of a batch at once.

    Returns ``out[k][i]``: the predictions of batch ``i`` with weight decay ``wds[k]``.
    """
    out: list[list[torch.Tensor]] = [[] for _ in wds]
    G = len(wds)
    for i, e in enumerate(episodes):
        B, N, M = e.X.shape
        X = e.X_train.repeat(G, 1, 1)
        S = e.train_mask.repeat(G, 1, 1)
        torch.manual_seed(seed * 1000 + i)
        net = models.AutoRec(N, M, by=by, batch=G * B,
                             weight_decay=[w for w in wds for _ in range(B)], **AUTOREC_KW)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        for _ in range(steps):  # full-batch Adam on the observed (train) entries only
            opt.zero_grad()
            net.objective(X, S).sum().backward()
            opt.step()
        with torch.no_grad():
            P = net.predict(X, S)
        for k in range(G):
            out[k].append(P[k * B:(k + 1) * B])
    return out


def tune_autorec(val_eps: list[Episode], by: str, steps: int, seed: int
                 ) -> tuple[dict[str, float], dict[str, float]]:
    """Learning rate and weight decay of AutoRec chosen on meta-validation episodes."""
    grid = {}
    for lr in AUTOREC_LRS:
        preds = _autorec_grid(val_eps, by, lr, AUTOREC_WDS, steps, seed)
        for wd, p in zip(AUTOREC_WDS, preds, strict=True):
            grid[f"lr={lr},wd={wd}"] = _pooled_mse(p, val_eps)
    best = min(grid, key=grid.get)
    lr, wd = (float(kv.split("=")[1]) for kv in best.split(","))
    return {"lr": lr, "wd": wd}, grid


def predict_autorec(episodes: list[Episode], by: str, lr: float, wd: float, steps: int,
                    seed: int) -> list[torch.Tensor]:
    return _autorec_grid(episodes, by, lr, [wd], steps, seed)[0]


def predict_dmf(episodes: list[Episode], lr: float, gamma: float, epochs: int, half_range: float,
                seed: int, limit: int | None = None) -> list[torch.Tensor]:
    """DMF (:class:`bayesmf.models.DeepMF`, :func:`bayesmf.inference.fit_deep_mf`) fitted to
    each matrix's train entries (full batch); ``limit``: only the first matrices."""
    out = []
    done = 0
    for e in episodes:
        P = torch.zeros_like(e.X)
        for b in range(len(e)):  # one network per matrix
            if limit is not None and done >= limit:
                break
            N, M = e.train_mask[b].shape
            r, c = e.train_mask[b].nonzero(as_tuple=True)
            R = Ratings(r, c, e.X[b][r, c], shape=(N, M), scale=(-half_range, half_range))
            torch.manual_seed(seed * 1000 + done)
            net = models.DeepMF(N, M, scale=(-half_range, half_range), gamma=gamma, **DMF_KW)
            fit = inference.fit_deep_mf(net, R, epochs=epochs, batch_size=None, lr=lr,
                                        seed=seed, progress=False)
            with torch.no_grad():
                rr, cc = torch.meshgrid(torch.arange(N), torch.arange(M), indexing="ij")
                P[b] = fit.predict((rr.reshape(-1), cc.reshape(-1))).reshape(N, M).to(P.dtype)
            done += 1
        out.append(P)
    return out


def tune_dmf(val_eps: list[Episode], half_range: float, epochs: int, n_matrices: int, seed: int
             ) -> tuple[dict[str, float], dict[str, float]]:
    """Learning rate and weight decay ``gamma`` of DMF chosen on the first ``n_matrices``
    meta-validation matrices."""
    eps = [val_eps[0][:n_matrices]]
    grid = {}
    for lr in DMF_LRS:
        for gamma in DMF_GAMMAS:
            grid[f"lr={lr},gamma={gamma}"] = _pooled_mse(
                predict_dmf(eps, lr, gamma, epochs, half_range, seed), eps)
    best = min(grid, key=grid.get)
    lr, gamma = (float(kv.split("=")[1]) for kv in best.split(","))
    return {"lr": lr, "gamma": gamma}, grid


def time_adapt(model: models.MetaPriorMF, episodes: list[Episode], repeats: int = 20
               ) -> dict[str, float]:
    model.eval()
    singles = [(e.X_train[b:b + 1], e.train_mask[b:b + 1].float()) for e in episodes
               for b in range(len(e))]
    times = []
    with torch.no_grad():
        model.adapt(*singles[0])  # warm-up
        for _ in range(repeats):
            for X, B in singles:
                t0 = time.perf_counter()
                model.adapt(X, B)
                times.append(time.perf_counter() - t0)
        Xb = torch.cat([x for x, _ in singles])
        Bb = torch.cat([b for _, b in singles])
        t0 = time.perf_counter()
        for _ in range(repeats):
            model.adapt(Xb, Bb)
        batched = (time.perf_counter() - t0) / (repeats * len(singles))
    return {"adapt_s_median": float(np.median(times)), "adapt_s_mean": float(np.mean(times)),
            "adapt_s_batched_per_matrix": batched}


# ------------------------------------------------------------------------ one rep


class OutOfTime(Exception):
    pass


def rep_data(Z: Ratings, rep: int, args: argparse.Namespace) -> tuple:
    """Split, samplers and the fixed meta-validation / meta-test episodes of repetition ``rep``.

    Deterministic given ``rep``: the MAML and posterior parts re-create exactly the
    matrices the main part used.
    """
    tr, va, te = disjoint_split(Z, (0.7, 0.1, 0.2), seed=rep)
    train_s = EpisodeSampler(tr, SIZE, SIZE, RATIO, batch_size=BATCH, seed=rep)
    val_s = EpisodeSampler(va, SIZE, SIZE, RATIO, batch_size=BATCH)
    test_s = EpisodeSampler(te, SIZE, SIZE, RATIO, batch_size=BATCH)
    val_eps = val_s.fixed(VAL_EPISODES, seed=1000 + rep)
    test_eps = test_s.fixed(args.test_matrices, seed=2000 + rep)
    return tr, va, te, train_s, val_s, test_s, val_eps, test_eps


def _posterior_metrics(model: models.MetaPriorMF, test_eps: list[Episode], **kw: Any
                       ) -> dict[str, float]:
    """Posterior-mean MSE, 50%/90% coverage and widths, log predictive on the hidden entries."""
    sums: dict[str, float] = {}
    n = 0.0
    for e in test_eps:  # one batch of test matrices
        post = fit_meta_posterior(model, e.X_train, e.train_mask, steps=POST_STEPS, seed=0,
                                  **kw).summary(0.9, POST_SAMPLES, seed=0)
        t = e.test_mask
        k = float(t.sum())
        vals = {"mse_post_mean": float(((post.mean - e.X)[t] ** 2).mean()),
                "loglik": post.log_predictive(e.X, t, POST_SAMPLES)}
        for lev in (0.5, 0.9):
            lo, hi = post.interval(lev, POST_SAMPLES)
            vals[f"coverage{int(lev * 100)}"] = float(((e.X >= lo) & (e.X <= hi))[t].float()
                                                       .mean())
            vals[f"width{int(lev * 100)}"] = float((hi - lo)[t].mean())
        for key, v in vals.items():
            sums[key] = sums.get(key, 0.0) + k * v
        n += k
    out = {key: v / n for key, v in sums.items()}
    out["noise"] = post.noise
    return out


def run_posterior_rep(name: str, Z: Ratings, rep: int, args: argparse.Namespace,
                      deadline: float) -> dict[str, Any] | None:
    """Calibrate the posterior under the meta-learned prior on meta-validation tasks and score
    it on meta-test.

    Uses the repetition's meta-trained checkpoint (no retraining): precision and noise
    by :func:`bayesmf.inference.meta_posterior.calibrate_posterior` on the first ``CAL_EPISODES``
    meta-validation episodes, then the posterior of each meta-test matrix; compared with
    the uncalibrated posterior (meta-learned lam, noise 1) and the 10-step adaptation.
    """
    state_path = args.work / f"{name}_rep{rep}_posterior.json"
    if state_path.exists():
        return json.loads(state_path.read_text())
    if deadline - time.perf_counter() < 120:
        raise OutOfTime
    _, _, _, _, _, _, val_eps, test_eps = rep_data(Z, rep, args)
    ours = inference.load_meta_model(args.work / f"{name}_rep{rep}_Ours_best.pt").eval()
    t0 = time.perf_counter()
    cal = calibrate_posterior(ours, val_eps[: max(1, CAL_EPISODES // BATCH)],
                              precisions=CAL_PRECISIONS, noises=CAL_NOISES,
                              steps=POST_STEPS, num_samples=POST_SAMPLES)
    cal_s = time.perf_counter() - t0
    inference.MetaFit(ours, finished=True).save(args.work / f"{name}_rep{rep}_Ours_calibrated.pt")
    out = {"rep": rep, "calibration": cal, "calibration_s": cal_s,
           "mse_adapt": _pooled_mse(predict_model(ours, test_eps), test_eps),
           "calibrated": _posterior_metrics(ours, test_eps),
           "uncalibrated": _posterior_metrics(ours, test_eps, precision=float(ours.lam.detach()),
                                              noise=1.0)}
    out["calibrated"]["precision"] = cal["precision"]
    out["uncalibrated"]["precision"] = float(ours.lam.detach())
    state_path.write_text(json.dumps(out, indent=1))
    logger.info("%s rep %d posterior: %s", name, rep, out["calibrated"])
    return out


def run_maml_rep(name: str, Z: Ratings, rep: int, args: argparse.Namespace, deadline: float
                 ) -> dict[str, Any] | None:
    """MAML of EML (``MAML_KW``) on repetition ``rep``: meta-train (resumable), then test.

    Meta-training has the EML's step budget, validation set and early stopping, and at
    most ``MAML_BUDGET_S`` seconds in all (over resumed calls); when that is spent the
    best meta-validation initialisation so far is kept.
    """
    state_path = args.work / f"{name}_rep{rep}_MAML.json"
    if state_path.exists():
        return json.loads(state_path.read_text())
    _, _, _, train_s, _, _, val_eps, test_eps = rep_data(Z, rep, args)
    ckpt = args.work / f"{name}_rep{rep}_MAML.pt"
    spent = 0.0
    if ckpt.exists():
        spent = files.load_file(ckpt, "checkpoint/meta-train").payload["result"]["seconds"]
    remaining = deadline - time.perf_counter()
    budget = MAML_BUDGET_S - spent
    if remaining < 30 and budget > 1:
        raise OutOfTime
    torch.manual_seed(rep)
    net = models.ExchangeableMatrixNet(**EML_KW)
    maml, res = inference.maml_train(
        net, train_s, val_eps, steps=args.steps, lr=LR, eval_every=EVAL_EVERY,
        patience=PATIENCE, checkpoint=ckpt, max_seconds=max(min(remaining - 20, budget), 0.0),
        progress=args.progress, final_lr=LR, **MAML_KW,
    )
    budget_spent = res.seconds >= MAML_BUDGET_S - 1
    if not res.finished and not budget_spent:
        raise OutOfTime
    if not res.finished:
        # budget spent: the loop stops after a round's evaluation and leaves the live weights;
        # the best evaluated so far (possibly these) are in the checkpoint
        best = files.load_file(ckpt, "checkpoint/meta-train").payload["best_state"]
        if best is not None:
            maml.load_state_dict(best["model"])
    mse = _pooled_mse(predict_model(maml, test_eps), test_eps)
    out = {"rep": rep, "mse": mse, "meta_train": {
        "seconds": res.seconds, "steps": res.steps, "best_step": res.best_step,
        "best_val": res.best_val, "stopped_early": res.stopped_early,
        "budget_spent": bool(budget_spent and not res.finished)}}
    state_path.write_text(json.dumps(out, indent=1))
    logger.info("%s rep %d MAML: test MSE %.4f (%d steps, %.0f s)", name, rep, mse, res.steps,
                res.seconds)
    return out


def run_cross_rep(Zs: dict[str, Ratings], rep: int, args: argparse.Namespace, deadline: float,
                  both: bool = True) -> dict[str, Any] | None:
    """Table 3 on repetition ``rep``: the ``Ours`` models meta-trained on one dataset tested on
    the other's meta-test matrices (``Cross_rep{rep}.json``; no training), and, with
    ``both``, ``Ours`` meta-trained on both datasets' meta-train parts together (episodes from
    either with equal probability; meta-validation: half of each dataset's episodes) tested
    on each (``Both_rep{rep}.json``). Needs the finished repetition of both datasets (their
    checkpoints and splits); the meta-test matrices are the Table 1 ones.
    """
    work = args.work
    names = list(Zs)
    data = {n: rep_data(Zs[n], rep, args) for n in names}
    cross_path = work / f"Cross_rep{rep}.json"
    if cross_path.exists():
        out = json.loads(cross_path.read_text())
    else:
        mains = {n: json.loads((work / f"{n}_rep{rep}.json").read_text()) for n in names}
        own = {n: inference.load_meta_model(work / f"{n}_rep{rep}_Ours_best.pt").eval()
               for n in names}
        out = {"rep": rep, "mse": {}}
        for src in names:
            for dst in names:
                test_eps = data[dst][7]
                out["mse"][f"{src}->{dst}"] = (
                    mains[dst]["mse"]["Ours"] if src == dst
                    else _pooled_mse(predict_model(own[src], test_eps), test_eps))
        cross_path.write_text(json.dumps(out, indent=1))
        logger.info("rep %d cross: %s", rep, {k: round(v, 4) for k, v in out["mse"].items()})
    both_path = work / f"Both_rep{rep}.json"
    if not both or both_path.exists():
        return out
    remaining = deadline - time.perf_counter()
    if remaining < 20:
        raise OutOfTime
    torch.manual_seed(rep)
    model = models.MetaPriorMF(**MODEL_KW)
    train_s = EpisodeSampler([data[n][0] for n in names], SIZE, SIZE, RATIO, batch_size=BATCH,
                             seed=rep)
    half = max(1, VAL_EPISODES // BATCH // len(names))
    val_eps = [e for n in names for e in data[n][6][:half]]
    c0 = time.process_time()
    res = inference.meta_train(
        model, train_s, val_eps, steps=args.steps, lr=LR, eval_every=args.eval_every,
        patience=PATIENCE, checkpoint=work / f"Both_rep{rep}_Ours.pt",
        max_seconds=remaining - 10, progress=args.progress, final_lr=LR,
    )
    if not res.finished:
        raise OutOfTime
    bout: dict[str, Any] = {"rep": rep, "mse": {}}
    for dst in names:
        test_eps = data[dst][7]
        bout["mse"][f"Both->{dst}"] = _pooled_mse(predict_model(model, test_eps), test_eps)
    bout["meta_train_both"] = {"seconds": res.seconds, "cpu_seconds": time.process_time() - c0,
                               "steps": res.steps, "best_step": res.best_step,
                               "best_val": res.best_val}
    both_path.write_text(json.dumps(bout, indent=1))
    logger.info("rep %d both: %s", rep, {k: round(v, 4) for k, v in bout["mse"].items()})
    return out


def run_rep(name: str, Z: Ratings, rep: int, args: argparse.Namespace, deadline: float
            ) -> dict[str, Any] | None:
    work = args.work
    state_path = work / f"{name}_rep{rep}.json"
    if state_path.exists():
        return json.loads(state_path.read_text())
    torch.manual_seed(rep)
    tr, va, te, train_s, val_s, test_s, val_eps, test_eps = rep_data(Z, rep, args)
    trained = {}
    cpu: dict[str, float] = {}
    for key, make in (("Ours", lambda: models.MetaPriorMF(**MODEL_KW)),
                      ("EML", lambda: models.ExchangeableMatrixNet(**EML_KW))):
        remaining = deadline - time.perf_counter()
        if remaining < 20:
            raise OutOfTime
        torch.manual_seed(rep)
        m = make()
        c0 = time.process_time()
        res = inference.meta_train(
            m, train_s, val_eps, steps=args.steps, lr=LR, eval_every=args.eval_every,
            patience=PATIENCE, checkpoint=work / f"{name}_rep{rep}_{key}.pt",
            max_seconds=remaining - 10, progress=args.progress, final_lr=LR,
        )
        if not res.finished:
            raise OutOfTime
        cpu[key] = time.process_time() - c0
        trained[key] = (m, res)
        logger.info("%s rep %d %s: best val %.4f at step %d, %.0f s", name, rep, key,
                    res.best_val, res.best_step, res.seconds)
    ours, ours_res = trained["Ours"]
    eml, eml_res = trained["EML"]
    t0 = time.perf_counter()
    mf_best, mf_grid = tune_mf(val_eps[: max(1, MF_VAL_EPISODES // BATCH)])
    mf_tune_s = time.perf_counter() - t0
    out: dict[str, Any] = {"rep": rep, "sizes": {"train": tr.shape, "val": va.shape,
                                                  "test": te.shape}}
    out["n_test_matrices"] = sum(len(e) for e in test_eps)
    out["test_shape"] = list(test_eps[0].X.shape[1:])
    half_range = float(Z.values.abs().max())
    base: dict[str, torch.Tensor | list[torch.Tensor]] = {}
    tuned: dict[str, Any] = {}
    for key, by in (("AutoRecI", "item"), ("AutoRecU", "user")):
        t0, c0 = time.perf_counter(), time.process_time()
        best, grid = tune_autorec(val_eps[: max(1, AUTOREC_VAL_EPISODES // BATCH)], by,
                                  args.autorec_steps, seed=rep)
        t1 = time.perf_counter()
        base[key] = predict_autorec(test_eps, by, best["lr"], best["wd"], args.autorec_steps,
                                    seed=rep)
        tuned[key] = {"best": best, "grid": grid, "tune_s": t1 - t0,
                      "fit_test_s": time.perf_counter() - t1,
                      "cpu_s": time.process_time() - c0}
    t0, c0 = time.perf_counter(), time.process_time()
    best, grid = tune_dmf(val_eps, half_range, args.dmf_epochs, args.dmf_val_matrices, seed=rep)
    t1 = time.perf_counter()
    base["DMF"] = predict_dmf(test_eps, best["lr"], best["gamma"], args.dmf_epochs, half_range,
                              seed=rep)
    tuned["DMF"] = {"best": best, "grid": grid, "tune_s": t1 - t0,
                    "fit_test_s": time.perf_counter() - t1, "cpu_s": time.process_time() - c0,
                    "half_range": half_range}
    out["baselines_tuned"] = tuned
    mse = {
        "AutoRecI": _pooled_mse(base["AutoRecI"], test_eps),
        "AutoRecU": _pooled_mse(base["AutoRecU"], test_eps),
        "DMF": _pooled_mse(base["DMF"], test_eps),
        "Ours": _pooled_mse(predict_model(ours, test_eps), test_eps),
        "EML": _pooled_mse(predict_model(eml, test_eps), test_eps),
        "FT": _pooled_mse(predict_ft(eml, test_eps, seed=rep), test_eps),
        "MF": _pooled_mse(predict_mf(test_eps, mf_best["rank"], mf_best["reg"]), test_eps),
        "Mean": _pooled_mse(predict_mean(test_eps), test_eps),
    }
    out["mse"] = mse
    out["mf_best"], out["mf_grid"], out["mf_tune_s"] = mf_best, mf_grid, mf_tune_s
    out["meta_train"] = {
        k: {"seconds": r.seconds, "cpu_seconds": cpu[k], "steps": r.steps,
            "best_step": r.best_step, "best_val": r.best_val, "stopped_early": r.stopped_early}
        for k, (_, r) in trained.items()
    }
    out["lambda"] = float(ours.lam.detach())
    out["timing"] = time_adapt(ours, test_eps)
    out["fig5"] = {str(t): _pooled_mse(predict_model(ours, test_eps, steps=t), test_eps)
                   for t in FIG5_STEPS}
    fig4 = {}
    for s in FIG4_SIZES:
        eps = test_s.fixed(args.test_matrices, seed=3000 + rep, n_rows=s, n_cols=s)
        fig4[str(s)] = {"Ours": _pooled_mse(predict_model(ours, eps), eps),
                        "EML": _pooled_mse(predict_model(eml, eps), eps),
                        "Mean": _pooled_mse(predict_mean(eps), eps)}
    out["fig4"] = fig4
    inference.MetaFit(ours, finished=True).save(work / f"{name}_rep{rep}_Ours_best.pt")
    state_path.write_text(json.dumps(out, indent=1))
    logger.info("%s rep %d: %s", name, rep, {k: round(v, 4) for k, v in mse.items()})
    return out


# ---------------------------------------------------------------------- aggregate


def _mse_se(vals: list[float]) -> dict[str, float]:
    a = np.asarray(vals, dtype=np.float64)
    se = float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else float("nan")
    return {"mse": float(a.mean()), "se": se, "n_reps": int(a.size)}


def _part(work: Path, name: str, suffix: str, reps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-repetition results of a part (``_MAML``, ``_posterior``) of finished reps."""
    paths = [work / f"{name}_rep{r['rep']}{suffix}.json" for r in reps]
    return [json.loads(p.read_text()) for p in paths if p.exists()]


def _posterior_summary(ps: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"n_reps": len(ps), "reps": [p["rep"] for p in ps],
                           "mse_adapt_T10": _mse_se([p["mse_adapt"] for p in ps])}
    for kind in ("calibrated", "uncalibrated"):
        out[kind] = {k: _mse_se([p[kind][k] for p in ps])
                     for k in ("mse_post_mean", "coverage50", "coverage90", "width50",
                               "width90", "loglik")}
        out[kind]["precision"] = [p[kind]["precision"] for p in ps]
        out[kind]["noise"] = [p[kind]["noise"] for p in ps]
    out["calibration_s"] = _mse_se([p["calibration_s"] for p in ps])
    return out


def aggregate(reps: dict[str, list[dict[str, Any]]], work: Path | None = None
              ) -> tuple[dict, dict]:
    results: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, rs in reps.items():
        if not rs:
            continue
        table = {}
        common = [m for m in rs[0]["mse"] if all(m in r["mse"] for r in rs)]
        for model in common:
            table[model] = _mse_se([r["mse"][model] for r in rs])
            if name in PAPER and model in PAPER[name]:
                table[model]["paper"] = PAPER[name][model]
            if model in PAPER_SE.get(name, {}):
                table[model]["paper_se"] = PAPER_SE[name][model]
            if model != "Ours":
                diff = [r["mse"][model] - r["mse"]["Ours"] for r in rs]
                table[model]["paired_vs_Ours"] = {
                    "Ours_wins": int(sum(d > 0 for d in diff)), "n_reps": len(diff),
                    "diff_minus_Ours": _mse_se(diff)}
        maml = _part(work, name, "_MAML", rs) if work is not None else []
        if maml:
            table["MAML"] = _mse_se([m["mse"] for m in maml])
            done = {m["rep"] for m in maml}
            table["MAML"].update(
                reps=sorted(done),
                meta_train_s=_mse_se([m["meta_train"]["seconds"] for m in maml]),
                EML_same_reps=_mse_se([r["mse"]["EML"] for r in rs if r["rep"] in done]),
                Ours_same_reps=_mse_se([r["mse"]["Ours"] for r in rs if r["rep"] in done]))
        else:
            table["MAML"] = {"mse": None, "se": None, "n_reps": 0, "note": "not run"}
        table["MAML"]["paper"] = PAPER.get(name, {}).get("MAML")
        results[name] = table
        timing = {
            "meta_train_s_Ours": _mse_se([r["meta_train"]["Ours"]["seconds"] for r in rs]),
            "meta_train_s_EML": _mse_se([r["meta_train"]["EML"]["seconds"] for r in rs]),
            "meta_train_cpu_s_Ours": _mse_se([r["meta_train"]["Ours"].get("cpu_seconds",
                                                                          float("nan"))
                                              for r in rs]),
            "meta_train_steps_Ours": [r["meta_train"]["Ours"]["steps"] for r in rs],
            "adapt_s_per_30x30_median": _mse_se([r["timing"]["adapt_s_median"] for r in rs]),
            "adapt_s_per_30x30_batched": _mse_se(
                [r["timing"]["adapt_s_batched_per_matrix"] for r in rs]),
            "paper": PAPER_TIMING.get(name, {}),
        }
        for key in ("AutoRecI", "AutoRecU", "DMF"):
            if all(key in r.get("baselines_tuned", {}) for r in rs):
                bt = [r["baselines_tuned"][key] for r in rs]
                timing[f"fit_s_per_matrix_{key}"] = _mse_se(
                    [b["fit_test_s"] / r["n_test_matrices"] for b, r in zip(bt, rs, strict=True)])
        fig5 = {t: _mse_se([r["fig5"][t] for r in rs]) for t in rs[0]["fig5"]}
        fig4 = {s: {m: _mse_se([r["fig4"][s][m] for r in rs]) for m in rs[0]["fig4"][s]}
                for s in rs[0]["fig4"]}
        extra[name] = {
            "timing": timing, "fig5": fig5, "fig4": fig4,
            "lambda": [r["lambda"] for r in rs],
            "mf_best": [r["mf_best"] for r in rs],
            "meta_train": [r["meta_train"] for r in rs],
            "per_rep_mse": [r["mse"] for r in rs],
            "maml": maml,
            "test_shape": rs[0].get("test_shape", [SIZE, SIZE]),
            "baselines_tuned": [{k: {"best": v["best"], "tune_s": v["tune_s"]}
                                 for k, v in r.get("baselines_tuned", {}).items()} for r in rs],
        }
        post = _part(work, name, "_posterior", rs) if work is not None else []
        if post:
            extra[name]["posterior"] = _posterior_summary(post)
    return results, extra


def aggregate_cross(work: Path, reps: list[int]) -> dict[str, Any]:
    """Table 3 from the finished ``Cross_rep*.json`` / ``Both_rep*.json`` of ``reps`` (each
    entry over the repetitions that have it)."""
    per_rep: dict[int, dict[str, float]] = {}
    both_train = []
    for r in reps:
        for stem in ("Cross", "Both"):
            path = work / f"{stem}_rep{r}.json"
            if path.exists():
                c = json.loads(path.read_text())
                per_rep.setdefault(r, {}).update(c["mse"])
                if "meta_train_both" in c:
                    both_train.append(c["meta_train_both"])
    if not per_rep:
        return {}
    out: dict[str, Any] = {"reps": sorted(per_rep)}
    keys = list(dict.fromkeys(k for v in per_rep.values() for k in v))
    for key in keys:
        have = [v for v in per_rep.values() if key in v]
        out[key] = _mse_se([v[key] for v in have])
        if key in PAPER_CROSS:
            out[key]["paper"] = PAPER_CROSS[key]
        src, dst = key.split("->")
        if src != dst:
            diff = [v[key] - v[f"{dst}->{dst}"] for v in have]
            out[key]["paired_vs_in_domain"] = {
                "in_domain_wins": int(sum(d > 0 for d in diff)),
                "diff_minus_in_domain": _mse_se(diff)}
    if both_train:
        out["meta_train_s_Both"] = _mse_se([b["seconds"] for b in both_train])
        out["meta_train_cpu_s_Both"] = _mse_se([b["cpu_seconds"] for b in both_train])
    return out


def _fmt(d: dict[str, float] | None) -> str:
    if not d or d.get("mse") is None:
        return "—"
    return f"{d['mse']:.3f} ± {d['se']:.3f}" if math.isfinite(d["se"]) else f"{d['mse']:.3f}"


def write_outputs(results: dict, extra: dict, settings: dict, stem: str,
                  cross: dict | None = None) -> None:
    out = REPO / "benchmarks" / "results"
    json_path = out / f"{stem}.json"
    md_path = out / f"{stem}.md"
    payload = {name: {m: v for m, v in tab.items()} for name, tab in results.items()}
    for name in payload:
        payload[name]["_timing"] = extra[name]["timing"]
        payload[name]["_fig5_mse_vs_T"] = extra[name]["fig5"]
        payload[name]["_fig4_mse_vs_size"] = extra[name]["fig4"]
        payload[name]["_details"] = {k: extra[name][k] for k in
                                     ("lambda", "mf_best", "meta_train", "per_rep_mse",
                                      "maml", "baselines_tuned")}
        if "posterior" in extra[name]:
            payload[name]["_posterior_calibration"] = extra[name]["posterior"]
    if cross:
        payload["Table3_cross"] = cross
    for tab in payload.values():  # the issue's spelling: every model with "mse" and "mse_se"
        for v in tab.values():
            if isinstance(v, dict) and "mse" in v and "se" in v:
                v["mse_se"] = v["se"]
    payload["_settings"] = settings
    payload["_machine"] = machine_info()
    json_path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    md = [f"# {stem}: Iwata (2021) Tables 1, 3, 6, Figures 4-5", ""]
    for name, tab in results.items():
        models_ = [m for m in TABLE1_MODELS if m in tab]
        n = tab["Ours"]["n_reps"]
        paper = PAPER.get(name, {})
        md += [f"## {name} — Table 1, test MSE (mean ± s.e. over {n} repetitions)", "",
               "| | " + " | ".join(models_) + " |", "|---" * (len(models_) + 1) + "|",
               "| this run | " + " | ".join(
                   _fmt(tab.get(m)) + (f" ({tab[m]['n_reps']} reps)"
                                       if tab.get(m, {}).get("n_reps", n) not in (0, n) else "")
                   for m in models_) + " |",
               "| paper | " + " | ".join(
                   (f"{paper[m]:.3f}" if m in paper else "—")
                   + (f" ± {PAPER_SE[name][m]:.3f}" if m in PAPER_SE.get(name, {}) else "")
                   for m in models_) + " |",
               "| Ours better (reps) | " + " | ".join(
                   (f"{tab[m]['paired_vs_Ours']['Ours_wins']}/{n}"
                    if "paired_vs_Ours" in tab.get(m, {}) else "—") for m in models_) + " |",
               "| row − Ours (paired) | " + " | ".join(
                   (_fmt(tab[m]["paired_vs_Ours"]["diff_minus_Ours"])
                    if "paired_vs_Ours" in tab.get(m, {}) else "—") for m in models_) + " |"]
        if name in EARLIER:
            md.append(f"| {EARLIER[name]['note']} | " + " | ".join(
                EARLIER[name].get(m, "—") for m in models_) + " |")
        bt = extra[name].get("baselines_tuned") or []
        if bt and bt[0]:
            md += ["", "Baselines' settings chosen on meta-validation episodes (per repetition): "
                   + "; ".join(f"{k}: " + ", ".join(
                       str(b[k]["best"]).replace("'", "") for b in bt) for k in bt[0]) + "."]
        mm = tab.get("MAML", {})
        if mm.get("mse") is not None:
            md += ["", f"MAML of EML ({MAML_KW['inner_steps']} inner steps of size "
                   f"{MAML_KW['inner_lr']}, second order): {mm['n_reps']} of {n} repetitions "
                   f"(reps {mm['reps']}), meta-training {_fmt(mm['meta_train_s'])} s "
                   f"(budget {MAML_BUDGET_S:.0f} s); on the same repetitions Ours "
                   f"{_fmt(mm['Ours_same_reps'])}, EML {_fmt(mm['EML_same_reps'])}."]
        tm = extra[name]["timing"]
        pt = tm["paper"]
        shape = "x".join(str(v) for v in extra[name].get("test_shape", (SIZE, SIZE)))
        md += ["", "### Table 6: timing (one thread, shared 2-core machine)", "",
               "| | this run | paper (2.6 GHz CPU) |", "|---|---|---|",
               f"| meta-training Ours (s, wall) | {_fmt(tm['meta_train_s_Ours'])}"
               f" | {pt['meta_train_s']:.0f} |" if "meta_train_s" in pt else
               f"| meta-training Ours (s, wall) | {_fmt(tm['meta_train_s_Ours'])} | — |",
               f"| meta-training Ours (s, CPU) | {_fmt(tm['meta_train_cpu_s_Ours'])} | — |",
               f"| meta-training steps Ours | {', '.join(map(str, tm['meta_train_steps_Ours']))}"
               " | — |",
               f"| meta-training EML (s, wall) | {_fmt(tm['meta_train_s_EML'])} | — |",
               f"| adapt one {shape} matrix (s, median) | "
               f"{tm['adapt_s_per_30x30_median']['mse']:.4f} | "
               f"{pt.get('meta_test_s_per_matrix', '—')} |",
               f"| adapt, batched, per matrix (s) | "
               f"{tm['adapt_s_per_30x30_batched']['mse']:.5f} | — |"]
        md += [f"| fit {k} to one matrix (s, wall) | {_fmt(tm[f'fit_s_per_matrix_{k}'])} | — |"
               for k in ("AutoRecI", "AutoRecU", "DMF") if f"fit_s_per_matrix_{k}" in tm]
        md.append("")
        md += ["### Figure 5: test MSE of Ours against T (trained with T = 10)", "",
               "| T | " + " | ".join(extra[name]["fig5"]) + " |",
               "|---" * (len(extra[name]["fig5"]) + 1) + "|",
               "| MSE | " + " | ".join(f"{v['mse']:.3f}" for v in extra[name]["fig5"].values())
               + " |", ""]
        if "posterior" in extra[name]:
            pc = extra[name]["posterior"]
            md += [f"### Posterior calibration ({pc['n_reps']} repetitions, hidden entries of "
                   "the meta-test matrices)", "",
                   "`fit_meta_posterior` (SVI, mean-field) with precision and noise chosen by "
                   "`calibrate_posterior` on meta-validation episodes (max. held-out log "
                   "predictive density), against the meta-learned lambda with noise 1. "
                   f"10-step adaptation MSE: {_fmt(pc['mse_adapt_T10'])}.", "",
                   "| | MSE of mean | log pred. | cov. 50% | width 50% | cov. 90% | width 90% "
                   "| precision | noise |", "|---" * 9 + "|"]
            for kind in ("calibrated", "uncalibrated"):
                c = pc[kind]
                md.append(f"| {kind} | " + " | ".join(
                    _fmt(c[k]) for k in ("mse_post_mean", "loglik", "coverage50", "width50",
                                         "coverage90", "width90"))
                    + f" | {', '.join(f'{v:.3g}' for v in c['precision'])} | "
                    + f"{', '.join(f'{v:g}' for v in c['noise'])} |")
            md.append("")
        f4 = extra[name]["fig4"]
        md += ["### Figure 4: trained on 30x30, tested on NxN", "",
               "| N = M | Ours | EML | Mean |", "|---|---|---|---|"]
        md += [f"| {s} | " + " | ".join(_fmt(f4[s][m]) for m in ("Ours", "EML", "Mean")) + " |"
               for s in f4]
        md.append("")
    if cross:
        md += ["## Table 3: cross-dataset (Ours; mean ± s.e. over the repetitions, the Table 1 "
               "meta-test matrices)", "",
               "| meta-trained on -> tested on | this run | reps | paper | in-domain better "
               "(reps) |", "|---|---|---|---|---|"]
        for key, v in cross.items():
            if "->" not in key:
                continue
            pv = f"{v['paper']:.3f}" if "paper" in v else "—"
            pw = v.get("paired_vs_in_domain")
            wins = (f"{pw['in_domain_wins']}/{v['n_reps']} (diff "
                    f"{_fmt(pw['diff_minus_in_domain'])})" if pw else "—")
            md.append(f"| {key.replace('->', ' -> ')} | {_fmt(v)} | {v['n_reps']} | {pv} "
                      f"| {wins} |")
        if "meta_train_s_Both" in cross:
            md += ["", f"Meta-training on both ({cross['meta_train_s_Both']['n_reps']} "
                   f"repetitions): {_fmt(cross['meta_train_s_Both'])} s wall, "
                   f"{_fmt(cross['meta_train_cpu_s_Both'])} s CPU."]
        md.append("")
    md += ["## Settings", "", "```json", json.dumps(settings, indent=1, default=str), "```", ""]
    md_path.write_text("\n".join(md))
    _plots(extra, out, stem)
    logger.info("wrote %s and %s", json_path, md_path)


def _plots(extra: dict, out: Path, stem: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return
    for name, ex in extra.items():
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
        ts = [int(t) for t in ex["fig5"]]
        axes[0].errorbar(ts, [v["mse"] for v in ex["fig5"].values()],
                         yerr=[np.nan_to_num(v["se"]) for v in ex["fig5"].values()], marker="o")
        axes[0].axvline(10, ls=":", c="gray")
        axes[0].set(xlabel="unrolled steps T at test time", ylabel="test MSE",
                    title=f"{name}: Fig. 5")
        sizes = [int(s) for s in ex["fig4"]]
        for m in ("Ours", "EML", "Mean"):
            axes[1].errorbar(sizes, [ex["fig4"][s][m]["mse"] for s in ex["fig4"]],
                             yerr=[np.nan_to_num(ex["fig4"][s][m]["se"]) for s in ex["fig4"]],
                             marker="o", label=m)
        axes[1].set(xlabel="test matrix size N = M (trained on 30)", ylabel="test MSE",
                    title=f"{name}: Fig. 4")
        axes[1].legend()
        fig.tight_layout()
        fig.savefig(out / f"{stem}_{name}.png", dpi=110)
        plt.close(fig)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 1 rep, 60 steps")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--only-reps", type=str, default=None, help="comma list, e.g. 0,2,4")
    p.add_argument("--steps", type=int, default=2000, help="meta-training step budget")
    p.add_argument("--test-matrices", type=int, default=10)
    p.add_argument("--datasets", type=str, default="ML100K,ML1M,Jester")
    p.add_argument("--max-seconds", type=float, default=540.0,
                   help="wall-clock budget of this invocation (exit 3 when spent)")
    p.add_argument("--aggregate", action="store_true", help="only write tables")
    p.add_argument("--maml", action="store_true",
                   help="MAML of EML on the finished repetitions (no retraining of the others)")
    p.add_argument("--posterior", action="store_true",
                   help="posterior calibration on the finished repetitions (uses checkpoints)")
    p.add_argument("--cross", action="store_true",
                   help="Table 3 (cross-dataset, and meta-trained on both) on the repetitions "
                        "finished for every dataset (no retraining of the others)")
    p.add_argument("--eval-every", type=int, default=EVAL_EVERY,
                   help="meta-training steps between meta-validation evaluations")
    p.add_argument("--autorec-steps", type=int, default=AUTOREC_STEPS)
    p.add_argument("--dmf-epochs", type=int, default=DMF_EPOCHS)
    p.add_argument("--dmf-val-matrices", type=int, default=DMF_VAL_MATRICES)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--work", type=Path, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("bayesmf").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    stem = "table1_meta_quick" if args.quick else "table1_meta"
    if args.quick:
        args.reps, args.steps, args.eval_every = 1, 60, 60
        args.autorec_steps, args.dmf_epochs, args.dmf_val_matrices = 100, 60, 4
    args.work = args.work or (WORK.parent / f"{stem}.work")
    args.work.mkdir(parents=True, exist_ok=True)
    deadline = time.perf_counter() + args.max_seconds
    reps_to_run = (list(range(args.reps)) if args.only_reps is None
                   else [int(r) for r in args.only_reps.split(",")])
    datasets = load_datasets(args.datasets.split(","))
    settings = {
        "protocol": "disjoint 70/10/20 users x items; 30x30 episodes, R=0.5; z-scored",
        "model": MODEL_KW, "eml": EML_KW, "lr": LR, "batch": BATCH, "steps_budget": args.steps,
        "eval_every": args.eval_every, "patience": PATIENCE, "val_episodes": VAL_EPISODES,
        "test_matrices": args.test_matrices, "reps_requested": args.reps,
        "ft": {"steps": FT_STEPS, "lr": FT_LR}, "mf_grid": {"ranks": MF_RANKS, "regs": MF_REGS,
                                                           "val_episodes": MF_VAL_EPISODES},
        "maml": {**MAML_KW, "budget_s": MAML_BUDGET_S},
        "autorec": {**AUTOREC_KW, "lrs": AUTOREC_LRS, "weight_decays": AUTOREC_WDS,
                    "adam_steps_full_batch": args.autorec_steps,
                    "val_episodes": AUTOREC_VAL_EPISODES,
                    "objective": "sum of squared errors on the train entries + wd/2 ||W||^2"},
        "dmf": {**DMF_KW, "lrs": DMF_LRS, "gammas": DMF_GAMMAS,
                "epochs_full_batch": args.dmf_epochs, "val_matrices": args.dmf_val_matrices,
                "scale": "(-a, a), a = max |z-scored rating| of the dataset"},
        "table3": "Ours of rep r meta-trained on one dataset, tested on the other's rep-r "
                  "meta-test matrices; 'Both': meta-trained on both meta-train parts (tasks "
                  "equally likely), meta-validation 32 episodes of each",
        "posterior": {"cal_episodes": CAL_EPISODES, "precisions": CAL_PRECISIONS,
                      "noises": CAL_NOISES, "svi_steps": POST_STEPS, "samples": POST_SAMPLES},
        "threads": args.threads, "seeds": "split r, val 1000+r, test 2000+r, fig4 3000+r",
        "deviations": [
            f"Adam lr {LR} (paper 1e-4) with a {args.steps}-step budget and early stopping "
            f"(patience {PATIENCE} x {args.eval_every} steps), best meta-validation weights "
            "kept, to fit the compute available",
            "AutoRec/DMF grids are this benchmark's own (the paper's appendix grids could not "
            "be consulted here); DMF tuned on the first few meta-validation matrices only",
            "Jester has 100 items, so its 20% meta-test items are 20: its meta-test matrices "
            "are 30 users x 20 items (meta-training episodes 30x30)",
            f"MAML of EML: inner lr {MAML_KW['inner_lr']} fixed (not tuned), meta-training "
            f"capped at {MAML_BUDGET_S:.0f} s per repetition (EML's step budget, validation "
            "and early stopping otherwise); possibly fewer repetitions than the others",
            "fewer than 10 repetitions if n_reps < 10",
            "posterior calibration of rep 0 searched the wider default grid of "
            "calibrate_posterior (precisions 1..1000, noises 0.6..1.1); restricted to the "
            "benchmark grid its scores give the same winner",
        ],
    }
    finished: dict[str, list[dict[str, Any]]] = {}
    incomplete = False
    for name, R in datasets.items():
        Z = Standardizer().fit_transform(R)
        for rep in reps_to_run:
            if args.aggregate:
                continue
            main_done = (args.work / f"{name}_rep{rep}.json").exists()
            try:
                if args.cross:
                    continue
                if args.maml or args.posterior:
                    if not main_done:
                        continue
                    if args.posterior:
                        run_posterior_rep(name, Z, rep, args, deadline)
                    if args.maml:
                        run_maml_rep(name, Z, rep, args, deadline)
                    continue
                run_rep(name, Z, rep, args, deadline)
            except OutOfTime:
                logger.warning("time budget spent during %s rep %d; run again to resume",
                               name, rep)
                incomplete = True
                break
        finished[name] = [json.loads((args.work / f"{name}_rep{r}.json").read_text())
                          for r in range(args.reps)
                          if (args.work / f"{name}_rep{r}.json").exists()]
        if incomplete:
            break
    if (args.cross or args.quick) and not incomplete and not args.aggregate and len(
            datasets) >= 2:
        Zs = {n: Standardizer().fit_transform(R) for n, R in datasets.items()
              if n in ("ML100K", "Jester")}
        ready = [r for r in reps_to_run
                 if all((args.work / f"{n}_rep{r}.json").exists() for n in Zs)]
        try:
            for rep in ready:  # the cheap cross evaluations first, then meta-training on both
                run_cross_rep(Zs, rep, args, deadline, both=False)
            for rep in ready:
                run_cross_rep(Zs, rep, args, deadline, both=True)
        except OutOfTime:
            logger.warning("time budget spent during the cross part; run again")
            incomplete = True
    results, extra = aggregate(finished, args.work)
    cross = aggregate_cross(args.work, list(range(args.reps)))
    if results:
        write_outputs(results, extra, settings, stem, cross)
    return 3 if incomplete else 0


if __name__ == "__main__":
    sys.exit(main())
