"""Blocked Gibbs sampler of BayesianMF: exact conditionals, the hyper-parameter step, and
the fitted posterior on synthetic data."""

from __future__ import annotations

import math

import pytest
import torch

from bayesmf import data, diagnostics, inference, models
from bayesmf.inference.gibbs import _log_target, _sample_log_scales, _sample_side

pytestmark = pytest.mark.usefixtures("one_thread")


def test_side_draws_have_the_conditional_mean_and_covariance():
    gen = torch.Generator().manual_seed(0)
    f64 = torch.float64
    A = torch.randn(3, 4, 4, generator=gen, dtype=f64)
    gram = A @ A.mT
    rhs = torch.randn(3, 4, generator=gen, dtype=f64)
    prior, noise_prec = torch.tensor([1.0, 2.0, 0.5, 4.0], dtype=f64), 3.0
    n = 20_000
    draws = torch.stack(
        [_sample_side(gram.expand(n, 3, 4, 4)[:, i].clone(), rhs[i].expand(n, 4), prior,
                      noise_prec, gen) for i in range(3)]
    )  # (3, n, 4): n independent draws of each of 3 rows
    prec = noise_prec * gram + torch.diag(prior)
    cov = torch.linalg.inv(prec)
    mean = (cov @ (noise_prec * rhs).unsqueeze(-1)).squeeze(-1)
    se = (cov.diagonal(dim1=-2, dim2=-1) / n).sqrt()
    assert torch.all((draws.mean(1) - mean).abs() < 5 * se)
    emp = torch.einsum("bni,bnj->bij", draws - mean[:, None], draws - mean[:, None]) / n
    assert torch.allclose(emp, cov, atol=0.05 * float(cov.abs().max()))
    # a row without data (zero Gram matrix) is drawn from the prior
    zero = _sample_side(torch.zeros(n, 4, 4, dtype=f64), torch.zeros(n, 4, dtype=f64), prior,
                        noise_prec, gen)
    assert torch.allclose(zero.var(0), 1 / prior, rtol=0.05)


@pytest.mark.parametrize(("n", "ss"), [(5.0, 2.0), (400.0, 90.0), (30_000.0, 2.5e4)])
def test_log_scale_chain_targets_the_exact_conditional(n, ss):
    f64 = torch.float64
    chains = 4000
    t = torch.zeros(chains, dtype=f64)  # many chains, started away from the mode
    nn, s2 = torch.full_like(t, n), torch.full_like(t, ss)
    m, v = torch.zeros_like(t), torch.ones_like(t)
    gen = torch.Generator().manual_seed(1)
    accepted = []
    for _ in range(30):
        t, acc = _sample_log_scales(t, nn, s2, m, v, gen)
        accepted.append(acc.double().mean())
    # the exact mean and sd of t by quadrature of the unnormalised log density
    grid = torch.linspace(-8, 4, 200_001, dtype=f64)
    logp = _log_target(grid, torch.tensor(n, dtype=f64), torch.tensor(ss, dtype=f64), 0.0, 1.0)
    w = torch.exp(logp - logp.max())
    w = w / w.sum()
    mean = float((w * grid).sum())
    sd = math.sqrt(float((w * (grid - mean) ** 2).sum()))
    assert float(t.mean()) == pytest.approx(mean, abs=5 * sd / math.sqrt(chains))
    assert float(t.std()) == pytest.approx(sd, rel=0.08)
    assert float(torch.stack(accepted[5:]).mean()) > 0.7


@pytest.fixture(scope="module")
def synthetic_fit():
    torch.set_num_threads(1)
    R, truth = data.synthetic_ratings(
        n_rows=150, n_cols=100, rank=3, density=0.5, noise=0.3, seed=0
    )
    train, test = data.random_split(R, test_fraction=0.2, seed=0)
    fit = inference.fit_gibbs(models.BayesianMF(150, 100, rank=3), train, num_samples=150,
                              warmup=50, seed=0, progress=False)
    return fit, train, test, truth


