"""PSIS k-hat, log prior, interval coverage and plots (bayesmf.diagnostics.vi / .plots)."""

from __future__ import annotations

import numpy as np
import pyro
import pytest
import torch

from bayesmf import data, diagnostics, inference, models
from bayesmf.diagnostics.vi import (
    PSISResult,
    log_predictive_density,
    log_prior,
    pareto_khat,
    psislw,
)
from bayesmf.inference.guides import MeanFieldGuide


@pytest.fixture(scope="module")
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def calibrated(single_thread):
    """A well-fitted rank-2 model and its held-out ratings (about 3 s)."""
    R, _ = data.synthetic_ratings(n_rows=80, n_cols=60, rank=2, density=0.4, noise=0.3, seed=0)
    train, test = data.random_split(R, 0.2, seed=0)
    model = models.BayesianMF(80, 60, rank=2)
    fit = inference.fit_svi(
        model, train, epochs=200, batch_size=None, lr=0.1, final_lr=0.02, progress=False
    )
    return fit, train, test


@pytest.fixture(scope="module")
def tiny(single_thread):
    """A small rank-1 problem fitted for 1 epoch (bad q) and for 150 epochs (good q)."""
    R, _ = data.synthetic_ratings(n_rows=20, n_cols=15, rank=1, density=0.8, noise=0.3, seed=0)

    def fit(epochs: int):
        return inference.fit_svi(
            models.BayesianMF(20, 15, rank=1, biases=False),
            R,
            epochs=epochs,
            batch_size=None,
            lr=0.1,
            final_lr=0.02 if epochs > 1 else 0.1,
            progress=False,
        )

    return R, fit(1), fit(150)


# --------------------------------------------------------------------- log prior
@pytest.mark.parametrize(
    "model",
    [
        models.BayesianMF(7, 5, rank=2),
        models.BayesianMF(7, 5, rank=3, biases=False),
        models.BayesianNNMF(7, 5, rank=2, bilinear_dims=3, hidden=(4,)),
        models.BayesianMF(7, 5, rank=3, ard=True, factor_means=True),
    ],
    ids=["mf", "mf-nobias", "nnmf", "mf-ard-means"],
)
def test_log_prior_matches_the_pyro_model_trace(model):
    R, _ = data.synthetic_ratings(n_rows=7, n_cols=5, rank=2, density=0.6, seed=1)
    model.setup(R)
    draws = MeanFieldGuide(model, seed=3).sample_latents(4, torch.Generator().manual_seed(0))
    batched = log_prior(model, draws)
    assert batched.shape == (4,)
    latent = {s.name for s in model.latent_specs()}
    for s in range(4):
        z = {k: v[s] for k, v in draws.items()}
        trace = pyro.poutine.trace(pyro.poutine.condition(model.model, data=z)).get_trace(R)
        expected = trace.log_prob_sum(site_filter=lambda name, site: name in latent)
        assert float(log_prior(model, z)) == pytest.approx(float(expected), rel=1e-5, abs=1e-3)
        assert float(batched[s]) == pytest.approx(float(log_prior(model, z)), rel=1e-12)


# -------------------------------------------------------------------------- PSIS
def test_psislw_numpy_matches_arviz():
    az = pytest.importorskip("arviz")
    if not hasattr(az, "psislw"):
        pytest.skip("this ArviZ has no psislw")
    rng = np.random.default_rng(0)
    for size, scale in [(1000, 0.5), (1000, 3.0), (300, 1.0), (40, 1.0)]:
        x = rng.standard_t(4, size=size) * scale
        lw_ref, k_ref = az.psislw(x.copy())
        lw, k = psislw(x)
        assert k == pytest.approx(float(k_ref), rel=1e-10)
        np.testing.assert_allclose(lw, lw_ref, atol=1e-10)
        assert np.exp(lw).sum() == pytest.approx(1.0)


def test_pareto_khat_result(tiny):
    R, _, good = tiny
    res = pareto_khat(good, R, num_samples=400, seed=0)
    assert isinstance(res, PSISResult)
    assert np.isfinite(res.khat)
    assert res.log_weights.shape == (400,)
    assert np.exp(res.log_weights).sum() == pytest.approx(1.0)
    assert 1.0 <= res.ess <= 400
    assert res.threshold == 0.7
    assert res.reliable == (res.khat < 0.7)
    assert res.log_ratios is not None and np.all(np.isfinite(res.log_ratios))
    again = pareto_khat(good, R, num_samples=400, seed=0)
    assert again.khat == res.khat  # deterministic given the seed
    with pytest.raises(ValueError):
        pareto_khat(good, R, num_samples=10)


@pytest.mark.parametrize(("khat", "words"), [(0.3, "can be trusted"), (0.6, "usable"),
                                             (0.8, "misses part"), (5.0, "far from the joint")])
def test_khat_reading_in_words(khat, words):
    res = PSISResult(khat=khat, log_weights=np.full(100, -np.log(100)), ess=42.0)
    assert words in res.reading and str(res) == res.reading
    assert res.reading.startswith(f"k-hat {khat:.2f} (ESS 42 of 100 draws)")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_khat_is_lower_for_a_converged_fit(tiny, seed):
    R, bad, good = tiny
    k_bad = pareto_khat(bad, R, num_samples=1000, seed=seed).khat
    k_good = pareto_khat(good, R, num_samples=1000, seed=seed).khat
    assert k_good + 0.5 < k_bad, (k_good, k_bad)


