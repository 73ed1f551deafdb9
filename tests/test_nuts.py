"""fit_nuts (Pyro's NUTS on any model) and the latent-feature model's whole-network logits."""

from __future__ import annotations

import math

import pyro
import pytest
import torch

import bayesmf
from bayesmf import data, inference, models
from bayesmf.data import holdout_pairs, synthetic_network
from bayesmf.diagnostics import auc
from bayesmf.models import latent_network
from bayesmf.models.latent_network import LatentFeatureNetwork

pytestmark = pytest.mark.usefixtures("one_thread")


def _draws(model, pairs, n: int) -> dict[str, torch.Tensor]:
    """``n`` prior draws of every latent site (stacked on a leading sample dim)."""
    traces = [pyro.poutine.trace(model.model).get_trace(pairs) for _ in range(n)]
    names = [s.name for s in model.latent_specs()]
    return {k: torch.stack([t.nodes[k]["value"] for t in traces]) for k in names}


@pytest.mark.parametrize("features", [(), ("adamic_adar",)])
@pytest.mark.parametrize("terms", [{}, {"eigen": False}, {"distance": False, "biases": False}])
def test_whole_network_logits_equal_the_pairwise_ones(monkeypatch, features, terms) -> None:
    net, _ = synthetic_network(30, n_blocks=2, p_in=0.4, p_out=0.05, seed=0)
    train, _ = holdout_pairs(net, 0.1, seed=0)
    pairs = train.observed_pairs()
    model = LatentFeatureNetwork(30, rank=4, pair_features=features, **terms)
    model.setup(pairs)
    pyro.set_rng_seed(0)
    z = _draws(model, pairs, 3)
    for k in ("lam", "rho", "U"):  # not tiny, so that every term matters
        if k in z:
            z[k] = z[k] * 2
    dense = model.mean(z, pairs.rows, pairs.cols)  # all pairs: the N x N path
    monkeypatch.setattr(latent_network, "DENSE_MAX", 0)
    pairwise = model.mean(z, pairs.rows, pairs.cols)
    assert dense.shape == pairwise.shape == (3, len(pairs))
    assert torch.allclose(dense, pairwise, atol=1e-4 * float(pairwise.abs().max()))
    # and the comparison would catch a wrong term: a distance weight changed by 10%
    if model.distance:
        z2 = dict(z, rho=z["rho"] * 1.1)
        monkeypatch.setattr(latent_network, "DENSE_MAX", 1 << 24)
        assert not torch.allclose(model.mean(z2, pairs.rows, pairs.cols), pairwise, atol=1e-3)


def test_fit_nuts_samples_a_network_model_and_predicts_held_out_links() -> None:
    net, _ = synthetic_network(40, n_blocks=2, p_in=0.5, p_out=0.03, seed=2)
    train, test = holdout_pairs(net, 0.15, seed=0)
    model = LatentFeatureNetwork(40, rank=2)
    fit = inference.fit_nuts(model, train.observed_pairs(), num_samples=40, warmup=60,
                             num_chains=2, max_tree_depth=5, seed=0, progress=False)
    assert isinstance(fit, inference.SampleFit) and fit.inference_name == "NUTS"
    assert fit.draws["U"].shape == (2, 40, 40, 2) and fit.num_draws == 80
    assert set(fit.history) == {"divergences", "accept", "step_size"}
    assert len(fit.history["step_size"]) == 2 and all(s > 0 for s in fit.history["step_size"])
    assert set(fit.settings["rhat"]) >= {"scale_b", "scale_lam[sorted 0]"}
    cells = fit.settings["rhat_cells"]  # on the logit scale: finite even where p rounds to 0
    assert cells["cells"] > 0 and 0.0 <= cells["share_above"] <= 1.0
    assert math.isfinite(cells["median"]) and cells["median"] >= 0.99
    p = fit.predict(test)
    assert ((p > 0) & (p < 1)).all()
    assert auc(test.labels, p) > 0.8  # two clear blocks: far better than chance
    lo, hi = fit.predict_interval(test, 0.9)
    assert (lo <= p + 1e-6).all() and (p <= hi + 1e-6).all()


def test_fit_nuts_is_reproducible_and_saved_as_nuts(tmp_path) -> None:
    R, _ = data.synthetic_ratings(n_rows=10, n_cols=8, rank=1, density=0.8, noise=0.3, seed=1)

    def run(seed: int):
        return inference.fit_nuts(models.BayesianMF(10, 8, rank=1), R, num_samples=10,
                                  warmup=10, max_tree_depth=3, seed=seed, progress=False)

    a, b, c = run(0), run(0), run(1)
    assert torch.equal(a.draws["U"], b.draws["U"])
    assert not torch.equal(a.draws["U"], c.draws["U"])
    path = tmp_path / "nuts.bmf"
    a.save(path)
    back = bayesmf.load(path)
    assert back.inference_name == "NUTS" and torch.equal(back.draws["noise"], a.draws["noise"])
    assert torch.allclose(back.predict(R), a.predict(R))


def test_gibbs_fits_still_say_gibbs() -> None:
    R, _ = data.synthetic_ratings(n_rows=10, n_cols=8, rank=1, density=0.8, noise=0.3, seed=1)
    fit = inference.fit_gibbs(models.BayesianMF(10, 8, rank=1), R, num_samples=5, burn_in=2,
                              progress=False, thin=1)
    assert fit.inference_name == "Gibbs"


@pytest.mark.parametrize(
    "kw", [{"num_samples": 0}, {"warmup": -1}, {"num_chains": 0}, {"max_tree_depth": 0},
           {"target_accept": 1.0}],
)
def test_fit_nuts_refuses_bad_settings(kw) -> None:
    R, _ = data.synthetic_ratings(n_rows=6, n_cols=5, rank=1, density=0.8, seed=0)
    with pytest.raises(ValueError):
        inference.fit_nuts(models.BayesianMF(6, 5, rank=1), R, **kw)


def test_parallel_chains_draw_what_sequential_chains_draw() -> None:
    R, _ = data.synthetic_ratings(n_rows=10, n_cols=8, rank=1, density=0.8, noise=0.3, seed=1)

    def run(parallel: bool):
        return inference.fit_nuts(models.BayesianMF(10, 8, rank=1), R, num_samples=8,
                                  warmup=8, num_chains=2, max_tree_depth=3, seed=3,
                                  parallel=parallel, progress=False)

    seq, par = run(False), run(True)
    assert par.settings["parallel"] and not seq.settings["parallel"]
    for k in seq.draws:
        assert torch.equal(seq.draws[k], par.draws[k]), k
    assert not torch.equal(seq.draws["U"][0], seq.draws["U"][1])  # chains differ


def test_fit_nuts_takes_a_network_and_refuses_the_block_model() -> None:
    net, _ = synthetic_network(20, n_blocks=2, p_in=0.5, p_out=0.05, seed=0)
    fit = inference.fit_nuts(LatentFeatureNetwork(20, rank=1), net, num_samples=5, warmup=5,
                             max_tree_depth=3, progress=False)
    assert tuple(fit.train_info["shape"]) == net.observed_pairs().shape == (20, 20)
    with pytest.raises(TypeError, match="fit_sbm"):
        inference.fit_nuts(models.DPStochasticBlockModel(20, truncation=3), net)
