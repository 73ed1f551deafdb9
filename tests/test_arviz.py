"""ArviZ conversion of a variational fit (bayesmf.diagnostics.arviz)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from bayesmf import data, diagnostics, inference, models
from bayesmf.diagnostics.arviz import to_inference_data
from bayesmf.diagnostics.vi import log_predictive_density

az = pytest.importorskip("arviz")
xr = pytest.importorskip("xarray")

N_ROWS, N_COLS, NOISE, S = 80, 60, 0.3, 200


@pytest.fixture(scope="module")
def fitted():
    """A well-fitted rank-2 model on synthetic data with string ids (about 3 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        R, _ = data.synthetic_ratings(
            n_rows=N_ROWS, n_cols=N_COLS, rank=2, density=0.4, noise=NOISE, seed=0
        )
        R = R.replace(
            row_ids=np.array([f"user{i:02d}" for i in range(N_ROWS)]),
            col_ids=np.array([f"movie{j:02d}" for j in range(N_COLS)]),
        )
        train, test = data.random_split(R, 0.2, seed=0)
        fit = inference.fit_svi(
            models.BayesianMF(N_ROWS, N_COLS, rank=2),
            train,
            epochs=200,
            batch_size=None,
            lr=0.1,
            final_lr=0.02,
            progress=False,
            collapse_rows=False,  # every site in q (the collapsed default: test_collapsed)
        )
        idata = to_inference_data(fit, test, num_samples=S, seed=0, train=train)
        yield fit, train, test, idata
    finally:
        torch.set_num_threads(threads)


def test_groups_and_attrs(fitted):
    fit, train, test, idata = fitted
    for group in ("posterior", "posterior_predictive", "log_likelihood", "observed_data"):
        assert hasattr(idata, group), group
    attrs = idata.posterior.attrs
    assert attrs["model"] == "BayesianMF"
    assert attrs["inference"] == "SVI mean-field"
    assert attrs["bayesmf_version"]
    # which data each group holds, and that LOO over draws from q is not posterior LOO
    assert attrs["log_likelihood_data"].startswith(f"training ratings ({len(train)})")
    assert attrs["predictive_data"].startswith(f"held-out ratings ({len(test)})")
    assert "not posterior LOO" in attrs["loo_note"]
    assert attrs["likelihood"].startswith("Gaussian")


def test_posterior_dims_and_original_ids(fitted):
    fit, train, _, idata = fitted
    post = idata.posterior
    assert post["U"].dims == ("chain", "draw", "user", "factor")
    assert post["U"].shape == (1, S, N_ROWS, 2)
    assert post["V"].dims == ("chain", "draw", "item", "factor")
    assert post["row_bias"].dims == ("chain", "draw", "user")
    assert post["noise"].dims == ("chain", "draw")
    assert list(post["user"].values) == list(train.row_ids)
    assert list(post["item"].values) == list(train.col_ids)
    assert list(post["factor"].values) == [0, 1]
    # selection by original id picks the right row of the draws
    draws = fit.sample(S, seed=0)["U"].numpy()
    np.testing.assert_array_equal(post["U"].sel(user="user07").values[0], draws[:, 7])


def test_predictive_groups_follow_the_test_entries(fitted):
    fit, train, test, idata = fitted
    n = len(test)
    for name in ("obs", "heldout_log_lik"):
        da = idata.posterior_predictive[name]
        assert da.dims == ("chain", "draw", "rating")
        assert da.shape == (1, S, n)
    obs = idata.observed_data["obs"]
    np.testing.assert_array_equal(obs.values, test.values.numpy())
    rows, cols = test.rows.numpy(), test.cols.numpy()
    for group in ("posterior_predictive", "observed_data"):
        ds = idata[group]
        assert ds["user"].dims == ("rating",)
        np.testing.assert_array_equal(ds["user"].values, test.row_ids[rows])
        np.testing.assert_array_equal(ds["item"].values, test.col_ids[cols])
    # the same draws as the fit's own methods (one chunk here)
    ll = fit.log_likelihood(test, S, seed=0).double().numpy()
    held = idata.posterior_predictive["heldout_log_lik"].values[0]
    np.testing.assert_allclose(held, ll, rtol=1e-6, atol=1e-6)
    pp = fit.predictive_samples(test, S, seed=0).numpy()
    np.testing.assert_allclose(idata.posterior_predictive["obs"].values[0], pp, rtol=1e-6)
    # log_likelihood holds the TRAINING ratings, with the same draws
    lltr = idata.log_likelihood["obs"]
    assert lltr.shape == (1, S, len(train))
    np.testing.assert_array_equal(lltr["user"].values, train.row_ids[train.rows.numpy()])
    np.testing.assert_allclose(
        lltr.values[0], fit.log_likelihood(train, S, seed=0).double().numpy(), atol=1e-5
    )
    # attrs carry the held-out log predictive density, log mean_s p(x_i | z_s)
    lpd = log_predictive_density(fit, test, num_samples=S)
    lpd_manual = (np.logaddexp.reduce(ll, axis=0) - np.log(S)).mean()
    assert lpd.mean == pytest.approx(lpd_manual, abs=1e-9)
    assert idata.posterior.attrs["heldout_lpd_mean"] == pytest.approx(lpd.mean, abs=1e-9)
    assert lpd.total == pytest.approx(lpd.mean * n, rel=1e-12)
    assert lpd.kind == "log density"


def test_held_out_log_likelihood_is_labelled_as_held_out(fitted):
    """Without train=, the four groups of the interface are there, but the log_likelihood of
    held-out data is labelled as such (for the log predictive density, not for LOO); with
    train= it holds the training ratings."""
    fit, train, test, _ = fitted
    idata = to_inference_data(fit, test, num_samples=20)
    label = idata.posterior.attrs["log_likelihood_data"]
    assert label.startswith("held-out") and "NOT leave-one-out" in label
    np.testing.assert_array_equal(idata.log_likelihood["obs"].values,
                                  idata.posterior_predictive["heldout_log_lik"].values)
    with_train = to_inference_data(fit, test, num_samples=20, train=train)
    assert with_train.log_likelihood["obs"].shape[-1] == len(train)
    assert with_train.posterior.attrs["log_likelihood_data"].startswith("training ratings")


def test_training_ratings_given_as_data_give_the_in_sample_groups(fitted):
    """The fit's own training ratings (recognised by fingerprint) are not held-out data:
    log_likelihood, posterior_predictive and observed_data are all in-sample."""
    fit, train, _, _ = fitted
    idata = to_inference_data(fit, train, num_samples=5)
    assert idata.log_likelihood["obs"].shape == (1, 5, len(train))
    assert idata.posterior_predictive["obs"].shape == (1, 5, len(train))
    assert "heldout_log_lik" not in idata.posterior_predictive
    assert "in-sample" in idata.posterior.attrs["predictive_data"]
    assert "heldout_lpd_mean" not in idata.posterior.attrs
    # a subset of the training ratings is not recognised: held-out layout
    sub = train.subset(torch.arange(0, len(train), 2))
    held = to_inference_data(fit, sub, num_samples=5)
    assert held.posterior.attrs["log_likelihood_data"].startswith("held-out")


def test_no_unknown_group_warning(fitted):
    """Only groups of ArviZ's schema: ArviZ < 1 would warn about any other."""
    fit, train, test, _ = fitted
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        to_inference_data(fit, test, num_samples=10, train=train)


def test_loo_waic_and_summary(fitted):
    _, train, test, idata = fitted
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # single chain (draws from q)
        loo = az.loo(idata)
        waic = az.waic(idata)
        summary = az.summary(idata, var_names=["noise", "scale_U"])
    assert np.isfinite(loo.elpd_loo) and np.isfinite(waic.elpd_waic)
    # LOO is over the training ratings, not the held-out ones
    assert loo.n_data_points == len(train) != len(test)
    # elpd_loo <= lppd of the training data (leaving a point out never helps it)
    ll = idata.log_likelihood["obs"].values.reshape(S, -1)
    lppd = float((np.logaddexp.reduce(ll, axis=0) - np.log(S)).sum())
    assert float(loo.elpd_loo) <= lppd + 1e-6
    assert list(summary.index) == ["noise", "scale_U"]
    assert summary.loc["noise", "mean"] == pytest.approx(NOISE, abs=0.05)


def test_include_limits_the_posterior(fitted):
    fit, _, test, _ = fitted
    idata = to_inference_data(fit, num_samples=10, include=["noise", "V"])
    assert sorted(idata.posterior.data_vars) == ["V", "noise"]
    assert not hasattr(idata, "log_likelihood")
    with pytest.raises(ValueError, match="unknown latent sites"):
        to_inference_data(fit, num_samples=10, include=["W0"])


def test_without_test_data_and_use_train(fitted):
    fit, train, _, _ = fitted
    idata = fit.to_inference_data(num_samples=10)
    assert hasattr(idata, "posterior") and not hasattr(idata, "posterior_predictive")
    idata = to_inference_data(fit, num_samples=10, train=train)
    assert idata.log_likelihood["obs"].shape == (1, 10, len(train))
    assert not hasattr(idata, "posterior_predictive")
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="training ratings"):
        to_inference_data(fit, num_samples=10, use_train=True)
    with pytest.warns(DeprecationWarning, match="use_train"):
        idata = to_inference_data(fit, num_samples=10, use_train=True, train=train)
    assert idata.log_likelihood["obs"].shape == (1, 10, len(train))
    assert idata.posterior_predictive["obs"].shape == (1, 10, len(train))


