"""Stochastic variational inference for the library's factor models.

:func:`fit_svi` is the SVI engine: a mean-field guide built from the model's latent sites
(:class:`~bayesmf.inference.guides.MeanFieldGuide`), the ELBO with analytic KL terms (the
``O(batch)`` estimate :func:`~bayesmf.inference.objectives.local_elbo_loss`; in one process
rows drawn one by one get sparse gradients stepped by a lazy Adam, so that a step's cost does
not grow with the matrix; under ``torch.distributed`` each process estimates it from its
shard and the dense gradients are averaged), minibatches of
observations with the exact ELBO scaling and a KL warm-up (at least five ratings per row of
the longest array a step draws, :func:`minibatch_size`: the arrays are then drawn whole,
and rows one by one only when ``min_ratings_per_row`` is lowered), run by the one training loop
(:func:`bayesmf.inference.loop.train`: learning-rate decay, clipping, validation, patience,
checkpoints, divergence errors, progress). It fits any
:class:`~bayesmf.models.base.FactorModel` (ratings models on :class:`~bayesmf.data.Ratings`,
network models on :class:`~bayesmf.data.Pairs`) and the block model (whose closed-form q(Z)
steps are its own engine, :func:`~bayesmf.inference.fit_sbm`). It returns a
:class:`VariationalFit`, which answers the one result interface of :mod:`.fits`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyro
import torch
from pyro.infer import TraceMeanField_ELBO

from ..models.base import FactorModel, GaussianFactorModel
from . import distributed, files
from .collapsed import CollapsedRowsGuide, collapsed_elbo_terms, user_batches
from .fits import data_info
from .guides import MeanFieldGuide, local_axis
from .loop import show_progress
from .loop import train as run_loop
from .mixture import MixtureFit
from .objectives import local_elbo_loss
from .posterior import PosteriorFit
from .processes import run_chains
from .threads import uses_fit_threads

__all__ = ["fit_svi", "VariationalFit", "annealed_loss", "svi_defaults"]

log = logging.getLogger(__name__)


@dataclass
class VariationalFit(PosteriorFit):
    """A fitted variational posterior ``q(z)`` of a model.

    Attributes
    ----------
    model : FactorModel
        The model (with its offset set from the training data).
    guide : MeanFieldGuide
        The fitted variational family.
    history : dict of lists
        Per epoch: ``elbo`` (per observation; annealed during a KL warm-up), ``kl_weight``,
        ``lr``; per evaluation: ``val`` (validation RMSE, or negative log-likelihood per
        observation for non-Gaussian models).
    train_info : dict
        Shape, original ids, scale and fingerprint of the training data.
    settings : dict
        The options the fit ran with.
    fit_seconds : float
        Wall-clock time of the optimisation.
    """

    model: FactorModel
    guide: MeanFieldGuide
    history: dict[str, list[float]] = field(default_factory=dict)
    train_info: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    fit_seconds: float = 0.0

    kind = "VariationalFit"

    @property
    def inference_name(self) -> str:  # type: ignore[override]
        if isinstance(self.guide, CollapsedRowsGuide):
            return "SVI collapsed rows"
        return "SVI row-covariance" if self.guide.row_covariance else "SVI mean-field"

    @property
    def elbo_history(self) -> list[float]:
        """ELBO per observation after each epoch."""
        return self.history.get("elbo", [])

    def _draw(self, num_samples: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return self.guide.sample_latents(num_samples, generator=generator)

    def _draw_for(self, data: Any, num_samples: int, generator: torch.Generator
                  ) -> dict[str, torch.Tensor]:
        if isinstance(self.guide, CollapsedRowsGuide):  # only the users data asks about
            return self.guide.sample_latents(num_samples, generator=generator,
                                             users=torch.unique(data.rows.long()))
        return self._draw(num_samples, generator)

    def _payload(self) -> dict[str, Any]:
        return {
            **self._model_payload(),
            **self._common_payload(),
            "guide": {k: v.detach().cpu() for k, v in self.guide.state_dict().items()},
        }

    @classmethod
    def _from_payload(
        cls, payload: dict[str, Any], device: str | torch.device | None = None
    ) -> VariationalFit:
        model = cls._model_from(payload)
        state = payload["guide"]
        guide: MeanFieldGuide
        row_covariance = any(k.startswith("offdiag.") for k in state)
        if "train_rows" in state:  # collapsed: the users' conditionals need the ratings
            train = SimpleNamespace(rows=state["train_rows"], cols=state["train_cols"],
                                    values=state["train_values"])
            guide = CollapsedRowsGuide(model, train, row_covariance=row_covariance)
        else:
            guide = MeanFieldGuide(model, row_covariance=row_covariance)
        guide.load_state_dict(state)
        if device is not None:
            model.to(device)
            guide.to(device)
        return cls(model, guide, **cls._common_from(payload))


#: models whose variational posterior has a dedicated engine with fit_svi's options, by the
#: model's class name -> "module:function" (imported on first use)
DEDICATED_ENGINES = {"DPStochasticBlockModel": "bayesmf.inference.sbm:fit_sbm"}


def dedicated_engine(model: Any) -> Any:
    """The dedicated SVI engine of ``model``'s class (or of a base class), if it has one."""
    import importlib

    for cls in type(model).__mro__:
        target = DEDICATED_ENGINES.get(cls.__name__)
        if target is not None:
            module, name = target.split(":")
            return getattr(importlib.import_module(module), name)
    return None


