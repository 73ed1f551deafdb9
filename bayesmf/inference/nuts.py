"""NUTS for any model of the library: its exact posterior on small data, by Pyro's sampler.

:func:`fit_svi` fits a mean-field ``q`` to any model and :func:`fit_gibbs` samples
:class:`~bayesmf.models.BayesianMF` by conjugate blocks; :func:`fit_nuts` samples the joint
posterior of any model whose latent sites are continuous (``BayesianMF``, ``BayesianNNMF``,
``LatentFeatureNetwork``, ...) with the No-U-Turn sampler of Pyro (``pyro.infer.NUTS``,
Hoffman & Gelman 2014) on the model's full-data log density, positive sites on the log
scale. Where its chains mix, nothing is approximated beyond Monte Carlo error: on a small
``BayesianMF`` it is the gold standard of ``tests/test_gold_standard.py``. On the NIPS234
network (``benchmarks/links.py``) the latent-feature model by NUTS ranks held-out links a
little better than by mean-field SVI (AUC 0.935 against 0.933, average precision 0.730
against 0.675), although each chain, like each SVI restart, stays in one of the posterior's
modes (R-hat of the logits well above 1.01, which the warning reports).

Cost: every leapfrog step evaluates the gradient of the whole log density (all ratings or
pairs), and a draw takes up to ``2 ** max_tree_depth`` of them, so NUTS is for hundreds to a
few thousand rows (NIPS234's 27,000 pairs: about 1.3 ms a gradient with the JIT-compiled
potential, 2-3 minutes a chain of 300 + 300 at depth 7 on one core). Chains run in parallel
processes when there are cores for them (as :func:`fit_gibbs`'s), each with its own warm-up
(step size and diagonal mass matrix adaptation), chain ``c`` seeded with ``seed + c``.

The result is a :class:`~bayesmf.inference.SampleFit`, the same type as Gibbs returns: the
same ``predict``, ``predict_interval``, ``log_likelihood``, ``to_inference_data`` and file
format, with ``fit.inference_name == "NUTS"``.
"""

from __future__ import annotations

import logging
import time
import warnings
from typing import Any

import numpy as np
import pyro
import torch
from pyro.infer import MCMC, NUTS

from ..models.base import FactorModel
from . import files
from .fits import data_info
from .gibbs import SampleFit, chain_agreement
from .loop import show_progress
from .processes import run_chains
from .threads import uses_fit_threads

__all__ = ["fit_nuts"]

log = logging.getLogger(__name__)


def _run_chain(
    model: FactorModel, train: Any, opts: dict[str, Any], chain: int, progress: bool
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """One chain: its kept draws ``(num_samples, *shape)`` and its diagnostics."""
    pyro.set_rng_seed(opts["seed"] + chain)
    kernel = NUTS(
        model.model,
        max_tree_depth=opts["max_tree_depth"],
        target_accept_prob=opts["target_accept"],
        jit_compile=opts["jit"],
        ignore_jit_warnings=True,
    )
    mcmc = MCMC(kernel, num_samples=opts["num_samples"], warmup_steps=opts["warmup"],
                num_chains=1, disable_progbar=not progress)
    with warnings.catch_warnings():  # torch 2.x deprecates jit.trace, Pyro's JIT uses it
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="torch.jit")
        mcmc.run(train)
    draws = {k: v.detach().float() for k, v in mcmc.get_samples().items()}
    diag = mcmc.diagnostics()
    divergences = sum(len(v) for v in diag.get("divergences", {}).values())
    accept = float(np.mean(list(diag.get("acceptance rate", {"": float("nan")}).values())))
    pyro.clear_param_store()
    return draws, {"divergences": float(divergences), "accept": accept,
                   "step_size": float(kernel.step_size)}


