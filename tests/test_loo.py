"""Vectorised PSIS-LOO (``diagnostics.psis_loo``): the same numbers as the one-vector PSIS and
as ArviZ's ``az.loo``, for all observations at once."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest

from bayesmf import diagnostics
from bayesmf.diagnostics.loo import psis_loo, psislw_rows
from bayesmf.diagnostics.vi import psislw


def _log_lik(seed: int = 0, draws: int = 200, n: int = 300) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ll = rng.normal(-1.0, 0.3, size=(draws, n)) + 0.2 * rng.standard_t(3, size=(draws, n))
    ll[:, :4] = np.round(ll[:, :4], 1)  # ties at the cut-off: the one-vector fallback
    ll[:, 4] = -0.5
    ll[0, 4] = -800.0  # all other weights below the smallest float: the fallback too
    ll[:7, 5] = -12.0  # an influential observation: a heavy tail of 1 / p
    return ll


def test_rows_equal_the_one_vector_psis():
    ll = _log_lik()
    lw, k = psislw_rows(-ll.T)
    for i in range(ll.shape[1]):
        lw1, k1 = psislw(-ll[:, i])
        np.testing.assert_allclose(lw[i], lw1, rtol=0, atol=1e-12)
        assert k[i] == pytest.approx(k1, abs=1e-12) or (math.isinf(k[i]) and math.isinf(k1))
    np.testing.assert_allclose(np.exp(lw).sum(1), 1.0, atol=1e-12)


def test_loo_equals_arviz():
    az = pytest.importorskip("arviz")
    if not hasattr(az, "from_dict"):
        pytest.skip("this ArviZ has no from_dict")
    ll = _log_lik(1)
    idata = az.from_dict(posterior={"a": np.zeros((1, ll.shape[0]))},
                         log_likelihood={"obs": ll[None]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = az.loo(idata, pointwise=True)
    res = psis_loo(ll[None])  # (chains, draws, N) is accepted too
    assert res.elpd_loo == pytest.approx(float(ref.elpd_loo), abs=1e-9)
    assert res.se == pytest.approx(float(ref.se), abs=1e-9)
    assert res.p_loo == pytest.approx(float(ref.p_loo), abs=1e-9)
    np.testing.assert_allclose(res.loo_i, np.asarray(ref.loo_i).ravel(), atol=1e-12)
    np.testing.assert_allclose(res.pareto_k, np.asarray(ref.pareto_k).ravel(), atol=1e-12)


def test_influential_observations_are_flagged_and_bad_input_refused():
    res = psis_loo(_log_lik(2))
    assert res.pareto_k[5] > res.good_k and res.n_bad >= 1
    assert np.median(res.pareto_k[6:]) < 0.5
    assert "PSIS-LOO over 300 observations" in str(res)
    assert diagnostics.psis_loo is psis_loo
    with pytest.raises(ValueError, match="shape"):
        psis_loo(np.zeros(5))
    with pytest.raises(ValueError, match="finite"):
        psislw_rows(np.full((2, 10), np.nan))