# ---------------------------------------------------------------------- coverage
def test_interval_coverage_is_calibrated(calibrated):
    fit, _, test = calibrated
    cov = diagnostics.interval_coverage(fit, test, levels=(0.5, 0.9), num_samples=500)
    assert set(cov) == {0.5, 0.9}
    assert 0.85 <= cov[0.9] <= 0.95
    assert 0.35 <= cov[0.5] <= 0.65
    # identical to fit.predict_interval + metrics.coverage level by level
    for level, value in cov.items():
        lo, hi = fit.predict_interval(test, level, num_samples=500, seed=0)
        assert value == diagnostics.coverage(test.values, lo, hi)
    with pytest.raises(ValueError):
        diagnostics.interval_coverage(fit, test, levels=(1.2,))


def test_interval_coverage_reports_four_levels_by_default(calibrated):
    fit, _, test = calibrated
    cov = diagnostics.interval_coverage(fit, test, num_samples=300)
    assert list(cov) == [0.5, 0.8, 0.9, 0.95]
    assert list(cov.values()) == sorted(cov.values())  # nested intervals
    lo, hi = fit.predict_interval(test, 0.8, num_samples=300, seed=0)
    assert cov[0.8] == diagnostics.coverage(test.values, lo, hi)
    # continuous (non-integer) ratings cannot be mapped to an integer scale
    with pytest.raises(ValueError, match="rating scale|integer scale"):
        diagnostics.interval_coverage(fit, test, discretize=True)


def test_log_predictive_density_prefers_the_fitted_posterior(calibrated, tiny):
    """Held-out lpd: a proper average over draws, higher for a fit than for a 1-epoch q."""
    fit, train, test = calibrated
    res = log_predictive_density(fit, test, num_samples=100)
    ll = fit.log_likelihood(test, 100, seed=0).double()
    np.testing.assert_allclose(
        res.pointwise, (torch.logsumexp(ll, 0) - np.log(100)).numpy(), atol=1e-9
    )
    # log mean exp >= mean log (Jensen) and lpd of a good fit beats a plug-in of a bad one
    assert bool((res.pointwise >= ll.mean(0).numpy() - 1e-9).all())
    R, bad, good = tiny
    assert log_predictive_density(good, R, 50).mean > log_predictive_density(bad, R, 50).mean


# ------------------------------------------------------------------------- plots
def test_plot_elbo_writes_png(tmp_path, single_thread):
    from matplotlib.figure import Figure

    R, _ = data.synthetic_ratings(n_rows=20, n_cols=15, rank=2, density=0.5, seed=0)
    train, val = data.random_split(R, 0.2, seed=0)
    fit = inference.fit_svi(
        models.BayesianMF(20, 15, rank=2), train, epochs=8, val=val, batch_size=None,
        progress=False,
    )  # fmt: skip
    path = tmp_path / "plots" / "elbo.png"
    fig = diagnostics.plot_elbo(fit, path=path)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2  # twin axis for the validation RMSE
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fit.history.pop("val")
    fig2 = Figure()
    ax = fig2.subplots()
    assert diagnostics.plot_elbo(fit, ax=ax) is fig2
    assert len(fig2.axes) == 1


def test_plot_ppc_writes_png(calibrated, tmp_path):
    from matplotlib.figure import Figure

    fit, _, test = calibrated
    path = tmp_path / "ppc.png"
    fig = diagnostics.plot_ppc(fit, test, num_samples=100, path=path)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2
    assert path.stat().st_size > 10_000
    cal = fig.axes[1].lines[-1]
    np.testing.assert_allclose(cal.get_xdata(), np.arange(1, 10) / 10)
    assert np.all((cal.get_ydata() >= 0) & (cal.get_ydata() <= 1))


def test_pareto_khat_of_a_mixture_uses_the_mixture_density(tiny):
    """Draws from each restart in turn, weighed against ``log (1/R) sum_r q_r``: a component's
    own density alone would give other ratios (the two restarts differ)."""
    from bayesmf.diagnostics.vi import log_joint

    R, bad, good = tiny
    mix = inference.MixtureFit([good, bad])
    res = pareto_khat(mix, R, num_samples=40, seed=5)
    gen = torch.Generator().manual_seed(5)
    z = [c.guide.sample_latents(20, generator=gen) for c in (good, bad)]
    expected, own = [], []
    with torch.no_grad():
        for zc, c in zip(z, (good, bad), strict=True):
            log_q = torch.stack([good.guide.log_q(zc), bad.guide.log_q(zc)]).double()
            lj = log_joint(good.model, zc, R)
            expected.append(lj - (torch.logsumexp(log_q, 0) - np.log(2)))
            own.append(lj - c.guide.log_q(zc).double())
    np.testing.assert_allclose(res.log_ratios, torch.cat(expected).numpy(), rtol=1e-6)
    assert not np.allclose(res.log_ratios, torch.cat(own).numpy(), rtol=1e-3)
    assert np.isfinite(res.khat)


def test_pareto_khat_refuses_a_sampled_fit():
    R, _ = data.synthetic_ratings(n_rows=12, n_cols=10, rank=1, density=0.6, seed=0)
    fit = inference.fit_gibbs(models.BayesianMF(12, 10, rank=1), R, num_samples=5, burn_in=2,
                              progress=False, thin=1)
    with pytest.raises(TypeError, match="variational fit"):
        pareto_khat(fit, R, num_samples=30)