def test_gibbs_reaches_the_noise_floor_with_calibrated_intervals(synthetic_fit):
    fit, train, test, truth = synthetic_fit
    oracle = diagnostics.rmse(test.values, truth.expected(test.rows, test.cols))
    assert diagnostics.rmse(test.values, fit.predict(test)) < 1.1 * oracle
    assert float(fit.draws["noise"].mean()) == pytest.approx(0.3, rel=0.1)
    lo, hi = fit.predict_interval(test, 0.9)
    assert 0.86 <= diagnostics.coverage(test.values, lo, hi) <= 0.94
    assert fit.settings["accept_rate"] > 0.7
    assert fit.draws["U"].shape == (150, 150, 3) and fit.num_draws == 150


def test_gibbs_fit_converts_to_arviz_in_chain_order(synthetic_fit):
    az = pytest.importorskip("arviz")
    fit, _, test, _ = synthetic_fit
    idata = diagnostics.to_inference_data(fit, test, include=["noise", "U"])
    assert idata.posterior.attrs["inference"] == "Gibbs"
    post = idata.posterior
    assert post["noise"].shape == (1, 150)
    assert torch.allclose(torch.from_numpy(post["noise"].values[0]), fit.draws["noise"])
    assert idata.log_likelihood["obs"].shape == (1, 150, len(test))
    assert math.isfinite(float(az.loo(idata).elpd_loo))


def test_gibbs_refuses_models_it_cannot_sample(synthetic_fit):
    _, train, _, _ = synthetic_fit
    with pytest.raises(TypeError, match="fit_svi"):
        inference.fit_gibbs(models.BayesianNNMF(150, 100, rank=2, bilinear_dims=2), train)
    with pytest.raises(ValueError, match="num_samples"):
        inference.fit_gibbs(models.BayesianMF(150, 100), train, num_samples=0)


def test_ard_and_factor_means_run_under_gibbs_svi_and_arviz():
    az = pytest.importorskip("arviz")
    R, truth = data.synthetic_ratings(n_rows=120, n_cols=90, rank=3, density=0.5, noise=0.3,
                                      seed=2)
    train, test = data.random_split(R, test_fraction=0.2, seed=0)

    def model():
        return models.BayesianMF(120, 90, rank=3, ard=True, factor_means=True)

    fit = inference.fit_gibbs(model(), train, num_samples=100, warmup=50, progress=False)
    assert fit.draws["scale_U"].shape == (100, 3) and fit.draws["mean_V"].shape == (100, 3)
    oracle = diagnostics.rmse(test.values, truth.expected(test.rows, test.cols))
    assert diagnostics.rmse(test.values, fit.predict(test)) < 1.12 * oracle
    assert float(fit.draws["noise"].mean()) == pytest.approx(0.3, rel=0.1)
    # the same model by SVI: vector-valued hyper-parameters in the mean-field guide
    svi = inference.fit_svi(model(), train, epochs=150, batch_size=None, lr=0.05,
                            progress=False)
    assert svi.guide.posterior_mean()["scale_V"].shape == (3,)
    assert diagnostics.rmse(test.values, svi.predict(test)) < 1.12 * oracle
    for f in (fit, svi):
        idata = f.to_inference_data(test, num_samples=50)
        assert idata.posterior["scale_U"].dims == ("chain", "draw", "factor")
        assert idata.posterior["mean_U"].dims == ("chain", "draw", "factor")
        assert math.isfinite(float(az.waic(idata).elpd_waic))


def test_sample_fit_save_load_round_trip(synthetic_fit, tmp_path):
    fit, _, test, _ = synthetic_fit
    path = fit.save(tmp_path / "gibbs.pt")
    back = inference.load(path)
    assert isinstance(back, inference.SampleFit) and back.inference_name == "Gibbs"
    assert torch.equal(back.predict(test), fit.predict(test))
    for k, v in fit.draws.items():
        assert torch.equal(back.draws[k], v), k
