"""Containers for partially observed matrices and symmetric binary networks.

:class:`Ratings` holds the observed entries of an ``n_rows x n_cols`` matrix in
coordinate form (row index, column index, value) together with the maps between
the original ids and the contiguous indices, optional row/column features and
the rating scale. :class:`Network` holds a symmetric 0/1 network (edges i<j),
optionally with pairs whose value is unknown (held out). :class:`Pairs` is a set
of node pairs with 0/1 labels, as returned by :func:`bayesmf.data.holdout_pairs`.

All three validate on construction and raise :class:`ValueError` naming the
problem and the offending entries. Nothing is silently dropped or repaired.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

__all__ = ["Ratings", "Network", "Pairs"]

_MAX_SHOWN = 5


def _show(items: Any) -> str:
    """Format at most a few offending items for an error message."""
    arr = np.asarray(items)
    if arr.ndim == 0:
        return str(arr.item())
    shown = ", ".join(str(x.tolist() if hasattr(x, "tolist") else x) for x in arr[:_MAX_SHOWN])
    more = f" (and {len(arr) - _MAX_SHOWN} more)" if len(arr) > _MAX_SHOWN else ""
    return f"[{shown}]{more}"


def _tensor(x: Any, dtype: Any = None) -> torch.Tensor:
    """A tensor from tensors/arrays/sequences; numpy input is copied (pandas may hand
    out read-only arrays, which torch cannot share)."""
    if isinstance(x, torch.Tensor):
        return x
    return torch.from_numpy(np.array(x, dtype=dtype))


def _as_long(x: Any, name: str) -> torch.Tensor:
    t = _tensor(x)
    if t.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {tuple(t.shape)}")
    if t.is_floating_point():
        if not torch.all(torch.isfinite(t)) or not torch.all(t == torch.round(t)):
            bad = torch.nonzero(~torch.isfinite(t) | (t != torch.round(t))).flatten()
            raise ValueError(
                f"{name} must hold integer indices; non-integer at positions {_show(bad)}"
            )
    return t.long()


def _feature_tensor(
    features: Any, ids: np.ndarray, name: str
) -> tuple[torch.Tensor | None, tuple[str, ...]]:
    """Turn a DataFrame/array of features into a float tensor aligned with the indices.

    Arrays and tensors are aligned by position. A DataFrame with a default RangeIndex is
    aligned by position too; any other DataFrame index is read as original ids and the
    rows are reordered to match ``ids`` (an id without features is an error).
    """
    if features is None:
        return None, ()
    n = len(ids)
    names: tuple[str, ...] = ()
    if hasattr(features, "columns"):  # pandas DataFrame
        import pandas as pd

        if not isinstance(features.index, pd.RangeIndex):
            missing = ~np.isin(ids, features.index.to_numpy())
            if missing.any():
                raise ValueError(f"{name} have no row for ids {_show(ids[missing])}")
            features = features.loc[ids]
        names = tuple(str(c) for c in features.columns)
        features = features.to_numpy(dtype=np.float32)
    t = _tensor(features, np.float32).float()
    if t.ndim != 2 or t.shape[0] != n:
        raise ValueError(f"{name} must have shape ({n}, n_features), got {tuple(t.shape)}")
    if not torch.all(torch.isfinite(t)):
        bad = torch.nonzero(~torch.isfinite(t).all(dim=1)).flatten()
        raise ValueError(f"{name} contain NaN/inf in rows {_show(bad)}")
    if not names:
        names = tuple(f"f{i}" for i in range(t.shape[1]))
    return t, names


def _feature_names(
    given: tuple[str, ...], derived: tuple[str, ...], features: torch.Tensor | None
) -> tuple[str, ...]:
    """Names of the feature columns: a DataFrame's own column names first, then the given
    names when they fit the number of columns (they may be stale after ``replace``), else
    generic ``f0, f1, ...``."""
    if features is None:
        return ()
    if derived and not all(d == f"f{i}" for i, d in enumerate(derived)):
        return derived
    if len(given) == features.shape[1]:
        return tuple(given)
    return derived


@dataclass(frozen=True, eq=False)
class Ratings:
    """Observed entries of a partially observed ``n_rows x n_cols`` matrix.

    Parameters
    ----------
    rows, cols : array-like of int, shape (n,)
        Contiguous row/column indices in ``[0, n_rows)`` and ``[0, n_cols)``.
    values : array-like of float, shape (n,)
        Observed values; must be finite.
    shape : (int, int)
        Matrix shape ``(n_rows, n_cols)``.
    row_ids, col_ids : array-like, optional
        Original ids of each index (``row_ids[i]`` is the id of row ``i``);
        default ``0..n-1``. Must be unique.
    row_features, col_features : array-like or DataFrame, optional
        Feature matrices aligned with the indices, shapes ``(n_rows, p)`` and
        ``(n_cols, q)``.
    scale : (float, float), optional
        The rating scale ``(low, high)``, used for clamping predictions.
    name : str
        A label used in reports.

    Raises
    ------
    ValueError
        On empty data, NaN/inf values, indices out of range, duplicate
        (row, col) pairs, mismatched lengths or malformed id maps.

    Examples
    --------
    >>> from bayesmf.data import Ratings
    >>> R = Ratings([0, 1, 1], [2, 0, 1], [4.0, 3.0, 5.0], shape=(2, 3))
    >>> R.n_rows, R.n_cols, len(R)
    (2, 3, 3)
    >>> R.to_dense().tolist()
    [[nan, nan, 4.0], [3.0, 5.0, nan]]
    """

    rows: torch.Tensor
    cols: torch.Tensor
    values: torch.Tensor
    shape: tuple[int, int]
    row_ids: np.ndarray = field(default=None)  # type: ignore[assignment]
    col_ids: np.ndarray = field(default=None)  # type: ignore[assignment]
    row_features: torch.Tensor | None = None
    col_features: torch.Tensor | None = None
    row_feature_names: tuple[str, ...] = ()
    col_feature_names: tuple[str, ...] = ()
    scale: tuple[float, float] | None = None
    name: str = "ratings"
    _validate: bool = field(default=True, repr=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        rows = _as_long(self.rows, "rows")
        cols = _as_long(self.cols, "cols")
        values = _tensor(self.values, np.float32)
        if not values.is_floating_point():
            values = values.float()
        if values.ndim != 1:
            raise ValueError(f"values must be one-dimensional, got shape {tuple(values.shape)}")
        n_rows, n_cols = (int(s) for s in self.shape)
        set_(self, "shape", (n_rows, n_cols))
        set_(self, "rows", rows)
        set_(self, "cols", cols)
        set_(self, "values", values)
        row_ids = np.arange(n_rows) if self.row_ids is None else np.asarray(self.row_ids)
        col_ids = np.arange(n_cols) if self.col_ids is None else np.asarray(self.col_ids)
        set_(self, "row_ids", row_ids)
        set_(self, "col_ids", col_ids)
        if len(row_ids) != n_rows or len(col_ids) != n_cols:
            raise ValueError(
                f"row_ids/col_ids have {len(row_ids)}/{len(col_ids)} entries for shape {self.shape}"
            )
        rf, rnames = _feature_tensor(self.row_features, row_ids, "row_features")
        cf, cnames = _feature_tensor(self.col_features, col_ids, "col_features")
        set_(self, "row_features", rf)
        set_(self, "col_features", cf)
        set_(self, "row_feature_names", _feature_names(self.row_feature_names, rnames, rf))
        set_(self, "col_feature_names", _feature_names(self.col_feature_names, cnames, cf))
        if self.scale is not None:
            lo, hi = (float(s) for s in self.scale)
            if not lo < hi:
                raise ValueError(f"scale must be (low, high) with low < high, got {self.scale}")
            set_(self, "scale", (lo, hi))
        if self._validate:
            self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Check the invariants; raise :class:`ValueError` naming offending entries."""
        n_rows, n_cols = self.shape
        if n_rows <= 0 or n_cols <= 0:
            raise ValueError(f"shape must be positive, got {self.shape}")
        n = self.rows.shape[0]
        if n == 0:
            raise ValueError("empty ratings: no observed entries")
        if self.cols.shape[0] != n or self.values.shape[0] != n:
            raise ValueError(
                f"rows, cols and values must have the same length, got "
                f"{n}, {self.cols.shape[0]}, {self.values.shape[0]}"
            )
        bad = torch.nonzero(~torch.isfinite(self.values)).flatten()
        if bad.numel():
            raise ValueError(
                f"ratings contain NaN/inf at positions {_show(bad.numpy())} "
                f"(values {_show(self.values[bad].numpy())})"
            )
        for idx, size, what in ((self.rows, n_rows, "row"), (self.cols, n_cols, "column")):
            bad = torch.nonzero((idx < 0) | (idx >= size)).flatten()
            if bad.numel():
                raise ValueError(
                    f"{what} indices out of range [0, {size}) at positions {_show(bad.numpy())} "
                    f"(indices {_show(idx[bad].numpy())})"
                )
        keys = self.rows * n_cols + self.cols
        uniq, counts = torch.unique(keys, return_counts=True)
        if uniq.numel() != n:
            dup = uniq[counts > 1]
            pairs = np.stack([(dup // n_cols).numpy(), (dup % n_cols).numpy()], axis=1)
            raise ValueError(
                f"duplicate (row, col) pairs: {_show(pairs)}; aggregate them first "
                "(from_dataframe(..., duplicates='mean'))"
            )
        _check_unique(self.row_ids, "row_ids")
        _check_unique(self.col_ids, "col_ids")

    # ------------------------------------------------------------ properties
    @property
    def n_rows(self) -> int:
        return self.shape[0]

    @property
    def n_cols(self) -> int:
        return self.shape[1]

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    @property
    def device(self) -> torch.device:
        return self.values.device

    @property
    def density(self) -> float:
        """Fraction of the matrix that is observed."""
        return len(self) / float(self.n_rows * self.n_cols)

    def __repr__(self) -> str:
        scale = f", scale={self.scale}" if self.scale else ""
        feats = ""
        if self.row_features is not None:
            feats += f", row_features={self.row_features.shape[1]}"
        if self.col_features is not None:
            feats += f", col_features={self.col_features.shape[1]}"
        return (
            f"Ratings(name={self.name!r}, shape={self.shape}, n={len(self)}, "
            f"density={self.density:.4f}{scale}{feats})"
        )

    # -------------------------------------------------------------- transforms
    def replace(self, **changes: Any) -> Ratings:
        """A copy with some fields replaced (validated again unless ``_validate=False`` is
        passed by library code that keeps the invariants itself)."""
        changes.setdefault("_validate", True)
        return replace(self, **changes)

    def subset(self, index: Any) -> Ratings:
        """The ratings at these positions (int index or boolean mask), same shape and id maps.

        Examples
        --------
        >>> from bayesmf.data import Ratings
        >>> R = Ratings([0, 1, 1], [2, 0, 1], [4.0, 3.0, 5.0], shape=(2, 3))
        >>> R.subset([0, 2]).values.tolist()
        [4.0, 5.0]
        """
        idx = _tensor(index)
        if idx.dtype == torch.bool:
            if idx.shape[0] != len(self):
                raise ValueError(f"boolean mask has length {idx.shape[0]}, expected {len(self)}")
        else:
            idx = idx.long()
        idx = idx.to(self.rows.device)
        # Subsets of valid data stay valid except for emptiness/duplicated positions.
        sub = replace(
            self,
            rows=self.rows[idx],
            cols=self.cols[idx],
            values=self.values[idx],
            _validate=False,
        )
        if len(sub) == 0:
            raise ValueError("subset is empty")
        if idx.dtype != torch.bool and torch.unique(idx).numel() != idx.numel():
            raise ValueError("subset index repeats positions; that would duplicate ratings")
        return sub

    def with_values(self, values: torch.Tensor | np.ndarray) -> Ratings:
        """The same entries with new values (e.g. normalised or residual values)."""
        v = _tensor(values).to(dtype=self.values.dtype, device=self.device)
        if v.shape != self.rows.shape:
            raise ValueError(
                f"values must have shape {tuple(self.rows.shape)}, got {tuple(v.shape)}"
            )
        bad = torch.nonzero(~torch.isfinite(v)).flatten()
        if bad.numel():
            raise ValueError(f"values contain NaN/inf at positions {_show(bad.cpu().numpy())}")
        return replace(self, values=v, _validate=False)

    def to(self, device: str | torch.device) -> Ratings:
        """Move the index/value/feature tensors to ``device``."""

        def mv(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return replace(
            self,
            rows=self.rows.to(device),
            cols=self.cols.to(device),
            values=self.values.to(device),
            row_features=mv(self.row_features),
            col_features=mv(self.col_features),
            _validate=False,
        )

    def transpose(self) -> Ratings:
        """The transposed matrix (rows become columns)."""
        return replace(
            self,
            rows=self.cols,
            cols=self.rows,
            shape=(self.n_cols, self.n_rows),
            row_ids=self.col_ids,
            col_ids=self.row_ids,
            row_features=self.col_features,
            col_features=self.row_features,
            row_feature_names=self.col_feature_names,
            col_feature_names=self.row_feature_names,
            _validate=False,
        )

    def to_dense(self, fill: float = float("nan")) -> torch.Tensor:
        """Dense ``(n_rows, n_cols)`` tensor with ``fill`` where unobserved."""
        X = torch.full(self.shape, fill, dtype=self.values.dtype, device=self.device)
        X[self.rows, self.cols] = self.values
        return X

    def mask(self) -> torch.Tensor:
        """Dense boolean ``(n_rows, n_cols)`` mask of observed entries."""
        B = torch.zeros(self.shape, dtype=torch.bool, device=self.device)
        B[self.rows, self.cols] = True
        return B

    def to_scipy(self):
        """A ``scipy.sparse.csr_matrix`` of the observed values."""
        from scipy import sparse

        return sparse.csr_matrix(
            (self.values.cpu().numpy(), (self.rows.cpu().numpy(), self.cols.cpu().numpy())),
            shape=self.shape,
        )

    def to_dataframe(self, original_ids: bool = True):
        """A ``pandas.DataFrame`` with columns ``user, item, rating`` (original ids by default)."""
        import pandas as pd

        r, c = self.rows.cpu().numpy(), self.cols.cpu().numpy()
        return pd.DataFrame(
            {
                "user": self.row_ids[r] if original_ids else r,
                "item": self.col_ids[c] if original_ids else c,
                "rating": self.values.cpu().numpy(),
            }
        )

    def row_counts(self) -> torch.Tensor:
        """Number of observed entries in each row."""
        return torch.bincount(self.rows, minlength=self.n_rows)

    def col_counts(self) -> torch.Tensor:
        """Number of observed entries in each column."""
        return torch.bincount(self.cols, minlength=self.n_cols)

    def row_index(self, ids: Sequence[Any] | np.ndarray) -> np.ndarray:
        """Indices of the given original row ids (``KeyError`` naming unknown ids)."""
        return _lookup(self.row_ids, ids, "row")

    def col_index(self, ids: Sequence[Any] | np.ndarray) -> np.ndarray:
        """Indices of the given original column ids (``KeyError`` naming unknown ids)."""
        return _lookup(self.col_ids, ids, "column")

    def clamp(self, values: torch.Tensor) -> torch.Tensor:
        """Clamp predictions to the rating scale (no-op when no scale is known)."""
        if self.scale is None:
            return values
        return values.clamp(self.scale[0], self.scale[1])


def _check_unique(ids: np.ndarray, what: str) -> None:
    """Raise ValueError if ``ids`` repeat a value or mix incomparable types."""
    try:
        vals, cnt = np.unique(ids, return_counts=True)
    except TypeError as err:  # e.g. [1, "a"]: numpy cannot sort mixed types
        raise ValueError(f"{what} mix types that cannot be compared ({err})") from None
    if len(vals) != len(ids):
        raise ValueError(f"{what} are not unique: {_show(vals[cnt > 1])}")


def _lookup(ids: np.ndarray, query: Sequence[Any] | np.ndarray, what: str) -> np.ndarray:
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    q = np.asarray(query)
    pos = np.searchsorted(sorted_ids, q)
    pos_clipped = np.clip(pos, 0, len(ids) - 1)
    found = sorted_ids[pos_clipped] == q
    if not np.all(found):
        raise KeyError(f"unknown {what} ids: {_show(q[~found])}")
    return order[pos_clipped]


# ---------------------------------------------------------------------------
# Networks


@dataclass(frozen=True, eq=False)
class Pairs:
    """Node pairs ``(i, j)`` with ``i < j`` and 0/1 labels (1 = link).

    Parameters
    ----------
    i, j : array-like of int, shape (n,)
        Node indices with ``i < j``.
    labels : array-like of {0, 1}, shape (n,)
        Whether each pair is linked.
    n_nodes : int
        Number of nodes of the network the pairs come from.
    """

    i: torch.Tensor
    j: torch.Tensor
    labels: torch.Tensor
    n_nodes: int

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        i, j = _as_long(self.i, "i"), _as_long(self.j, "j")
        labels = _tensor(self.labels, np.float32).float()
        set_(self, "i", i)
        set_(self, "j", j)
        set_(self, "labels", labels)
        if not (i.shape == j.shape == labels.shape):
            raise ValueError("i, j and labels must have the same length")
        bad = torch.nonzero(i >= j).flatten()
        if bad.numel():
            raise ValueError(f"pairs must have i < j; violated at positions {_show(bad.numpy())}")
        bad = torch.nonzero((i < 0) | (j >= self.n_nodes)).flatten()
        if bad.numel():
            raise ValueError(
                f"node indices out of range [0, {self.n_nodes}) at {_show(bad.numpy())}"
            )
        bad = torch.nonzero((labels != 0) & (labels != 1)).flatten()
        if bad.numel():
            raise ValueError(
                f"labels must be 0/1; got {_show(labels[bad].numpy())} at {_show(bad.numpy())}"
            )

    def __len__(self) -> int:
        return int(self.i.shape[0])

    def __repr__(self) -> str:
        return f"Pairs(n={len(self)}, links={int(self.labels.sum())}, n_nodes={self.n_nodes})"

    def subset(self, index: Any) -> Pairs:
        """The pairs at these positions."""
        idx = _tensor(index)
        return Pairs(self.i[idx], self.j[idx], self.labels[idx], self.n_nodes)

    # The entries of the n_nodes x n_nodes matrix, named as in Ratings, so that a factor
    # model and its fitters read pairs and ratings alike.
    @property
    def rows(self) -> torch.Tensor:
        """``i`` (the matrix row of each pair)."""
        return self.i

    @property
    def cols(self) -> torch.Tensor:
        """``j`` (the matrix column of each pair)."""
        return self.j

    @property
    def values(self) -> torch.Tensor:
        """``labels`` as floats."""
        return self.labels

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_nodes, n_nodes)``."""
        return (self.n_nodes, self.n_nodes)

    @property
    def scale(self) -> tuple[float, float]:
        """Link probabilities lie in ``(0, 1)``."""
        return (0.0, 1.0)

    @property
    def row_ids(self) -> np.ndarray:
        """Node indices ``0..n_nodes-1`` (the rows of the matrix)."""
        return np.arange(self.n_nodes)

    col_ids = row_ids

    @property
    def name(self) -> str:
        return "pairs"

    @property
    def device(self) -> torch.device:
        return self.i.device

    def to(self, device: str | torch.device) -> Pairs:
        """A copy on ``device`` (the same object when already there)."""
        if torch.device(device) == self.i.device:
            return self
        out = object.__new__(Pairs)
        for k, v in (("i", self.i), ("j", self.j), ("labels", self.labels)):
            object.__setattr__(out, k, v.to(device))
        object.__setattr__(out, "n_nodes", self.n_nodes)
        return out

    def clamp(self, values: torch.Tensor) -> torch.Tensor:
        """Clamp to [0, 1]."""
        return values.clamp(0.0, 1.0)

    def to_ratings(
        self, symmetric: bool = True, names: np.ndarray | None = None, name: str = "pairs"
    ) -> Ratings:
        """As a :class:`Ratings` over the ``n_nodes x n_nodes`` matrix (both (i,j) and (j,i))."""
        i, j, y = self.i, self.j, self.labels
        if symmetric:
            i, j, y = torch.cat([i, j]), torch.cat([j, i]), torch.cat([y, y])
        ids = np.arange(self.n_nodes) if names is None else np.asarray(names)
        return Ratings(
            i,
            j,
            y,
            shape=(self.n_nodes, self.n_nodes),
            row_ids=ids,
            col_ids=ids,
            scale=(0.0, 1.0),
            name=name,
        )


@dataclass(frozen=True, eq=False)
class Network:
    """A symmetric binary network without self-links.

    Parameters
    ----------
    n_nodes : int
        Number of nodes.
    edges : array-like of int, shape (E, 2)
        Linked pairs, each with ``i < j`` and listed once.
    names : array-like, optional
        Node names (default ``0..n_nodes-1``); must be unique.
    unobserved : array-like of int, shape (P, 2), optional
        Pairs ``i < j`` whose value is unknown (held out for testing). They are
        neither links nor non-links for fitting; ``edges`` must not contain them.
    name : str
        A label used in reports.

    Notes
    -----
    Use :meth:`from_adjacency` to build one from a 0/1 matrix (checked for
    squareness, symmetry, binary entries and an empty diagonal).

    Examples
    --------
    >>> from bayesmf.data import Network
    >>> net = Network.from_adjacency([[0, 1, 0], [1, 0, 1], [0, 1, 0]])
    >>> net.n_edges, net.edges.tolist()
    (2, [[0, 1], [1, 2]])
    """

    n_nodes: int
    edges: torch.Tensor
    names: np.ndarray = field(default=None)  # type: ignore[assignment]
    unobserved: torch.Tensor | None = None
    name: str = "network"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        n = int(self.n_nodes)
        set_(self, "n_nodes", n)
        if n < 2:
            raise ValueError(f"a network needs at least 2 nodes, got {n}")
        edges = self._pairs_tensor(self.edges, "edges")
        set_(self, "edges", edges)
        names = np.arange(n) if self.names is None else np.asarray(self.names)
        if len(names) != n:
            raise ValueError(f"names has {len(names)} entries for {n} nodes")
        _check_unique(names, "node names")
        set_(self, "names", names)
        if self.unobserved is not None:
            un = self._pairs_tensor(self.unobserved, "unobserved")
            set_(self, "unobserved", un)
            both = np.intersect1d(self._keys(edges), self._keys(un))
            if both.size:
                pairs = np.stack([both // n, both % n], 1)
                raise ValueError(f"pairs are both edges and unobserved: {_show(pairs)}")

    def _keys(self, pairs: torch.Tensor) -> np.ndarray:
        p = pairs.numpy()
        return p[:, 0].astype(np.int64) * self.n_nodes + p[:, 1]

    def _pairs_tensor(self, pairs: Any, what: str) -> torch.Tensor:
        t = _tensor(pairs, np.int64).long().reshape(-1, 2)
        n = self.n_nodes
        bad = torch.nonzero((t < 0).any(1) | (t >= n).any(1)).flatten()
        if bad.numel():
            raise ValueError(f"{what}: node indices out of range [0, {n}): {_show(t[bad].numpy())}")
        loops = torch.nonzero(t[:, 0] == t[:, 1]).flatten()
        if loops.numel():
            raise ValueError(
                f"{what}: self-loops are not allowed: nodes {_show(t[loops, 0].numpy())}"
            )
        bad = torch.nonzero(t[:, 0] > t[:, 1]).flatten()
        if bad.numel():
            raise ValueError(f"{what}: pairs must be listed with i < j: {_show(t[bad].numpy())}")
        keys = t[:, 0] * n + t[:, 1]
        uniq, cnt = torch.unique(keys, return_counts=True)
        if uniq.numel() != keys.numel():
            dup = uniq[cnt > 1]
            raise ValueError(
                f"{what}: duplicate pairs {_show(torch.stack([dup // n, dup % n], 1).numpy())}"
            )
        return t

    @classmethod
    def from_adjacency(cls, adjacency: Any, names: Any = None, name: str = "network") -> Network:
        """Build from a square, symmetric 0/1 matrix with zero diagonal.

        Raises
        ------
        ValueError
            If the matrix is not square, not symmetric, not binary, has
            self-loops or contains NaN.
        """
        A = np.asarray(adjacency.todense() if hasattr(adjacency, "todense") else adjacency)
        if A.ndim != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"adjacency must be square, got shape {A.shape}")
        if A.dtype.kind == "f" and not np.all(np.isfinite(A)):
            bad = np.argwhere(~np.isfinite(A))
            raise ValueError(f"adjacency contains NaN/inf at {_show(bad)}")
        nonbin = np.argwhere((A != 0) & (A != 1))
        if nonbin.size:
            raise ValueError(
                f"adjacency must be binary (0/1); entries {_show(nonbin)} hold "
                f"{_show(A[nonbin[:, 0], nonbin[:, 1]])}"
            )
        loops = np.flatnonzero(np.diag(A))
        if loops.size:
            raise ValueError(
                f"adjacency has self-loops (non-zero diagonal) at nodes {_show(loops)}"
            )
        asym = np.argwhere(A != A.T)
        if asym.size:
            asym = asym[asym[:, 0] < asym[:, 1]]
            raise ValueError(f"adjacency is not symmetric at pairs {_show(asym)}")
        i, j = np.nonzero(np.triu(A, k=1))
        return cls(A.shape[0], np.stack([i, j], axis=1), names=names, name=name)

    # ------------------------------------------------------------ properties
    @property
    def n_edges(self) -> int:
        return int(self.edges.shape[0])

    @property
    def n_pairs(self) -> int:
        """Number of observed pairs i<j (links and non-links)."""
        n_un = 0 if self.unobserved is None else int(self.unobserved.shape[0])
        return self.n_nodes * (self.n_nodes - 1) // 2 - n_un

    @property
    def density(self) -> float:
        return self.n_edges / float(self.n_nodes * (self.n_nodes - 1) // 2)

    def __repr__(self) -> str:
        un = "" if self.unobserved is None else f", unobserved={self.unobserved.shape[0]}"
        return f"Network(name={self.name!r}, n_nodes={self.n_nodes}, n_edges={self.n_edges}{un})"

    @property
    def adjacency(self) -> torch.Tensor:
        """Dense symmetric 0/1 float adjacency (unobserved pairs read as 0)."""
        A = torch.zeros(self.n_nodes, self.n_nodes)
        A[self.edges[:, 0], self.edges[:, 1]] = 1.0
        A[self.edges[:, 1], self.edges[:, 0]] = 1.0
        return A

    def observed_mask(self) -> torch.Tensor:
        """Dense symmetric boolean mask of observed off-diagonal pairs."""
        M = ~torch.eye(self.n_nodes, dtype=torch.bool)
        if self.unobserved is not None:
            M[self.unobserved[:, 0], self.unobserved[:, 1]] = False
            M[self.unobserved[:, 1], self.unobserved[:, 0]] = False
        return M

    def degrees(self) -> torch.Tensor:
        """Number of links of each node."""
        return torch.bincount(self.edges.flatten(), minlength=self.n_nodes)

    def pairs(self) -> Pairs:
        """All observed pairs i<j with their 0/1 labels."""
        i, j = torch.triu_indices(self.n_nodes, self.n_nodes, offset=1)
        keep = self.observed_mask()[i, j]
        i, j = i[keep], j[keep]
        return Pairs(i, j, self.adjacency[i, j], self.n_nodes)

    def observed_pairs(self) -> Pairs:
        """Every observed pair ``i < j`` (all pairs minus ``unobserved``) with its 0/1 label.

        The training data of a network model (e.g. :class:`bayesmf.models.LatentFeatureNetwork`):
        links and non-links alike, sorted by ``(i, j)``. Vectorised over pair keys
        ``i * n_nodes + j``, without dense ``n_nodes x n_nodes`` matrices.

        Examples
        --------
        >>> net = Network(4, [[0, 1], [2, 3]], unobserved=[[0, 2]])
        >>> p = net.observed_pairs()
        >>> len(p), p.labels.tolist()
        (5, [1.0, 0.0, 0.0, 0.0, 1.0])
        """
        n = self.n_nodes
        i, j = torch.triu_indices(n, n, offset=1)
        keys = i * n + j
        if self.unobserved is not None and self.unobserved.shape[0]:
            keep = ~torch.isin(keys, self.unobserved[:, 0] * n + self.unobserved[:, 1])
            i, j, keys = i[keep], j[keep], keys[keep]
        labels = torch.isin(keys, self.edges[:, 0] * n + self.edges[:, 1])
        return Pairs(i, j, labels.float(), n)

    def to_ratings(self) -> Ratings:
        """The observed pairs as a symmetric 0/1 :class:`Ratings` (both (i,j) and (j,i))."""
        return self.pairs().to_ratings(symmetric=True, names=self.names, name=self.name)

    def to_networkx(self):
        """A ``networkx.Graph`` with node names as labels."""
        import networkx as nx

        G = nx.Graph()
        G.add_nodes_from(self.names.tolist())
        e = self.edges.numpy()
        G.add_edges_from(
            zip(self.names[e[:, 0]].tolist(), self.names[e[:, 1]].tolist(), strict=True)
        )
        return G
