"""Train/validation/test splits of ratings and networks.

* :func:`random_split` and :func:`kfold` split the observed entries of a
  :class:`Ratings` at random; every part keeps the shape and id maps of the input.
* :func:`holdout_pairs` holds out a random fraction of all node pairs of a
  :class:`Network` (links and non-links alike) for link prediction.
* :func:`disjoint_split` splits rows *and* columns into disjoint groups
  (meta-learning protocol: train/validation/test tasks share no row or column).
* :func:`holdout_rows_cols` holds out whole rows and columns (extendability
  protocol: areas I-IV of known/new rows x known/new columns).

All randomness comes from a local :class:`torch.Generator` seeded with ``seed``;
the global random state is never touched and the same seed gives the same split.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .containers import Network, Pairs, Ratings

__all__ = [
    "random_split",
    "kfold",
    "holdout_pairs",
    "disjoint_split",
    "holdout_rows_cols",
    "ExtensionSplit",
]

logger = logging.getLogger(__name__)


def _generator(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(int(seed))
    return g


def _check_open_fraction(name: str, value: float) -> float:
    value = float(value)
    if not (math.isfinite(value) and 0.0 < value < 1.0):
        raise ValueError(f"{name} must be in (0, 1), got {value}")
    return value


def _sorted(idx: torch.Tensor) -> torch.Tensor:
    return torch.sort(idx).values


def _check_ratings(ratings: object, func: str) -> None:
    if not isinstance(ratings, Ratings):
        hint = " (call its .to_ratings() first)" if hasattr(ratings, "to_ratings") else ""
        raise TypeError(f"{func} expects a Ratings, got {type(ratings).__name__}{hint}")


# ------------------------------------------------------------------ entry splits


def random_split(
    ratings: Ratings,
    test_fraction: float = 0.1,
    *,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> tuple[Ratings, ...]:
    """Split the observed entries at random into train/(validation/)test.

    Parameters
    ----------
    ratings : Ratings
        The observed entries.
    test_fraction : float
        Fraction of the entries in the test part, in ``(0, 1)``; the test part
        has exactly ``round(n * test_fraction)`` entries.
    val_fraction : float
        Fraction in the validation part (``round(n * val_fraction)`` entries);
        0 (default) for no validation part.
    seed : int
        Seed of the local random generator.

    Returns
    -------
    tuple of Ratings
        ``(train, test)``, or ``(train, val, test)`` when ``val_fraction > 0``.
        Each has the shape, id maps, features and scale of ``ratings``; entries
        keep their original order.

    Raises
    ------
    TypeError
        If ``ratings`` is not a :class:`Ratings`.
    ValueError
        If a fraction is outside its range, the fractions sum to 1 or more, or
        a part would be empty.

    Examples
    --------
    >>> from bayesmf.data import synthetic_ratings
    >>> R, _ = synthetic_ratings(30, 20, density=0.5)
    >>> train, val, test = random_split(R, 0.2, val_fraction=0.05, seed=1)
    >>> len(R), len(train), len(val), len(test)
    (300, 225, 15, 60)
    >>> train.shape == test.shape == R.shape
    True
    """
    _check_ratings(ratings, "random_split")
    test_fraction = _check_open_fraction("test_fraction", test_fraction)
    val_fraction = float(val_fraction)
    if not (math.isfinite(val_fraction) and 0.0 <= val_fraction < 1.0):
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if test_fraction + val_fraction >= 1.0:
        raise ValueError(
            f"test_fraction + val_fraction must be < 1, got {test_fraction} + {val_fraction}"
        )
    n = len(ratings)
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    n_train = n - n_test - n_val
    for what, size, frac in (("test", n_test, test_fraction), ("validation", n_val, val_fraction)):
        if size == 0 and frac > 0:
            raise ValueError(
                f"{what} fraction {frac} of {n} ratings gives an empty {what} part; "
                "use a larger fraction or more data"
            )
    if n_train <= 0:
        raise ValueError(f"the fractions leave no training ratings out of {n}")
    perm = torch.randperm(n, generator=_generator(seed))
    train = ratings.subset(_sorted(perm[:n_train]))
    test = ratings.subset(_sorted(perm[n_train + n_val :]))
    logger.debug("random_split: %d train, %d val, %d test", n_train, n_val, n_test)
    if n_val:
        return train, ratings.subset(_sorted(perm[n_train : n_train + n_val])), test
    return train, test


def kfold(ratings: Ratings, k: int = 5, seed: int = 0) -> list[tuple[Ratings, Ratings]]:
    """K-fold cross-validation splits of the observed entries.

    The entries are shuffled once and cut into ``k`` disjoint test folds whose
    sizes differ by at most one; together they cover every entry exactly once.

    Parameters
    ----------
    ratings : Ratings
        The observed entries.
    k : int
        Number of folds, ``2 <= k <= len(ratings)``.
    seed : int
        Seed of the local random generator.

    Returns
    -------
    list of (Ratings, Ratings)
        ``(train, test)`` for each fold, same shape and id maps as ``ratings``.

    Examples
    --------
    >>> from bayesmf.data import synthetic_ratings
    >>> R, _ = synthetic_ratings(30, 20, density=0.5)
    >>> folds = kfold(R, k=3)
    >>> [(len(tr), len(te)) for tr, te in folds]
    [(200, 100), (200, 100), (200, 100)]
    """
    _check_ratings(ratings, "kfold")
    if isinstance(k, bool) or int(k) != k:
        raise ValueError(f"k must be an integer, got {k!r}")
    k = int(k)
    n = len(ratings)
    if not 2 <= k <= n:
        raise ValueError(f"k must be in [2, n_ratings={n}], got {k}")
    perm = torch.randperm(n, generator=_generator(seed))
    folds: list[tuple[Ratings, Ratings]] = []
    for test_idx in perm.tensor_split(k):  # loop over folds, not entries
        is_test = torch.zeros(n, dtype=torch.bool)
        is_test[test_idx] = True
        folds.append((ratings.subset(~is_test), ratings.subset(is_test)))
    return folds


# -------------------------------------------------------------------- networks


def holdout_pairs(
    network: Network, fraction: float = 0.1, seed: int = 0, *, nested: bool = False
) -> tuple[Network, Pairs]:
    """Hold out a random fraction of all node pairs for link prediction.

    ``round(fraction * n_pairs)`` pairs ``i < j`` are drawn uniformly among all
    pairs, links and non-links alike. The training network keeps the nodes and
    names, loses the held-out links and marks every held-out pair as
    ``unobserved`` (its value is unknown to the model, not a non-link).

    Parameters
    ----------
    network : Network
        The full network.
    fraction : float
        Fraction of the pairs held out, in ``(0, 1)``.
    seed : int
        Seed of the local random generator.
    nested : bool
        If the network already has unobserved pairs (e.g. it is itself a
        training network), hold out among its observed pairs only and keep the
        old unobserved pairs unobserved. Without it such a network is refused,
        since its held-out pairs would overlap the existing ones.

    Returns
    -------
    train : Network
        Same ``n_nodes``, ``names`` and ``name``; ``edges`` minus the held-out
        links; ``unobserved`` = the held-out pairs (plus the old ones if nested).
    test : Pairs
        The held-out pairs (sorted by ``(i, j)``) with 0/1 labels (1 = link).

    Raises
    ------
    ValueError
        If ``fraction`` is not in ``(0, 1)``, the network already has unobserved
        pairs (unless ``nested``), or the held-out set would have no links or no
        non-links.

    Examples
    --------
    >>> from bayesmf.data import synthetic_network
    >>> net, _ = synthetic_network(40, n_blocks=2, p_in=0.5, p_out=0.05)
    >>> train, test = holdout_pairs(net, 0.1)
    >>> len(test), train.unobserved.shape[0]
    (78, 78)
    >>> train.n_edges + int(test.labels.sum()) == net.n_edges
    True
    """
    if not isinstance(network, Network):
        raise TypeError(f"holdout_pairs expects a Network, got {type(network).__name__}")
    fraction = _check_open_fraction("fraction", fraction)
    n = network.n_nodes
    has_unobserved = network.unobserved is not None and network.unobserved.shape[0] > 0
    if has_unobserved and not nested:
        raise ValueError(
            f"the network already has {network.unobserved.shape[0]} unobserved pairs, which "
            "held-out pairs would overlap; pass nested=True to hold out among the observed "
            "pairs only"
        )
    i, j = torch.triu_indices(n, n, offset=1)
    keys = i * n + j
    if has_unobserved:
        old_keys = network.unobserved[:, 0] * n + network.unobserved[:, 1]
        keep = ~torch.isin(keys, old_keys)
        i, j, keys = i[keep], j[keep], keys[keep]
    n_pairs = keys.numel()
    n_test = int(round(fraction * n_pairs))
    if n_test == 0:
        raise ValueError(f"fraction={fraction} of {n_pairs} pairs holds out no pair")
    if n_test == n_pairs:
        raise ValueError(f"fraction={fraction} of {n_pairs} pairs holds out every pair")
    sel = _sorted(torch.randperm(n_pairs, generator=_generator(seed))[:n_test])
    test_i, test_j, test_keys = i[sel], j[sel], keys[sel]
    edges = network.edges
    edge_keys = edges[:, 0] * n + edges[:, 1]
    labels = torch.isin(test_keys, edge_keys)
    n_links = int(labels.sum())
    if n_links == 0:
        raise ValueError(
            f"the {n_test} held-out pairs contain no link; use a larger fraction or another seed"
        )
    if n_links == n_test:
        raise ValueError(
            f"the {n_test} held-out pairs contain no non-link; use a smaller fraction"
        )
    train_edges = edges[~torch.isin(edge_keys, test_keys)]
    unobserved = torch.stack([test_i, test_j], dim=1)
    if has_unobserved:
        unobserved = torch.cat([network.unobserved, unobserved])
        order = torch.argsort(unobserved[:, 0] * n + unobserved[:, 1])
        unobserved = unobserved[order]
    train = Network(n, train_edges, names=network.names, unobserved=unobserved, name=network.name)
    test = Pairs(test_i, test_j, labels.float(), n)
    logger.debug("holdout_pairs: %d held out (%d links)", n_test, n_links)
    return train, test


# ------------------------------------------------------ row/column-wise splits


def _group_sizes(n: int, fractions: Sequence[float], what: str) -> list[int]:
    """Sizes ``diff(round(cumsum(fractions) * n))`` of groups of ``n`` items, each >= 1."""
    bounds = [0] + [int(round(c * n)) for c in np.cumsum(fractions)]
    bounds[-1] = n
    sizes = [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    empty = [g for g, s in enumerate(sizes) if s <= 0]
    if empty:
        raise ValueError(
            f"fractions {tuple(fractions)} of {n} {what} leave part(s) {empty} without {what}"
        )
    return sizes


def _check_fractions(fractions: Sequence[float]) -> list[float]:
    fr = [float(f) for f in fractions]
    if len(fr) < 2:
        raise ValueError(f"need at least two fractions, got {tuple(fr)}")
    if any(not (math.isfinite(f) and f > 0) for f in fr):
        raise ValueError(f"fractions must be positive, got {tuple(fr)}")
    if abs(sum(fr) - 1.0) > 1e-6:
        raise ValueError(f"fractions must sum to 1, got {tuple(fr)} (sum {sum(fr)})")
    return fr


def _random_groups(n: int, sizes: list[int], gen: torch.Generator) -> torch.Tensor:
    """Group label of each of ``n`` items, with the given group sizes, at random."""
    labels = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    group = torch.empty(n, dtype=torch.long)
    group[torch.randperm(n, generator=gen)] = labels
    return group


def _compact(ratings: Ratings, keep: torch.Tensor, row_idx: torch.Tensor,
             col_idx: torch.Tensor, name: str) -> Ratings:
    """The entries ``keep`` re-indexed onto the rows ``row_idx`` and columns ``col_idx``."""
    device = ratings.rows.device
    new_row = torch.full((ratings.n_rows,), -1, dtype=torch.long, device=device)
    new_row[row_idx.to(device)] = torch.arange(row_idx.numel(), device=device)
    new_col = torch.full((ratings.n_cols,), -1, dtype=torch.long, device=device)
    new_col[col_idx.to(device)] = torch.arange(col_idx.numel(), device=device)
    keep = keep.to(device)
    r_np, c_np = row_idx.cpu().numpy(), col_idx.cpu().numpy()
    rf, cf = ratings.row_features, ratings.col_features
    return Ratings(
        new_row[ratings.rows[keep]],
        new_col[ratings.cols[keep]],
        ratings.values[keep],
        shape=(row_idx.numel(), col_idx.numel()),
        row_ids=ratings.row_ids[r_np],
        col_ids=ratings.col_ids[c_np],
        row_features=None if rf is None else rf[row_idx.to(rf.device)],
        col_features=None if cf is None else cf[col_idx.to(cf.device)],
        row_feature_names=ratings.row_feature_names,
        col_feature_names=ratings.col_feature_names,
        scale=ratings.scale,
        name=name,
        _validate=False,  # a re-indexed subset of valid, non-empty data is valid
    )


def disjoint_split(
    ratings: Ratings, fractions: Sequence[float] = (0.7, 0.1, 0.2), seed: int = 0
) -> tuple[Ratings, ...]:
    """Split rows and columns into disjoint groups; part g is row-group g x column-group g.

    This is the meta-learning protocol: rows and columns are each split at
    random into ``len(fractions)`` disjoint groups of sizes
    ``diff(round(cumsum(fractions) * n))``; part ``g`` holds the ratings whose
    row is in row-group ``g`` *and* whose column is in column-group ``g``. The
    parts therefore share no row and no column (meta-train, meta-validation and
    meta-test tasks are unrelated), and **ratings whose row and column fall in
    different groups belong to no part** and are discarded (with three parts
    of 0.7/0.1/0.2, about ``0.7**2 + 0.1**2 + 0.2**2 = 54%`` of the ratings are kept).

    Parameters
    ----------
    ratings : Ratings
        The observed entries.
    fractions : sequence of float
        Two or more positive fractions summing to 1.
    seed : int
        Seed of the local random generator.

    Returns
    -------
    tuple of Ratings
        One per fraction, re-indexed compactly: part ``g`` has shape
        ``(rows in group g, columns in group g)`` (rows/columns of the group
        without a rating in the part are kept), its ``row_ids``/``col_ids``
        and features are the matching subsets of the input's, and it keeps the
        scale. Parts are named ``"<name>[part g]"``; entries keep their order.

    Raises
    ------
    ValueError
        If the fractions are not positive and summing to 1, a group would have
        no row or column, or a part would hold no rating.

    Examples
    --------
    >>> from bayesmf.data import synthetic_ratings
    >>> R, _ = synthetic_ratings(100, 50, density=0.3)
    >>> parts = disjoint_split(R, (0.6, 0.4))
    >>> [p.shape for p in parts]
    [(60, 30), (40, 20)]
    >>> set(parts[0].row_ids) & set(parts[1].row_ids)
    set()
    """
    _check_ratings(ratings, "disjoint_split")
    fr = _check_fractions(fractions)
    row_sizes = _group_sizes(ratings.n_rows, fr, "rows")
    col_sizes = _group_sizes(ratings.n_cols, fr, "columns")
    gen = _generator(seed)
    row_group = _random_groups(ratings.n_rows, row_sizes, gen).to(ratings.rows.device)
    col_group = _random_groups(ratings.n_cols, col_sizes, gen).to(ratings.rows.device)
    r_of, c_of = row_group[ratings.rows], col_group[ratings.cols]
    same = r_of == c_of
    parts = []
    for g in range(len(fr)):  # loop over the few parts, not over entries
        keep = same & (r_of == g)
        if not bool(keep.any()):
            raise ValueError(f"part {g} (fraction {fr[g]}) holds no rating")
        row_idx = torch.nonzero(row_group == g).flatten()
        col_idx = torch.nonzero(col_group == g).flatten()
        parts.append(_compact(ratings, keep, row_idx, col_idx, f"{ratings.name}[part {g}]"))
    logger.debug(
        "disjoint_split: kept %d of %d ratings in %s", int(same.sum()), len(ratings),
        [len(p) for p in parts],
    )
    return tuple(parts)


@dataclass(frozen=True, eq=False)
class ExtensionSplit:
    """Known and new rows/columns, and the four areas of the matrix they define.

    All four areas are :class:`Ratings` on the *original* shape and id maps
    (subsets of the input's entries)::

                      known cols   new cols
        known rows    area_I       area_III
        new rows      area_II      area_IV

    Attributes
    ----------
    known_rows, new_rows : torch.Tensor of long
        Sorted indices of the kept and held-out rows of the original matrix.
    known_cols, new_cols : torch.Tensor of long
        Sorted indices of the kept and held-out columns.
    area_I, area_II, area_III, area_IV : Ratings
        known x known, new rows x known cols, known rows x new cols, new x new.
    """

    known_rows: torch.Tensor
    new_rows: torch.Tensor
    known_cols: torch.Tensor
    new_cols: torch.Tensor
    area_I: Ratings
    area_II: Ratings
    area_III: Ratings
    area_IV: Ratings

    def areas(self) -> dict[str, Ratings]:
        """The four areas by name ``"I"``-``"IV"``."""
        return {"I": self.area_I, "II": self.area_II, "III": self.area_III, "IV": self.area_IV}

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.areas().items())
        return (
            f"ExtensionSplit(rows {self.known_rows.numel()} known/{self.new_rows.numel()} new, "
            f"cols {self.known_cols.numel()} known/{self.new_cols.numel()} new; ratings {sizes})"
        )


def _holdout_count(n: int, fraction: float, what: str) -> int:
    k = int(round(n * fraction))
    if k < 1:
        raise ValueError(f"{what}_fraction={fraction} of {n} {what}s holds out no {what}")
    if k >= n:
        raise ValueError(f"{what}_fraction={fraction} of {n} {what}s holds out every {what}")
    return k


def holdout_rows_cols(
    ratings: Ratings, row_fraction: float = 0.1, col_fraction: float = 0.1, seed: int = 0
) -> ExtensionSplit:
    """Hold out a random fraction of whole rows and columns (extendability protocol).

    ``round(n_rows * row_fraction)`` rows and ``round(n_cols * col_fraction)``
    columns are drawn as "new"; every rating falls in exactly one of the four
    areas known/new rows x known/new columns (see :class:`ExtensionSplit`).

    Parameters
    ----------
    ratings : Ratings
        The observed entries.
    row_fraction, col_fraction : float
        Fractions of rows/columns held out, in ``(0, 1)``.
    seed : int
        Seed of the local random generator.

    Returns
    -------
    ExtensionSplit

    Raises
    ------
    ValueError
        If a fraction is outside ``(0, 1)``, holds out no or every row/column,
        or an area would hold no rating.

    Examples
    --------
    >>> from bayesmf.data import synthetic_ratings
    >>> R, _ = synthetic_ratings(100, 50, density=0.3)
    >>> ext = holdout_rows_cols(R, 0.2, 0.2)
    >>> ext.new_rows.numel(), ext.new_cols.numel(), ext.area_IV.shape
    (20, 10, (100, 50))
    >>> sum(len(a) for a in ext.areas().values()) == len(R)
    True
    """
    _check_ratings(ratings, "holdout_rows_cols")
    row_fraction = _check_open_fraction("row_fraction", row_fraction)
    col_fraction = _check_open_fraction("col_fraction", col_fraction)
    k_r = _holdout_count(ratings.n_rows, row_fraction, "row")
    k_c = _holdout_count(ratings.n_cols, col_fraction, "column")
    gen = _generator(seed)
    perm_r = torch.randperm(ratings.n_rows, generator=gen)
    perm_c = torch.randperm(ratings.n_cols, generator=gen)
    new_rows, known_rows = _sorted(perm_r[:k_r]), _sorted(perm_r[k_r:])
    new_cols, known_cols = _sorted(perm_c[:k_c]), _sorted(perm_c[k_c:])
    device = ratings.rows.device
    is_new_row = torch.zeros(ratings.n_rows, dtype=torch.bool, device=device)
    is_new_row[new_rows.to(device)] = True
    is_new_col = torch.zeros(ratings.n_cols, dtype=torch.bool, device=device)
    is_new_col[new_cols.to(device)] = True
    nr, nc = is_new_row[ratings.rows], is_new_col[ratings.cols]
    masks = {"I": ~nr & ~nc, "II": nr & ~nc, "III": ~nr & nc, "IV": nr & nc}
    areas = {}
    for key, m in masks.items():  # four areas
        if not bool(m.any()):
            raise ValueError(
                f"area {key} holds no rating ({k_r} new rows, {k_c} new columns); "
                "use larger fractions or denser data"
            )
        areas[key] = ratings.subset(m)
    return ExtensionSplit(
        known_rows=known_rows,
        new_rows=new_rows,
        known_cols=known_cols,
        new_cols=new_cols,
        area_I=areas["I"],
        area_II=areas["II"],
        area_III=areas["III"],
        area_IV=areas["IV"],
    )
