"""Metrics, ArviZ conversion and plots."""

from .metrics import auc, coverage, mae, mse, rmse

__all__ = ["auc", "coverage", "mae", "mse", "rmse"]
