"""Build :class:`~bayesmf.data.Ratings` from pandas, scipy and dense arrays.

Original ids are mapped to contiguous indices in sorted order (row ``k`` is the
``k``-th smallest user id). Feature tables given as DataFrames indexed by the
original ids are aligned to those indices; a missing id is an error. Nothing
is dropped silently: NaN/inf ratings, missing ids, duplicated pairs (unless
``duplicates="mean"``) and missing columns raise :class:`ValueError` naming the
offending rows.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .containers import Ratings

__all__ = ["from_dataframe", "from_scipy", "from_dense"]

logger = logging.getLogger(__name__)

_MAX_SHOWN = 5


def _plain(x: Any) -> Any:
    """A numpy scalar as the Python scalar (for readable messages)."""
    return x.item() if isinstance(x, np.generic) else x


def _fmt(items: Any) -> str:
    """At most a few items of a sequence, for error messages."""
    seq = list(items[:_MAX_SHOWN])
    n = len(items)
    shown = ", ".join(repr(_plain(x)) for x in seq)
    more = f" (and {n - _MAX_SHOWN} more)" if n > _MAX_SHOWN else ""
    return f"[{shown}]{more}"


def _encode(
    values: np.ndarray, ids: Any, what: str, labels: pd.Index
) -> tuple[np.ndarray, np.ndarray]:
    """Map original ids to indices: sorted unique ids, or the given id map."""
    if ids is None:
        try:  # hash-based, then only the unique ids are sorted
            codes, uniq = pd.factorize(values, sort=True)
        except TypeError as exc:  # e.g. a mix of str and int
            raise ValueError(f"{what} ids cannot be sorted (mixed types?): {exc}") from None
        return np.asarray(uniq), codes.astype(np.int64, copy=False)
    ids = np.asarray(ids)
    if ids.ndim != 1 or len(ids) == 0:
        raise ValueError(f"{what}_ids must be a non-empty one-dimensional array")
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    try:
        pos = np.clip(np.searchsorted(sorted_ids, values), 0, len(ids) - 1)
    except TypeError as exc:
        raise ValueError(
            f"{what} ids are not comparable with the given {what}_ids: {exc}"
        ) from None
    found = sorted_ids[pos] == values
    if not np.all(found):
        raise ValueError(
            f"{what} ids {_fmt(pd.unique(values[~found]))} are not in the given {what}_ids "
            f"(rows {_fmt(labels[~found])})"
        )
    return ids, order[pos]


def _align_features(features: Any, ids: np.ndarray, what: str) -> Any:
    """Align a feature table with the id order; arrays are taken as already aligned."""
    if features is None:
        return None
    if isinstance(features, pd.Series):
        features = features.to_frame()
    if not isinstance(features, pd.DataFrame):
        arr = np.asarray(features, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[0] != len(ids):
            raise ValueError(
                f"{what} must have one row per {what.split('_')[0]} id ({len(ids)} rows, in "
                f"sorted id order), got shape {arr.shape}; or pass a DataFrame indexed by id"
            )
        bad = ~np.isfinite(arr).all(axis=1)
        if bad.any():
            raise ValueError(f"{what} contain NaN/inf for ids {_fmt(ids[bad])}")
        return arr
    index = features.index
    if index.has_duplicates:
        dup = index[index.duplicated()].unique()
        raise ValueError(f"{what} index has duplicated ids {_fmt(dup)}")
    nonnum = [
        c for c in features.columns if not pd.api.types.is_numeric_dtype(features[c])
    ]
    if nonnum:
        raise ValueError(f"{what} columns {nonnum} are not numeric; encode them first")
    pos = index.get_indexer(pd.Index(ids))
    missing = pos < 0
    if missing.any():
        raise ValueError(f"{what} has no row for ids {_fmt(ids[missing])}")
    aligned = features.iloc[pos]
    bad = ~np.isfinite(aligned.to_numpy(dtype=np.float64)).all(axis=1)
    if bad.any():
        raise ValueError(f"{what} contain NaN/inf for ids {_fmt(ids[bad])}")
    return aligned


def _build(
    rows: np.ndarray,
    cols: np.ndarray,
    values: np.ndarray,
    shape: tuple[int, int],
    row_ids: Any,
    col_ids: Any,
    row_features: Any,
    col_features: Any,
    scale: tuple[float, float] | None,
    name: str,
) -> Ratings:
    row_ids = np.arange(shape[0]) if row_ids is None else np.asarray(row_ids)
    col_ids = np.arange(shape[1]) if col_ids is None else np.asarray(col_ids)
    for ids, n, what in ((row_ids, shape[0], "row_ids"), (col_ids, shape[1], "col_ids")):
        if len(ids) != n:
            raise ValueError(f"{what} has {len(ids)} entries for {n} indices")
    return Ratings(
        rows=np.asarray(rows, dtype=np.int64),
        cols=np.asarray(cols, dtype=np.int64),
        values=np.asarray(values, dtype=np.float32),
        shape=shape,
        row_ids=row_ids,
        col_ids=col_ids,
        row_features=_align_features(row_features, row_ids, "row_features"),
        col_features=_align_features(col_features, col_ids, "col_features"),
        scale=scale,
        name=name,
    )


def from_dataframe(
    df: pd.DataFrame,
    user: str = "user",
    item: str = "item",
    rating: str = "rating",
    *,
    duplicates: str = "error",
    scale: tuple[float, float] | None = None,
    user_features: pd.DataFrame | np.ndarray | None = None,
    item_features: pd.DataFrame | np.ndarray | None = None,
    name: str = "ratings",
    user_ids: Sequence[Any] | np.ndarray | None = None,
    item_ids: Sequence[Any] | np.ndarray | None = None,
) -> Ratings:
    """Ratings from a long-format DataFrame (one row per observed (user, item) pair).

    Parameters
    ----------
    df : pandas.DataFrame
        The ratings.
    user, item, rating : str
        Column names of the user ids (rows), item ids (columns) and values.
    duplicates : {"error", "mean"}
        What to do with a (user, item) pair listed more than once: raise a
        :class:`ValueError` listing the pairs and their row labels, or average
        them (logged at INFO).
    scale : (float, float), optional
        The rating scale ``(low, high)``.
    user_features, item_features : DataFrame or array, optional
        Side features. A DataFrame indexed by the original ids is aligned to
        the index order (a missing id is an error); an array must already
        have one row per id in sorted id order.
    name : str
        A label for reports.
    user_ids, item_ids : array-like, optional
        Use these id maps (``user_ids[k]`` is the id of row ``k``) instead of
        the sorted unique ids of ``df``, e.g. to put a test split on the same
        shape as its training set. An id of ``df`` missing from the map is an
        error.

    Returns
    -------
    Ratings

    Raises
    ------
    ValueError
        For an empty frame, missing columns, missing ids, NaN/inf or
        non-numeric ratings, duplicated pairs (with ``duplicates="error"``), an
        unknown ``duplicates`` mode, or features lacking an id.

    Examples
    --------
    >>> import pandas as pd
    >>> from bayesmf.data import from_dataframe
    >>> df = pd.DataFrame({"user": ["b", "a", "b"], "item": [10, 20, 20],
    ...                    "rating": [4.0, 3.0, 5.0]})
    >>> R = from_dataframe(df, scale=(1, 5))
    >>> R.shape, R.row_ids.tolist(), R.col_ids.tolist()
    ((2, 2), ['a', 'b'], [10, 20])
    >>> R.to_dense().tolist()
    [[nan, 3.0], [4.0, 5.0]]
    """
    if duplicates not in ("error", "mean"):
        raise ValueError(f"duplicates must be 'error' or 'mean', got {duplicates!r}")
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in (user, item, rating) if c not in df.columns]
    if missing:
        raise ValueError(f"columns {missing} not found; the dataframe has {list(df.columns)}")
    if len(df) == 0:
        raise ValueError("empty dataframe: no ratings")
    labels = df.index
    u = df[user].to_numpy()
    i = df[item].to_numpy()
    for arr, col in ((u, user), (i, item)):
        bad = np.asarray(pd.isna(arr))
        if bad.any():
            raise ValueError(f"column {col!r} has missing ids at rows {_fmt(labels[bad])}")
    raw = df[rating]
    r = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(r)
    if bad.any():
        raise ValueError(
            f"column {rating!r} must hold finite numbers; rows {_fmt(labels[bad])} hold "
            f"{_fmt(raw[bad].tolist())}"
        )
    row_ids, rows = _encode(u, user_ids, "user", labels)
    col_ids, cols = _encode(i, item_ids, "item", labels)
    n_cols = len(col_ids)
    keys = rows.astype(np.int64) * n_cols + cols
    sorted_keys = np.sort(keys)
    if np.any(sorted_keys[1:] == sorted_keys[:-1]):
        dup = pd.Series(keys).duplicated(keep=False).to_numpy()
        dup_keys = keys[dup]
        uniq = pd.unique(dup_keys)
        if duplicates == "error":
            first = uniq[:_MAX_SHOWN]
            where = [
                f"({_plain(row_ids[k // n_cols])!r}, {_plain(col_ids[k % n_cols])!r}) at rows "
                f"{[_plain(x) for x in labels[dup][dup_keys == k]]}"
                for k in first  # at most a few pairs, for the message
            ]
            more = f" (and {len(uniq) - len(first)} more)" if len(uniq) > len(first) else ""
            raise ValueError(
                f"{len(uniq)} ({user}, {item}) pairs are listed more than once: "
                f"{'; '.join(where)}{more}. Pass duplicates='mean' to average them."
            )
        ukeys, inv, counts = np.unique(keys, return_inverse=True, return_counts=True)
        r = np.bincount(inv.reshape(-1), weights=r) / counts
        rows, cols = ukeys // n_cols, ukeys % n_cols
        logger.info(
            "averaged %d duplicated (%s, %s) pairs (%d rows -> %d ratings)",
            len(uniq), user, item, len(keys), len(ukeys),
        )
    return _build(
        rows, cols, r, (len(row_ids), n_cols), row_ids, col_ids,
        user_features, item_features, scale, name,
    )


def from_scipy(
    matrix: Any,
    *,
    scale: tuple[float, float] | None = None,
    row_ids: Sequence[Any] | np.ndarray | None = None,
    col_ids: Sequence[Any] | np.ndarray | None = None,
    row_features: pd.DataFrame | np.ndarray | None = None,
    col_features: pd.DataFrame | np.ndarray | None = None,
    name: str = "ratings",
) -> Ratings:
    """Ratings from the stored entries of a scipy sparse matrix.

    Every *stored* entry is an observation, explicit zeros included: a sparse
    matrix distinguishes "observed 0" (stored) from "unobserved" (not stored).
    Call ``matrix.eliminate_zeros()`` first if zeros mean "missing".

    A COO matrix may list the same (row, col) several times; scipy sums such
    duplicates whenever it converts or uses the matrix, and so does this
    function (the number summed is logged at INFO). Aggregate them yourself
    first if a sum is not what they mean.

    Parameters
    ----------
    matrix : scipy.sparse matrix or array
        Any sparse format (CSR, CSC, COO, ...).
    scale : (float, float), optional
        The rating scale.
    row_ids, col_ids : array-like, optional
        Original ids of the rows/columns (default ``0..n-1``).
    row_features, col_features : DataFrame or array, optional
        Side features: DataFrames indexed by the ids, or arrays aligned with
        the indices.
    name : str
        A label for reports.

    Raises
    ------
    ValueError
        If nothing is stored or a stored value is NaN/inf (positions named).

    Examples
    --------
    >>> from scipy import sparse
    >>> from bayesmf.data import from_scipy
    >>> M = sparse.csr_matrix(([5.0, 0.0, 3.0], ([0, 0, 1], [0, 2, 1])), shape=(2, 3))
    >>> R = from_scipy(M)
    >>> len(R), R.to_dense().tolist()
    (3, [[5.0, nan, 0.0], [nan, 3.0, nan]])
    """
    from scipy import sparse

    if not sparse.issparse(matrix):
        raise TypeError(f"matrix must be a scipy sparse matrix, got {type(matrix).__name__}")
    coo = sparse.coo_array(matrix)
    n_rows, n_cols = coo.shape
    rows = np.asarray(coo.row, dtype=np.int64)
    cols = np.asarray(coo.col, dtype=np.int64)
    vals = np.asarray(coo.data, dtype=np.float64)
    if vals.size == 0:
        raise ValueError("the sparse matrix stores no entries: no ratings")
    keys = rows * n_cols + cols
    ukeys, inv = np.unique(keys, return_inverse=True)
    if ukeys.size != keys.size:
        logger.info(
            "summed %d duplicated COO entries, as scipy does", keys.size - ukeys.size
        )
        vals = np.bincount(inv.reshape(-1), weights=vals, minlength=ukeys.size)
        rows, cols = ukeys // n_cols, ukeys % n_cols
    bad = ~np.isfinite(vals)
    if bad.any():
        pos = np.stack([rows[bad], cols[bad]], axis=1)
        raise ValueError(f"stored values are NaN/inf at (row, col) {_fmt(pos.tolist())}")
    return _build(
        rows, cols, vals, (n_rows, n_cols), row_ids, col_ids,
        row_features, col_features, scale, name,
    )


def from_dense(
    X: Any,
    mask: Any = None,
    *,
    scale: tuple[float, float] | None = None,
    row_ids: Sequence[Any] | np.ndarray | None = None,
    col_ids: Sequence[Any] | np.ndarray | None = None,
    row_features: pd.DataFrame | np.ndarray | None = None,
    col_features: pd.DataFrame | np.ndarray | None = None,
    name: str = "ratings",
) -> Ratings:
    """Ratings from a dense matrix with missing entries.

    Parameters
    ----------
    X : array-like or torch.Tensor, shape (n_rows, n_cols)
        The matrix.
    mask : array-like of bool, optional
        Which entries are observed. Default: the finite entries of ``X`` (so
        NaN marks a missing entry). When given, ``X`` must be finite wherever
        ``mask`` is True.
    scale, row_ids, col_ids, row_features, col_features, name
        As in :func:`from_scipy`.

    Raises
    ------
    ValueError
        If ``X`` is not 2-D, the mask has another shape or is not boolean,
        ``X`` is NaN/inf where the mask is True (positions named), or nothing
        is observed.

    Examples
    --------
    >>> import numpy as np
    >>> from bayesmf.data import from_dense
    >>> R = from_dense(np.array([[1.0, np.nan], [np.nan, 4.0]]))
    >>> R.rows.tolist(), R.cols.tolist(), R.values.tolist()
    ([0, 1], [0, 1], [1.0, 4.0])
    """
    if hasattr(X, "detach"):  # torch.Tensor
        X = X.detach().cpu().numpy()
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be two-dimensional, got shape {X.shape}")
    if mask is None:
        mask = np.isfinite(X)
    else:
        if hasattr(mask, "detach"):
            mask = mask.detach().cpu().numpy()
        mask = np.asarray(mask)
        if mask.shape != X.shape:
            raise ValueError(f"mask has shape {mask.shape}, X has shape {X.shape}")
        if mask.dtype != np.bool_:
            if not np.isin(mask, (0, 1)).all():
                raise ValueError("mask must be boolean (or 0/1)")
            mask = mask.astype(bool)
        bad = mask & ~np.isfinite(X)
        if bad.any():
            raise ValueError(
                f"X is NaN/inf where mask is True, at (row, col) {_fmt(np.argwhere(bad).tolist())}"
            )
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        raise ValueError("no observed entries: no ratings")
    return _build(
        rows, cols, X[rows, cols], X.shape, row_ids, col_ids,
        row_features, col_features, scale, name,
    )