def test_netcdf_round_trip(fitted, tmp_path):
    *_, idata = fitted
    path = tmp_path / "fit.nc"
    idata.to_netcdf(str(path))
    back = az.from_netcdf(str(path))
    assert list(back.posterior["user"].values) == list(idata.posterior["user"].values)
    np.testing.assert_array_equal(back.log_likelihood["obs"].values, idata.log_likelihood["obs"])


def test_datatree_when_arviz_has_no_inference_data(fitted, monkeypatch):
    """ArviZ >= 1 has no InferenceData: the groups become an xarray DataTree."""
    if not hasattr(xr, "DataTree"):
        pytest.skip("xarray without DataTree")
    fit, train, test, _ = fitted
    monkeypatch.delattr(az, "InferenceData", raising=False)
    tree = diagnostics.to_inference_data(fit, test, num_samples=20, train=train)
    assert isinstance(tree, xr.DataTree)
    assert {"posterior", "log_likelihood", "observed_data", "posterior_predictive"} <= set(
        tree.children
    )
    assert tree["posterior"]["U"].dims == ("chain", "draw", "user", "factor")
    assert tree.attrs["inference"] == "SVI mean-field"
    assert tree["log_likelihood"]["obs"].shape == (1, 20, len(train))
    assert "heldout_log_lik" in tree["posterior_predictive"].data_vars