def _chain_worker(
    job: tuple[FactorModel, Any, dict[str, Any], int, int],
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """Run one chain in a worker process (CPU, ``threads`` threads)."""
    model, train, opts, chain, threads = job
    torch.set_num_threads(threads)
    return _run_chain(model, train, opts, chain, progress=False)


@uses_fit_threads
def fit_nuts(
    model: FactorModel,
    train: Any,
    *,
    num_samples: int = 500,
    warmup: int = 500,
    num_chains: int = 1,
    max_tree_depth: int = 8,
    target_accept: float = 0.8,
    jit: bool = True,
    parallel: bool | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool | None = None,
) -> SampleFit:
    """Sample the posterior of a model by NUTS (Pyro's), on all of ``train`` at once.

    Parameters
    ----------
    model : FactorModel
        Any model of the library with continuous latent sites (its priors and hyper-priors
        are used as they are).
    train : Ratings, Pairs or Network
        The training data (a network stands for its
        :meth:`~bayesmf.data.Network.observed_pairs`).
    num_samples : int
        Draws kept per chain after the warm-up.
    warmup : int
        Warm-up iterations per chain (step size and mass matrix adaptation), discarded.
    num_chains : int
        Chains, chain ``c`` seeded with ``seed + c``; with more than one, the R-hat of the
        positive sites (``settings["rhat"]``) and of the fitted values at 200 training cells
        (``settings["rhat_cells"]``, on the logit scale for a network) are computed, with a
        warning in words above 1.01.
    parallel : bool, optional
        Run the chains in worker processes, as many at once as there are cores (forked on
        Linux, each single-threaded). Default: when there are several chains, several cores
        and the device is the CPU; ``False`` runs them one after the other. The draws do not
        depend on it. With ``progress`` a bar counts the finished chains.
    max_tree_depth : int
        At most ``2 ** max_tree_depth`` leapfrog steps (gradients) per draw.
    target_accept : float
        Target acceptance probability of the step size adaptation.
    jit : bool
        Compile the potential with ``torch.jit.trace`` (about twice as fast a gradient).
    seed : int
        Seed of the first chain.
    device : str or torch.device, optional
        Where to sample (default: the model's device).
    progress : bool, optional
        Pyro's progress bar (default: only in a terminal).

    Returns
    -------
    SampleFit
        ``draws`` shaped ``(num_chains, num_samples, *shape)``; ``history`` per chain:
        ``divergences`` (count after the warm-up), ``accept`` (mean acceptance probability),
        ``step_size`` (adapted); ``inference_name`` is ``"NUTS"``.

    Examples
    --------
    >>> from bayesmf import data, inference, models
    >>> R, _ = data.synthetic_ratings(n_rows=12, n_cols=10, rank=1, density=0.8,
    ...                               noise=0.3, seed=0)
    >>> fit = inference.fit_nuts(models.BayesianMF(12, 10, rank=1), R, num_samples=20,
    ...                          warmup=20, max_tree_depth=4, progress=False)
    >>> fit.inference_name, tuple(fit.draws["U"].shape)
    ('NUTS', (1, 20, 12, 1))
    >>> tuple(fit.predict(R).shape)
    (96,)
    """
    if not isinstance(model, FactorModel):
        raise TypeError(
            f"fit_nuts samples the library's factor models, whose latents are continuous; "
            f"{type(model).__name__} is not one (the block model's cluster labels are "
            "discrete: fit it with fit_sbm)"
        )
    if hasattr(train, "observed_pairs"):  # a Network: its observed pairs i < j
        train = train.observed_pairs()
    if num_samples < 1 or warmup < 0 or num_chains < 1 or max_tree_depth < 1:
        raise ValueError(
            "need num_samples >= 1, warmup >= 0, num_chains >= 1 and max_tree_depth >= 1"
        )
    if not 0.0 < target_accept < 1.0:
        raise ValueError(f"target_accept must be in (0, 1), got {target_accept}")
    if device is not None:
        model.to(device)
    device = model.global_mean.device
    model.setup(train)
    train = train.to(device)
    opts = {"num_samples": num_samples, "warmup": warmup, "max_tree_depth": max_tree_depth,
            "target_accept": target_accept, "jit": jit, "seed": seed}
    t0 = time.perf_counter()
    results, processes = run_chains(
        num_chains, parallel, device, _chain_worker,
        lambda c, threads: (model, train, opts, c, threads),
        lambda c: _run_chain(model, train, opts, c, show_progress(progress)),
        progress=show_progress(progress), desc="NUTS chains",
    )
    seconds = time.perf_counter() - t0
    draws = {k: torch.stack([r[0][k] for r in results]) for k in results[0][0]}
    history = {k: [r[1][k] for r in results] for k in results[0][1]}
    divergent = int(sum(history["divergences"]))
    if divergent:
        log.warning(
            "NUTS: %d divergent transitions after the warm-up (of %d draws): the sampler "
            "missed part of the posterior; raise target_accept (now %.2f) or warmup",
            divergent, num_samples * num_chains, target_accept)
    settings: dict[str, Any] = {"engine": "NUTS", **opts, "num_chains": num_chains,
                                "device": str(device), "parallel": processes}
    if num_chains > 1:
        settings.update(chain_agreement("NUTS", model, draws, train, seed))
    train_info = data_info(train)
    train_info["fingerprint"] = files.fingerprint(train)
    return SampleFit(model, draws, history, train_info, settings, seconds)
