"""Episode sampling for meta-learning."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bayesmf.data.containers import Ratings
from bayesmf.data.episodes import Episode, EpisodeSampler, pad
from bayesmf.data.synthetic import synthetic_ratings


@pytest.fixture(scope="module")
def task() -> Ratings:
    R, _ = synthetic_ratings(100, 80, density=0.3, scale=(1, 5), seed=1)
    return R


@pytest.fixture(scope="module")
def ml100k(data_dir: Path) -> Ratings:
    df = pd.read_csv(data_dir / "ml-100k" / "u.data", sep="\t", header=None,
                     names=["user", "item", "rating", "timestamp"])
    users, rows = np.unique(df["user"].to_numpy(), return_inverse=True)
    items, cols = np.unique(df["item"].to_numpy(), return_inverse=True)
    return Ratings(rows, cols, df["rating"].to_numpy(np.float32), shape=(len(users), len(items)),
                   row_ids=users, col_ids=items, scale=(1, 5), name="ml-100k")


def _check_against_dense(ep: Episode, tasks: list[Ratings], train_ratio: float) -> None:
    """Masks disjoint, inside observed entries, X equal to the source entries, exact train count."""
    assert not (ep.train_mask & ep.test_mask).any()
    dense_all = [t.to_dense(fill=0.0) for t in tasks]
    mask_all = [t.mask() for t in tasks]
    for b in range(ep.batch_size):
        src = int(ep.source[b])
        r, c = ep.rows[b], ep.cols[b]
        rv, cv = r >= 0, c >= 0
        r, c = r[rv], c[cv]
        assert torch.unique(r).numel() == r.numel() and torch.unique(c).numel() == c.numel()
        dense = dense_all[src][r][:, c]
        obs = mask_all[src][r][:, c]
        X = ep.X[b][rv][:, cv]
        tr, te = ep.train_mask[b][rv][:, cv], ep.test_mask[b][rv][:, cv]
        assert torch.equal(tr | te, obs)  # every observed entry is train or test
        assert torch.equal(X, dense)  # values equal the source, zeros elsewhere
        # padded rows/cols carry nothing
        assert not ep.train_mask[b][~ep.row_valid[b]].any()
        assert not ep.test_mask[b][:, ~ep.col_valid[b]].any()
        n_obs = int(obs.sum())
        assert int(tr.sum()) == round(train_ratio * n_obs)


def test_sample_single_task(task: Ratings) -> None:
    s = EpisodeSampler(task, n_rows=20, n_cols=15, train_ratio=0.6, batch_size=8)
    ep = s.sample()
    assert isinstance(ep, Episode) and len(ep) == 8
    assert ep.X.shape == (8, 20, 15) and ep.X.dtype == torch.float32
    assert ep.train_mask.dtype == torch.bool and ep.rows.dtype == torch.long
    assert ep.rows.shape == (8, 20) and ep.cols.shape == (8, 15) and ep.source.shape == (8,)
    assert torch.all(ep.source == 0) and torch.all(ep.row_valid)
    _check_against_dense(ep, [task], 0.6)
    frac = ep.train_mask.sum() / ep.observed_mask.sum()
    assert float(frac) == pytest.approx(0.6, abs=0.02)
    assert torch.equal(ep.X_train, ep.X * ep.train_mask)
    assert "Episode(B=8" in repr(ep) and "EpisodeSampler" in repr(s)


def test_sample_real_ml100k(ml100k: Ratings) -> None:
    s = EpisodeSampler(ml100k, n_rows=30, n_cols=30, train_ratio=0.5, batch_size=16, seed=3)
    ep = s.sample()
    assert ep.X.shape == (16, 30, 30)
    _check_against_dense(ep, [ml100k], 0.5)
    assert torch.all(ep.train_mask.sum((1, 2)) >= 2) and torch.all(ep.test_mask.sum((1, 2)) >= 2)
    assert set(ep.X[ep.observed_mask].unique().tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}


def test_sampler_seeded_and_advancing(task: Ratings) -> None:
    a = EpisodeSampler(task, batch_size=4, seed=7)
    b = EpisodeSampler(task, batch_size=4, seed=7)
    c = EpisodeSampler(task, batch_size=4, seed=8)
    e1, e2 = a.sample(), b.sample()
    assert torch.equal(e1.rows, e2.rows) and torch.equal(e1.train_mask, e2.train_mask)
    assert not torch.equal(e1.rows, c.sample().rows)
    assert not torch.equal(e1.rows, a.sample().rows)  # the stream advances


def test_fixed_reproducible(task: Ratings) -> None:
    s = EpisodeSampler(task, n_rows=10, n_cols=12, batch_size=4, seed=0)
    v1 = s.fixed(10, seed=5)
    s.sample()  # the sampler's own state does not matter
    next(iter(s))
    v2 = s.fixed(10, seed=5)
    assert [len(e) for e in v1] == [4, 4, 2]
    for x, y in zip(v1, v2, strict=True):
        for f in ("X", "train_mask", "test_mask", "rows", "cols", "source"):
            assert torch.equal(getattr(x, f), getattr(y, f))
    other = EpisodeSampler(task, n_rows=10, n_cols=12, batch_size=4, seed=99)
    assert torch.equal(other.fixed(10, seed=5)[0].rows, v1[0].rows)  # independent of seed=
    assert not torch.equal(s.fixed(10, seed=6)[0].rows, v1[0].rows)
    # fixed(seed=s) is not the training stream of a sampler seeded with s
    fresh = EpisodeSampler(task, n_rows=10, n_cols=12, batch_size=4, seed=5)
    assert not torch.equal(fresh.sample().rows, v1[0].rows)
    one = s.fixed(3, seed=5, batch_size=3, n_rows=6, n_cols=7)
    assert len(one) == 1 and one[0].X.shape == (3, 6, 7)


def test_global_rng_untouched(task: Ratings) -> None:
    state = torch.get_rng_state()
    s = EpisodeSampler(task, batch_size=4)
    s.sample()
    s.fixed(4, seed=1)
    assert torch.equal(state, torch.get_rng_state())


def test_different_sizes_and_capping(task: Ratings) -> None:
    s = EpisodeSampler(task, n_rows=30, n_cols=30, batch_size=2)
    assert s.sample(n_rows=5, n_cols=50).X.shape == (2, 5, 50)
    assert s.sample(batch_size=3, n_rows=500, n_cols=7).X.shape == (3, 100, 7)  # capped


def test_multiple_tasks_padded_and_weighted(task: Ratings) -> None:
    small, _ = synthetic_ratings(12, 9, density=0.6, seed=2)
    tasks = [task, small]
    s = EpisodeSampler(tasks, n_rows=20, n_cols=20, batch_size=32, seed=1)
    ep = s.sample()
    assert ep.X.shape == (32, 20, 20)
    assert set(ep.source.tolist()) == {0, 1}
    is_small = ep.source == 1
    assert torch.all(ep.row_valid[is_small].sum(1) == 12)
    assert torch.all(ep.col_valid[is_small].sum(1) == 9)
    assert torch.all(ep.rows[is_small][:, 12:] == -1)
    _check_against_dense(ep, tasks, 0.5)
    only_second = EpisodeSampler(tasks, batch_size=16, weights=[0.0, 1.0])
    assert torch.all(only_second.sample().source == 1)


def test_pad(task: Ratings) -> None:
    s = EpisodeSampler(task, batch_size=2)
    a, b = s.sample(n_rows=5, n_cols=8), s.sample(batch_size=1, n_rows=10, n_cols=4)
    ep = pad([a, b])
    assert ep.X.shape == (3, 10, 8)
    assert torch.equal(ep.X[:2, :5, :8], a.X) and torch.equal(ep.X[2:, :10, :4], b.X)
    assert not ep.train_mask[:2, 5:].any() and not ep.test_mask[2, :, 4:].any()
    assert torch.all(ep.X[:2, 5:] == 0)
    assert ep.rows[:2, 5:].eq(-1).all() and ep.cols[2, 4:].eq(-1).all()
    assert torch.equal(EpisodeSampler.pad([a]).X, a.X)
    assert ep[2].X.shape == (1, 10, 8) and ep[-1].rows.shape == (1, 10)
    with pytest.raises(ValueError, match="at least one"):
        pad([])


def test_iter(task: Ratings) -> None:
    s = EpisodeSampler(task, n_rows=5, n_cols=5, batch_size=2)
    eps = list(itertools.islice(s, 3))
    assert len(eps) == 3 and all(e.X.shape == (2, 5, 5) for e in eps)


def test_large_task_rejection_draws() -> None:
    big, _ = synthetic_ratings(6000, 50, density=0.2, seed=0)
    s = EpisodeSampler(big, n_rows=16, n_cols=16, batch_size=4)
    ep = s.sample()
    _check_against_dense(ep, [big], 0.5)


def test_too_sparse_gives_clear_error() -> None:
    sparse = Ratings([0, 1, 2, 3], [0, 1, 2, 3], [1.0, 2.0, 3.0, 4.0], shape=(50, 50))
    s = EpisodeSampler(sparse, n_rows=5, n_cols=5, min_observed=2, max_tries=5)
    with pytest.raises(ValueError, match="could not draw .* from task 0"):
        s.sample()


def test_to_device(task: Ratings) -> None:
    ep = EpisodeSampler(task, batch_size=2).sample().to("cpu")
    assert ep.device == torch.device("cpu")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(train_ratio=0.0), "train_ratio"),
        (dict(train_ratio=1.0), "train_ratio"),
        (dict(batch_size=0), "batch_size"),
        (dict(n_rows=0), "n_rows"),
        (dict(n_cols=2.5), "n_cols"),
        (dict(min_observed=-1), "min_observed"),
        (dict(weights=[1.0, 2.0]), "one entry per task"),
        (dict(weights=[-1.0]), "non-negative"),
        (dict(min_observed=1500), "fewer than"),
        (dict(n_rows=3, n_cols=3, min_observed=5), "cannot hold"),
    ],
)
def test_bad_input(task: Ratings, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EpisodeSampler(task, **kwargs)


def test_bad_matrices(task: Ratings) -> None:
    with pytest.raises(ValueError, match="at least one"):
        EpisodeSampler([])
    with pytest.raises(TypeError, match="must be Ratings"):
        EpisodeSampler([task, "not ratings"])  # type: ignore[list-item]
    s = EpisodeSampler(task)
    with pytest.raises(ValueError, match="batch_size"):
        s.sample(batch_size=0)
    with pytest.raises(ValueError, match="n_episodes"):
        s.fixed(0)
