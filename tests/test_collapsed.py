"""Collapsed SVI (``fit_svi(..., collapse_rows=True)``, ``inference.collapsed``): each user's
vector and bias integrated out exactly, checked against brute-force Gaussian algebra."""

from __future__ import annotations

import math

import pytest
import torch
from _ratings import against_mean_field
from torch.distributions import MultivariateNormal

from bayesmf import data, inference, models
from bayesmf.inference.collapsed import CollapsedRowsGuide, collapsed_elbo_terms, user_batches

VARIANTS = [{}, {"ard": True, "factor_means": True}, {"implicit": True}, {"biases": False}]
SHAPE = (12, 9)


def _setup(kw: dict, seed: int = 0):
    R, _ = data.synthetic_ratings(*SHAPE, rank=2, density=0.5, seed=seed)
    model = models.BayesianMF(*SHAPE, rank=2, **kw)
    model.setup(R)
    guide = CollapsedRowsGuide(model, R, seed=seed)
    with torch.no_grad():  # away from the init
        gen = torch.Generator().manual_seed(seed + 1)
        for p in guide.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return R, model, guide


def _user_block(model, z: dict, n: int, rows, cols):
    """User n's design, offset, prior mean and sd read off ``model.mean`` numerically."""
    D = model.rank + int(model.biases)
    sel = (rows == n).nonzero().flatten()

    def mean_at(w):
        zz = {k: v[0] for k, v in z.items()}
        zz["U"] = torch.zeros(model.n_rows, model.rank)
        zz["U"][n] = w[: model.rank]
        if model.biases:
            zz["row_bias"] = torch.zeros(model.n_rows)
            zz["row_bias"][n] = w[model.rank]
        return model.mean(zz, rows[sel], cols[sel]).double()

    offset = mean_at(torch.zeros(D))
    X = torch.stack([mean_at(torch.eye(D)[j]) - offset for j in range(D)], 1)
    zz = {k: v[0].double() for k, v in z.items()}
    s = zz["scale_U"].expand(model.rank)
    m = zz["mean_U"] if model.factor_means else torch.zeros(model.rank, dtype=torch.float64)
    if model.biases:
        s = torch.cat([s, zz["scale_row_bias"].reshape(1)])
        m = torch.cat([m, torch.zeros(1, dtype=torch.float64)])
    return sel, X, offset, m, s, zz["noise"]


