"""Integer rating scales: the discretized Gaussian likelihood and scale-aware diagnostics."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pytest
import torch

from bayesmf import data, inference, models
from bayesmf.diagnostics.vi import interval_bounds, interval_coverage, log_predictive_density
from bayesmf.models.base import DiscretizedNormal, GaussianFactorModel, check_likelihood

N_ROWS, N_COLS = 60, 40


def DiscreteMF(*args, **kw) -> models.BayesianMF:  # noqa: N802  (reads like a class)
    return models.BayesianMF(*args, **{"likelihood": "discretized", **kw})


def stars(seed: int = 0) -> data.Ratings:
    """Integer ratings 1..5 from a rank-2 truth (about 960 entries)."""
    R, _ = data.synthetic_ratings(
        n_rows=N_ROWS, n_cols=N_COLS, rank=2, density=0.4, noise=0.5, seed=seed
    )
    return R.replace(values=(3.0 + 1.2 * R.values).round().clamp(1, 5), scale=(1.0, 5.0))


@pytest.fixture(scope="module")
def fits():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train, test = data.random_split(stars(), 0.2, seed=0)
        opts = {"epochs": 60, "batch_size": None, "lr": 0.05, "progress": False, "seed": 0}
        disc = inference.fit_svi(DiscreteMF(N_ROWS, N_COLS, rank=2), train, **opts)
        gauss = inference.fit_svi(models.BayesianMF(N_ROWS, N_COLS, rank=2), train, **opts)
        yield disc, gauss, train, test
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------------------ the distribution
def test_discretized_normal_is_the_binned_normal():
    loc = torch.tensor([-3.0, 0.7, 2.9, 3.5, 5.2, 40.0], dtype=torch.float64)
    scale = torch.tensor([0.3, 1.0, 0.8, 2.0, 0.5, 1.0], dtype=torch.float64)
    d = DiscretizedNormal(loc, scale, 1, 5)
    k = torch.arange(1.0, 6.0, dtype=torch.float64)[:, None]
    p = d.log_prob(k).exp()  # (5, 6)
    normal = torch.distributions.Normal(loc, scale)
    lo = torch.where(k == 1, torch.zeros(()), normal.cdf(k - 0.5))
    hi = torch.where(k == 5, torch.ones(()), normal.cdf(k + 0.5))
    torch.testing.assert_close(p, hi - lo, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(p.sum(0), torch.ones(6, dtype=torch.float64))
    torch.testing.assert_close(d.probs().T, p)
    torch.testing.assert_close(d.mean, (k * p).sum(0))
    torch.testing.assert_close(d.variance, (k**2 * p).sum(0) - d.mean**2)
    assert bool(((d.mean >= 1) & (d.mean <= 5)).all())


def test_log_prob_and_gradients_stay_finite_far_in_the_tails():
    loc = torch.tensor([-30.0, 40.0, 3.0, 3.0], requires_grad=True)
    scale = torch.tensor([0.5, 0.5, 1e-3, 50.0], requires_grad=True)
    value = torch.tensor([5.0, 1.0, 2.0, 3.0])
    lp = DiscretizedNormal(loc, scale, 1, 5).log_prob(value)
    assert torch.isfinite(lp).all() and (lp <= 0).all()
    assert lp[0] < -1000 and lp[1] < -1000  # very improbable, not -inf
    lp.sum().backward()
    assert torch.isfinite(loc.grad).all() and torch.isfinite(scale.grad).all()
    assert loc.grad[0] > 0 and loc.grad[1] < 0  # the gradient pulls loc toward the rating


def test_sampling_and_icdf_follow_the_probabilities():
    d = DiscretizedNormal(torch.tensor([1.4, 4.6]), torch.tensor([0.9, 1.3]), 1, 5)
    x = d.sample((20_000,))
    assert set(x.unique().tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    freq = torch.stack([(x == k).float().mean(0) for k in range(1, 6)], -1)
    torch.testing.assert_close(freq, d.probs().float(), atol=0.015, rtol=0)
    u = torch.rand(20_000, 2, generator=torch.Generator().manual_seed(0))
    y = d.icdf(u)
    freq = torch.stack([(y == k).float().mean(0) for k in range(1, 6)], -1)
    torch.testing.assert_close(freq, d.probs().float(), atol=0.015, rtol=0)
    assert d.support.check(torch.tensor(3.0)) and not d.support.check(torch.tensor(3.5))
    assert d.enumerate_support().shape == (5, 2)
    assert d.expand((4, 2)).sample().shape == (4, 2)


# ------------------------------------------------------------------- the model
def test_likelihood_option_is_validated_and_saved():
    with pytest.raises(ValueError, match="likelihood must be one of"):
        check_likelihood("poisson", None)
    with pytest.raises(ValueError, match="two integers"):
        check_likelihood("discretized", (1, 4.5))
    with pytest.raises(ValueError, match="levels= is for"):
        check_likelihood("gaussian", (1, 5))
    assert check_likelihood("discretised", [1, 5]) == ("discretized", (1, 5))
    m = DiscreteMF(N_ROWS, N_COLS, rank=2, levels=(1, 5))
    again = DiscreteMF(**m.config())
    assert again.discrete and again.levels == (1, 5)
    plain = GaussianFactorModel.likelihood_config(models.BayesianMF(3, 2, rank=1))
    assert plain == {"likelihood": "gaussian", "levels": None}


def test_setup_sets_levels_from_the_scale_and_refuses_bad_ratings():
    R = stars()
    m = DiscreteMF(N_ROWS, N_COLS, rank=2)
    with pytest.raises(ValueError, match="needs its levels"):
        m.likelihood(torch.zeros(3), {"noise": torch.tensor(1.0)})
    m.setup(R)
    assert m.levels == (1, 5)
    with pytest.raises(ValueError, match="integer ratings"):
        DiscreteMF(N_ROWS, N_COLS, rank=2).setup(R.replace(values=R.values + 0.5))
    with pytest.raises(ValueError, match="outside the levels"):
        DiscreteMF(N_ROWS, N_COLS, rank=2, levels=(1, 4)).setup(R)


def test_pyro_model_runs_with_integer_observations():
    R = stars()
    m = DiscreteMF(N_ROWS, N_COLS, rank=2)
    m.setup(R)
    with pyro.validation_enabled(True):
        tr = pyro.poutine.trace(m.model).get_trace(R)
        assert torch.isfinite(tr.log_prob_sum())
        draws = pyro.infer.Predictive(m.model, num_samples=4)(R, predict=True)["obs"]
    assert draws.shape == (4, len(R))
    assert set(draws.unique().tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}


# ------------------------------------------------------------------- the fits
def test_discretized_fit_predicts_on_the_scale(fits):
    disc, _, _, test = fits
    pred = disc.predict(test)
    assert bool(((pred >= 1) & (pred <= 5)).all())
    x = disc.predictive_samples(test, 200)
    assert set(x.unique().tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    ll = disc.log_likelihood(test, 50)
    assert bool((ll <= 0).all())  # log probabilities
    # a reasonable fit: better than the global mean
    base = ((test.values - test.values.mean()) ** 2).mean().sqrt()
    assert float(((pred - test.values) ** 2).mean().sqrt()) < float(base)


@pytest.mark.parametrize("which", ["discretized model", "gaussian mapped"])
def test_log_predictive_density_is_a_probability_over_the_levels(fits, which):
    disc, gauss, _, test = fits
    fit, kw = (disc, {}) if which == "discretized model" else (gauss, {"discretize": True})
    sub = test.subset(torch.arange(30))
    total = torch.zeros(len(sub), dtype=torch.float64)
    for k in range(1, 6):
        res = log_predictive_density(fit, sub.replace(values=torch.full((30,), float(k))),
                                     num_samples=40, **kw)
        assert res.kind == "log probability"
        total += torch.from_numpy(res.pointwise).exp()
    torch.testing.assert_close(total, torch.ones(30, dtype=torch.float64))


def test_gaussian_lpd_is_a_density_and_matches_the_draws(fits):
    _, gauss, _, test = fits
    res = log_predictive_density(gauss, test, num_samples=64, seed=3)
    assert res.kind == "log density" and res.num_draws == 64
    ll = gauss.log_likelihood(test, 64, seed=3).double()
    manual = torch.logsumexp(ll, 0) - math.log(64)
    np.testing.assert_allclose(res.pointwise, manual.numpy(), atol=1e-9)
    assert res.total == pytest.approx(float(manual.sum()), rel=1e-12)


def test_interval_bounds_on_integer_draws_are_levels_holding_the_level():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 6, (301, 50), generator=g).float()
    b = interval_bounds(x, [0.5, 0.8, 0.9, 0.95], discrete=True)
    assert torch.equal(b, b.round())
    for i, level in enumerate([0.5, 0.8, 0.9, 0.95]):
        inside = ((x >= b[i, 0]) & (x <= b[i, 1])).float().mean(0)
        assert bool((inside >= level - 1e-9).all())
    linear = interval_bounds(x, [0.9])
    assert bool((b[2, 0] <= linear[0, 0]).all() and (b[2, 1] >= linear[0, 1]).all())


def test_interval_coverage_on_the_scale(fits):
    disc, gauss, _, test = fits
    levels = (0.5, 0.8, 0.9, 0.95)
    for fit, kw in ((disc, {}), (gauss, {"discretize": True}), (gauss, {})):
        cov = interval_coverage(fit, test, levels=levels, num_samples=300, **kw)
        assert list(cov) == list(levels)
        vals = list(cov.values())
        assert vals == sorted(vals)  # nested intervals
        assert 0.3 < vals[0] and vals[-1] > 0.85
    with pytest.raises(ValueError, match="already discrete"):
        interval_coverage(disc, test, discretize=False)


def test_save_load_keeps_the_likelihood(fits, tmp_path, monkeypatch):
    disc, *_, test = fits
    monkeypatch.setattr(models, "DiscreteMF", DiscreteMF, raising=False)
    disc.save(tmp_path / "disc.pt")
    back = inference.load(tmp_path / "disc.pt")
    assert back.model.discrete and back.model.levels == (1, 5)
    torch.testing.assert_close(back.predict(test, seed=1), disc.predict(test, seed=1))


def test_constructors_take_the_likelihood_and_gibbs_refuses_the_discretized_one():
    train = stars()
    m = models.BayesianMF(N_ROWS, N_COLS, rank=2, likelihood="discretized", levels=(1, 5))
    assert m.discrete and m.config()["likelihood"] == "discretized"
    assert m.config()["levels"] == [1, 5]
    assert type(m)(**m.config()).discrete  # the config rebuilds the same model
    nn_model = models.BayesianNNMF(N_ROWS, N_COLS, rank=2, bilinear_dims=2, hidden=(4,),
                                   likelihood="discretized")
    assert nn_model.discrete and not models.BayesianNNMF(N_ROWS, N_COLS).discrete
    with pytest.raises(ValueError, match="Gaussian likelihood only"):
        inference.fit_gibbs(m, train, num_samples=2, burn_in=0, progress=False, thin=1)
    with pytest.raises(ValueError, match="likelihood must be one of"):
        models.BayesianMF(N_ROWS, N_COLS, likelihood="poisson")
