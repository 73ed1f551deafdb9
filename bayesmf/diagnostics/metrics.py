"""Point and interval metrics for predictions: RMSE, MAE, MSE, AUC, coverage.

All functions accept torch tensors, numpy arrays or sequences and return Python floats.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["mse", "rmse", "mae", "auc", "coverage"]


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    a = _np(y_true)
    b = _np(y_pred)
    if a.shape != b.shape:
        raise ValueError(f"shapes differ: y_true {a.shape} vs y_pred {b.shape}")
    if a.size == 0:
        raise ValueError("empty input")
    bad = ~(np.isfinite(a) & np.isfinite(b))
    if bad.any():
        raise ValueError(f"NaN/inf at positions {np.flatnonzero(bad)[:5].tolist()}")
    return a, b


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64).ravel()


def mse(y_true: Any, y_pred: Any) -> float:
    """Mean squared error.

    Examples
    --------
    >>> mse([1.0, 2.0], [1.0, 4.0])
    2.0
    """
    a, b = _pair(y_true, y_pred)
    return float(np.mean((a - b) ** 2))


def rmse(y_true: Any, y_pred: Any) -> float:
    """Root mean squared error.

    Examples
    --------
    >>> rmse([1.0, 2.0], [1.0, 4.0])  # doctest: +ELLIPSIS
    1.414...
    """
    return float(np.sqrt(mse(y_true, y_pred)))


def mae(y_true: Any, y_pred: Any) -> float:
    """Mean absolute error.

    Examples
    --------
    >>> mae([1.0, 2.0], [1.0, 4.0])
    1.0
    """
    a, b = _pair(y_true, y_pred)
    return float(np.mean(np.abs(a - b)))


def auc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve by the rank (Mann-Whitney) formula; ties count one half.

    Parameters
    ----------
    labels : array-like of {0, 1}
        True binary labels.
    scores : array-like of float
        Higher means more likely positive.

    Raises
    ------
    ValueError
        If labels are not binary or only one class is present.

    Examples
    --------
    >>> auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> auc([0, 1], [0.5, 0.5])  # a tie is worth one half
    0.5
    """
    y, s = _pair(labels, scores)
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0/1")
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both positive and negative labels")
    from scipy.stats import rankdata

    ranks = rankdata(s)  # average ranks for ties
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def coverage(y_true: Any, lower: Any, upper: Any) -> float:
    """Fraction of ``y_true`` inside the closed intervals ``[lower, upper]``.

    Examples
    --------
    >>> coverage([1.0, 2.0, 3.0], [0.0, 2.5, 2.0], [1.5, 3.0, 3.0])  # doctest: +ELLIPSIS
    0.666...
    """
    y, lo = _pair(y_true, lower)
    _, hi = _pair(y_true, upper)
    if np.any(lo > hi):
        raise ValueError("some lower bounds exceed their upper bounds")
    return float(np.mean((y >= lo) & (y <= hi)))
