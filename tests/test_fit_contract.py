"""One contract that every fit type answers the same way, whatever the engine (in the manner of
GPyTorch's shared VariationalTestCase): predict, predict_interval (or a clear NoPosteriorError),
ArviZ where draws exist, save -> bayesmf.load with identical predictions, and plain records."""

from __future__ import annotations

import math

import pytest
import torch

import bayesmf
from bayesmf import data, inference, models
from bayesmf.inference import Fit, NoPosteriorError


@pytest.fixture(scope="module")
def ratings():
    R, _ = data.synthetic_ratings(n_rows=30, n_cols=20, rank=2, density=0.5, noise=0.3, seed=0)
    R = R.replace(scale=(float(R.values.min()), float(R.values.max())))
    return data.random_split(R, test_fraction=0.2, seed=0)


@pytest.fixture(scope="module")
def network():
    net, _ = data.synthetic_network(n_nodes=40, n_blocks=2, seed=0)
    return data.holdout_pairs(net, 0.2, seed=0)


def _als(tr):
    return inference.als(tr, rank=2, reg=1.0, epochs=5)


def _sgd(tr):
    return inference.sgd_mf(tr, rank=2, epochs=3, lr=0.5, batch_size=100)


def _svi(tr):
    return inference.fit_svi(models.BayesianMF(*tr.shape, rank=2), tr, epochs=5,
                             batch_size=None, lr=0.05)


def _nnmf(tr):
    return inference.fit_svi(models.BayesianNNMF(*tr.shape, rank=2, bilinear_dims=2,
                                                 hidden=(4,)), tr, epochs=3, batch_size=200)


def _gibbs(tr):
    return inference.fit_gibbs(models.BayesianMF(*tr.shape, rank=2), tr, num_samples=20,
                               burn_in=10, thin=1)


def _deep(tr):
    torch.manual_seed(0)
    return inference.fit_deep_mf(models.DeepMF(*tr.shape, hidden=(8,), rank=4), tr, epochs=3,
                                 batch_size=None, lr=1e-2)


def _restarts(tr):
    return inference.fit_svi(models.BayesianMF(*tr.shape, rank=2), tr, epochs=5,
                             batch_size=None, lr=0.05, restarts=2)


def _nuts(tr):
    return inference.fit_nuts(models.BayesianMF(*tr.shape, rank=2), tr, num_samples=10,
                              warmup=10, max_tree_depth=3)


RATINGS_FITS = {"als": _als, "sgd": _sgd, "svi": _svi, "nnmf": _nnmf, "gibbs": _gibbs,
                "deep_mf": _deep, "svi_restarts": _restarts, "nuts": _nuts}


def _sbm(train_net):
    return inference.fit_sbm(models.DPStochasticBlockModel(train_net.n_nodes, truncation=4),
                             train_net, epochs=5, n_restarts=1)


def _lfm(train_net):
    return inference.fit_svi(models.LatentFeatureNetwork(train_net.n_nodes, rank=2),
                             train_net.observed_pairs(), epochs=5, batch_size=None, lr=0.05)


def _lfm_nuts(train_net):
    return inference.fit_nuts(models.LatentFeatureNetwork(train_net.n_nodes, rank=2),
                              train_net.observed_pairs(), num_samples=10, warmup=10,
                              max_tree_depth=3)


NETWORK_FITS = {"sbm": _sbm, "lfm": _lfm, "lfm_nuts": _lfm_nuts}