#: ``fit_svi``'s default ``min_ratings_per_row``: minibatches hold at least five ratings per
#: row of the longest array a step draws, on average (the items with ``collapse_rows``; the
#: users or the items of the mean-field guide; half the nodes of a network, each pair having
#: two ends). With one rating per row a batch, collapsed fits on a synthetic 10,000 x 10,000
#: matrix explained the data by noise (1.13 for a true 0.5); mean-field ones fitted worse in
#: three times the CPU (``benchmarks/results/minibatch.md``).
RATINGS_PER_ROW = 5

#: fewest optimiser steps of a fit with the default number of epochs
MIN_DEFAULT_STEPS = 500


def svi_defaults(model: Any) -> dict[str, Any]:
    """The settings ``fit_svi`` uses for ``model`` when the caller gives none.

    Tuned on a validation part of MovieLens-100K's training data (``benchmarks/
    table1_ml100k.py``): Bayesian MF by the mean-field guide reaches test RMSE 0.887 in
    about 4 s of one core (the same schedule with the users integrated out, the default:
    0.8951 on 5 random splits against mean-field's 0.8986, ``svi_gap.md``); the linear
    Bayesian NNMF (VI(0)) 0.893 in about 5 s. Deep BNNs need the KL warm-up (see
    ``kl_warmup``) and a longer run: on the validation carve VI(3) reaches RMSE 0.907 after
    150 epochs with 20 of warm-up, against 0.912 with 50 and 0.920 after 60 epochs (VI(0):
    0.918); VI(3)+S 0.910 with 50 of warm-up, against 0.915 with 20 and 0.916 after 60
    epochs (``benchmarks/deep_vi.py --val``); with side features they take a larger step
    (0.914 at lr 0.05 against 0.921 at 0.03 after 60 epochs). Other models get a generic
    schedule. Deep BNNs are fitted from three seeds by default (``restarts``: each seed
    ends in its own mode, and the equal-weight mixture of the three lowered the test RMSE on
    5/5 random splits, VI(3) 0.8989 -> 0.8950 and VI(3)+S 0.9038 -> 0.8946,
    ``benchmarks/deep_vi.py``), at three times the cost; ``restarts=1`` gives one
    :class:`VariationalFit` (with its ``guide``) instead of a
    :class:`~bayesmf.inference.mixture.MixtureFit`.

    ``min_steps`` (default ``MIN_DEFAULT_STEPS``, 500) is the fewest optimiser steps of a
    default-length fit, so that a small data set, one batch an epoch, still converges. The
    linear Bayesian NNMF takes 225, its tuned schedule on ML-100K (25 epochs of 9 steps):
    stretched to 500 steps (56 epochs) it was no better on 5 random splits (test RMSE
    0.9009 against 0.9003) at twice the time (``benchmarks/defaults_speed.py``).
    """
    name = type(model).__name__
    if name == "BayesianMF":
        return {"epochs": 60, "lr": 0.1, "final_lr": 0.005, "kl_warmup": 0}
    if name == "BayesianNNMF":
        if not getattr(model, "hidden", ()):
            return {"epochs": 25, "lr": 0.1, "final_lr": 0.01, "kl_warmup": 8,
                    "min_steps": 225}
        side = any(getattr(model, f, None) is not None
                   for f in ("item_features", "user_features"))
        return {"epochs": 150, "lr": 0.05 if side else 0.03, "final_lr": 0.002,
                "kl_warmup": 50 if side else 20, "restarts": 3}
    if name == "LatentFeatureNetwork":  # tuned on a validation carve of NIPS234 (links.py)
        return {"epochs": 3000, "lr": 0.08, "final_lr": 0.008, "kl_warmup": 1000}
    return {"epochs": 100, "lr": 0.05, "final_lr": None, "kl_warmup": 0}


