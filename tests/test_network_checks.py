"""Posterior predictive checks for networks and the reliability diagram (the numbers)."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from bayesmf.data import synthetic_network
from bayesmf.diagnostics.network_checks import (
    network_ppc,
    network_statistics,
    plot_network_ppc,
    plot_reliability,
    reliability,
)


@pytest.fixture(scope="module")
def graph() -> nx.Graph:
    return nx.gnp_random_graph(40, 0.15, seed=3)


def test_statistics_match_networkx(graph: nx.Graph) -> None:
    A = nx.to_numpy_array(graph, nodelist=range(40))
    s = network_statistics(A)
    assert s["degrees"].tolist() == [d for _, d in sorted(graph.degree())]
    assert s["n_edges"] == graph.number_of_edges()
    cc = nx.clustering(graph)
    np.testing.assert_allclose(s["clustering"], [cc[i] for i in range(40)], atol=1e-12)
    assert s["average_clustering"] == pytest.approx(nx.average_clustering(graph), abs=1e-12)
    assert s["transitivity"] == pytest.approx(nx.transitivity(graph), abs=1e-12)


def test_statistics_of_a_stack_equal_each_network(graph: nx.Graph) -> None:
    A = nx.to_numpy_array(graph, nodelist=range(40))
    B = nx.to_numpy_array(nx.gnp_random_graph(40, 0.3, seed=4), nodelist=range(40))
    s = network_statistics(np.stack([A, B]))
    for k, M in enumerate((A, B)):
        one = network_statistics(M)
        assert s["degrees"][k].tolist() == one["degrees"].tolist()
        assert s["n_edges"][k] == one["n_edges"]
        assert s["average_clustering"][k] == pytest.approx(one["average_clustering"])
        assert s["transitivity"][k] == pytest.approx(one["transitivity"])


def test_statistics_without_triples_are_zero() -> None:
    s = network_statistics(np.zeros((4, 4)))
    assert s["n_edges"] == 0 and s["transitivity"] == 0.0 and s["average_clustering"] == 0.0


def _pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(n, 1)


def test_ppc_with_certain_probabilities_replicates_the_observed_network() -> None:
    net, _ = synthetic_network(30, n_blocks=2, p_in=0.5, p_out=0.05, seed=0)
    pairs = net.observed_pairs()
    y = pairs.labels.numpy()
    ppc = network_ppc(np.tile(y, (5, 1)), pairs.rows, pairs.cols, y, net.n_nodes)
    assert (ppc.replicated["n_edges"] == net.n_edges).all()
    assert (ppc.replicated["degrees"] == net.degrees().numpy()).all()
    assert ppc.observed["degrees"].tolist() == net.degrees().tolist()
    assert all(p == 1.0 for p in ppc.p_values.values())  # T(rep) == T(obs) every time
    empty = network_ppc(np.zeros((5, y.size)), pairs.rows, pairs.cols, y, net.n_nodes)
    assert empty.p_values["n_edges"] == 0.0
    assert (empty.replicated["n_edges"] == 0).all()


def test_ppc_of_the_true_model_is_not_extreme_and_of_a_wrong_one_is() -> None:
    n = 60
    i, j = _pairs(n)
    rng = np.random.default_rng(1)
    z = rng.integers(0, 2, n)
    p_true = np.where(z[i] == z[j], 0.4, 0.02)
    y = rng.random(i.size) < p_true
    good = network_ppc(np.tile(p_true, (200, 1)), i, j, y, n, seed=2)
    assert 0.05 < good.p_values["n_edges"] < 0.95
    assert 0.05 < good.p_values["transitivity"] < 0.95
    # an Erdos-Renyi model with the same density misses the clustering of the blocks
    flat = np.full(i.size, y.mean())
    bad = network_ppc(np.tile(flat, (200, 1)), i, j, y, n, seed=2)
    assert 0.05 < bad.p_values["n_edges"] < 0.95
    assert bad.p_values["transitivity"] < 0.01
    assert bad.summary()["transitivity"]["replicated_q95"] < good.observed["transitivity"]
    h_obs, h_rep = good.degree_histograms()
    assert h_obs.sum() == n and (h_rep.sum(1) == n).all()


def test_ppc_rejects_bad_input() -> None:
    i, j = _pairs(5)
    with pytest.raises(ValueError, match="probabilities"):
        network_ppc(np.full((2, i.size), 1.5), i, j, np.zeros(i.size), 5)
    with pytest.raises(ValueError, match=r"\(S, P\)"):
        network_ppc(np.zeros((2, 3)), i, j, np.zeros(i.size), 5)


def test_reliability_of_calibrated_and_overconfident_probabilities() -> None:
    rng = np.random.default_rng(0)
    p = rng.beta(0.5, 10.0, 50_000)
    y = rng.random(p.size) < p
    good = reliability(y, p, n_bins=10)
    assert good.counts.sum() == p.size and good.counts.size == 10
    np.testing.assert_allclose(good.observed, good.predicted, atol=0.02)
    assert good.ece < 0.01
    bad = reliability(y, p**2)  # too confident that pairs are non-links
    assert bad.ece > 5 * good.ece
    assert (bad.observed > bad.predicted).all()


def test_reliability_uniform_bins_drop_empty_ones() -> None:
    r = reliability([0, 1, 0, 1], [0.05, 0.95, 0.05, 0.85], n_bins=10, strategy="uniform")
    assert r.counts.tolist() == [2, 1, 1]
    assert r.predicted.tolist() == pytest.approx([0.05, 0.85, 0.95])
    assert r.ece == pytest.approx((2 * 0.05 + 0.15 + 0.05) / 4)
    with pytest.raises(ValueError, match="strategy"):
        reliability([0, 1], [0.1, 0.2], strategy="nope")
    with pytest.raises(ValueError, match="0/1"):
        reliability([0, 2], [0.1, 0.2])


def test_plots_are_drawn_and_saved(tmp_path) -> None:
    i, j = _pairs(20)
    p = np.full((20, i.size), 0.2)
    y = np.random.default_rng(0).random(i.size) < 0.2
    fig = plot_network_ppc(network_ppc(p, i, j, y, 20), title="t", path=tmp_path / "ppc.png")
    assert len(fig.axes) == 2 and (tmp_path / "ppc.png").stat().st_size > 0
    fig = plot_reliability(reliability(y, p[0] + 0.01 * np.arange(i.size) / i.size), "m")
    fig = plot_reliability(reliability(y, p[0]), "other", ax=fig.axes[0], path=tmp_path / "r.png")
    assert len(fig.axes[0].lines) == 3 and (tmp_path / "r.png").stat().st_size > 0