def _check_contract(fit: Fit, test, tmp_path) -> None:
    assert isinstance(fit, Fit) and fit.kind
    pred = fit.predict(test)
    assert pred.shape == (len(test),) and torch.isfinite(pred).all()
    assert torch.equal(fit.predict(test, seed=0), pred)  # deterministic for a seed
    # the posterior median per entry: inside the draws, the middle one; a point is its own
    median = fit.predict(test, statistic="median")
    if fit.has_posterior:
        draws = (fit.link_draws if hasattr(fit, "link_draws") else fit.expected_draws)(test)
        torch.testing.assert_close(median, draws.quantile(0.5, dim=0))
        assert not torch.allclose(median, pred)  # a different summary of skewed draws
    else:
        assert torch.equal(median, pred)
    with pytest.raises(ValueError, match="statistic must be one of"):
        fit.predict(test, statistic="mode")
    lo_s, hi_s = test.scale
    clamped = fit.predict(test, clamp=True)
    assert clamped.min() >= lo_s - 1e-6 and clamped.max() <= hi_s + 1e-6
    if fit.has_posterior:
        lo, hi = fit.predict_interval(test, 0.9, num_samples=50)
        assert lo.shape == hi.shape == pred.shape and bool((lo <= hi).all())
        narrow = fit.predict_interval(test, 0.5, num_samples=50)
        assert bool((narrow[1] - narrow[0] <= hi - lo + 1e-6).all())
    else:
        with pytest.raises(NoPosteriorError, match="point estimate"):
            fit.predict_interval(test, 0.9)
        with pytest.raises(NoPosteriorError):
            fit.to_inference_data(test)
    # records: plain settings, training fingerprint, time
    assert isinstance(fit.settings, dict) and fit.fit_seconds >= 0
    assert fit.train_info["fingerprint"]["sha256"]
    assert not math.isnan(float(pred.mean()))
    # save -> bayesmf.load, whatever the kind
    path = fit.save(tmp_path / f"{fit.kind}.pt")
    again = bayesmf.load(path)
    assert type(again) is type(fit)
    torch.testing.assert_close(again.predict(test), pred)
    assert again.train_info["shape"] == fit.train_info["shape"]


@pytest.mark.parametrize("name", sorted(RATINGS_FITS))
def test_ratings_fit_contract(name, ratings, tmp_path):
    train, test = ratings
    _check_contract(RATINGS_FITS[name](train), test, tmp_path)


@pytest.mark.parametrize("name", sorted(NETWORK_FITS))
def test_network_fit_contract(name, network, tmp_path):
    train_net, test_pairs = network
    _check_contract(NETWORK_FITS[name](train_net), test_pairs, tmp_path)


@pytest.mark.parametrize("name", ["svi", "gibbs", "nuts"])
def test_posterior_fits_convert_to_arviz(name, ratings):
    train, test = ratings
    fit = RATINGS_FITS[name](train)
    idata = fit.to_inference_data(test, num_samples=20)
    assert "posterior" in idata.groups() and "log_likelihood" in idata.groups()


def test_load_names_an_unknown_kind(tmp_path):
    from bayesmf.inference import files

    path = files.save_file(tmp_path / "x.pt", "not-a-fit", {"a": 1})
    with pytest.raises(files.FitFileError, match="x.pt.*not a fit"):
        bayesmf.load(path)


def test_ids_of_any_type_survive_save_and_load(tmp_path):
    """A fit whose ids are datetimes (or mixed strings) saves and loads (it used to fail)."""
    import numpy as np
    import pandas as pd

    days = pd.date_range("2024-01-01", periods=6, freq="D", tz="Europe/Paris")
    df = pd.DataFrame({"user": np.repeat(days, 4), "item": np.tile(["a", "b", 3, 4.5], 6),
                       "rating": np.arange(24, dtype=float) % 5})
    R = data.from_dataframe(df.astype({"item": object}))
    fit = inference.fit_svi(models.BayesianMF(*R.shape, rank=1), R, epochs=2, batch_size=None)
    again = bayesmf.load(fit.save(tmp_path / "fit.pt"))
    assert list(again.train_info["row_ids"]) == list(R.row_ids)
    assert [type(x) for x in again.train_info["col_ids"]] == [type(x) for x in R.col_ids]
    torch.testing.assert_close(again.predict(R), fit.predict(R))
