"""The stick-breaking DP stochastic block model and its mean-field VI (fit_sbm)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bayesmf
from bayesmf import data, diagnostics, inference, models
from bayesmf.inference import files, fits
from bayesmf.inference.sbm import Graph, SBMPosterior, expected_log_lik, expected_log_lik_sum
from bayesmf.inference.sbm.steps import eta_targets, full_elbo
from bayesmf.models.sbm import stick_breaking_log_weights


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
    _, _, train, test, fit = planted
    assert isinstance(fit, fits.Fit) and fit.kind == "SBMFit"
    path = fit.save(tmp_path / "sbm.pt")
    again = bayesmf.load(path)
    assert isinstance(again, inference.SBMFit)
    assert torch.equal(again.predict(test), fit.predict(test))
    lo, hi = again.predict_interval(test, 0.8)
    lo0, hi0 = fit.predict_interval(test, 0.8)
    assert torch.equal(lo, lo0) and torch.equal(hi, hi0)
    assert torch.equal(again.assignments(), fit.assignments())
    assert again.alpha == pytest.approx(fit.alpha)
    assert again.restarts == fit.restarts and again.settings == fit.settings
    assert again.train_fingerprint == files.fingerprint(train)
    # the training network travels with the fit: the ELBO is computable after loading
    assert again.elbo() == pytest.approx(fit.elbo(), rel=1e-6)
    assert torch.equal(inference.load_sbm(path).eta, fit.eta)  # the old loader, now a wrapper
    with pytest.raises(files.FitFileError, match="sbm.pt"):
        inference.load_sbm(tmp_path / "sbm.pt.missing")


def test_predict_interval_brackets_link_probability(planted):
    _, _, _, test, fit = planted
    p = fit.predict(test, num_samples=200)
    lo, hi = fit.predict_interval(test, 0.9, num_samples=200)
    lo5, hi5 = fit.predict_interval(test, 0.5, num_samples=200)
    assert ((lo <= p + 1e-6) & (p <= hi + 1e-6)).all()
    assert ((lo <= lo5 + 1e-6) & (hi5 <= hi + 1e-6)).all()  # wider at a higher level
    assert float((hi - lo).mean()) > 0.005  # a posterior, not a point
    assert ((lo >= 0) & (hi <= 1)).all()
    assert torch.equal(fit.predict(test, clamp=True, num_samples=200), p)
    with pytest.raises(ValueError, match="level"):
        fit.predict_interval(test, 1.5)


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
    exact = expected_log_lik(model, eta, z, i, j, x).sum(1)
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
    graph = Graph.build(train, torch.device("cpu"))
    nodes = torch.tensor([0, 4, 11])
    got = eta_targets(model, post, graph, nodes, 3, torch.Generator().manual_seed(5))
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
    graph = Graph.build(train, torch.device("cpu"))
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


def test_pyro_model_states_prior_and_likelihood():
    """The Pyro model's sites: V, the Gaussian arrays, Z (one assignment per node) and X; its
    log joint given every latent is the prior plus the Bernoulli likelihood, and under
    q(Z) (enumerated) its expectation is what the engine computes exactly."""
    import pyro

    net, _ = data.synthetic_network(5, block_sizes=[3, 2], p_in=0.9, p_out=0.2, seed=2)
    T = 3
    model = models.DPStochasticBlockModel(5, truncation=T, rank=1, bilinear_dims=2,
                                          degree_correction=True)
    graph = Graph.build(net, torch.device("cpu"))
    i, j, x = graph.all_pairs()
    V = torch.tensor([0.3, 0.6])
    z = {s.name: torch.randn(s.shape) for s in model.latent_specs()}
    zb = {k: v[None] for k, v in z.items()}
    tr = pyro.poutine.trace(pyro.poutine.condition(model.model, data={"V": V, **z})).get_trace(
        i, j, x
    )
    names = [n for n, site in tr.nodes.items() if site["type"] == "sample"
             and n not in ("nodes", "pairs")]  # (plates are recorded as sites too)
    assert names[0] == "V" and names[-2:] == ["Z", "X"]
    assert tr.nodes["Z"]["value"].shape == (5,) and tr.nodes["X"]["is_observed"]
    prior = torch.distributions.Beta(1.0, model.alpha.detach()).log_prob(V).sum()
    for s in model.latent_specs():
        prior = prior + torch.distributions.Normal(0, s.prior_scale).log_prob(z[s.name]).sum()
    log_pi = stick_breaking_log_weights(V)
    eta = torch.softmax(torch.randn(5, T), 1)
    expected = torch.zeros((), dtype=torch.float64)
    for assign in itertools.product(range(T), repeat=5):
        Z = torch.tensor(assign)
        cond = pyro.poutine.condition(model.model, data={"V": V, "Z": Z, **z})
        tr = pyro.poutine.trace(cond).get_trace(i, j, x)
        lp = tr.log_prob_sum().detach()
        logits = model.pair_logits(zb, i, j)[0, torch.arange(len(i)), Z[i], Z[j]]
        hand = prior + log_pi[Z].sum() + (x * F.logsigmoid(logits)
                                           + (1 - x) * F.logsigmoid(-logits)).sum()
        assert float(lp) == pytest.approx(float(hand), rel=1e-5)
        expected += torch.prod(eta[torch.arange(5), Z]).double() * float(lp)
    exact = prior + (eta * log_pi).sum() + expected_log_lik(model, eta, zb, i, j, x).sum()
    assert float(expected) == pytest.approx(float(exact), rel=1e-5)
    # the minibatch weights scale the likelihood: scale=2 doubles log p(X | ...)
    cond = pyro.poutine.condition(model.model, data={"V": V, "Z": torch.zeros(5).long(), **z})
    one = pyro.poutine.trace(cond).get_trace(i, j, x).nodes["X"]
    two = pyro.poutine.trace(cond).get_trace(i, j, x, scale=2.0).nodes["X"]
    assert float(two["fn"].log_prob(x).sum() * two["scale"]) == pytest.approx(
        2 * float(one["fn"].log_prob(x).sum())
    )
    # it runs under pyro.infer (a guide that draws Z) and Predictive
    post = SBMPosterior(model)
    guide = pyro.infer.autoguide.AutoNormal(pyro.poutine.block(model.model, hide=["Z"]))

    def full_guide(i, j, x=None, scale=1.0):
        guide(i, j, x, scale)
        with pyro.plate("nodes", 5):
            pyro.sample("Z", pyro.distributions.Categorical(probs=post.eta))

    loss = pyro.infer.Trace_ELBO().loss(model.model, full_guide, i, j, x)
    assert math.isfinite(loss)
    draws = pyro.infer.Predictive(model.model, num_samples=3)(i, j)["X"]
    assert draws.shape == (3, len(i)) and set(draws.unique().tolist()) <= {0.0, 1.0}
    assert math.isfinite(full_elbo(model, post, graph, 2, 0))


def test_link_probability_hard_and_soft_assignments():
    model = models.DPStochasticBlockModel(6, truncation=3, degree_correction=True)
    z = {s.name: torch.randn((2, *s.shape)) for s in model.latent_specs()}
    i, j = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])
    Z = torch.tensor([0, 2, 1, 1, 0, 2])
    hard = model.link_probability(Z, z, i, j)
    soft = model.link_probability(F.one_hot(Z, 3).float(), z, i, j)
    assert torch.allclose(hard, soft, atol=1e-6)
    want = torch.sigmoid(model.pair_logits(z, i, j)[:, torch.arange(3), Z[i], Z[j]])
    assert torch.allclose(hard, want)


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
    per_pair = (expected_log_lik(model, eta, z, i, j, x) * w).sum(1)
    assert torch.allclose(expected_log_lik_sum(model, eta, z, i, j, x, w), per_pair, rtol=1e-4)


# ------------------------------------------------------------ the one loop and files
def _small():
    net, _ = data.synthetic_network(40, block_sizes=[25, 15], p_in=0.6, p_out=0.03, seed=0)
    return net


def _fit(net, **kw):
    opts = {"epochs": 12, "n_restarts": 2, "seed": 0, "progress": False, **kw}
    return inference.fit_sbm(models.DPStochasticBlockModel(40, truncation=4), net, **opts)


def test_killed_run_resumes_exactly(tmp_path):
    net = _small()
    ref = _fit(net)
    ckpt = tmp_path / "sbm.ckpt"
    part = _fit(net, checkpoint=ckpt, checkpoint_every=1, stop_after=17)  # inside restart 1
    assert part.settings["finished"] is False and len(part.restarts) == 1
    again = _fit(net, checkpoint=ckpt, checkpoint_every=1)
    assert again.settings["finished"] is True
    assert torch.equal(again.eta, ref.eta)
    assert [r["elbo"] for r in again.restarts] == [r["elbo"] for r in ref.restarts]
    assert torch.equal(again.predict(net.pairs()), ref.predict(net.pairs()))
    assert again.settings["best_restart"] == ref.settings["best_restart"]
    # a finished checkpoint is the finished fit
    done = _fit(net, checkpoint=ckpt)
    assert torch.equal(done.eta, ref.eta)


def test_resume_with_other_data_or_settings_is_refused(tmp_path):
    net = _small()
    ckpt = tmp_path / "sbm.ckpt"
    _fit(net, checkpoint=ckpt, stop_after=3)
    with pytest.raises(files.ResumeMismatch, match="lr: 0.05 \\(file\\) vs 0.1 \\(now\\)"):
        _fit(net, checkpoint=ckpt, lr=0.1)
    other, _ = data.holdout_pairs(net, 0.1, seed=0)
    with pytest.raises(files.ResumeMismatch, match="training data differ"):
        _fit(other, checkpoint=ckpt)
    fresh = _fit(other, checkpoint=ckpt, resume=False)  # asked to start afresh: overwrites
    assert fresh.settings["finished"] and fresh.train_fingerprint == files.fingerprint(other)


def test_divergence_raises_naming_epoch_and_step():
    model = models.DPStochasticBlockModel(40, truncation=4)
    with torch.no_grad():
        model.log_alpha.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="epoch 0, step 0; last good checkpoint: none"):
        inference.fit_sbm(model, _small(), epochs=3, progress=False)


def test_fit_svi_forwards_every_option(tmp_path):
    net = _small()
    train, val = data.holdout_pairs(net, 0.1, seed=0)
    fit = inference.fit_svi(
        models.DPStochasticBlockModel(40, truncation=4), train, epochs=20, batch_size=None,
        lr=0.05, final_lr=0.01, num_particles=2, clip_norm=50.0, val=val, patience=50,
        eval_every=2, seed=1, checkpoint=tmp_path / "c.pt", checkpoint_every=5,
        progress=False,
    )
    assert isinstance(fit, inference.SBMFit)
    assert fit.settings["clip_norm"] == 50.0 and fit.settings["num_particles"] == 2
    assert len(fit.history["val_auc"]) == 10 and len(fit.history["val"]) == 10
    assert fit.history["val"] == pytest.approx([-v for v in fit.history["val_log_lik"]])
    assert (tmp_path / "c.pt").exists()
    with pytest.raises(ValueError, match="kl_warmup"):
        inference.fit_svi(models.DPStochasticBlockModel(40, truncation=4), train, epochs=4,
                          kl_warmup=2, progress=False)
    with pytest.raises(ValueError, match="patience"):
        inference.fit_sbm(models.DPStochasticBlockModel(40, truncation=4), train, epochs=4,
                          patience=2, progress=False)


def test_deprecated_warmup_keyword():
    with pytest.warns(DeprecationWarning, match="'warmup=' is deprecated, use 'eta_warmup='"):
        fit = _fit(_small(), epochs=4, n_restarts=1, warmup=2)
    assert fit.settings["eta_warmup"] == 2
    with pytest.raises(TypeError, match="grad_clip"):
        _fit(_small(), epochs=2, grad_clip=1.0)
