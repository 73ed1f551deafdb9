"""Normalising rating values and mapping predictions back to the rating scale.

:class:`Standardizer` z-scores rating values (globally, or after per-row or
per-column mean centring) and maps predicted means and standard deviations
back; :func:`clamp` clips predictions to a rating scale.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
import torch

from .containers import Ratings

__all__ = ["Standardizer", "clamp"]

logger = logging.getLogger(__name__)

_PER = ("global", "row", "col")


def _tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    # arrays/lists (numpy defaults to float64) become torch's default float dtype
    return torch.as_tensor(np.asarray(x, dtype=np.float64)).to(torch.get_default_dtype())


def clamp(values: Any, scale: tuple[float, float] | None) -> torch.Tensor:
    """Clamp values to a rating scale ``(low, high)``; unchanged when ``scale`` is None.

    Parameters
    ----------
    values : tensor or array-like
        Predictions.
    scale : (float, float) or None
        The rating scale, e.g. ``Ratings.scale``.

    Returns
    -------
    torch.Tensor

    Examples
    --------
    >>> clamp(torch.tensor([0.2, 3.5, 6.0]), (1, 5)).tolist()
    [1.0, 3.5, 5.0]
    >>> clamp(torch.tensor([0.2, 6.0]), None).tolist()
    [0.20000000298023224, 6.0]
    """
    v = _tensor(values)
    if scale is None:
        return v
    lo, hi = (float(s) for s in scale)
    if not lo < hi:
        raise ValueError(f"scale must be (low, high) with low < high, got {scale}")
    return v.clamp(lo, hi)


class Standardizer:
    """Z-score rating values and map predictions back.

    With ``per="global"`` (default) values become ``(v - mean) / std`` with the
    mean and (sample, ``n - 1``) standard deviation of the fitted values. With ``per="row"`` (or
    ``"col"``) each row's (column's) own mean is subtracted first (rows with no
    fitted rating use the global mean) and ``std`` is the standard deviation of
    the centred values; ``mean`` is then a vector and transforming or inverting
    needs the row (column) indices, i.e. a :class:`Ratings` or ``rows=``/``cols=``.

    Parameters
    ----------
    per : {"global", "row", "col"}
        What the mean is computed over.
    eps : float
        A standard deviation below this (e.g. constant values) is replaced by 1
        with a warning, so that transforming never divides by zero.

    Attributes
    ----------
    mean : torch.Tensor
        Scalar (global) or ``(n_rows,)``/``(n_cols,)`` means, after :meth:`fit`.
    std : torch.Tensor
        Scalar standard deviation, after :meth:`fit`.

    Notes
    -----
    :meth:`transform` maps a :class:`Ratings`' ``scale`` to the standardised
    units, ``((low - mean) / std, (high - mean) / std)``, for ``per="global"``;
    with per-row/column centring there is no single scale and it is set to None
    (clamp after :meth:`inverse` instead).

    Examples
    --------
    >>> from bayesmf.data import Ratings
    >>> R = Ratings([0, 0, 1, 1], [0, 1, 0, 1], [1.0, 2.0, 3.0, 4.0], shape=(2, 2), scale=(1, 5))
    >>> st = Standardizer().fit(R)
    >>> Z = st.transform(R)
    >>> round(float(Z.values.mean()), 6), round(float(Z.values.std()), 6)
    (0.0, 1.0)
    >>> st.inverse(Z.values).tolist()
    [1.0, 2.0, 3.0, 4.0]
    """

    def __init__(self, per: Literal["global", "row", "col"] = "global", eps: float = 1e-8) -> None:
        if per not in _PER:
            raise ValueError(f"per must be one of {_PER}, got {per!r}")
        self.per = per
        self.eps = float(eps)
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None

    def __repr__(self) -> str:
        if self.mean is None:
            return f"Standardizer(per={self.per!r}, unfitted)"
        m = f"{float(self.mean):.4g}" if self.mean.ndim == 0 else f"<{self.mean.numel()} means>"
        return f"Standardizer(per={self.per!r}, mean={m}, std={float(self.std):.4g})"

    # ------------------------------------------------------------------ fitting
    def fit(self, data: Ratings | Any) -> Standardizer:
        """Compute the mean(s) and standard deviation of the values.

        Parameters
        ----------
        data : Ratings or tensor/array of values
            Per-row/column centring needs a :class:`Ratings`.

        Returns
        -------
        Standardizer
            ``self``.
        """
        if isinstance(data, Ratings):
            values = data.values
        else:
            if self.per != "global":
                raise ValueError(f"per={self.per!r} needs a Ratings to fit (row/column indices)")
            values = _tensor(data)
        values = values.detach().reshape(-1).to(torch.float64)
        if values.numel() == 0:
            raise ValueError("cannot fit a Standardizer on no values")
        if not bool(torch.isfinite(values).all()):
            raise ValueError("values contain NaN/inf")
        global_mean = values.mean()
        if self.per == "global":
            mean = global_mean
            centred = values - mean
        else:
            idx = data.rows if self.per == "row" else data.cols
            size = data.n_rows if self.per == "row" else data.n_cols
            idx = idx.to(values.device)
            counts = torch.bincount(idx, minlength=size).to(torch.float64)
            sums = torch.zeros(size, dtype=torch.float64, device=values.device)
            sums.index_add_(0, idx, values)
            mean = torch.where(counts > 0, sums / counts.clamp_min(1), global_mean)
            centred = values - mean[idx]
        # Sample std (n - 1, torch's default): ``transform(...).values.std()`` is exactly 1.
        n = values.numel()
        std = (centred.pow(2).sum() / max(n - 1, 1)).sqrt()
        if n < 2 or float(std) < self.eps:
            logger.warning("values have (near) zero spread (std=%g); using std=1", float(std))
            std = torch.ones((), dtype=torch.float64)
        dtype = data.values.dtype if isinstance(data, Ratings) else torch.get_default_dtype()
        self.mean = mean.to(dtype)
        self.std = std.to(dtype)
        return self

    def fit_transform(self, ratings: Ratings) -> Ratings:
        """``fit(ratings)`` then ``transform(ratings)``."""
        return self.fit(ratings).transform(ratings)

    def _check_fitted(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mean is None or self.std is None:
            raise RuntimeError("Standardizer is not fitted; call fit() first")
        return self.mean, self.std

    def _offset(
        self, like: torch.Tensor, rows: Any = None, cols: Any = None
    ) -> torch.Tensor:
        mean, _ = self._check_fitted()
        mean = mean.to(like.device)
        if self.per == "global":
            return mean
        idx = rows if self.per == "row" else cols
        if idx is None:
            what = "rows" if self.per == "row" else "cols"
            raise ValueError(f"per={self.per!r} standardisation needs {what}= indices")
        idx = torch.as_tensor(idx, dtype=torch.long, device=like.device)
        return mean[idx]

    # --------------------------------------------------------------- transforms
    def transform(self, data: Ratings | Any, *, rows: Any = None, cols: Any = None) -> Any:
        """Standardise a :class:`Ratings` (returns a Ratings) or raw values (returns a tensor).

        Parameters
        ----------
        data : Ratings or tensor/array
            What to transform.
        rows, cols : array-like of int, optional
            Row/column indices of raw values (needed for ``per="row"``/``"col"``).
        """
        _, std = self._check_fitted()
        if isinstance(data, Ratings):
            v = data.values
            z = (v - self._offset(v, data.rows, data.cols)) / std.to(v.device)
            if data.scale is not None and self.per == "global":
                lo, hi = (float((s - self.mean) / std) for s in data.scale)
                return data.replace(values=z, scale=(lo, hi), _validate=False)
            return data.replace(values=z, scale=None, _validate=False)
        v = _tensor(data)
        return (v - self._offset(v, rows, cols)) / std.to(v.device)

    def inverse(self, values: Any, *, rows: Any = None, cols: Any = None) -> torch.Tensor:
        """Map standardised values (e.g. predicted means) back to the original units.

        Parameters
        ----------
        values : tensor or array-like
            Standardised values; any shape broadcastable with the indices.
        rows, cols : array-like of int, optional
            Indices for ``per="row"``/``"col"``.

        Examples
        --------
        >>> st = Standardizer().fit(torch.tensor([1.0, 3.0, 5.0]))  # mean 3, std 2
        >>> st.inverse(torch.tensor([-1.0, 0.0, 1.0])).tolist()
        [1.0, 3.0, 5.0]
        """
        _, std = self._check_fitted()
        v = _tensor(values)
        return v * std.to(v.device) + self._offset(v, rows, cols)

    def inverse_std(self, std: Any) -> torch.Tensor:
        """Map standardised standard deviations back to the original units (``std * self.std``).

        Examples
        --------
        >>> st = Standardizer().fit(torch.tensor([1.0, 3.0, 5.0]))  # mean 3, std 2
        >>> st.inverse_std(torch.tensor([0.5])).tolist()
        [1.0]
        """
        _, s = self._check_fitted()
        v = _tensor(std)
        return v * s.to(v.device)
