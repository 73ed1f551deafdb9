"""Metrics, ArviZ conversion and plots.

Metrics (:mod:`~bayesmf.diagnostics.metrics`), the ArviZ conversion of a fit
(:func:`to_inference_data`), diagnostics of a variational fit (:func:`pareto_khat`,
:func:`interval_coverage`), PSIS-LOO over many observations at once (:func:`psis_loo`),
plots (:func:`plot_elbo`, :func:`plot_ppc`, :func:`plot_block_structure`), and
simulation-based calibration (:mod:`.calibration`: :func:`run_sbc`, rank statistics and
their uniformity tests). Each is imported from its module
on first use, so ArviZ, xarray, SciPy and matplotlib load only when a function that needs them
is called.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "auc": "metrics",
    "coverage": "metrics",
    "mae": "metrics",
    "mse": "metrics",
    "rmse": "metrics",
    "to_inference_data": "arviz",
    "pareto_khat": "vi",
    "PSISResult": "vi",
    "interval_coverage": "vi",
    "interval_bounds": "vi",
    "log_predictive_density": "vi",
    "psis_loo": "loo",
    "psislw_rows": "loo",
    "LooResult": "loo",
    "PredictiveDensity": "vi",
    "plot_elbo": "plots",
    "plot_ppc": "plots",
    "plot_block_structure": "blocks",
    "run_sbc": "calibration",
    "sbc_ranks": "calibration",
    "chi2_uniformity": "calibration",
    "ks_uniformity": "calibration",
    "rank_coverage": "calibration",
    "prior_draw": "calibration",
    "plot_rank_histograms": "calibration",
    "SBCResult": "calibration",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'bayesmf.diagnostics' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
