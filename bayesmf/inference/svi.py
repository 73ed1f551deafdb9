"""Stochastic variational inference for the library's Gaussian factor models.

:func:`fit_svi` owns the optimisation (in the manner of ``pyro.contrib.forecast``'s
fitters): a mean-field guide, ``TraceMeanField_ELBO`` (analytic KL terms), Adam with an
exponentially decaying learning rate and gradient clipping, shuffled minibatches of
ratings with the exact ELBO scaling, validation-based early stopping, checkpoints that a
killed run resumes from, and a tqdm bar showing the ELBO and validation RMSE. It returns a
:class:`VariationalFit` that predicts, gives intervals and draws, saves and loads.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from pyro.infer import TraceMeanField_ELBO
from tqdm.auto import tqdm

from ..data.containers import Ratings
from ..models.base import GaussianFactorModel
from .guides import MeanFieldGuide
from .posterior import PosteriorFit

__all__ = ["fit_svi", "VariationalFit", "load"]

log = logging.getLogger(__name__)


@dataclass
class VariationalFit(PosteriorFit):
    """A fitted variational posterior ``q(z)`` of a model.

    Attributes
    ----------
    model : GaussianFactorModel
        The model (with its offset set to the training mean).
    guide : MeanFieldGuide
        The fitted variational family.
    history : dict of lists
        Per-epoch ``elbo`` (per rating), ``val_rmse`` (when validation data was given)
        and ``lr``.
    train_info : dict
        Shape, original ids and scale of the training data (for ArviZ coords).
    settings : dict
        The options the fit ran with.
    fit_seconds : float
        Wall-clock time of the optimisation.
    """

    model: GaussianFactorModel
    guide: MeanFieldGuide
    history: dict[str, list[float]] = field(default_factory=dict)
    train_info: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    fit_seconds: float = 0.0

    inference_name = "SVI mean-field"

    @property
    def elbo_history(self) -> list[float]:
        """ELBO per rating after each epoch."""
        return self.history.get("elbo", [])

    def sample(self, num_samples: int = 200, seed: int | None = None) -> dict[str, torch.Tensor]:
        """Draws of every latent array and hyper-parameter from ``q``."""
        gen = None
        if seed is not None:
            gen = torch.Generator(device=self.guide.locs[self.guide.specs[0].name].device)
            gen.manual_seed(seed)
        return self.guide.sample_latents(num_samples, generator=gen)

    def _draw(self, num_samples: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return self.guide.sample_latents(num_samples, generator=generator)

    # ------------------------------------------------------------ persistence
    def state(self) -> dict[str, Any]:
        """Everything needed to rebuild the fit, as tensors and plain Python values."""
        return {
            "format": "bayesmf.VariationalFit/1",
            **self._common_state(),
            "guide": {k: v.detach().cpu() for k, v in self.guide.state_dict().items()},
        }

    @classmethod
    def from_state(
        cls, state: dict[str, Any], device: str | torch.device | None = None
    ) -> VariationalFit:
        if state.get("format") != "bayesmf.VariationalFit/1":
            raise ValueError("not a bayesmf VariationalFit checkpoint")
        model = cls._rebuild_model(state)
        guide = MeanFieldGuide(model)
        guide.load_state_dict(state["guide"])
        if device is not None:
            model.to(device)
            guide.to(device)
        return cls(
            model,
            guide,
            state["history"],
            state["train_info"],
            state["settings"],
            state["fit_seconds"],
        )


def load(path: str | Path, device: str | torch.device | None = None) -> PosteriorFit:
    """Load a fit saved by ``save`` (safely: ``weights_only=True``): a
    :class:`VariationalFit` or a :class:`~bayesmf.inference.SampleFit`."""
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if str(state.get("format", "")).startswith("bayesmf.SampleFit"):
        from .gibbs import SampleFit

        return SampleFit.from_state(state, device=device)
    return VariationalFit.from_state(state, device=device)


# ---------------------------------------------------------------------- fitting
def _rmse_plugin(model: GaussianFactorModel, guide: MeanFieldGuide, data: Ratings) -> float:
    with torch.no_grad():
        z = guide.posterior_mean()
        pred = model.mean(z, data.rows, data.cols)
        return float(((pred - data.values) ** 2).mean().sqrt())


def _diverged(what: str, epoch: int, step: int, last_good: str) -> str:
    return (
        f"SVI diverged: {what} at epoch {epoch}, step {step}; last good checkpoint: "
        f"{last_good}. Try a smaller lr, gradient clipping or standardised ratings."
    )


def annealed_loss(
    elbo: TraceMeanField_ELBO,
    model: GaussianFactorModel,
    guide: MeanFieldGuide,
    data: Ratings,
    index: torch.Tensor | None = None,
    kl_weight: float = 1.0,
) -> torch.Tensor:
    """Negative ELBO with the KL term weighted: ``-(E_q[log p(x|z)] - kl_weight * KL(q||p))``.

    The guide runs under ``poutine.scale(kl_weight)``; :class:`TraceMeanField_ELBO` scales
    each site's analytic KL by the guide site's scale, while the likelihood (a model site)
    keeps its own scale. ``kl_weight = 1`` is the plain negative ELBO.
    """
    if not 0 < kl_weight <= 1:
        raise ValueError(f"kl_weight must be in (0, 1], got {kl_weight}")
    if kl_weight != 1.0:
        guide = pyro.poutine.scale(guide, scale=kl_weight)
    return elbo.differentiable_loss(model.model, guide, data, index)


def _train_info(train: Ratings) -> dict[str, Any]:
    return {
        "name": train.name,
        "shape": list(train.shape),
        "n": len(train),
        "row_ids": np.asarray(train.row_ids).tolist(),
        "col_ids": np.asarray(train.col_ids).tolist(),
        "scale": None if train.scale is None else list(train.scale),
    }


def fit_svi(
    model: GaussianFactorModel,
    train: Ratings,
    *,
    epochs: int = 200,
    batch_size: int | None = 10_000,
    lr: float = 0.02,
    final_lr: float = 0.002,
    num_particles: int = 1,
    clip_norm: float | None = 100.0,
    kl_warmup: int = 0,
    val: Ratings | None = None,
    patience: int | None = None,
    eval_every: int = 1,
    init_scale: float | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    progress: bool = True,
) -> VariationalFit:
    """Fit a model by SVI with a mean-field guide and return the fitted posterior.

    Parameters
    ----------
    model : GaussianFactorModel or DPStochasticBlockModel
        E.g. :class:`bayesmf.models.BayesianMF` or :class:`bayesmf.models.BayesianNNMF`.
        A :class:`bayesmf.models.DPStochasticBlockModel` is handed to
        :func:`bayesmf.inference.fit_sbm` (with ``epochs``, ``batch_size``, ``lr``,
        ``final_lr``, ``num_particles``, ``val``, ``seed``, ``device``, ``progress``), which
        returns an :class:`~bayesmf.inference.SBMFit`.
    train : Ratings or Network
        Training ratings of the model's shape (a network for the block model).
    epochs : int
        Passes over the training ratings.
    batch_size : int or None
        Ratings per minibatch (``None``: full batch). The likelihood is scaled by
        ``len(train) / batch_size``, so each step's ELBO estimate is unbiased.
    lr, final_lr : float
        Adam learning rate, decayed exponentially from ``lr`` to ``final_lr``.
    num_particles : int
        Monte Carlo samples of ``z`` per ELBO estimate.
    clip_norm : float or None
        Gradient norm clipping.
    kl_warmup : int
        Epochs over which the weight of the KL term rises linearly (per step) from
        ``1 / (kl_warmup * steps_per_epoch)`` to 1 ("deterministic warm-up", Sønderby et
        al. 2016); 0 switches it off. Mean-field VI of Bayesian neural networks tends to
        prune every unit at the start, when the KL term dominates a poorly fitted
        likelihood, and never recovers (:class:`bayesmf.models.BayesianNNMF` on
        MovieLens collapses to the biases or to the global mean without it). The objective
        is the true ELBO after the warm-up; ``elbo_history`` records the annealed one and
        ``history["kl_weight"]`` the weight of each epoch's last step.
    val : Ratings, optional
        Validation ratings: their plug-in RMSE is tracked; with ``patience`` the fit
        stops after that many evaluations without improvement, and the best guide is kept.
    eval_every : int
        Epochs between validation evaluations.
    init_scale : float, optional
        Initial posterior standard deviation of the real arrays.
    seed : int
        Seeds Pyro/torch (``pyro.set_rng_seed``), the initial guide and the minibatch order.
    device : str or torch.device, optional
        Where to fit (default: the model's device).
    checkpoint : path, optional
        File for checkpoints (written every ``checkpoint_every`` epochs and at the end).
    resume : bool
        Continue from ``checkpoint`` if it exists; the result equals an uninterrupted run
        with the same seed and options.
    stop_after : int, optional
        Stop (as if killed) after this many epochs of this call; for tests and for
        splitting long fits across jobs.
    progress : bool
        Show a tqdm bar with the ELBO and validation RMSE.

    Returns
    -------
    VariationalFit

    Raises
    ------
    FloatingPointError
        When the ELBO becomes NaN/inf; the message names the epoch and step and the last
        good checkpoint.

    Examples
    --------
    >>> from bayesmf import data, inference, models
    >>> R, truth = data.synthetic_ratings(n_rows=60, n_cols=40, rank=2, density=0.3,
    ...                                   noise=0.3, seed=0)
    >>> fit = inference.fit_svi(models.BayesianMF(60, 40, rank=2), R, epochs=30,
    ...                         batch_size=None, lr=0.05, progress=False)
    >>> fit.predict(R).shape
    torch.Size([720])
    """
    from ..models.sbm import DPStochasticBlockModel

    if isinstance(model, DPStochasticBlockModel):  # its own schedule: closed-form q(Z) steps
        from .sbm import fit_sbm

        if kl_warmup or checkpoint is not None or resume or stop_after is not None:
            raise ValueError(
                "kl_warmup/checkpoint/resume/stop_after are not supported for the block model"
            )
        return fit_sbm(  # type: ignore[return-value]
            model, train, epochs=epochs, batch_size=batch_size, lr=lr, final_lr=final_lr,
            num_particles=num_particles, val=val, seed=seed, device=device, progress=progress,
        )
    if not isinstance(model, GaussianFactorModel):
        raise TypeError(
            f"fit_svi fits bayesmf Gaussian factor models and the DP block model, got "
            f"{type(model).__name__} (DeepMF: inference.fit_deep_mf; MetaPriorMF: "
            "inference.meta_train)"
        )
    if epochs < 1 or (batch_size is not None and batch_size < 1) or lr <= 0 or final_lr <= 0:
        raise ValueError("epochs, batch_size, lr and final_lr must be positive")
    if kl_warmup < 0 or kl_warmup > epochs:
        raise ValueError(f"kl_warmup must be in [0, epochs={epochs}], got {kl_warmup}")
    if checkpoint is None and (resume or checkpoint_every):
        raise ValueError("resume/checkpoint_every need a checkpoint path")
    if device is not None:
        model.to(device)
    device = model.global_mean.device
    model.setup(train)
    train = train.to(device)
    if val is not None:
        model.check_data(val)
        val = val.to(device)
    n = len(train)
    bs = n if batch_size is None else min(batch_size, n)
    settings = {
        "epochs": epochs,
        "batch_size": bs,
        "lr": lr,
        "final_lr": final_lr,
        "num_particles": num_particles,
        "clip_norm": clip_norm,
        "kl_warmup": kl_warmup,
        "seed": seed,
        "patience": patience,
        "eval_every": eval_every,
        "device": str(device),
    }

    pyro.set_rng_seed(seed)
    guide = MeanFieldGuide(model, init_scale=init_scale, seed=seed)
    opt = torch.optim.Adam(guide.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=(final_lr / lr) ** (1 / epochs))
    gen = torch.Generator().manual_seed(seed)
    elbo = TraceMeanField_ELBO(num_particles=num_particles, max_plate_nesting=1)
    history: dict[str, list[float]] = {"elbo": [], "lr": [], "kl_weight": []}
    steps_per_epoch = math.ceil(n / bs)
    warmup_steps = kl_warmup * steps_per_epoch
    if val is not None:
        history["val_rmse"] = []
    best: dict[str, Any] = {"rmse": math.inf, "epoch": -1, "state": None, "bad": 0}
    start_epoch = 0
    ckpt_path = None if checkpoint is None else Path(checkpoint)
    if resume and ckpt_path is not None and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        if state["settings"] != settings:
            raise ValueError(
                f"checkpoint {ckpt_path} was written with other settings: "
                f"{state['settings']} vs {settings}"
            )
        guide.load_state_dict(state["guide"])
        opt.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
        torch.set_rng_state(state["torch_rng"])
        gen.set_state(state["gen"])
        history, best, start_epoch = state["history"], state["best"], state["epoch"] + 1
        log.info("resumed from %s at epoch %d", ckpt_path, start_epoch)

    def save_checkpoint(epoch: int) -> None:
        assert ckpt_path is not None
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = ckpt_path.with_suffix(ckpt_path.suffix + ".tmp")
        torch.save(
            {
                "epoch": epoch,
                "settings": settings,
                "guide": guide.state_dict(),
                "optim": opt.state_dict(),
                "sched": sched.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "gen": gen.get_state(),
                "history": history,
                "best": best,
            },
            tmp,
        )
        tmp.replace(ckpt_path)

    t0 = time.perf_counter()
    bar = tqdm(range(start_epoch, epochs), disable=not progress, desc="SVI", unit="epoch")
    last_good = "none" if ckpt_path is None or not ckpt_path.exists() else str(ckpt_path)
    epochs_run = 0
    stopped_early = False
    epoch = start_epoch - 1
    for epoch in bar:
        total = 0.0
        perm = torch.randperm(n, generator=gen).to(device)
        for step, idx in enumerate(perm.split(bs)):
            done = epoch * steps_per_epoch + step + 1
            beta = 1.0 if done >= warmup_steps else done / warmup_steps
            try:
                loss = annealed_loss(elbo, model, guide, train, idx, beta)
            except ValueError as err:  # Pyro's argument checks catch NaN parameters first
                if "Expected parameter" not in str(err):
                    raise
                raise FloatingPointError(
                    _diverged("NaN/inf parameters", epoch, step, last_good)
                ) from err
            if not torch.isfinite(loss):
                raise FloatingPointError(_diverged(f"ELBO {loss.item()}", epoch, step, last_good))
            opt.zero_grad()
            loss.backward()
            if clip_norm is not None:
                torch.nn.utils.clip_grad_norm_(guide.parameters(), clip_norm)
            opt.step()
            total += loss.item()
        history["elbo"].append(-total / (math.ceil(n / bs) * n))
        history["lr"].append(opt.param_groups[0]["lr"])
        history["kl_weight"].append(beta)
        sched.step()
        postfix = {"elbo/rating": f"{history['elbo'][-1]:.4f}"}
        if val is not None and (epoch + 1) % eval_every == 0:
            r = _rmse_plugin(model, guide, val)
            history["val_rmse"].append(r)
            postfix["val_rmse"] = f"{r:.4f}"
            if r < best["rmse"]:
                best = {
                    "rmse": r,
                    "epoch": epoch,
                    "bad": 0,
                    "state": {k: v.detach().clone() for k, v in guide.state_dict().items()},
                }
            else:
                best["bad"] += 1
        bar.set_postfix(postfix)
        epochs_run += 1
        if ckpt_path is not None and checkpoint_every and (epoch + 1) % checkpoint_every == 0:
            save_checkpoint(epoch)
            last_good = str(ckpt_path)
        if patience is not None and val is not None and best["bad"] >= patience:
            log.info(
                "early stop at epoch %d (best val RMSE %.4f at epoch %d)",
                epoch,
                best["rmse"],
                best["epoch"],
            )
            stopped_early = True
            break
        if stop_after is not None and epochs_run >= stop_after and epoch < epochs - 1:
            bar.close()
            log.info("stopping after %d epochs as asked (stop_after)", epochs_run)
            return VariationalFit(
                model,
                guide,
                history,
                _train_info(train),
                {**settings, "stopped_at_epoch": epoch},
                time.perf_counter() - t0,
            )
    bar.close()
    if ckpt_path is not None:
        save_checkpoint(epoch)
    if val is not None and best["state"] is not None:
        guide.load_state_dict(best["state"])
    settings = {
        **settings,
        "stopped_early": stopped_early,
        "best_epoch": best["epoch"] if val is not None else None,
    }
    return VariationalFit(
        model, guide, history, _train_info(train), settings, time.perf_counter() - t0
    )
