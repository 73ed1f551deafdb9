"""The stick-breaking DP stochastic block model and its mean-field VI (fit_sbm)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bayesmf import data, diagnostics, inference, models
from bayesmf.inference.sbm import SBMPosterior, _eta_targets, _full_elbo, _Graph


def adjusted_rand_index(a, b) -> float:
    """Hubert & Arabie's adjusted Rand index of two labelings."""
    a = np.unique(np.asarray(a), return_inverse=True)[1]
    b = np.unique(np.asarray(b), return_inverse=True)[1]
    table = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(table, (a, b), 1)

    def pairs(x):
        return float((x * (x - 1) / 2).sum())

    index = pairs(table)
    ra, rb = pairs(table.sum(1)), pairs(table.sum(0))
    expected = ra * rb / (len(a) * (len(a) - 1) / 2)
    return (index - expected) / (0.5 * (ra + rb) - expected)


def test_adjusted_rand_index_reference_values():
    assert adjusted_rand_index([0, 0, 1, 1], [1, 1, 0, 0]) == 1.0
    # sklearn's adjusted_rand_score([0, 0, 1, 1], [0, 0, 1, 2]) = 0.5714...
    assert adjusted_rand_index([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx(4 / 7)


# ----------------------------------------------------------------- planted blocks
SIZES = [50, 35, 20, 15]


@pytest.fixture(scope="module")
def planted():
    torch.set_num_threads(1)
    # unequal blocks with distinct densities: the oracle held-out AUC is 0.93
    probs = np.full((4, 4), 0.01)
    np.fill_diagonal(probs, [0.6, 0.7, 0.8, 0.9])
    net, truth = data.synthetic_network(120, block_sizes=SIZES, block_probs=probs, seed=0)
    train, test = data.holdout_pairs(net, 0.1, seed=0)
    model = models.DPStochasticBlockModel(120, truncation=10)
    fit = inference.fit_sbm(model, train, epochs=250, seed=0, progress=False)
    return net, truth, train, test, fit


def test_recovers_planted_partition(planted):
    _, truth, _, _, fit = planted
    ari = adjusted_rand_index(fit.assignments().numpy(), truth.z.numpy())
    assert ari >= 0.9, ari
    assert abs(fit.effective_clusters() - truth.n_blocks) <= 1, fit.effective_clusters()
    # the soft assignments are distributions, and confident on this easy network
    eta = fit.soft_assignments()
    assert torch.allclose(eta.sum(1), torch.ones(120), atol=1e-5)
    assert float(eta.max(1).values.mean()) > 0.9


def test_held_out_auc_on_planted_network(planted):
    _, _, _, test, fit = planted
    p = fit.predict(test)
    assert ((p >= 0) & (p <= 1)).all()
    assert diagnostics.auc(test.labels, p) >= 0.9
    # and it is calibrated: close to the true link probabilities
    _, truth, _, _, _ = planted
    oracle = truth.link_probability()[test.i, test.j]
    assert float((p - oracle).abs().mean()) < 0.05


def test_restarts_keep_best_elbo():
    net, _ = data.synthetic_network(60, block_sizes=[30, 20, 10], p_in=0.5, p_out=0.05, seed=4)
    model = models.DPStochasticBlockModel(60, truncation=6)
    fit = inference.fit_sbm(model, net, epochs=60, n_restarts=3, seed=0, progress=False)
    from bayesmf.inference.sbm import bethe_hessian_clusters

    k0 = bethe_hessian_clusters(net.adjacency)
    assert [r["init_clusters"] for r in fit.restarts] == [k0, k0 + 1, 6]
    best = max(r["elbo"] for r in fit.restarts)
    assert fit.restarts[fit.settings["best_restart"]]["elbo"] == best
    assert fit.elbo() == pytest.approx(best, rel=1e-3)
    assert fit.alpha == pytest.approx(fit.restarts[fit.settings["best_restart"]]["alpha"])


def test_alpha_and_pi(planted):
    _, _, _, _, fit = planted
    assert fit.alpha > 0
    q_alpha = fit.alpha_posterior()
    assert float(q_alpha.mean) > 0
    pi = fit.pi_mean()
    assert pi.shape == (10,) and float(pi.sum()) == pytest.approx(1.0, abs=1e-5)
    draws = fit.pi_posterior(500)
    assert draws.shape == (500, 10)
    assert torch.allclose(draws.sum(1), torch.ones(500), atol=1e-4)
    assert torch.allclose(draws.mean(0), pi, atol=0.03)
    # the four occupied clusters carry (almost) all of E[pi]
    assert float(torch.sort(pi, descending=True).values[:4].sum()) > 0.8


def test_predictions_symmetric_and_log_likelihood(planted):
    _, _, _, test, fit = planted
    i, j = test.i[:50], test.j[:50]
    assert torch.allclose(fit.predict((i, j)), fit.predict((j, i)), atol=1e-6)
    ll = fit.log_likelihood(test, num_samples=20)
    assert ll.shape == (20, len(test)) and (ll <= 0).all()
    with pytest.raises(ValueError, match="self-pairs"):
        fit.predict((torch.tensor([1]), torch.tensor([1])))


def test_inference_data_and_block_plot(planted, tmp_path):
    net, _, _, test, fit = planted
    idata = fit.to_inference_data(test, num_samples=30)
    post = idata.posterior
    assert post["pi"].shape == (1, 30, 10)
    assert post["alpha"].shape == (1, 30)
    assert post["U"].dims == ("chain", "draw", "cluster", "factor")
    assert idata.log_likelihood["x"].shape == (1, 30, len(test))
    assert idata.observed_data["x"].shape == (len(test),)
    png = tmp_path / "blocks.png"
    fig = diagnostics.plot_block_structure(fit, net, path=png)
    assert png.stat().st_size > 1000
    n_clusters = len(np.unique(fit.assignments().numpy()))
    assert len(fig.axes[0].lines) == 2 * (n_clusters - 1)


def test_save_load_roundtrip(planted, tmp_path):
    _, _, _, test, fit = planted
    path = fit.save(tmp_path / "sbm.pt")
    again = inference.load_sbm(path)
    assert torch.allclose(again.predict(test), fit.predict(test))
    assert again.alpha == pytest.approx(fit.alpha)


# ---------------------------------------------------------- exact computations
def _brute_force_expected_log_lik(model, eta, z, i, j, x):
    """E_q(Z)[log p(X | Z, z)] by enumerating every joint assignment of the nodes."""
    n, T = eta.shape
    total = torch.zeros(z[next(iter(z))].shape[0], dtype=torch.float64)
    for assign in itertools.product(range(T), repeat=n):
        a = torch.tensor(assign)
        weight = torch.prod(eta[torch.arange(n), a]).double()
        logits = model.pair_logits(z, i, j)  # (S, B or 1, T, T)
        logits = logits.expand(-1, i.numel(), -1, -1)
        l_pair = logits[:, torch.arange(i.numel()), a[i], a[j]]
        lp = x * F.logsigmoid(l_pair) + (1 - x) * F.logsigmoid(-l_pair)
        total += weight * lp.sum(1).double()
    return total


@pytest.mark.parametrize("degree_correction", [False, True])
def test_expected_log_lik_equals_enumeration(degree_correction):
    torch.manual_seed(1)
    n, T = 5, 3
    model = models.DPStochasticBlockModel(
        n,
        truncation=T,
        rank=2,
        bilinear_dims=3,
        hidden=(4,),
        degree_correction=degree_correction,
    )
    z = {s.name: torch.randn((2, *s.shape)) for s in model.latent_specs()}
    eta = torch.softmax(torch.randn(n, T), 1)
    i, j = torch.triu_indices(n, n, offset=1)
    x = torch.tensor([1, 0, 0, 1, 1, 0, 0, 1, 0, 1.0])
    exact = model.expected_log_lik(eta, z, i, j, x).sum(1)
    brute = _brute_force_expected_log_lik(model, eta, z, i, j, x)
    assert torch.allclose(exact.double(), brute, atol=1e-4)


def test_block_logits_symmetric():
    model = models.DPStochasticBlockModel(6, truncation=4, rank=3, bilinear_dims=2, hidden=(5,))
    z = {s.name: torch.randn((3, *s.shape)) for s in model.latent_specs()}
    g = model.block_logits(z)
    assert torch.allclose(g, g.transpose(-1, -2))


@pytest.mark.parametrize("degree_correction", [False, True])
def test_eta_update_is_eq9(degree_correction):
    """The closed-form update equals softmax(E[log pi] + sum_j sum_c' eta_jc' E[log p])
    computed pair by pair, with held-out pairs left out."""
    net, _ = data.synthetic_network(12, block_sizes=[7, 5], p_in=0.7, p_out=0.1, seed=3)
    train, _ = data.holdout_pairs(net, 0.2, seed=0)
    model = models.DPStochasticBlockModel(12, truncation=3, degree_correction=degree_correction)
    post = SBMPosterior(model)
    with torch.no_grad():
        for s in post.specs:
            post.locs[s.name].normal_()
        post.eta.copy_(torch.softmax(torch.randn(12, 3), 1))
        post.log_rho.normal_()
    graph = _Graph.build(train, torch.device("cpu"))
    nodes = torch.tensor([0, 4, 11])
    got = _eta_targets(model, post, graph, nodes, 3, torch.Generator().manual_seed(5))
    z = post.rsample(3, generator=torch.Generator().manual_seed(5))
    A, M = train.adjacency, train.observed_mask()
    want = []
    for node in nodes.tolist():
        score = post.expected_log_pi().detach().clone()
        for other in range(12):
            if not M[node, other]:
                continue
            ii, jj = torch.tensor([node]), torch.tensor([other])
            lg = model.pair_logits(z, ii, jj)[:, 0]  # (S, T, T): rows = node's cluster
            xv = A[node, other]
            lp = (xv * F.logsigmoid(lg) + (1 - xv) * F.logsigmoid(-lg)).mean(0)
            score += lp @ post.eta[other]
        want.append(torch.softmax(score, 0))
    assert torch.allclose(got, torch.stack(want), atol=1e-4)


def test_minibatch_weights_unbiased():
    net, _ = data.synthetic_network(30, block_sizes=[20, 10], p_in=0.5, p_out=0.05, seed=0)
    train, _ = data.holdout_pairs(net, 0.1, seed=0)
    graph = _Graph.build(train, torch.device("cpu"))
    f = torch.randn(30, 30)
    f = f + f.T
    i, j, x = graph.all_pairs()
    assert i.numel() == train.n_pairs and int(x.sum()) == train.n_edges
    full = float(f[i, j].sum() + 3 * f[i, j][x == 1].sum())
    gen = torch.Generator().manual_seed(0)
    held_out = train.unobserved[:, 0] * 30 + train.unobserved[:, 1]
    est = []
    for _ in range(400):
        bi, bj, bx, bw = graph.minibatch(10, 40, gen)
        assert not torch.isin(bi * 30 + bj, held_out).any()
        assert torch.equal(bx, train.adjacency[bi, bj])
        est.append(float((bw * (f[bi, bj] + 3 * bx * f[bi, bj])).sum()))
    est = np.asarray(est)
    assert abs(est.mean() - full) < 4 * est.std() / math.sqrt(len(est))


def test_full_elbo_matches_pyro_model():
    """The Pyro model's log joint given q(Z) plus the entropy terms gives the ELBO."""
    import pyro

    net, _ = data.synthetic_network(10, block_sizes=[6, 4], p_in=0.7, p_out=0.1, seed=2)
    model = models.DPStochasticBlockModel(10, truncation=3, rank=1, bilinear_dims=2)
    post = SBMPosterior(model)
    graph = _Graph.build(net, torch.device("cpu"))
    i, j, x = graph.all_pairs()
    V = torch.tensor([0.3, 0.6])
    z = {s.name: torch.randn(s.shape) for s in post.specs}
    cond = pyro.poutine.condition(model.model, data={"V": V, **z})
    tr = pyro.poutine.trace(cond).get_trace(i, j, x, post.eta)
    log_joint = tr.log_prob_sum()
    # by hand: priors + E_q(Z) log p(Z | V) + E_q(Z) log p(X | Z, ...)
    from bayesmf.models.sbm import stick_breaking_log_weights

    prior = torch.distributions.Beta(1.0, model.alpha.detach()).log_prob(V).sum()
    for s in post.specs:
        prior = prior + torch.distributions.Normal(0, s.prior_scale).log_prob(z[s.name]).sum()
    zb = {k: v[None] for k, v in z.items()}
    hand = (
        prior
        + (post.eta * stick_breaking_log_weights(V)).sum()
        + model.expected_log_lik(post.eta, zb, i, j, x).sum()
    )
    assert float(log_joint) == pytest.approx(float(hand), rel=1e-5)
    # and pyro.infer runs on it
    guide = pyro.infer.autoguide.AutoNormal(model.model)
    loss = pyro.infer.Trace_ELBO().loss(model.model, guide, i, j, x, post.eta)
    assert math.isfinite(loss)
    assert math.isfinite(_full_elbo(model, post, graph, 2, 0))


# ---------------------------------------------------------------- other inputs
def test_minibatch_fit_and_degree_correction_run():
    net, truth = data.synthetic_network(60, block_sizes=[35, 25], p_in=0.4, p_out=0.03, seed=1)
    fit = inference.fit_sbm(
        models.DPStochasticBlockModel(60, truncation=5),
        net,
        epochs=60,
        batch_size=400,
        neg_ratio=3,
        seed=0,
        progress=False,
    )
    assert fit.settings["steps_per_epoch"] == math.ceil(net.n_pairs / 400)
    assert adjusted_rand_index(fit.assignments(), truth.z) >= 0.9
    fit_dc = inference.fit_sbm(
        models.DPStochasticBlockModel(60, truncation=4, degree_correction=True),
        net,
        epochs=40,
        seed=0,
        progress=False,
        eta_samples=2,
    )
    assert adjusted_rand_index(fit_dc.assignments(), truth.z) >= 0.9
    assert fit_dc.to_inference_data(num_samples=5).posterior["s"].shape == (1, 5, 60)


def test_networkx_and_adjacency_input():
    nx = pytest.importorskip("networkx")
    G = nx.barbell_graph(6, 0)
    fit = inference.fit_sbm(
        models.DPStochasticBlockModel(12, truncation=3), G, epochs=40, progress=False
    )
    z = fit.assignments()
    assert len(set(z[:6].tolist())) == 1 and len(set(z[6:].tolist())) == 1 and z[0] != z[6]
    A = nx.to_numpy_array(G)
    fit2 = inference.fit_sbm(
        models.DPStochasticBlockModel(12, truncation=3), A, epochs=5, progress=False
    )
    assert fit2.eta.shape == (12, 3)


@pytest.mark.parametrize(
    ("adjacency", "message"),
    [
        ([[0, 1, 0], [0, 0, 1], [0, 1, 0]], "not symmetric"),
        ([[1, 1, 0], [1, 0, 1], [0, 1, 0]], "self-loops"),
        ([[0, 2, 0], [2, 0, 1], [0, 1, 0]], "binary"),
        ([[0, 0.5, 0], [0.5, 0, 1], [0, 1, 0]], "binary"),
    ],
)
def test_invalid_network_raises(adjacency, message):
    model = models.DPStochasticBlockModel(3, truncation=2)
    with pytest.raises(ValueError, match=message):
        inference.fit_sbm(model, adjacency, epochs=1, progress=False)
    with pytest.raises(ValueError, match=message):
        inference.fit_sbm(
            model, torch.tensor(adjacency, dtype=torch.float32), epochs=1, progress=False
        )


def test_invalid_graphs_and_options_raise():
    nx = pytest.importorskip("networkx")
    G = nx.path_graph(4)
    G.add_edge(2, 2)
    with pytest.raises(ValueError, match="self-loops"):
        inference.fit_sbm(models.DPStochasticBlockModel(4), G, epochs=1, progress=False)
    with pytest.raises(ValueError, match="directed"):
        inference.fit_sbm(
            models.DPStochasticBlockModel(4), nx.DiGraph(nx.path_graph(4)), epochs=1, progress=False
        )
    net, _ = data.synthetic_network(10, n_blocks=2, p_in=0.8, p_out=0.1)
    with pytest.raises(ValueError, match="nodes"):
        inference.fit_sbm(models.DPStochasticBlockModel(11), net, epochs=1, progress=False)
    with pytest.raises(TypeError):
        inference.fit_sbm(models.DPStochasticBlockModel(10), "net.csv", epochs=1)
    with pytest.raises(ValueError, match="truncation"):
        models.DPStochasticBlockModel(10, truncation=0)


@pytest.mark.parametrize("degree_correction", [False, True])
def test_weighted_sum_matches_per_pair(degree_correction):
    model = models.DPStochasticBlockModel(8, truncation=4, degree_correction=degree_correction)
    z = {s.name: torch.randn((3, *s.shape)) for s in model.latent_specs()}
    eta = torch.softmax(torch.randn(8, 4), 1)
    i, j = torch.triu_indices(8, 8, offset=1)
    x = (torch.rand(i.numel()) < 0.3).float()
    w = torch.rand(i.numel()) * 3
    per_pair = (model.expected_log_lik(eta, z, i, j, x) * w).sum(1)
    assert torch.allclose(model.expected_log_lik_sum(eta, z, i, j, x, w), per_pair, rtol=1e-4)
