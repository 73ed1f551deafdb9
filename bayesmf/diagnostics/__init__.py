"""Metrics, ArviZ conversion and plots.

Metrics (:mod:`~bayesmf.diagnostics.metrics`), the ArviZ conversion of a fit
(:func:`to_inference_data`), diagnostics of a variational fit (:func:`pareto_khat`,
:func:`interval_coverage`) and plots (:func:`plot_elbo`, :func:`plot_ppc`). ArviZ and
matplotlib are imported only when these functions run, so ``import bayesmf`` stays light.
"""

from .arviz import to_inference_data
from .blocks import plot_block_structure
from .metrics import auc, coverage, mae, mse, rmse
from .plots import plot_elbo, plot_ppc
from .vi import PSISResult, interval_coverage, pareto_khat

__all__ = [
    "auc",
    "coverage",
    "mae",
    "mse",
    "rmse",
    "to_inference_data",
    "pareto_khat",
    "PSISResult",
    "interval_coverage",
    "plot_elbo",
    "plot_ppc",
    "plot_block_structure",
]