def default_epochs(model: Any, n: int, batch_size: int | None) -> int:
    """Epochs of a default-length fit of ``model`` on ``n`` observations: the model's
    (:func:`svi_defaults`), raised so that the fit takes at least its ``min_steps``.

    Examples
    --------
    >>> from bayesmf import models
    >>> default_epochs(models.BayesianMF(943, 1682), 90_000, 10_000)  # 9 steps an epoch
    60
    >>> default_epochs(models.BayesianNNMF(943, 1682, hidden=()), 90_000, 10_000)
    25
    >>> default_epochs(models.BayesianMF(12, 10), 60, None)  # one step an epoch
    500
    """
    defaults = svi_defaults(model)
    bs = n if batch_size is None else min(batch_size, max(n, 1))
    per_epoch = max(1, math.ceil(n / max(bs, 1)))
    min_steps = defaults.get("min_steps", MIN_DEFAULT_STEPS)
    return max(defaults["epochs"], math.ceil(min_steps / per_epoch))


def _val_score(model: FactorModel, guide: MeanFieldGuide, data: Any) -> float:
    """Plug-in validation score at the posterior mean: RMSE for Gaussian models, negative
    log-likelihood per observation otherwise (lower is better)."""
    with torch.no_grad():
        z = guide.posterior_mean()
        if isinstance(model, GaussianFactorModel):
            pred = model.expected(z, data.rows, data.cols)
            return float(((pred - data.values) ** 2).mean().sqrt())
        return float(-model.log_likelihood(z, data.rows, data.cols, data.values).mean())


def annealed_loss(
    elbo: TraceMeanField_ELBO,
    model: FactorModel,
    guide: MeanFieldGuide,
    data: Any,
    index: torch.Tensor | None = None,
    kl_weight: float = 1.0,
    likelihood_scale: float = 1.0,
) -> torch.Tensor:
    """Negative ELBO with the KL term weighted: ``-(E_q[log p(x|z)] - kl_weight * KL(q||p))``.

    The guide runs under ``poutine.scale(kl_weight)``; :class:`TraceMeanField_ELBO` scales
    each site's analytic KL by the guide site's scale, while the likelihood (a model site)
    keeps its own scale, times ``likelihood_scale`` (the number of processes in a
    data-parallel fit, where ``data`` is one process's shard).
    ``kl_weight = likelihood_scale = 1`` is the plain negative ELBO.
    """
    if not 0 < kl_weight <= 1:
        raise ValueError(f"kl_weight must be in (0, 1], got {kl_weight}")
    if kl_weight != 1.0:
        guide = pyro.poutine.scale(guide, scale=kl_weight)
    fn = distributed.scale_likelihood(model.model, likelihood_scale)
    return elbo.differentiable_loss(fn, guide, data, index)


def minibatch_size(model: Any, n: int, batch_size: int | None, collapse_rows: bool = False,
                   per_row: float = RATINGS_PER_ROW) -> int:
    """Observations per minibatch of a fit on ``n`` of them: ``batch_size`` (``None``: all)
    raised to ``per_row`` (``RATINGS_PER_ROW``) per row of the longest array a step draws,
    at most ``n``.

    Examples
    --------
    >>> from bayesmf import models
    >>> minibatch_size(models.BayesianMF(943, 1682), 90_000, 10_000)  # MovieLens-100K
    10000
    >>> minibatch_size(models.BayesianMF(10_000, 10_000), 900_000, 10_000)
    50000
    """
    bs = n if batch_size is None else int(batch_size)
    if collapse_rows:  # the users are integrated out; the items drawn whole
        longest = float(model.n_cols)
    else:
        length = {"user": model.n_rows, "item": model.n_cols, "node": model.n_rows / 2}
        longest = max((length[a] for a in map(local_axis, model.latent_specs())
                       if a is not None), default=0.0)
    return min(n, max(bs, math.ceil(per_row * longest)))


