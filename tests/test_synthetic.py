"""Synthetic ratings and networks with a known truth."""

from __future__ import annotations

import pytest
import torch

from bayesmf.data.containers import Network, Ratings
from bayesmf.data.synthetic import (
    BlockTruth,
    LowRankTruth,
    synthetic_network,
    synthetic_ratings,
)

# ------------------------------------------------------------------- ratings


def test_ratings_shapes_and_density() -> None:
    R, truth = synthetic_ratings(300, 200, rank=5, density=0.1)
    assert isinstance(R, Ratings) and isinstance(truth, LowRankTruth)
    assert R.shape == (300, 200)
    assert len(R) == 6000 and R.density == pytest.approx(0.1)
    assert truth.U.shape == (300, 5) and truth.V.shape == (200, 5)
    assert truth.row_bias.shape == (300,) and truth.col_bias.shape == (200,)
    assert truth.rank == 5 and truth.shape == (300, 200)
    assert R.scale is None
    keys = R.rows * 200 + R.cols
    assert torch.unique(keys).numel() == len(R)  # without replacement
    assert torch.all(keys[1:] > keys[:-1])  # sorted by (row, col)


def test_noise_level_matches_residuals() -> None:
    R, truth = synthetic_ratings(300, 200, rank=5, density=0.1, noise=0.5, biases=True)
    resid = R.values - truth.expected(R.rows, R.cols)
    assert float(resid.std()) == pytest.approx(0.5, rel=0.05)
    assert float(resid.mean()) == pytest.approx(0.0, abs=0.03)
    assert float(truth.row_bias.std()) > 0.3  # biases were drawn


def test_noiseless_values_equal_truth() -> None:
    R, truth = synthetic_ratings(50, 40, rank=3, density=0.3, noise=0.0)
    assert torch.allclose(R.values, truth.expected(R.rows, R.cols))
    assert torch.allclose(truth.dense()[R.rows, R.cols], R.values, atol=1e-6)


@pytest.mark.parametrize("rank", [1, 5, 20])
def test_signal_has_unit_order_variance(rank: int) -> None:
    _, truth = synthetic_ratings(400, 300, rank=rank, density=0.01)
    var = float((truth.U @ truth.V.T).var())
    assert 0.5 < var < 1.6
    assert torch.all(truth.row_bias == 0) and truth.mean == 0.0


def test_discrete_scale() -> None:
    R, truth = synthetic_ratings(100, 80, density=0.2, scale=(1, 5))
    assert R.scale == (1.0, 5.0)
    assert truth.mean == 3.0
    assert torch.all(R.values == torch.round(R.values))
    assert R.values.min() >= 1 and R.values.max() <= 5
    assert len(torch.unique(R.values)) == 5


def test_cover_every_row_and_column() -> None:
    R, _ = synthetic_ratings(200, 300, density=0.01, cover=True)
    assert len(R) == 600
    assert int(R.row_counts().min()) >= 1 and int(R.col_counts().min()) >= 1
    with pytest.raises(ValueError, match="cover every row and column"):
        synthetic_ratings(200, 300, density=0.001, cover=True)


def test_large_sparse_matrix_exact_count() -> None:
    R, _ = synthetic_ratings(3000, 2500, rank=2, density=0.001, seed=3)
    assert len(R) == 7500
    assert torch.unique(R.rows * 2500 + R.cols).numel() == 7500


def test_ratings_seeded() -> None:
    a, _ = synthetic_ratings(60, 50, seed=1)
    b, _ = synthetic_ratings(60, 50, seed=1)
    c, _ = synthetic_ratings(60, 50, seed=2)
    assert torch.equal(a.rows, b.rows) and torch.equal(a.values, b.values)
    assert not torch.equal(a.rows, c.rows)


def test_global_rng_untouched() -> None:
    state = torch.get_rng_state()
    synthetic_ratings(50, 40)
    synthetic_network(30)
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(density=0.0), "density"),
        (dict(density=1.5), "density"),
        (dict(rank=0), "rank"),
        (dict(n_rows=0), "positive"),
        (dict(noise=-1.0), "noise"),
        (dict(n_rows=3, n_cols=3, density=0.01), "no observed entry"),
        (dict(scale=(5, 1)), "scale"),
    ],
)
def test_ratings_bad_input(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        synthetic_ratings(**kwargs)


# ------------------------------------------------------------------ networks


def test_network_planted_blocks() -> None:
    net, truth = synthetic_network(120, block_sizes=[50, 40, 30], p_in=0.5, p_out=0.02)
    assert isinstance(net, Network) and isinstance(truth, BlockTruth)
    assert net.n_nodes == 120 and truth.n_blocks == 3
    assert truth.block_sizes.tolist() == [50, 40, 30]
    A = net.adjacency
    assert torch.equal(A, A.T) and torch.all(A.diagonal() == 0)
    # nodes are shuffled: the blocks are not contiguous
    assert not torch.equal(truth.z, torch.sort(truth.z).values)
    same = truth.z[:, None] == truth.z[None, :]
    off = ~torch.eye(120, dtype=torch.bool)
    assert float(A[same & off].mean()) == pytest.approx(0.5, abs=0.05)
    assert float(A[~same].mean()) == pytest.approx(0.02, abs=0.01)
    P = truth.link_probability()
    assert P.shape == (120, 120) and torch.all(P.diagonal() == 0)


def test_network_equal_blocks_default() -> None:
    net, truth = synthetic_network()
    assert truth.block_sizes.tolist() == [30, 30, 30, 30]
    assert net.n_edges > 0


def test_network_block_probs() -> None:
    probs = [[0.9, 0.0], [0.0, 0.0]]
    net, truth = synthetic_network(40, block_sizes=[20, 20], block_probs=probs)
    z = truth.z
    e = net.edges
    assert torch.all((z[e[:, 0]] == 0) & (z[e[:, 1]] == 0))
    assert torch.allclose(truth.probs, torch.tensor(probs))


def test_network_dirichlet_process_blocks() -> None:
    net, truth = synthetic_network(200, alpha=2.0, seed=4)
    sizes = truth.block_sizes
    assert int(sizes.sum()) == 200 and torch.all(sizes > 0)
    assert truth.n_blocks == sizes.numel() >= 2
    assert torch.all(sizes[:-1] >= sizes[1:])  # numbered by decreasing size
    _, t2 = synthetic_network(200, alpha=2.0, seed=4)
    assert torch.equal(truth.z, t2.z)
    few = synthetic_network(200, alpha=0.5, seed=0)[1].n_blocks
    many = synthetic_network(200, alpha=20.0, seed=0)[1].n_blocks
    assert few < many  # more blocks with a larger concentration


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n_nodes=100, block_sizes=[50, 40]), "sum to 90"),
        (dict(block_sizes=[60, 60, 0]), "positive"),
        (dict(p_in=1.5), "p_in"),
        (dict(p_out=-0.1), "p_out"),
        (dict(alpha=0.0), "alpha"),
        (dict(alpha=1.0, block_sizes=[60, 60]), "either"),
        (dict(n_blocks=2, block_probs=[[0.5, 0.1], [0.2, 0.5]]), "symmetric"),
        (dict(n_blocks=2, block_probs=[[0.5]]), "shape"),
        (dict(n_blocks=0), "n_blocks"),
        (dict(n_nodes=1), "at least 2"),
    ],
)
def test_network_bad_input(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        synthetic_network(**kwargs)
