"""The row-covariance guide (``MeanFieldGuide(row_covariance=True)``, ``fit_svi(...,
row_covariance=True)``): each user's and item's latent vector gets a full covariance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _ratings import against_mean_field, distinct_ratings, even_ratings, partition_terms
from torch.distributions import MultivariateNormal, kl_divergence

from bayesmf import models
from bayesmf.data import Ratings
from bayesmf.inference.guides import MeanFieldGuide, correlate
from bayesmf.inference.objectives import local_elbo_terms


def _ratings(n_rows: int = 14, n_cols: int = 10, n: int = 70, seed: int = 0,
             empty_rows: int = 0) -> Ratings:
    return distinct_ratings(n_rows, n_cols, n, seed, empty_rows)


def _guide(model: models.GaussianFactorModel, R: Ratings, seed: int = 0) -> MeanFieldGuide:
    model.setup(R)
    guide = MeanFieldGuide(model, seed=seed, row_covariance=True)
    with torch.no_grad():  # away from the init, with real off-diagonal terms
        gen = torch.Generator().manual_seed(seed + 1)
        for p in guide.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return guide


def _eps(guide: MeanFieldGuide, particles: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {s.name: torch.randn((particles, *s.shape), generator=gen) for s in guide.specs}


def test_factor_rows_get_a_lower_triangular_factor_and_the_rest_stays_diagonal():
    model = models.BayesianMF(6, 5, rank=3)
    guide = MeanFieldGuide(model, row_covariance=True)
    assert set(guide.offdiag) == {"U", "V"}  # not the biases (one entry a row), not globals
    assert guide.offdiag["U"].shape == (6, 3, 3)
    assert torch.equal(guide.row_factor("U"), torch.zeros(6, 3, 3))  # starts mean-field
    assert not MeanFieldGuide(model).offdiag


def test_draws_log_q_and_std_are_those_of_the_row_gaussians():
    R = _ratings()
    model = models.BayesianMF(*R.shape, rank=3)
    guide = _guide(model, R)
    with torch.no_grad():
        L = guide._scale_tril("U")
        assert torch.all(torch.triu(guide.row_factor("U"), 0) == 0)
        cov = L @ L.transpose(-1, -2)
        torch.testing.assert_close(guide.posterior_std()["U"] ** 2,
                                   torch.diagonal(cov, 0, -2, -1))
        draws = guide.sample_latents(20000, generator=torch.Generator().manual_seed(0))["U"]
        c = draws - draws.mean(0)
        emp = torch.einsum("snk,snj->nkj", c, c) / (len(c) - 1)
        assert torch.allclose(emp, cov, atol=0.05 * float(cov.abs().max()))
        # log q: the rows' multivariate normal densities plus the other sites' terms
        z = guide.sample_latents(3, generator=torch.Generator().manual_seed(1))
        rows = MultivariateNormal(guide.locs["U"], scale_tril=L).log_prob(z["U"]).sum(-1)
        others = sum(guide.distribution(s).log_prob(z[s.name]) for s in guide.specs
                     if s.name != "U")
        torch.testing.assert_close(guide.log_q(z), rows + others, rtol=1e-5, atol=1e-3)
        # not the diagonal guide's with the same means and scales (the rows' correlation)
        diag = MeanFieldGuide(model)
        diag.load_state_dict({k: v for k, v in guide.state_dict().items()
                              if not k.startswith("offdiag.")})
        assert not torch.allclose(guide.log_q(z), diag.log_q(z), rtol=1e-3)


@pytest.mark.parametrize("empty_rows", [0, 2])
def test_full_batch_terms_are_the_exact_likelihood_and_kl(empty_rows):
    """Fixed draws ``x = m + L eps``: the likelihood at them, and the exact KL of each row's
    multivariate normal from its prior (at the drawn prior scale), rows without data too."""
    R = _ratings(empty_rows=empty_rows)
    model = models.BayesianMF(*R.shape, rank=3)
    guide = _guide(model, R)
    eps = _eps(guide)
    terms = local_elbo_terms(model, guide, R, None, 1, eps)
    z = {}
    for s in guide.specs:
        loc, scale = guide.loc_scale(s.name)
        x = correlate(loc + scale * eps[s.name], guide.row_factor(s.name), eps[s.name])[0]
        z[s.name] = x.exp() if s.positive else x
    ll = model.log_likelihood(z, R.rows, R.cols, R.values).sum()
    torch.testing.assert_close(terms.loglik, ll, rtol=1e-5, atol=1e-3)
    kl = torch.zeros(())
    for name, scale_site in (("U", "scale_U"), ("V", "scale_V")):
        q = MultivariateNormal(guide.locs[name], scale_tril=guide._scale_tril(name))
        p = MultivariateNormal(torch.zeros(3), covariance_matrix=z[scale_site] ** 2 * torch.eye(3))
        kl = kl + kl_divergence(q, p).sum()
    for name, scale_site in (("row_bias", "scale_row_bias"), ("col_bias", "scale_col_bias")):
        q = torch.distributions.Normal(guide.locs[name], guide.scale(name))
        kl = kl + kl_divergence(q, torch.distributions.Normal(0.0, z[scale_site])).sum()
    torch.testing.assert_close(terms.kl_local, kl, rtol=1e-5, atol=1e-3)


def test_minibatch_estimate_is_unbiased_over_a_partition():
    R = even_ratings(20, 13, 120, seed=5, parts=8, empty_rows=1)
    model = models.BayesianMF(20, 13, rank=3, ard=True, factor_means=True)
    guide = _guide(model, R)
    full, parts = partition_terms(model, guide, R, _eps(guide, particles=2), 2, parts=8)
    for field in ("loglik", "kl_global", "kl_local"):
        values = torch.stack([getattr(t, field) for t in parts])
        assert torch.allclose(values.mean(), getattr(full, field), rtol=1e-4), field


def test_sparse_rows_get_gradients_for_their_factors_only():
    R = _ratings(30, 8, 120, seed=2)
    model = models.BayesianMF(30, 8, rank=2)
    guide = _guide(model, R)
    guide.sparse_grads = True
    idx = torch.arange(10)
    local_elbo_terms(model, guide, R, idx, 1, whole_rows=8).loss().backward()
    g = guide.offdiag["U"].grad
    assert g.is_sparse
    rows = set(g.coalesce().indices()[0].tolist())
    assert rows == set(R.rows[idx].tolist())
    assert guide.offdiag["V"].grad is not None and not guide.offdiag["V"].grad.is_sparse


def test_fit_saves_loads_and_reaches_a_higher_elbo_than_mean_field(tmp_path):
    """The family contains the mean-field one and starts at its init: on correlated
    posteriors (a rank-2 model of rank-2 data) its ELBO is higher."""
    R, mf, rc, back = against_mean_field(tmp_path, 400, row_covariance=True)
    assert rc.inference_name == "SVI row-covariance" and rc.settings["row_covariance"]
    assert np.mean(rc.elbo_history[-20:]) > np.mean(mf.elbo_history[-20:])
    assert back.guide.row_covariance
    torch.testing.assert_close(back.predict(R), rc.predict(R))
    torch.testing.assert_close(back.guide.offdiag["U"], rc.guide.offdiag["U"])