def _restart_worker(job: tuple[FactorModel, Any, dict[str, Any], int, int]) -> dict[str, Any]:
    """Fit one restart in a worker process; returns the fit's tensors (its payload)."""
    model, train, kw, seed, threads = job
    torch.set_num_threads(threads)
    return fit_svi(model, train, seed=seed, restarts=1, **kw)._payload()


def _fit_restarts(
    model: FactorModel, train: Any, restarts: int, seed: int, parallel: bool | None,
    kw: dict[str, Any],
) -> MixtureFit:
    """The equal-weight mixture of the fits from seeds ``seed .. seed + restarts - 1``, run
    side by side in worker processes where :func:`~.processes.use_processes` says so."""
    device = torch.device(kw["device"]) if kw["device"] is not None else model.device
    if distributed.world_size() > 1:  # under torchrun: the restarts one after the other
        parallel = False
    t0 = time.perf_counter()
    quiet = {**kw, "progress": False}
    fits, processes = run_chains(
        restarts, parallel, device, _restart_worker,
        lambda r, threads: (model, train, quiet, seed + r, threads),
        lambda r: fit_svi(model, train, seed=seed + r, restarts=1, **kw),
        progress=show_progress(kw["progress"]), desc="SVI restarts",
    )
    if processes:  # the workers' fits, each on its copy of the model
        model.setup(train)  # the caller's model set up as by a fit in this process
        fits = [VariationalFit._from_payload(p) for p in fits]
    mixture = MixtureFit(fits)
    mixture.settings.update(parallel=processes,
                            wall_seconds=round(time.perf_counter() - t0, 3))
    return mixture


