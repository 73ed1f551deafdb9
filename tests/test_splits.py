"""Splits of ratings (entries, rows/columns) and of networks (pairs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bayesmf.data.containers import Network, Pairs, Ratings
from bayesmf.data.splits import (
    ExtensionSplit,
    disjoint_split,
    holdout_pairs,
    holdout_rows_cols,
    kfold,
    random_split,
)
from bayesmf.data.synthetic import synthetic_network, synthetic_ratings

# ------------------------------------------------------------------ helpers


def _ml100k(data_dir: Path) -> Ratings:
    """MovieLens 100K built directly from u.data (independent of the loader)."""
    df = pd.read_csv(
        data_dir / "ml-100k" / "u.data", sep="\t", header=None,
        names=["user", "item", "rating", "timestamp"],
    )
    users, rows = np.unique(df["user"].to_numpy(), return_inverse=True)
    items, cols = np.unique(df["item"].to_numpy(), return_inverse=True)
    return Ratings(rows, cols, df["rating"].to_numpy(np.float32), shape=(len(users), len(items)),
                   row_ids=users, col_ids=items, scale=(1, 5), name="ml-100k")


@pytest.fixture(scope="module")
def ml100k(data_dir: Path) -> Ratings:
    return _ml100k(data_dir)


@pytest.fixture(scope="module")
def nips(data_dir: Path) -> Network:
    A = np.loadtxt(data_dir / "nips234" / "NIPS.csv", delimiter=",")
    return Network.from_adjacency(A, name="nips234")


@pytest.fixture()
def small() -> Ratings:
    R, _ = synthetic_ratings(60, 40, density=0.25, seed=5)  # 600 ratings
    rf = torch.arange(60, dtype=torch.float32)[:, None].repeat(1, 2)
    cf = torch.arange(40, dtype=torch.float32)[:, None] * 10
    return R.replace(row_ids=np.arange(60) + 1000, col_ids=np.array([f"c{j}" for j in range(40)]),
                     row_features=rf, col_features=cf, scale=(-5.0, 5.0))


def _keys(R: Ratings) -> torch.Tensor:
    return R.rows * R.n_cols + R.cols


def _same_frame(a: Ratings, b: Ratings) -> bool:
    return (a.shape == b.shape and np.array_equal(a.row_ids, b.row_ids)
            and np.array_equal(a.col_ids, b.col_ids) and a.scale == b.scale)


# ------------------------------------------------------------- random_split


def test_random_split_90_10(small: Ratings) -> None:
    train, test = random_split(small, 0.1, seed=0)
    assert (len(train), len(test)) == (540, 60)
    assert _same_frame(train, small) and _same_frame(test, small)
    k_tr, k_te = _keys(train), _keys(test)
    assert not torch.isin(k_tr, k_te).any()
    assert torch.equal(torch.sort(torch.cat([k_tr, k_te])).values, torch.sort(_keys(small)).values)
    # values travel with their entries
    dense = small.to_dense()
    assert torch.equal(dense[test.rows, test.cols], test.values)


def test_random_split_75_5_20(small: Ratings) -> None:
    train, val, test = random_split(small, 0.2, val_fraction=0.05, seed=0)
    assert (len(train), len(val), len(test)) == (450, 30, 120)
    keys = [_keys(p) for p in (train, val, test)]
    allk = torch.cat(keys)
    assert torch.unique(allk).numel() == len(small) == allk.numel()


def test_random_split_real_exact_counts(ml100k: Ratings) -> None:
    train, val, test = random_split(ml100k, 0.2, val_fraction=0.05, seed=3)
    assert (len(train), len(val), len(test)) == (75_000, 5_000, 20_000)
    assert train.shape == (943, 1682) and np.array_equal(test.row_ids, ml100k.row_ids)


def test_random_split_seeded(small: Ratings) -> None:
    a = random_split(small, 0.1, seed=1)[1]
    b = random_split(small, 0.1, seed=1)[1]
    c = random_split(small, 0.1, seed=2)[1]
    assert torch.equal(_keys(a), _keys(b))
    assert not torch.equal(_keys(a), _keys(c))


def test_splits_leave_global_rng_alone(small: Ratings) -> None:
    state = torch.get_rng_state()
    random_split(small, 0.1)
    kfold(small, 3)
    disjoint_split(small, (0.5, 0.5))
    holdout_rows_cols(small, 0.2, 0.2)
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((0.0,), {}, "test_fraction"),
        ((1.0,), {}, "test_fraction"),
        ((-0.1,), {}, "test_fraction"),
        ((float("nan"),), {}, "test_fraction"),
        ((0.1,), {"val_fraction": -0.1}, "val_fraction"),
        ((0.5,), {"val_fraction": 0.5}, "must be < 1"),
        ((0.0001,), {}, "empty test part"),
        ((0.1,), {"val_fraction": 0.0001}, "empty validation part"),
    ],
)
def test_random_split_bad_input(small: Ratings, args: tuple, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        random_split(small, *args, **kwargs)


def test_not_ratings_is_a_type_error(small: Ratings) -> None:
    for func in (random_split, kfold, disjoint_split, holdout_rows_cols):
        with pytest.raises(TypeError, match="expects a Ratings"):
            func(small.to_dataframe())
    with pytest.raises(TypeError, match="expects a Network"):
        holdout_pairs(small)  # type: ignore[arg-type]


def test_random_split_no_train_left() -> None:
    R = Ratings([0, 1], [0, 1], [1.0, 2.0], shape=(2, 2))
    with pytest.raises(ValueError, match="no training"):
        random_split(R, 0.5, val_fraction=0.4)


# --------------------------------------------------------------------- kfold


def test_kfold_covers_everything_once(small: Ratings) -> None:
    folds = kfold(small, k=7, seed=0)
    assert len(folds) == 7
    test_keys = torch.cat([_keys(te) for _, te in folds])
    assert test_keys.numel() == len(small)
    assert torch.equal(torch.sort(test_keys).values, torch.sort(_keys(small)).values)
    sizes = [len(te) for _, te in folds]
    assert max(sizes) - min(sizes) <= 1
    for tr, te in folds:
        assert len(tr) + len(te) == len(small)
        assert not torch.isin(_keys(tr), _keys(te)).any()
        assert _same_frame(tr, small)


def test_kfold_seeded(small: Ratings) -> None:
    a, b, c = kfold(small, 3, seed=0), kfold(small, 3, seed=0), kfold(small, 3, seed=1)
    assert torch.equal(_keys(a[0][1]), _keys(b[0][1]))
    assert not torch.equal(_keys(a[0][1]), _keys(c[0][1]))


@pytest.mark.parametrize("k", [1, 0, 601, 2.5])
def test_kfold_bad_k(small: Ratings, k: float) -> None:
    with pytest.raises(ValueError, match="k must"):
        kfold(small, k)  # type: ignore[arg-type]


# ------------------------------------------------------------- holdout_pairs


def test_holdout_pairs_nips(nips: Network) -> None:
    assert nips.n_nodes == 234 and nips.n_edges == 598
    n_all = 234 * 233 // 2
    assert n_all == 27_261
    train, test = holdout_pairs(nips, 0.1, seed=0)
    assert isinstance(test, Pairs) and len(test) == round(0.1 * n_all) == 2726
    assert train.n_nodes == 234 and np.array_equal(train.names, nips.names)
    # labels match the full adjacency
    A = nips.adjacency
    assert torch.equal(test.labels, A[test.i, test.j])
    n_links = int(test.labels.sum())
    assert 0 < n_links < len(test)
    assert train.n_edges + n_links == 598
    # the training network has no held-out link and marks all held-out pairs unobserved
    test_keys = test.i * 234 + test.j
    assert not torch.isin(train.edges[:, 0] * 234 + train.edges[:, 1], test_keys).any()
    un = train.unobserved
    assert torch.equal(torch.sort(un[:, 0] * 234 + un[:, 1]).values, torch.sort(test_keys).values)
    assert train.n_pairs == n_all - 2726
    # every training edge is an edge of the full network
    assert torch.all(A[train.edges[:, 0], train.edges[:, 1]] == 1)
    # observed training pairs + held-out pairs = all pairs
    assert len(train.pairs()) + len(test) == n_all


def test_holdout_pairs_seeded(nips: Network) -> None:
    _, a = holdout_pairs(nips, 0.1, seed=4)
    _, b = holdout_pairs(nips, 0.1, seed=4)
    _, c = holdout_pairs(nips, 0.1, seed=5)
    assert torch.equal(a.i, b.i) and torch.equal(a.j, b.j)
    assert not (torch.equal(a.i, c.i) and torch.equal(a.j, c.j))


def test_holdout_pairs_nested() -> None:
    net, _ = synthetic_network(60, n_blocks=2, p_in=0.5, p_out=0.1)
    train, test = holdout_pairs(net, 0.2, seed=0)
    with pytest.raises(ValueError, match="already has .* unobserved"):
        holdout_pairs(train, 0.1)
    inner, val = holdout_pairs(train, 0.1, seed=1, nested=True)
    n_obs = train.n_pairs
    assert len(val) == round(0.1 * n_obs)
    val_keys = val.i * 60 + val.j
    assert not torch.isin(val_keys, test.i * 60 + test.j).any()
    assert inner.unobserved.shape[0] == len(test) + len(val)
    assert inner.n_edges + int(val.labels.sum()) == train.n_edges


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.5, 2.0])
def test_holdout_pairs_bad_fraction(nips: Network, fraction: float) -> None:
    with pytest.raises(ValueError, match="fraction must be in"):
        holdout_pairs(nips, fraction)


def test_holdout_pairs_needs_links_and_non_links() -> None:
    empty = Network(10, np.zeros((0, 2), dtype=np.int64))
    with pytest.raises(ValueError, match="no link"):
        holdout_pairs(empty, 0.2)
    i, j = np.triu_indices(10, k=1)
    full = Network(10, np.stack([i, j], 1))
    with pytest.raises(ValueError, match="no non-link"):
        holdout_pairs(full, 0.2)
    with pytest.raises(ValueError, match="holds out no pair"):
        holdout_pairs(full, 0.001)


# ------------------------------------------------------------ disjoint_split


def test_disjoint_split_ml100k(ml100k: Ratings) -> None:
    parts = disjoint_split(ml100k, (0.7, 0.1, 0.2), seed=0)
    assert len(parts) == 3
    row_sizes = [round(0.7 * 943), round(0.8 * 943) - round(0.7 * 943), 943 - round(0.8 * 943)]
    col_sizes = [round(0.7 * 1682), round(0.8 * 1682) - round(0.7 * 1682),
                 1682 - round(0.8 * 1682)]
    assert [p.shape for p in parts] == list(zip(row_sizes, col_sizes, strict=True))
    # rows and columns disjoint across parts, and together all of them
    row_sets = [set(p.row_ids.tolist()) for p in parts]
    col_sets = [set(p.col_ids.tolist()) for p in parts]
    for a in range(3):
        for b in range(a + 1, 3):
            assert not row_sets[a] & row_sets[b] and not col_sets[a] & col_sets[b]
    assert set.union(*row_sets) == set(ml100k.row_ids.tolist())
    assert set.union(*col_sets) == set(ml100k.col_ids.tolist())
    dense = ml100k.to_dense()
    df = ml100k.to_dataframe()
    for g, p in enumerate(parts):
        assert p.scale == (1.0, 5.0) and p.name == f"ml-100k[part {g}]"
        # original ids preserved: values equal the source entries
        src_r = torch.as_tensor(ml100k.row_index(p.row_ids[p.rows.numpy()]))
        src_c = torch.as_tensor(ml100k.col_index(p.col_ids[p.cols.numpy()]))
        assert torch.equal(dense[src_r, src_c], p.values)
        # part g holds exactly the ratings with user and item both in group g
        both = df["user"].isin(row_sets[g]) & df["item"].isin(col_sets[g])
        assert len(p) == int(both.sum())
    kept = sum(len(p) for p in parts)
    assert 0.4 * len(ml100k) < kept < 0.7 * len(ml100k)


def test_disjoint_split_features_and_ids(small: Ratings) -> None:
    a, b = disjoint_split(small, (0.5, 0.5), seed=1)
    for p in (a, b):
        idx = small.row_index(p.row_ids)
        assert torch.equal(p.row_features, small.row_features[torch.as_tensor(idx)])
        cidx = small.col_index(p.col_ids)
        assert torch.equal(p.col_features, small.col_features[torch.as_tensor(cidx)])
        assert p.row_feature_names == small.row_feature_names
        p.validate()
    c, _ = disjoint_split(small, (0.5, 0.5), seed=1)
    d, _ = disjoint_split(small, (0.5, 0.5), seed=2)
    assert np.array_equal(a.row_ids, c.row_ids)
    assert not np.array_equal(a.row_ids, d.row_ids)


@pytest.mark.parametrize(
    ("fractions", "match"),
    [
        ((1.0,), "at least two"),
        ((0.5, 0.4), "sum to 1"),
        ((1.2, -0.2), "positive"),
        ((0.995, 0.005), "without rows"),
        ((0.99, 0.01), "without columns"),
    ],
)
def test_disjoint_split_bad_fractions(small: Ratings, fractions: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        disjoint_split(small, fractions)


def test_disjoint_split_empty_part() -> None:
    R = Ratings([0, 0], [0, 1], [1.0, 2.0], shape=(2, 2))  # only row 0 is rated
    with pytest.raises(ValueError, match="holds no rating"):
        disjoint_split(R, (0.5, 0.5))


# ---------------------------------------------------------- holdout_rows_cols


def test_holdout_rows_cols_partition(ml100k: Ratings) -> None:
    ext = holdout_rows_cols(ml100k, 0.1, 0.2, seed=0)
    assert isinstance(ext, ExtensionSplit)
    assert ext.new_rows.numel() == round(0.1 * 943) and ext.new_cols.numel() == round(0.2 * 1682)
    assert torch.equal(torch.sort(torch.cat([ext.known_rows, ext.new_rows])).values,
                       torch.arange(943))
    assert torch.equal(torch.sort(torch.cat([ext.known_cols, ext.new_cols])).values,
                       torch.arange(1682))
    areas = ext.areas()
    assert sum(len(a) for a in areas.values()) == len(ml100k)
    keys = torch.cat([_keys(a) for a in areas.values()])
    assert torch.unique(keys).numel() == len(ml100k)
    is_new_row = torch.zeros(943, dtype=torch.bool)
    is_new_row[ext.new_rows] = True
    is_new_col = torch.zeros(1682, dtype=torch.bool)
    is_new_col[ext.new_cols] = True
    expect = {"I": (False, False), "II": (True, False), "III": (False, True), "IV": (True, True)}
    for name, area in areas.items():
        assert _same_frame(area, ml100k)
        new_r, new_c = expect[name]
        assert torch.all(is_new_row[area.rows] == new_r)
        assert torch.all(is_new_col[area.cols] == new_c)
    assert "ExtensionSplit" in repr(ext)


def test_holdout_rows_cols_seeded(small: Ratings) -> None:
    a, b = holdout_rows_cols(small, seed=3), holdout_rows_cols(small, seed=3)
    c = holdout_rows_cols(small, seed=4)
    assert torch.equal(a.new_rows, b.new_rows) and torch.equal(a.new_cols, b.new_cols)
    assert not torch.equal(a.new_rows, c.new_rows)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(row_fraction=0.0), "row_fraction"),
        (dict(col_fraction=1.0), "col_fraction"),
        (dict(row_fraction=0.001), "holds out no row"),
        (dict(col_fraction=0.999), "holds out every column"),
    ],
)
def test_holdout_rows_cols_bad_input(small: Ratings, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        holdout_rows_cols(small, **kwargs)


def test_holdout_rows_cols_empty_area() -> None:
    R = Ratings([0, 1, 2, 3], [0, 1, 2, 3], [1.0, 2.0, 3.0, 4.0], shape=(4, 4))  # diagonal
    with pytest.raises(ValueError, match="holds no rating"):
        holdout_rows_cols(R, 0.25, 0.25)
