""":func:`fit_sbm`: the block model's mean-field VI (the paper's Algorithm 1) on the one loop.

Each step of :func:`bayesmf.inference.loop.train` draws a minibatch of pairs (``batch_size``:
links and ``neg_ratio`` times as many non-links drawn uniformly among the observed
non-links, each part reweighted by its inverse sampling fraction so that the likelihood
estimate of the ELBO is unbiased; ``batch_size=None``: every observed pair), then

1. updates ``eta_i`` of every node in the minibatch in closed form (Eq. 9,
   :func:`~.steps.eta_targets`); the step ``eta <- (1 - r) eta + r eta*`` with
   ``r = eta_step`` is the natural-gradient step of the local factor (damped, since the
   nodes of a minibatch are updated in parallel);
2. computes the negative ELBO estimate (reparameterised Monte Carlo for the likelihood,
   analytic KL terms) and its gradients; the loop clips them and takes the Adam step on
   ``rho``, the Gaussian ``q`` and ``log alpha``.

The first ``eta_warmup`` epochs update only the global factors, so the link function fits the
initial partition before the partition moves. Local optima are common: each of
``n_restarts`` restarts (:func:`~.init.init_plan`) is one run of the loop from its own
initialisation, and the restart with the best final ELBO is kept. A checkpoint holds the
running restart (``eta`` is a buffer of the posterior module) and, as the loop's extra state,
the finished restarts' summaries and the best state so far.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ...data.containers import Pairs
from ...models.sbm import DPStochasticBlockModel
from .. import files
from ..fits import deprecated_kwarg
from ..loop import LoopResult
from ..loop import train as run_loop
from ..threads import uses_fit_threads
from .graph import Batches, Graph, as_network
from .init import init_plan, init_posterior, initial_labels
from .posterior import SBMPosterior
from .result import SBMFit, network_info
from .steps import eta_targets, full_elbo, minibatch_objective

__all__ = ["fit_sbm"]

log = logging.getLogger(__name__)

ENGINE = "SBM"


def _check_options(model: Any, net: Any, o: dict[str, Any]) -> None:
    if not isinstance(model, DPStochasticBlockModel):
        raise TypeError(f"fit_sbm fits a DPStochasticBlockModel, got {type(model).__name__}")
    if model.n_nodes != net.n_nodes:
        raise ValueError(f"the model has {model.n_nodes} nodes, the network {net.n_nodes}")
    if o["epochs"] < 1 or o["lr"] <= 0 or o["n_restarts"] < 1 or not 0 < o["eta_step"] <= 1:
        raise ValueError("need epochs >= 1, lr > 0, n_restarts >= 1 and 0 < eta_step <= 1")
    if o["batch_size"] is not None and o["batch_size"] < 2:
        raise ValueError(f"batch_size must be at least 2, got {o['batch_size']}")
    if o["init"] not in ("spectral", "random"):
        raise ValueError(f"init must be 'spectral' or 'random', got {o['init']!r}")
    if o["kl_warmup"]:
        raise ValueError(
            f"fit_sbm has no KL warm-up (got kl_warmup={o['kl_warmup']}); its first "
            "eta_warmup epochs update only the global factors instead"
        )
    if o["patience"] is not None and o["val"] is None:
        raise ValueError("patience (early stopping) needs validation pairs: pass val=")
    if o["val"] is not None and not isinstance(o["val"], Pairs):
        raise TypeError(f"val must be Pairs (held-out node pairs), got {type(o['val']).__name__}")
    if net.n_edges == 0:
        raise ValueError("the network has no links")


def _saved_progress(
    ckpt: Path | None, resume: bool, fingerprint: dict | None, settings: dict[str, Any]
) -> dict[str, Any] | None:
    """The restart a checkpoint was written in and the finished restarts it holds (the
    loop's extra state), after checking that it belongs to this data and these settings."""
    if ckpt is None or not resume or not ckpt.exists():
        return None
    saved = files.load_file(ckpt, f"checkpoint/{ENGINE}")
    files.check_compatible(saved, fingerprint, settings)
    return saved.payload["extra"]


@dataclass
class _Restarts:
    """The restarts of one :func:`fit_sbm` call, each a run of the loop, and what they share.

    ``done`` holds the finished restarts' summaries (``infos``) and the best state so far
    (``best``); it is the loop's extra state, so that a checkpoint carries it.
    """

    model: DPStochasticBlockModel
    net: Any
    graph: Graph
    batches: Batches
    plan: list[tuple[str, Any]]
    opts: dict[str, Any]
    settings: dict[str, Any]
    fingerprint: dict | None
    alpha0: float
    done: dict[str, Any]
    k_auto: int | None = None
    epochs_here: int = 0
    val_score: dict[str, float] = field(default_factory=dict)

    def initial(self, r: int) -> tuple[SBMPosterior, torch.Generator, torch.Generator, int]:
        """Seeded generators and the initial ``q`` of restart ``r`` (and its ``k``)."""
        model, dev, rseed = self.model, self.model.device, self.opts["seed"] + 1000 * r
        torch.manual_seed(rseed)
        gen = torch.Generator().manual_seed(rseed)
        dgen = gen if dev.type == "cpu" else torch.Generator(device=dev).manual_seed(rseed)
        with torch.no_grad():
            model.log_alpha.fill_(math.log(self.alpha0))
        kind, k = self.plan[r]
        labels, k_used, self.k_auto = initial_labels(
            self.net, kind, k, model.truncation, rseed, self.k_auto
        )
        post = SBMPosterior(model)
        init_posterior(model, post, labels, self.graph, gen)
        return post, gen, dgen, k_used

    def step_fn(self, post: SBMPosterior, gen: torch.Generator, dgen: torch.Generator) -> Any:
        """The loop's step: the closed-form ``eta`` step of the minibatch's nodes (after the
        warm-up), then the negative ELBO estimate and its gradients (the loop steps Adam)."""
        model, o = self.model, self.opts

        def step(epoch: int, s: int) -> torch.Tensor:
            i, j, x, w, nodes = self.batches.draw(gen)
            if epoch >= o["eta_warmup"]:
                target = eta_targets(model, post, self.graph, nodes, o["eta_samples"], dgen)
                post.eta[nodes] = (1 - o["eta_step"]) * post.eta[nodes] + o["eta_step"] * target
            loss = -minibatch_objective(model, post, i, j, x, w, o["num_particles"], dgen)
            loss.backward()
            return loss.detach() - post.entropy_z()

        return step

    def epoch_fn(self, fit_now: SBMFit) -> Any:
        """Per epoch: ``alpha`` and the effective number of clusters; per evaluation the
        validation AUC and mean log-likelihood (whose negative is the loop's score)."""
        val, every = self.opts["val"], self.opts["eval_every"]

        def on_epoch(epoch: int) -> dict[str, float]:
            self.epochs_here += 1
            out = {"alpha": fit_now.alpha, "effective_clusters": fit_now.effective_clusters()}
            if val is not None and (epoch + 1) % every == 0:
                from ...diagnostics.metrics import auc

                out["val_auc"] = auc(val.labels, fit_now.predict(val, num_samples=16))
                out["val_log_lik"] = float(fit_now.log_likelihood(val, 16).mean())
                self.val_score["score"] = -out["val_log_lik"]
            return out

        return on_epoch

    def run(
        self, r: int, resume: bool, stop_after: int | None
    ) -> tuple[SBMPosterior, LoopResult]:
        """Restart ``r`` through the loop; when it finishes, its summary joins ``done``."""
        o, model, t0 = self.opts, self.model, time.perf_counter()
        post, gen, dgen, k_used = self.initial(r)
        fit_now = SBMFit(model, post)
        init_s = time.perf_counter() - t0
        res = run_loop(
            self.step_fn(post, gen, dgen), {"posterior": post, "model": model},
            epochs=o["epochs"], steps_per_epoch=self.batches.steps, lr=o["lr"],
            final_lr=o["final_lr"], clip_norm=o["clip_norm"],
            evaluate=None if o["val"] is None else (lambda: self.val_score["score"]),
            eval_every=o["eval_every"], patience=o["patience"], select_after=o["eta_warmup"],
            on_epoch=self.epoch_fn(fit_now), generators=[gen] if dgen is gen else [gen, dgen],
            extra_state=(lambda: {"restart": r, **self.done}, lambda extra: None),
            checkpoint=o["checkpoint"], checkpoint_every=o["checkpoint_every"], resume=resume,
            fingerprint=self.fingerprint, settings=self.settings, stop_after=stop_after,
            progress=o["progress"], engine=ENGINE,
            desc=f"SBM restart {r + 1}/{len(self.plan)}" if len(self.plan) > 1 else "SBM",
        )
        if not res.finished:
            return post, res
        t1 = time.perf_counter()
        final = full_elbo(model, post, self.graph, o["elbo_samples"], o["seed"])
        info = {
            "restart": r, "init": self.plan[r][0], "init_clusters": k_used, "elbo": final,
            "effective_clusters": fit_now.effective_clusters(), "alpha": fit_now.alpha,
            "epochs_run": res.epochs_run, "stopped_early": res.stopped_early,
            "best_epoch": res.best_epoch,
            "seconds": res.seconds + init_s + time.perf_counter() - t1,
        }
        self.done["infos"].append(info)
        log.info("restart %d (%s, k=%s): final ELBO %.2f, %.2f clusters, alpha %.3f",
                 r, info["init"], k_used, final, info["effective_clusters"], info["alpha"])
        best = self.done["best"]
        if best is None or final > best["elbo"]:
            history = dict(res.history)
            history["elbo"] = [-v for v in history.pop("loss")]
            self.done["best"] = {
                "elbo": final, "restart": r, "history": history,
                "posterior": copy.deepcopy(post.state_dict()),
                "model": copy.deepcopy(model.state_dict()),
            }
        return post, res


@uses_fit_threads
def fit_sbm(
    model: DPStochasticBlockModel,
    network: Any,
    *,
    epochs: int = 200,
    batch_size: int | None = None,
    neg_ratio: float = 5.0,
    lr: float = 0.05,
    final_lr: float | None = None,
    eta_step: float = 0.5,
    eta_samples: int = 4,
    num_particles: int = 1,
    eta_warmup: int | None = None,
    n_restarts: int = 1,
    init: str = "spectral",
    init_clusters: int | str | None = None,
    clip_norm: float | None = None,
    kl_warmup: int = 0,
    val: Pairs | None = None,
    patience: int | None = None,
    eval_every: int = 1,
    seed: int = 0,
    device: str | torch.device | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool = True,
    stop_after: int | None = None,
    progress: bool | None = None,
    elbo_samples: int = 8,
    **deprecated: Any,
) -> SBMFit:
    """Fit a DP stochastic block model by mean-field VI (Algorithm 1 of the paper).

    Parameters
    ----------
    model : DPStochasticBlockModel
        The model; its ``n_nodes`` must match the network.
    network : Network, networkx.Graph or array
        The training network (held-out pairs marked ``unobserved`` are left out of the
        likelihood), a simple undirected graph or a symmetric 0/1 adjacency matrix with a
        zero diagonal.
    epochs : int
        Passes over the pairs per restart; an epoch has ``ceil(n_pairs / batch_size)`` steps.
    batch_size : int or None
        Pairs per minibatch (``None``: every observed pair, exactly). A minibatch holds
        ``batch_size / (1 + neg_ratio)`` links and the rest non-links, each reweighted by
        its inverse sampling fraction.
    neg_ratio : float
        Non-links per link in a minibatch.
    lr, final_lr : float
        Adam learning rate of the global factors, decayed exponentially to ``final_lr``
        (default ``lr / 10``).
    eta_step : float
        Step size of the closed-form ``eta`` update (1: plain coordinate ascent).
    eta_samples : int
        Monte Carlo draws of the continuous latents in the ``eta`` update.
    num_particles : int
        Draws per gradient estimate.
    eta_warmup : int, optional
        Epochs of global-only updates at the start of each restart (default
        ``epochs // 4``); formerly ``warmup=``.
    n_restarts : int
        Independent fits; the one with the best final ELBO is returned.
    init : {"spectral", "random"}
        Initial ``eta``: regularised spectral clustering into ``k`` clusters, with ``k``
        the Bethe-Hessian estimate ``k0`` for restart 0, then ``k0 + 1``,
        ``truncation``, ``k0 - 1`` and random numbers of clusters (each restart with its
        own k-means seed); or random soft assignments (``"random"``).
    init_clusters : int or "auto", optional
        Force the number of spectral clusters of every restart.
    clip_norm : float, optional
        Gradient norm clipping of the Adam step.
    kl_warmup : int
        Must be 0: accepted so that :func:`~bayesmf.inference.fit_svi` can forward its
        options; the block model's own warm-up is ``eta_warmup``.
    val : Pairs, optional
        Held-out pairs whose AUC and mean log-likelihood are recorded every ``eval_every``
        epochs; the state with the best validation log-likelihood (after the warm-up) is
        kept, and with ``patience`` a restart stops after that many evaluations without
        improvement.
    patience, eval_every : int
        Early stopping (needs ``val``) and the evaluation interval in epochs.
    seed : int
        Seeds the initialisation, the minibatches and the Monte Carlo draws.
    device : str or torch.device, optional
        Where to fit.
    checkpoint, checkpoint_every, resume
        Checkpoint file (written every ``checkpoint_every`` epochs and at the end of each
        restart); an existing one is resumed from (``resume=True``) when it was written for
        the same network and settings, else refused with an error naming what differs;
        ``resume=False`` starts afresh and overwrites it. The result equals an
        uninterrupted run.
    stop_after : int, optional
        Stop (as if killed) after this many epochs of this call, counted over restarts.
    progress : bool, optional
        Show a tqdm bar (default: only in a terminal).
    elbo_samples : int
        Draws of the continuous latents for the final (full) ELBO of each restart.

    Returns
    -------
    SBMFit

    Raises
    ------
    ValueError
        For an asymmetric, self-looped or non-binary network, a size mismatch or bad
        options (e.g. ``kl_warmup > 0``).
    FloatingPointError
        When the ELBO or a parameter becomes NaN/inf; the message names the epoch, the step
        and the last good checkpoint.

    Examples
    --------
    >>> from bayesmf import data, inference, models
    >>> net, truth = data.synthetic_network(40, block_sizes=[25, 15], p_in=0.6, p_out=0.03)
    >>> model = models.DPStochasticBlockModel(40, truncation=4)
    >>> fit = inference.fit_sbm(model, net, epochs=100, progress=False)
    >>> fit.assignments().bincount().tolist()
    [25, 15]
    >>> bool((fit.assignments()[truth.z == 0] == fit.assignments()[truth.z == 0][0]).all())
    True
    """
    if "warmup" in deprecated:
        eta_warmup = deprecated_kwarg(deprecated, "warmup", "eta_warmup", "fit_sbm")
    if deprecated:
        raise TypeError(f"fit_sbm() got unexpected keyword arguments {sorted(deprecated)}")
    net = as_network(network)
    opts = dict(locals())
    _check_options(model, net, opts)
    opts["eta_warmup"] = eta_warmup = epochs // 4 if eta_warmup is None else int(eta_warmup)
    if device is not None:
        model.to(device)
    graph = Graph.build(net, model.device)
    batches = Batches(graph, batch_size, neg_ratio)
    alpha0 = float(model.alpha.detach())
    settings: dict[str, Any] = {
        "engine": "sbm", "model_config": {**model.config(), "alpha": alpha0},
        "epochs": epochs, "batch_size": None if batches.full else batch_size,
        "neg_ratio": neg_ratio, "lr": lr, "final_lr": final_lr, "eta_step": eta_step,
        "eta_samples": eta_samples, "num_particles": num_particles, "eta_warmup": eta_warmup,
        "n_restarts": n_restarts, "init": init, "init_clusters": init_clusters,
        "clip_norm": clip_norm, "patience": patience, "eval_every": eval_every,
        "validated": val is not None, "seed": seed, "elbo_samples": elbo_samples,
    }
    fingerprint = files.fingerprint(net)
    opts["checkpoint"] = ckpt = None if checkpoint is None else Path(checkpoint)
    saved = _saved_progress(ckpt, resume, fingerprint, settings)
    start = 0 if saved is None else int(saved["restart"])
    plan = init_plan(init, n_restarts, model.truncation, seed, init_clusters)
    done = {"infos": [] if saved is None else list(saved["infos"]),
            "best": None if saved is None else saved["best"]}
    runs = _Restarts(model, net, graph, batches, plan, opts, settings, fingerprint, alpha0, done)
    finished, post = True, SBMPosterior(model)
    for r in range(start, n_restarts):
        left = None if stop_after is None else stop_after - runs.epochs_here
        if left is not None and left <= 0:
            finished = False
            break
        post, res = runs.run(r, resume and r == start, left)
        if not res.finished:
            finished = False
            break
    best = runs.done["best"]
    if finished:  # the restart with the best final ELBO
        post = SBMPosterior(model)
        post.load_state_dict(best["posterior"])
        model.load_state_dict(best["model"])
    infos = runs.done["infos"]
    return SBMFit(
        model, post, history=best["history"] if finished else {}, restarts=infos,
        train_info=network_info(net),
        settings={**settings, "device": str(model.device), "steps_per_epoch": batches.steps,
                  "finished": finished, "best_restart": None if best is None else best["restart"]},
        fit_seconds=sum(float(i["seconds"]) for i in infos), network=net,
    )