@uses_fit_threads
def fit_svi(
    model: FactorModel,
    train: Any,
    *,
    epochs: int | None = None,
    batch_size: int | None = 10_000,
    lr: float | None = None,
    final_lr: float | None = None,
    num_particles: int = 1,
    clip_norm: float | None = 100.0,
    kl_warmup: int | None = None,
    val: Any = None,
    patience: int | None = None,
    eval_every: int = 1,
    init_scale: float | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int | None = None,
    resume: bool = True,
    stop_after: int | None = None,
    progress: bool | None = None,
    restarts: int | None = None,
    row_covariance: bool = False,
    collapse_rows: bool | None = None,
    parallel: bool | None = None,
    min_ratings_per_row: float = RATINGS_PER_ROW,
) -> VariationalFit | MixtureFit:
    """Fit a model by SVI with a mean-field guide and return the fitted posterior.

    Parameters
    ----------
    model : FactorModel or DPStochasticBlockModel
        E.g. :class:`bayesmf.models.BayesianMF`, :class:`bayesmf.models.BayesianNNMF`. A
        :class:`bayesmf.models.DPStochasticBlockModel` is fitted by its own engine,
        :func:`bayesmf.inference.fit_sbm` (its q(Z) step is closed-form), with the same
        options.
    train : Ratings or Pairs
        Training observations of the model's shape (a network for the block model).
    epochs : int, optional
        Passes over the training data (default: the model's, :func:`svi_defaults`, and at
        least enough for the model's ``min_steps`` (``MIN_DEFAULT_STEPS``, 500, unless
        :func:`svi_defaults` says otherwise) optimiser steps: a small data set in
        one batch takes one step an epoch; on a 12 x 10 matrix 60 steps leave the noise
        posterior at 0.377 against the exact 0.292, 500 steps reach the mean-field optimum,
        0.307).
    batch_size : int or None
        Observations per minibatch (``None``: full batch), raised where it is smaller than
        ``min_ratings_per_row`` per row of the longest user or item array a step draws
        (:func:`minibatch_size`; the fit's ``settings["batch_size"]`` says what it used). The
        likelihood is scaled by ``len(train) / batch_size``, so each step's ELBO estimate is
        unbiased.
    lr, final_lr : float, optional
        Adam learning rate (in one process the rows of the user/item arrays are stepped by
        :class:`~bayesmf.inference.loop.LazyAdam`, Adam at the cost of the rows a minibatch
        drew), decayed exponentially per epoch to ``final_lr``. Without ``lr``
        both are the model's defaults (:func:`svi_defaults`); with ``lr`` only, ``final_lr``
        is ``lr / 10``.
    num_particles : int
        Monte Carlo samples of ``z`` per ELBO estimate.
    clip_norm : float or None
        Gradient norm clipping.
    kl_warmup : int, optional
        Epochs over which the weight of the KL term rises linearly (per step) from
        ``1 / (kl_warmup * steps_per_epoch)`` to 1 ("deterministic warm-up", Sønderby et
        al. 2016); 0 switches it off; default: the model's (:func:`svi_defaults`).
        Mean-field VI of Bayesian neural networks tends to prune every unit at the start,
        when the KL term dominates a poorly fitted likelihood, and never recovers.
        ``history["elbo"]`` records the annealed ELBO and ``history["kl_weight"]`` the
        weight of each epoch's last step; only states after the warm-up (the true ELBO)
        can be kept as the best.
    val : Ratings or Pairs, optional
        Validation data: their plug-in score (RMSE, or negative log-likelihood for
        non-Gaussian models) is tracked every ``eval_every`` epochs; the best state after
        the warm-up is kept; with ``patience`` the fit stops after that many evaluations
        without improvement.
    init_scale : float, optional
        Initial posterior standard deviation of the real arrays.
    row_covariance : bool
        A full covariance for each user's and each item's latent vector (rows still
        independent; :class:`~bayesmf.inference.guides.MeanFieldGuide` ``row_covariance``)
        instead of the fully factorised guide. Single process only.
    collapse_rows : bool, optional
        Integrate each user's entries (``U`` and the user biases of a
        :class:`~bayesmf.models.BayesianMF` with the Gaussian likelihood) out exactly
        instead of giving them a factor of ``q``
        (:class:`~bayesmf.inference.collapsed.CollapsedRowsGuide`): the family is
        ``q(items, hyper-parameters) p(users | the rest, data)``, whose ELBO is higher than
        the mean-field one and whose noise posterior is closer to the exact one. Default
        (``None``): on wherever the model has such rows (its
        :attr:`~bayesmf.models.base.FactorModel.collapsible_rows`), in one process with one
        particle; ``False`` fits the mean-field guide. On MovieLens-100K (5 random splits,
        ``benchmarks/results/svi_gap.md``) it gave test RMSE 0.8951 against mean-field's
        0.8986, noise 0.806 against 0.831 (Gibbs: 0.783) and a higher ELBO, for 1.4 times
        the CPU time; its epochs grow linearly with the data (exponent 1.04,
        ``benchmarks/results/scaling.md``). Minibatches
        are then of whole users (about ``batch_size`` ratings each, and at least five per
        item on average, ``min_ratings_per_row``); the other arrays are drawn whole at every
        step. The fit keeps the training ratings (its draws of the users depend on them).
        Single process, one particle.
    seed : int
        Seeds Pyro/torch, the initial guide and the minibatch order.
    device : str or torch.device, optional
        Where to fit (default: the model's device).
    checkpoint, checkpoint_every, resume
        Checkpoint file (written every ``checkpoint_every`` epochs and at the end); an
        existing one is resumed from (``resume=True``) when it was written for the same data
        and settings, else refused with an error naming what differs; ``resume=False``
        starts afresh and overwrites it. The result equals an uninterrupted run.
    stop_after : int, optional
        Stop (as if killed) after this many epochs of this call.
    progress : bool, optional
        Show a tqdm bar (default: only in a terminal).
    restarts : int, optional
        Fits from seeds ``seed, seed + 1, ...``; more than one returns their equal-weight
        mixture (:class:`~bayesmf.inference.mixture.MixtureFit`: predictions average over
        the restarts, each restart is an ArviZ chain). Not with ``checkpoint``. Default:
        the model's (:func:`svi_defaults`: 3 for a Bayesian NNMF with hidden layers, 1
        otherwise, and 1 with ``checkpoint``).

    parallel : bool, optional
        Fit the restarts in worker processes, as many at once as there are cores (forked
        on Linux, each single-threaded as a fit is by default), like ``fit_gibbs``'s chains.
        Default: when there are several restarts, several cores and the device is the CPU;
        ``False`` fits them one after the other, each with its progress bar (in
        processes, a bar counts the finished restarts). The fits do not
        depend on it (each restart is seeded by its number). Three restarts of VI(3) on
        MovieLens-100K take two thirds of the time on two cores.
    min_ratings_per_row : float
        The fewest ratings per row of the longest array a step draws, on average (default
        ``RATINGS_PER_ROW``, 5): ``batch_size`` is raised to that. With batches of about one
        rating per row most rows get one rating or none a step and the fit drifts towards
        explaining the data by noise. Mean-field fits of Bayesian MF with the default
        batch (``benchmarks/results/minibatch.md``): on 10,000 x 10,000 synthetic ratings
        (1e6; batch raised to 50,000) held-out RMSE 0.5677 against 0.5703 and noise 0.527
        against 0.559 (true: 0.5) in 0.38 of the CPU (20.9 against 54.7 s); at 1e7
        (500,000) 0.5384 against 0.5610 at equal CPU; on Jester (124,915) 3.9872 against
        3.9830, a higher ELBO, in 0.27 of the CPU. On MovieLens-100K the default 10,000
        stands.
        ``0`` keeps ``batch_size`` as given: arrays longer than a batch are then drawn row by
        row with sparse gradients, so that a step costs its batch, not the whole matrix (for
        data whose batches at the floor would not fit in memory).
    Returns
    -------
    VariationalFit or MixtureFit

    Notes
    -----
    Under ``torch.distributed`` (launched by ``torchrun``; see
    :mod:`~bayesmf.inference.distributed` and ``examples/distributed_svi.py``) every process
    passes the same ``train`` and seed; each one fits on its :func:`~bayesmf.inference.
    distributed.shard` only (each epoch splits the shard into the same number of steps as a
    single process would): it estimates the ELBO from its minibatch as if its shard were
    all of the data (:func:`~bayesmf.inference.objectives.local_elbo_loss`, likelihood
    scaled by ``n_p / B_p`` for shard size ``n_p`` and minibatch ``B_p``, each row's KL
    shared out among its ratings in the shard) with the likelihood counted ``world_size``
    times, so that the average of the processes' estimates is an unbiased estimate of the
    full ELBO; the gradients are averaged, so the processes take identical steps. With
    ``batch_size=None`` the fit equals a single-process one up to rounding. Rank 0 writes
    the checkpoints; every process returns the same fit.

    Raises
    ------
    FloatingPointError
        When the ELBO or a parameter becomes NaN/inf; the message names the epoch, the step
        and the last good checkpoint.

    Examples
    --------
    >>> from bayesmf import data, inference, models
    >>> R, truth = data.synthetic_ratings(n_rows=60, n_cols=40, rank=2, density=0.3,
    ...                                   noise=0.3, seed=0)
    >>> fit = inference.fit_svi(models.BayesianMF(60, 40, rank=2), R, epochs=30,
    ...                         batch_size=None, lr=0.05)
    >>> fit.predict(R).shape
    torch.Size([720])
    """
    if restarts is None:
        restarts = 1 if checkpoint is not None else svi_defaults(model).get("restarts", 1)
    if restarts != 1:
        if not (isinstance(restarts, int) and restarts >= 1):
            raise ValueError(f"restarts must be a positive integer, got {restarts!r}")
        if dedicated_engine(model) is not None:
            raise ValueError(f"restarts is for factor models; {type(model).__name__} has its "
                             "own (fit_sbm(..., n_restarts=))")
        if checkpoint is not None:
            raise ValueError("restarts > 1 cannot share one checkpoint file: fit each seed "
                             "with its own checkpoint and build MixtureFit from the fits")
        kw = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "final_lr": final_lr,
              "num_particles": num_particles, "clip_norm": clip_norm, "kl_warmup": kl_warmup,
              "val": val, "patience": patience, "eval_every": eval_every,
              "init_scale": init_scale, "device": device, "progress": progress,
              "row_covariance": row_covariance, "collapse_rows": collapse_rows,
              "min_ratings_per_row": min_ratings_per_row}
        return _fit_restarts(model, train, restarts, seed, parallel, kw)
    dedicated = dedicated_engine(model)
    if dedicated is not None:  # e.g. the block model: closed-form q(Z) steps
        given = {"epochs": epochs, "lr": lr, "final_lr": final_lr, "kl_warmup": kl_warmup}
        return dedicated(  # type: ignore[return-value]
            model, train, batch_size=batch_size, num_particles=num_particles,
            clip_norm=clip_norm, val=val, patience=patience, eval_every=eval_every, seed=seed,
            device=device, checkpoint=checkpoint, checkpoint_every=checkpoint_every,
            resume=resume, stop_after=stop_after, progress=progress,
            **{k: v for k, v in given.items() if v is not None},
        )
    if not isinstance(model, FactorModel):
        raise TypeError(
            f"fit_svi fits bayesmf factor models and the DP block model, got "
            f"{type(model).__name__} (DeepMF: inference.fit_deep_mf; MetaPriorMF: "
            "inference.meta_train)"
        )
    defaults = svi_defaults(model)
    n = len(train)
    world = distributed.world_size()
    if collapse_rows is None:  # the default: users integrated out wherever the model can
        collapse_rows = bool(getattr(model, "collapsible_rows", ())) and world == 1 and (
            num_particles == 1)
    if batch_size is not None and batch_size < 1:
        raise ValueError("epochs and batch_size must be positive")
    if not min_ratings_per_row >= 0:
        raise ValueError(f"min_ratings_per_row must be >= 0, got {min_ratings_per_row}")
    bs = minibatch_size(model, n, batch_size, collapse_rows, min_ratings_per_row)
    if batch_size is not None and bs > batch_size:
        log.info("batch_size raised from %d to %d: at least %g ratings per row drawn at "
                 "each step on average (min_ratings_per_row)", batch_size, bs,
                 min_ratings_per_row)
    if epochs is None:  # the model's epochs, and at least its min_steps steps
        epochs = default_epochs(model, n, bs)
    if lr is None:
        lr = defaults["lr"]
        final_lr = defaults["final_lr"] if final_lr is None else final_lr
    if kl_warmup is None:  # the default warm-up is the same share of a shorter or longer fit
        kl_warmup = round(defaults["kl_warmup"] * epochs / defaults["epochs"])
    if epochs < 1:
        raise ValueError("epochs and batch_size must be positive")
    if kl_warmup < 0 or kl_warmup > epochs:
        raise ValueError(f"kl_warmup must be in [0, epochs={epochs}], got {kl_warmup}")
    if patience is not None and val is None:
        raise ValueError("patience (early stopping) needs validation data: pass val=")
    if device is not None:
        model.to(device)
    device = model.device
    model.setup(train)
    train = train.to(device)
    if val is not None:
        model.check_data(val)
        val = val.to(device)
    # ---- data parallel: this process's shard (the whole data without torch.distributed)
    local = distributed.shard(train)
    if world > 1 and n // world < math.ceil(n / bs):
        raise ValueError(
            f"batch_size {bs} with {world} processes leaves empty minibatches: each process's "
            f"{n // world} ratings must fill {math.ceil(n / bs)} steps per epoch"
        )
    settings = {
        "engine": "svi", "model": type(model).__name__, "model_config": model.config(),
        "epochs": epochs, "batch_size": bs, "lr": lr, "final_lr": final_lr,
        "num_particles": num_particles, "clip_norm": clip_norm, "kl_warmup": kl_warmup,
        "seed": seed, "patience": patience, "eval_every": eval_every,
        "init_scale": init_scale, "validated": val is not None,
        "row_covariance": bool(row_covariance), "collapse_rows": bool(collapse_rows),
        "min_ratings_per_row": min_ratings_per_row,
        # one process: rows of the local arrays stepped by a lazy Adam (O(batch) steps)
        "local_optimizer": "lazy_adam (axes longer than a batch)" if world == 1 else "adam",
    }
    if world > 1:
        settings["world_size"] = world
    if collapse_rows and (world > 1 or num_particles != 1):
        raise ValueError("collapse_rows is for single-process fits with one particle")
    pyro.set_rng_seed(seed)
    guide: MeanFieldGuide
    if collapse_rows:
        guide = CollapsedRowsGuide(model, train, init_scale=init_scale, seed=seed,
                                   row_covariance=row_covariance)
        dense_params, sparse_params = list(guide.parameters()), []
        n_active = int((torch.bincount(train.rows.long(), minlength=model.n_rows) > 0).sum())
        # the items are drawn whole at every step: a batch of fewer ratings than a few per
        # item starves their gradients while the hyper-parameters see every rating
        users_per_batch = max(1, round(n_active * bs / n))
        steps_per_epoch = math.ceil(n_active / users_per_batch)
        settings["users_per_batch"] = users_per_batch
        settings["local_optimizer"] = "adam (users integrated out)"
    else:
        guide = MeanFieldGuide(model, init_scale=init_scale, seed=seed,
                               sparse_grads=world == 1, row_covariance=row_covariance)
        # arrays no longer than a batch are drawn whole at every step (dense gradients, one
        # fused Adam); longer ones row by row (sparse gradients, LazyAdam)
        dense_params, sparse_params = guide.parameter_groups(whole_rows=bs)
        if world == 1 and not sparse_params:  # (the usual case at min_ratings_per_row)
            settings["local_optimizer"] = "adam (every array drawn whole)"
        steps_per_epoch = math.ceil(n / bs)
    gen = torch.Generator().manual_seed(seed)
    warmup_steps = kl_warmup * steps_per_epoch
    perm: list[Any] = []
    beta = [1.0]

    def step(epoch: int, s: int) -> torch.Tensor:
        if collapse_rows:
            if s == 0:
                perm[:] = user_batches(train.rows, model.n_rows, users_per_batch, gen)
            done = epoch * steps_per_epoch + s + 1
            beta[0] = 1.0 if done >= warmup_steps else done / warmup_steps
            users, index = perm[s]
            assert isinstance(guide, CollapsedRowsGuide)
            loss = collapsed_elbo_terms(guide, train, users, index, n_active).loss(beta[0])
            loss.backward()
            return loss.detach()
        if s == 0 and world == 1:
            perm[:] = list(torch.randperm(n, generator=gen).to(device).split(bs))
        elif s == 0:  # the same number of steps on every process
            perm[:] = list(torch.randperm(len(local), generator=gen).to(device)
                           .tensor_split(steps_per_epoch))
        done = epoch * steps_per_epoch + s + 1
        beta[0] = 1.0 if done >= warmup_steps else done / warmup_steps
        # O(batch): only the batch's rows and columns are drawn (data-parallel: this
        # process's shard stands for all of the data, its likelihood counted world times)
        loss = local_elbo_loss(model, guide, local, perm[s], beta[0], num_particles,
                               whole_rows=bs, likelihood_scale=float(world))
        loss.backward()
        return loss.detach()

    def on_epoch(epoch: int) -> dict[str, float]:
        return {"kl_weight": beta[0]}

    fingerprint = files.fingerprint(train)
    res = run_loop(
        step, {"guide": guide}, epochs=epochs, steps_per_epoch=steps_per_epoch, lr=lr,
        final_lr=final_lr, params=dense_params, sparse_params=sparse_params,
        clip_norm=clip_norm, on_epoch=on_epoch,
        evaluate=None if val is None else (lambda: _val_score(model, guide, val)),
        eval_every=eval_every, patience=patience, select_after=kl_warmup,
        generators=[gen], checkpoint=checkpoint, checkpoint_every=checkpoint_every,
        resume=resume, fingerprint=fingerprint, settings=settings, stop_after=stop_after,
        progress=progress, desc="SVI", engine="SVI", data_parallel=world > 1,
    )
    history = dict(res.history)
    history["elbo"] = [-x / n for x in history.pop("loss")]
    info = {**data_info(train), "fingerprint": fingerprint}
    settings = {**settings, "stopped_early": res.stopped_early, "finished": res.finished,
                "best_epoch": res.best_epoch, "epochs_run": res.epochs_run}
    guide.sparse_grads = False  # (a fitted guide's gradients, if anyone asks, are dense)
    return VariationalFit(model, guide, history, info, settings, res.seconds)