@pytest.mark.parametrize("kw", VARIANTS)
def test_marginal_likelihood_and_conditional_are_those_of_the_gaussian_regression(kw):
    """Each user's ``log p(y_n | theta)`` is the density of ``N(X m + o, X S X^T + s^2 I)``
    and the conditional of ``w_n`` the Bayesian regression's posterior, with ``X`` and ``o``
    read off the model's own mean (a check of ``row_design`` too)."""
    R, model, guide = _setup(kw)
    z, shapes = guide._theta(torch.Generator().manual_seed(3))
    rows, cols = guide.train_rows, guide.train_cols
    loglik, chol, white, m0 = guide.regression(z, shapes, rows, cols, guide.train_values)
    w_mean, _ = guide._rows_given(z, shapes, None)
    checked = 0
    for n in range(SHAPE[0]):
        sel, X, o, m, s, sigma = _user_block(model, z, n, rows, cols)
        y = guide.train_values[sel].double()
        if len(sel):
            cov = X @ torch.diag(s**2) @ X.T + sigma**2 * torch.eye(len(sel), dtype=X.dtype)
            expect = MultivariateNormal(X @ m + o, cov).log_prob(y)
            assert float(loglik[n]) == pytest.approx(float(expect), abs=1e-6)
            checked += 1
        prec = torch.diag(s**-2) + X.T @ X / sigma**2
        post_mean = torch.linalg.solve(prec, torch.diag(s**-2) @ m + X.T @ (y - o) / sigma**2)
        torch.testing.assert_close(chol[n] @ chol[n].T, prec, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(w_mean[n].double(), post_mean, atol=1e-5, rtol=1e-5)
    assert checked >= SHAPE[0] - 1


def test_draws_and_log_q_follow_the_conditional():
    """``log_q`` of the guide's draws is the mean-field density plus each user's conditional
    normal density; draws of ``U`` are the conditional mean plus ``L^-T eps``."""
    R, model, guide = _setup({})
    draws = guide.sample_latents(2, torch.Generator().manual_seed(5))
    log_q = guide.log_q(draws)
    rest = _mean_field_log_q(guide, draws)
    for i in range(2):
        z = {s.name: draws[s.name][i:i + 1] for s in guide.specs}
        shapes = {s.name: tuple(s.shape) for s in guide.specs}
        _, chol, white, m = guide.regression(z, shapes, guide.train_rows, guide.train_cols,
                                             guide.train_values)
        mean = m + torch.linalg.solve_triangular(chol.mT, white.unsqueeze(-1),
                                                 upper=True).squeeze(-1)
        w = torch.cat([draws["U"][i], draws["row_bias"][i][:, None]], -1).double()
        cond = sum(MultivariateNormal(mean[n], precision_matrix=chol[n] @ chol[n].T)
                   .log_prob(w[n]) for n in range(SHAPE[0]))
        assert float(log_q[i]) == pytest.approx(float(rest[i] + cond), abs=1e-3)


def test_posterior_std_of_the_users_is_their_spread_over_draws():
    R, model, guide = _setup({})
    std = guide.posterior_std(num_samples=400, seed=1)
    draws = guide.sample_latents(400, torch.Generator().manual_seed(2))
    assert set(std) == {s.name for s in model.latent_specs()}
    torch.testing.assert_close(std["U"], draws["U"].std(0), atol=0.05, rtol=0.15)
    torch.testing.assert_close(std["V"], guide.scale("V"))


@torch.no_grad()
def _mean_field_log_q(guide: CollapsedRowsGuide, draws: dict) -> torch.Tensor:
    return sum(guide.distribution(s).log_prob(draws[s.name]) for s in guide.specs).double()


@torch.no_grad()
def test_minibatches_of_users_are_unbiased_over_a_partition():
    """With the same draw of the other sites, the scaled minibatch estimates of a partition
    of the users average to the full bound."""
    R, model, guide = _setup({})
    active = int((torch.bincount(R.rows, minlength=SHAPE[0]) > 0).sum())
    assert active == SHAPE[0]  # equal parts: 12 users in 3 batches of 4
    torch.manual_seed(0)
    full = collapsed_elbo_terms(guide, R)
    parts = []
    for users, index in user_batches(R.rows, SHAPE[0], 4, torch.Generator().manual_seed(1)):
        assert len(users) == 4
        torch.manual_seed(0)  # the same draw of theta
        parts.append(collapsed_elbo_terms(guide, R, users, index, active))
    assert float(sum(p.loglik for p in parts) / 3) == pytest.approx(float(full.loglik), rel=1e-5)
    assert float(parts[0].kl_global) == pytest.approx(float(full.kl_global), rel=1e-6)


def test_user_batches_cover_every_rating_once():
    rows = torch.tensor([3, 0, 3, 1, 0, 3, 5])
    batches = user_batches(rows, 7, 2, torch.Generator().manual_seed(0))
    seen = torch.cat([i for _, i in batches])
    assert sorted(seen.tolist()) == list(range(len(rows)))
    for users, index in batches:
        assert set(rows[index].tolist()) == set(users.tolist())
        assert users.tolist() == sorted(users.tolist())


def test_fit_predicts_saves_loads_and_tightens_the_bound(tmp_path):
    """On rank-2 data the collapsed fit's bound is higher than the mean-field fit's ELBO
    (for the same q of the items it is at least the mean-field one); a saved fit predicts
    the same after loading. (Its noise against the exact posterior's: test_gold_standard.)"""
    R, mf, co, back = against_mean_field(tmp_path, 300, collapse_rows=True)
    assert co.inference_name == "SVI collapsed rows" and co.settings["collapse_rows"]
    assert sum(co.elbo_history[-20:]) / 20 > sum(mf.elbo_history[-20:]) / 20
    assert isinstance(back.guide, CollapsedRowsGuide)
    torch.testing.assert_close(back.predict(R), co.predict(R))
    assert math.isfinite(float(co.log_likelihood(R).mean()))


def test_collapsed_is_the_default_where_the_model_allows_it(tmp_path):
    """fit_svi integrates the users of a Gaussian BayesianMF out unless told not to; models
    without collapsible rows (the discretized likelihood, several particles) get mean-field;
    a collapsed fit with item covariances (row_covariance) saves and loads back."""
    R, _ = data.synthetic_ratings(n_rows=40, n_cols=30, rank=2, density=0.5, seed=0)
    opts = {"epochs": 3, "batch_size": None, "progress": False}
    default = inference.fit_svi(models.BayesianMF(40, 30, rank=2), R, **opts)
    assert isinstance(default.guide, CollapsedRowsGuide) and default.settings["collapse_rows"]
    off = inference.fit_svi(models.BayesianMF(40, 30, rank=2), R, collapse_rows=False, **opts)
    two = inference.fit_svi(models.BayesianMF(40, 30, rank=2), R, num_particles=2, **opts)
    for fit in (off, two):
        assert not isinstance(fit.guide, CollapsedRowsGuide)
        assert not fit.settings["collapse_rows"]
    levels = data.Ratings(R.rows, R.cols, R.values.round().clamp(1, 5), shape=R.shape)
    disc = inference.fit_svi(models.BayesianMF(40, 30, rank=2, likelihood="discretized"),
                             levels, **opts)
    assert not isinstance(disc.guide, CollapsedRowsGuide)
    items = inference.fit_svi(models.BayesianMF(40, 30, rank=2), R, row_covariance=True, **opts)
    items.save(tmp_path / "items.pt")
    back = inference.load(tmp_path / "items.pt")
    assert isinstance(back.guide, CollapsedRowsGuide) and "V" in back.guide.offdiag
    torch.testing.assert_close(back.predict(R), items.predict(R))


def test_minibatch_fit_runs_in_batches_of_whole_users():
    R, _ = data.synthetic_ratings(n_rows=40, n_cols=30, rank=2, density=0.5, seed=0)
    fit = inference.fit_svi(models.BayesianMF(40, 30, rank=2, implicit=True), R,
                            collapse_rows=True, batch_size=150, epochs=3, progress=False)
    assert fit.settings["users_per_batch"] == round(40 * 150 / len(R))
    assert len(fit.elbo_history) == 3 and all(math.isfinite(x) for x in fit.elbo_history)


@pytest.mark.parametrize("make, match", [
    (lambda: models.BayesianMF(*SHAPE, rank=2, likelihood="discretized"), "no rows"),
    (lambda: models.BayesianNNMF(*SHAPE, rank=2), "no rows"),
])
def test_models_without_collapsible_rows_are_refused(make, match):
    R, _ = data.synthetic_ratings(*SHAPE, rank=2, density=0.5, seed=0)
    R = data.Ratings(R.rows, R.cols, R.values.round().clamp(1, 5), R.shape)
    with pytest.raises(ValueError, match=match):
        inference.fit_svi(make(), R, collapse_rows=True, epochs=1, progress=False)


def test_collapsed_guide_is_not_a_pyro_guide_and_needs_one_particle():
    R, model, guide = _setup({})
    with pytest.raises(TypeError, match="not a Pyro guide"):
        guide()
    with pytest.raises(ValueError, match="one particle"):
        inference.fit_svi(models.BayesianMF(*SHAPE, rank=2), R, collapse_rows=True,
                          num_particles=2, epochs=1, progress=False)


def test_a_killed_collapsed_fit_resumes_to_the_same_result(tmp_path):
    R, _ = data.synthetic_ratings(n_rows=40, n_cols=30, rank=2, density=0.5, seed=0)
    opts = {"epochs": 6, "batch_size": 200, "seed": 3, "progress": False,
            "collapse_rows": True}
    whole = inference.fit_svi(models.BayesianMF(40, 30, rank=2), R, **opts)
    ck = tmp_path / "ck.pt"
    inference.fit_svi(models.BayesianMF(40, 30, rank=2), R, checkpoint=ck, checkpoint_every=1,
                      stop_after=2, **opts)
    resumed = inference.fit_svi(models.BayesianMF(40, 30, rank=2), R, checkpoint=ck, **opts)
    assert len(resumed.elbo_history) == 6 and resumed.settings["finished"]
    for name, p in whole.guide.named_parameters():
        torch.testing.assert_close(dict(resumed.guide.named_parameters())[name], p)


def test_predictions_for_some_users_equal_those_of_the_full_draws():
    """A prediction solves only the regressions of the users it asks about: the same values
    as from every user's draws, NaN for the others."""
    R, _ = data.synthetic_ratings(n_rows=40, n_cols=30, rank=2, density=0.5, seed=0)
    fit = inference.fit_svi(models.BayesianMF(40, 30, rank=2, implicit=True), R,
                            collapse_rows=True, epochs=5, progress=False)
    some = R.subset(torch.nonzero(R.rows < 7).flatten())
    full = fit.model.expected(fit.sample(20, seed=4), some.rows, some.cols).mean(0)
    torch.testing.assert_close(fit.predict(some, num_samples=20, seed=4), full)
    part = fit.guide.sample_latents(3, torch.Generator().manual_seed(0),
                                    users=torch.tensor([1, 5]))
    assert torch.isnan(part["U"][:, 0]).all() and not torch.isnan(part["U"][:, [1, 5]]).any()
