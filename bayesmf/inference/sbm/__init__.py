"""Mean-field variational inference for :class:`~bayesmf.models.DPStochasticBlockModel`.

The block model's engine, split by concern:

* :mod:`.graph` — the training network as pairs, sparse sums and unbiased minibatches;
* :mod:`.init` — spectral initialisation (Bethe-Hessian number of clusters, k-means) and the
  initial variational factors of each restart;
* :mod:`.posterior` — the mean-field ``q(Z) q(V) q(U, U', theta[, s])`` (the Gaussian part is
  the library's :class:`~bayesmf.inference.guides.MeanFieldGuide`);
* :mod:`.steps` — the exact ``T x T`` expected log-likelihood under ``q(Z)``, the ELBO terms
  and the closed-form ``q(Z)`` step (the paper's Eq. 9);
* :mod:`.fit` — :func:`fit_sbm`, restarts run through the one training loop;
* :mod:`.result` — :class:`SBMFit`, the fitted model (a :class:`~bayesmf.inference.fits.Fit`).
"""

from __future__ import annotations

from .fit import fit_sbm
from .graph import Graph, as_network
from .init import bethe_hessian_clusters, spectral_init
from .posterior import SBMPosterior
from .result import SBMFit, load_sbm
from .steps import expected_log_lik, expected_log_lik_sum

__all__ = [
    "Graph",
    "SBMFit",
    "SBMPosterior",
    "as_network",
    "bethe_hessian_clusters",
    "expected_log_lik",
    "expected_log_lik_sum",
    "fit_sbm",
    "load_sbm",
    "spectral_init",
]
