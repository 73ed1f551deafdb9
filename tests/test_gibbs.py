"""Blocked Gibbs sampler of BayesianMF: exact conditionals, the hyper-parameter step, the
rescaling move along the U/V scale ridge, chains (parallel = sequential, R-hat, ArviZ), the
order in which kept draws are used, and the fitted posterior on synthetic data."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from scipy import stats

from bayesmf import data, diagnostics, inference, models
from bayesmf.inference import gibbs
from bayesmf.inference.gibbs import (
    _log_target,
    _rescale,
    _rhat,
    _sample_log_scales,
    _sample_side,
    _side,
    _side_stats,
    _translate,
)

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


@pytest.mark.parametrize("bias", [True, False])
def test_sparse_side_statistics_equal_the_dense_sums(bias):
    gen = torch.Generator().manual_seed(3)
    f64 = torch.float64
    N, M, D = 7, 5, 3
    mask = torch.rand(N, M, generator=gen) < 0.5
    mask[2] = False  # a user without ratings
    rows, cols = mask.nonzero(as_tuple=True)
    perm = torch.randperm(len(rows), generator=gen)  # ratings in no particular order
    rows, cols = rows[perm], cols[perm]
    x = torch.randn(len(rows), generator=gen, dtype=f64)
    feats = torch.randn(M, D, generator=gen, dtype=f64)
    c = torch.randn(M, generator=gen, dtype=f64) if bias else None
    def stats(side):
        parts = list(_side_stats(side, feats, c))
        assert [p[0] for p in parts] == list(range(0, N, len(parts[0][1])))
        return torch.cat([p[1] for p in parts]), torch.cat([p[2] for p in parts])

    side = _side(rows, cols, x, N, M, dtype=f64)
    gram, rhs = stats(side)
    y = x - c[cols] if bias else x
    want_gram = torch.zeros(N, D, D, dtype=f64)
    want_rhs = torch.zeros(N, D, dtype=f64)
    for r, col, yy in zip(rows.tolist(), cols.tolist(), y.tolist(), strict=True):
        want_gram[r] += torch.outer(feats[col], feats[col])
        want_rhs[r] += yy * feats[col]
    assert torch.allclose(gram, want_gram) and torch.allclose(rhs, want_rhs)
    assert torch.equal(side.count, mask.sum(1).to(f64))
    # in blocks of 3 users, the same
    blocked = _side(rows, cols, x, N, M, dtype=f64, block_rows=3)
    assert len(blocked.blocks) == 3
    g3, r3 = stats(blocked)
    assert torch.allclose(g3, want_gram) and torch.allclose(r3, want_rhs)
    # and in blocks of 2 columns of the other side within each (cache blocking), the same
    tiled = _side(rows, cols, x, N, M, dtype=f64, block_rows=3, block_cols=2)
    assert [len(parts) for _, parts in tiled.blocks] == [3, 3, 3]
    gt, rt = stats(tiled)
    assert torch.allclose(gt, want_gram) and torch.allclose(rt, want_rhs)
    # the default float32 products agree to float32 precision
    g32, r32 = stats(_side(rows, cols, x, N, M))
    assert g32.dtype == f64 and torch.allclose(g32, want_gram, atol=1e-5)
    assert torch.allclose(r32, want_rhs, atol=1e-5)


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


def _prior_draws(K: int, N: int, M: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """K independent draws (one per ARD factor) of (log-scales, means, factors) from the
    prior: t ~ N(0, 1), mean ~ N(0, 1), U[:, k] ~ N(mean_k, exp(t_k)^2)."""
    f64 = torch.float64
    t = torch.randn(2, K, generator=gen, dtype=f64)
    mu = torch.randn(2, K, generator=gen, dtype=f64)
    U = mu[0] + torch.exp(t[0]) * torch.randn(N, K, generator=gen, dtype=f64)
    V = mu[1] + torch.exp(t[1]) * torch.randn(M, K, generator=gen, dtype=f64)
    return {"t": t.reshape(-1), "mean_U": mu[0], "mean_V": mu[1], "U": U, "V": V}


def test_rescaling_move_leaves_the_prior_invariant():
    # The move only needs the likelihood to be invariant under U -> cU, V -> V/c (it is),
    # so it must leave the prior itself invariant: from exact prior draws, one move must
    # give exact prior draws again. A wrong Jacobian (c^{N-M}) or a wrong log c target
    # would shift the log-scales, since N != M here.
    K, N, M = 20_000, 6, 2
    gen = torch.Generator().manual_seed(5)
    p = _prior_draws(K, N, M, gen)
    z = {k: p[k].clone() for k in ("U", "V", "mean_U", "mean_V")}
    sl = {"scale_U": slice(0, K), "scale_V": slice(K, 2 * K)}
    f64 = torch.float64
    t, accept = _rescale(z, p["t"], sl, {"U": "scale_U", "V": "scale_V"},
                         {"U": "mean_U", "V": "mean_V"}, {"U": 1.0, "V": 1.0},
                         torch.zeros(2 * K, dtype=f64), torch.ones(2 * K, dtype=f64), gen)
    t_u, t_v = t[:K], t[K:]
    assert float(accept.double().mean()) > 0.8
    assert float(torch.corrcoef(torch.stack([t_u, p["t"][:K]]))[0, 1]) < 0.8  # it moves
    for sample, sd in ((t_u, 1.0), (t_v, 1.0), (z["mean_U"], 1.0), (z["mean_V"], 1.0),
                       (t_u - t_v, math.sqrt(2.0))):
        assert stats.kstest(sample.numpy() / sd, "norm").pvalue > 1e-3
    # predictions and the standardised factors are untouched
    assert torch.allclose(z["U"] @ z["V"].T, p["U"] @ p["V"].T)
    std_u = (z["U"] - z["mean_U"]) / torch.exp(t_u)
    assert torch.allclose(std_u, (p["U"] - p["mean_U"]) / torch.exp(p["t"][:K]))


def test_translation_move_leaves_the_prior_invariant():
    # u_n -> u_n + w, mean_U -> mean_U + w, c_m -> c_m - w . v_m keeps every prediction:
    # from exact prior draws, one exact draw of w must give exact prior draws again
    # (mean_U ~ N(0, 1), c_m ~ N(0, 0.7^2)); a wrong conditional for w would not.
    gen = torch.Generator().manual_seed(7)
    f64 = torch.float64
    K, N, M, sc = 2, 3, 4, 0.7
    before, after = [], []
    for _ in range(2000):
        mu = torch.randn(K, generator=gen, dtype=f64)
        z = {"mean_U": mu, "U": mu + torch.randn(N, K, generator=gen, dtype=f64),
             "V": torch.randn(M, K, generator=gen, dtype=f64),
             "col_bias": sc * torch.randn(M, generator=gen, dtype=f64)}
        pred = z["U"] @ z["V"].T + z["col_bias"]
        dev = z["U"] - z["mean_U"]
        _translate(z, "U", "mean_U", "V", "col_bias", 1.0, torch.tensor([sc**2], dtype=f64),
                   gen)
        assert torch.allclose(z["U"] @ z["V"].T + z["col_bias"], pred)
        assert torch.allclose(z["U"] - z["mean_U"], dev)
        before.append(mu[0])
        after.append(torch.cat([z["mean_U"], z["col_bias"] / sc]))
    after_t = torch.stack(after)
    assert float(torch.corrcoef(torch.stack([torch.stack(before), after_t[:, 0]]))[0, 1]) < 0.8
    for j in range(after_t.shape[1]):
        assert stats.kstest(after_t[:, j].numpy(), "norm").pvalue > 1e-3


def test_collapsed_bias_scale_draw_leaves_the_joint_of_scale_factors_biases_and_data_invariant():
    # s_c drawn with every item's (v_m, c_m) integrated out, then (v_m, c_m) given it: from
    # exact joint draws of (log s_c, V, c, ratings) one step must give exact joint draws
    # again, so log s_c stays N(m, v), c_m / s_c stays N(0, 1) and v_m its prior. A wrong
    # marginal (the bias's information k_m or its linear term l_m, or a sign), a wrong
    # conditional of v_m given c_m or a proposal that depends on the current point would
    # shift them.
    gen = torch.Generator().manual_seed(11)
    f64 = torch.float64
    m, v, sigma = torch.tensor([-1.0], dtype=f64), torch.tensor([0.5], dtype=f64), 0.5
    K, n_users = 2, 6
    mean_v, prec_v = torch.tensor([1.0, -0.8], dtype=f64), torch.tensor([4.0, 2.0], dtype=f64)
    raters = torch.tensor([6, 3, 1, 0])  # items rated by the first n users (one by none)
    mask = (torch.arange(n_users) < raters[:, None]).to(f64)  # (items, users)
    mean = torch.cat([mean_v, torch.zeros(1, dtype=f64)])
    t_after, u_after, w_after, fit_after, moved, acc = [], [], [], [], [], []
    for _ in range(3000):
        users = torch.randn(n_users, K, generator=gen, dtype=f64) + 0.8  # a shared mean
        feats = torch.cat([users, torch.ones(n_users, 1, dtype=f64)], 1)
        t = m + v.sqrt() * torch.randn(1, generator=gen, dtype=f64)
        c = torch.exp(t) * torch.randn(4, generator=gen, dtype=f64)
        V = mean_v + torch.randn(4, K, generator=gen, dtype=f64) / prec_v.sqrt()
        x = V @ users.T + c[:, None] + sigma * torch.randn(4, n_users, generator=gen,
                                                           dtype=f64)
        gram = torch.einsum("mu,ui,uj->mij", mask, feats, feats)
        rhs = torch.einsum("mu,mu,ui->mi", mask, x, feats)
        prec = torch.cat([prec_v, torch.exp(-2 * t)])
        ((_, _, _, theta),), t_new, accept = gibbs._collapsed_bias_side(
            [(0, gram, rhs)], prec, mean, torch.tensor(sigma**-2, dtype=f64), t, slice(0, 1),
            m, v, gen)
        t_after.append(float(t_new[0]))
        u_after.append(float(theta[0, K] / torch.exp(t_new[0])))  # the most-rated item
        w_after.append(float((theta[0, 0] - mean_v[0]) * prec_v[0].sqrt()))
        # (theta, x) is a joint draw again: the most-rated item's residuals are its noise
        fit_after.append(float(((x[0] - feats @ theta[0]) ** 2).sum()) / sigma**2)
        moved.append(float(t_new[0] - t[0]))
        acc.append(accept)
    assert np.mean(acc) > 0.6 and np.std(moved) > 0.2  # it is accepted and it moves
    assert stats.kstest((np.array(t_after) + 1.0) / math.sqrt(0.5), "norm").pvalue > 1e-3
    assert stats.kstest(np.array(u_after), "norm").pvalue > 1e-3
    assert stats.kstest(np.array(w_after), "norm").pvalue > 1e-3  # v_m | c_m too
    assert stats.kstest(np.array(fit_after), "chi2", args=(n_users,)).pvalue > 1e-3


def test_collapsed_bias_scale_draw_without_ratings_is_the_hyper_prior():
    # no item has a rating: the scale's conditional is its LogNormal hyper-prior alone
    gen = torch.Generator().manual_seed(3)
    f64 = torch.float64
    m, v = torch.tensor([-1.0], dtype=f64), torch.tensor([0.5], dtype=f64)
    prec, mean = torch.tensor([4.0, 2.0, 1.0], dtype=f64), torch.zeros(3, dtype=f64)
    zero = (0, torch.zeros(5, 3, 3, dtype=f64), torch.zeros(5, 3, dtype=f64))
    after = []
    for _ in range(2000):
        t = m + v.sqrt() * torch.randn(1, generator=gen, dtype=f64)
        _, t_new, _ = gibbs._collapsed_bias_side([zero], prec, mean, torch.tensor(4.0, dtype=f64),
                                                 t, slice(0, 1), m, v, gen)
        after.append(float(t_new[0]))
    assert stats.kstest((np.array(after) + 1.0) / math.sqrt(0.5), "norm").pvalue > 1e-3


def _small_problem(seed: int = 0):
    R, truth = data.synthetic_ratings(n_rows=60, n_cols=40, rank=2, density=0.5, noise=0.3,
                                      seed=seed)
    return R, truth


def test_scales_mix_across_chains_with_the_rescaling_move():
    R, _ = _small_problem()
    kw = {"num_samples": 60, "burn_in": 20, "thin": 1, "num_chains": 4, "parallel": False,
          "progress": False, "init_std": 0.5}
    fit = inference.fit_gibbs(models.BayesianMF(60, 40, rank=2), R, **kw)
    rhat = fit.settings["rhat"]
    assert max(rhat["scale_U"], rhat["scale_V"]) <= 1.05, rhat
    assert fit.settings["accept_rate_rescale"] > 0.8
    # without the move the U/V scale ratio crawls along its ridge: the chains disagree
    slow = inference.fit_gibbs(models.BayesianMF(60, 40, rank=2), R, rescale=False, **kw)
    assert slow.settings["rhat"]["scale_U"] > 1.2, slow.settings["rhat"]


@pytest.fixture(scope="module")
def synthetic_fit():
    torch.set_num_threads(1)
    R, truth = data.synthetic_ratings(
        n_rows=150, n_cols=100, rank=3, density=0.5, noise=0.3, seed=0
    )
    train, test = data.random_split(R, test_fraction=0.2, seed=0)
    fit = inference.fit_gibbs(models.BayesianMF(150, 100, rank=3), train, num_samples=150,
                              burn_in=50, thin=1, num_chains=2, parallel=False, seed=0,
                              progress=False)
    return fit, train, test, truth


def test_gibbs_reaches_the_noise_floor_with_calibrated_intervals(synthetic_fit):
    fit, train, test, truth = synthetic_fit
    oracle = diagnostics.rmse(test.values, truth.expected(test.rows, test.cols))
    assert diagnostics.rmse(test.values, fit.predict(test)) < 1.1 * oracle
    assert float(fit.draws["noise"].mean()) == pytest.approx(0.3, rel=0.1)
    lo, hi = fit.predict_interval(test, 0.9)
    assert 0.86 <= diagnostics.coverage(test.values, lo, hi) <= 0.94
    assert fit.settings["accept_rate"] > 0.7
    assert fit.draws["U"].shape == (2, 150, 150, 3)
    assert (fit.num_chains, fit.draws_per_chain, fit.num_draws) == (2, 150, 300)
    # the residual sum of squares from the Gram matrices equals the direct one
    last = {k: v[-1, -1].double() for k, v in fit.draws.items()}
    direct = diagnostics.rmse(train.values.double(),
                              fit.model.mean(last, train.rows, train.cols).double())
    assert fit.history["train_rmse"][-1] == pytest.approx(direct, rel=1e-4)


def test_kept_draws_are_used_in_order_without_repetition(synthetic_fit):
    fit, train, _, _ = synthetic_fit
    C, S = fit.num_chains, fit.draws_per_chain
    mark = {"noise": torch.arange(C * S, dtype=torch.float32).reshape(C, S)}
    marked = inference.SampleFit(fit.model, mark)
    gen = torch.Generator()
    assert torch.equal(marked._draw(C * S, gen)["noise"], mark["noise"].reshape(-1))
    # asking for more than were kept gives each kept draw once (fewer than asked for)
    assert torch.equal(marked._draw(500, gen)["noise"], mark["noise"].reshape(-1))
    # fewer: each chain evenly thinned, in order, no draw twice, chains equally used
    few = marked._draw(11, gen)["noise"]
    assert len(few) == 11 and len(set(few.tolist())) == 11
    assert torch.equal(few, few.sort().values)
    assert ((few < S).sum(), (few >= S).sum()) == (6, 5)
    assert fit.draw_counts(7) == [4, 3] and fit.draw_counts(10**6) == [S, S]
    # predictive draws: each kept draw gets the same number of observation draws
    assert fit.predictive_samples(train, num_samples=500).shape == (600, len(train))
    # predict averages every kept draw exactly once (chunked or not)
    z = {k: v.reshape(-1, *v.shape[2:]) for k, v in fit.draws.items()}
    every = fit.model.mean(z, train.rows, train.cols).mean(0)
    assert torch.allclose(fit.predict(train), every, atol=1e-5)


def test_parallel_chains_equal_sequential_chains():
    R, _ = _small_problem(1)
    kw = {"num_samples": 10, "burn_in": 5, "thin": 1, "num_chains": 2, "seed": 3,
          "progress": False}
    seq = inference.fit_gibbs(models.BayesianMF(60, 40, rank=2, ard=True), R, parallel=False,
                              **kw)
    par = inference.fit_gibbs(models.BayesianMF(60, 40, rank=2, ard=True), R, parallel=True,
                              **kw)
    assert par.settings["parallel"] and not seq.settings["parallel"]
    for k, v in seq.draws.items():
        assert torch.allclose(par.draws[k], v, rtol=1e-5, atol=1e-6), k
    # chains are seeded from (seed, chain): different chains, and chain 0 of a 2-chain run
    # is the 1-chain run
    assert not torch.allclose(seq.draws["U"][0], seq.draws["U"][1])
    one = inference.fit_gibbs(models.BayesianMF(60, 40, rank=2, ard=True), R,
                              **{**kw, "num_chains": 1})
    assert torch.equal(one.draws["U"][0], seq.draws["U"][0])


def test_warmup_is_a_deprecated_spelling_of_burn_in():
    R, _ = _small_problem()
    kw = {"num_samples": 5, "thin": 1, "seed": 1, "progress": False}
    with pytest.warns(DeprecationWarning, match="burn_in"):
        old = inference.fit_gibbs(models.BayesianMF(60, 40, rank=2), R, warmup=7, **kw)
    new = inference.fit_gibbs(models.BayesianMF(60, 40, rank=2), R, burn_in=7, **kw)
    assert old.settings["burn_in"] == 7 and torch.equal(old.draws["U"], new.draws["U"])
    with pytest.raises(TypeError, match="warm_up"):
        inference.fit_gibbs(models.BayesianMF(60, 40, rank=2), R, warm_up=7, **kw)


def test_rhat_separates_agreeing_from_disagreeing_chains():
    gen = torch.Generator().manual_seed(0)
    same = torch.randn(4, 500, generator=gen, dtype=torch.float64).numpy()
    assert _rhat(same) < 1.01
    shifted = same + torch.arange(4, dtype=torch.float64)[:, None].numpy()
    assert _rhat(shifted) > 1.5
    trend = same + torch.linspace(0, 5, 500, dtype=torch.float64).numpy()  # not stationary
    assert _rhat(trend) > 1.3


def test_a_warning_in_words_when_chains_disagree(monkeypatch, caplog):
    R, _ = _small_problem()
    monkeypatch.setattr(gibbs, "RHAT_WARN", 0.5)  # every R-hat is above it
    with caplog.at_level(logging.WARNING, logger="bayesmf.inference.gibbs"):
        fit = inference.fit_gibbs(models.BayesianMF(60, 40, rank=2), R, num_samples=10,
                                  burn_in=2, num_chains=2, parallel=False, progress=False, thin=1)
    assert "chains disagree" in caplog.text and "scale_U" in caplog.text
    assert set(fit.settings["rhat"]) >= {"noise", "scale_U", "scale_V"}
    assert "disagree on the fitted values" in caplog.text  # median cell R-hat > 0.5 too


def test_cell_rhat_is_the_rhat_of_the_fitted_values_at_sampled_cells(synthetic_fit):
    from bayesmf.inference.gibbs import _cell_rhat

    fit, train, _, _ = synthetic_fit
    cells = fit.settings["rhat_cells"]
    assert cells["cells"] == 200 and 0.0 <= cells["share_above"] <= 1.0
    assert 1.0 - 1e-3 < cells["median"] <= cells["max"]
    # recomputed by hand at the same cells (drawn from the seed) it is the same summary
    pick = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:200]
    z = {k: v.reshape(-1, *v.shape[2:]) for k, v in fit.draws.items()}
    f = fit.model.expected(z, train.rows[pick], train.cols[pick])
    f = f.reshape(2, 150, 200).double().numpy()
    r = [_rhat(f[:, :, j]) for j in range(200)]
    assert cells["max"] == pytest.approx(max(r))
    assert cells["median"] == pytest.approx(float(np.median(r)))
    assert cells["share_above"] == pytest.approx(float(np.mean(np.array(r) > 1.01)))
    # chains whose fitted values differ by a constant disagree at every cell
    apart = {k: v.clone() for k, v in fit.draws.items()}
    apart["col_bias"][1] += 1.0
    moved = _cell_rhat(fit.model, apart, train, 0)
    assert moved["share_above"] == 1.0 and moved["median"] > 1.5


def test_gibbs_fit_converts_to_arviz_with_chains(synthetic_fit):
    az = pytest.importorskip("arviz")
    fit, _, test, _ = synthetic_fit
    idata = diagnostics.to_inference_data(fit, test, include=["noise", "scale_U", "U"])
    assert idata.posterior.attrs["inference"] == "Gibbs"
    post = idata.posterior
    assert post["noise"].shape == (2, 150) and post["U"].shape == (2, 150, 150, 3)
    assert torch.allclose(torch.from_numpy(post["noise"].values), fit.draws["noise"])
    assert idata.log_likelihood["obs"].shape == (2, 150, len(test))
    summary = az.summary(idata, var_names=["noise", "scale_U"])
    assert summary["r_hat"].notna().all() and (summary["ess_bulk"] > 20).all()
    assert float(summary["r_hat"].max()) < 1.05


def test_gibbs_refuses_models_it_cannot_sample(synthetic_fit):
    _, train, _, _ = synthetic_fit
    with pytest.raises(TypeError, match="fit_svi"):
        inference.fit_gibbs(models.BayesianNNMF(150, 100, rank=2, bilinear_dims=2), train)
    with pytest.raises(ValueError, match="num_samples"):
        inference.fit_gibbs(models.BayesianMF(150, 100), train, num_samples=0)
    with pytest.raises(ValueError, match="num_chains"):
        inference.fit_gibbs(models.BayesianMF(150, 100), train, num_chains=0)


def test_ard_and_factor_means_run_under_gibbs_svi_and_arviz():
    az = pytest.importorskip("arviz")
    R, truth = data.synthetic_ratings(n_rows=120, n_cols=90, rank=3, density=0.5, noise=0.3,
                                      seed=2)
    train, test = data.random_split(R, test_fraction=0.2, seed=0)

    def model():
        return models.BayesianMF(120, 90, rank=3, ard=True, factor_means=True)

    fit = inference.fit_gibbs(model(), train, num_samples=100, burn_in=50, progress=False, thin=1)
    assert fit.draws["scale_U"].shape == (1, 100, 3) and fit.draws["mean_V"].shape == (1, 100, 3)
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
    assert back.num_chains == 2
    assert torch.equal(back.predict(test), fit.predict(test))
    for k, v in fit.draws.items():
        assert torch.equal(back.draws[k], v), k


def test_rescaling_move_with_implicit_arrays_leaves_the_prior_invariant():
    # With implicit feedback Y_row moves with U and Y_col with V (their own scales and
    # means): from exact prior draws of all four arrays, one move must give exact prior
    # draws again (sizes differ per array, so a wrong Jacobian would shift the log-scales).
    K = 20_000
    sizes = {"U": 6, "Y_row": 3, "V": 2, "Y_col": 5}
    gen = torch.Generator().manual_seed(11)
    f64 = torch.float64
    names = list(sizes)
    t = torch.randn(len(names), K, generator=gen, dtype=f64)
    z = {}
    for i, a in enumerate(names):
        z[f"mean_{a}"] = torch.randn(K, generator=gen, dtype=f64)
        z[a] = z[f"mean_{a}"] + torch.exp(t[i]) * torch.randn(sizes[a], K, generator=gen,
                                                               dtype=f64)
    before = {k: v.clone() for k, v in z.items()}
    sl = {f"scale_{a}": slice(i * K, (i + 1) * K) for i, a in enumerate(names)}
    new_t, accept = _rescale(z, t.reshape(-1), sl, {a: f"scale_{a}" for a in names},
                             {a: f"mean_{a}" for a in names}, dict.fromkeys(names, 1.0),
                             torch.zeros(4 * K, dtype=f64), torch.ones(4 * K, dtype=f64), gen)
    new_t = new_t.reshape(4, K)
    assert float(accept.double().mean()) > 0.8
    assert float((new_t[0] - t[0]).std()) > 0.2  # it moves
    for i, a in enumerate(names):
        for sample in (new_t[i], z[f"mean_{a}"]):
            assert stats.kstest(sample.numpy(), "norm").pvalue > 1e-3, a
    # each side's arrays move together: U by c, Y_row by c, V and Y_col by 1/c
    c = z["U"][0] / before["U"][0]
    assert torch.allclose(z["Y_row"], before["Y_row"] * c)
    assert torch.allclose(z["Y_col"], before["Y_col"] / c)
    assert torch.allclose(z["V"], before["V"] / c)


def test_gibbs_translation_uses_the_implicit_representation():
    # with implicit feedback the items' biases absorb w . q_m with q_m = v_m + A' Y_col:
    # the translation keeps every prediction of the implicit model
    R, _ = _small_problem(2)
    m = models.BayesianMF(60, 40, rank=2, ard=True, factor_means=True, implicit=True)
    m.setup(R)
    gen = torch.Generator().manual_seed(0)
    f64 = torch.float64
    z = {"U": torch.randn(60, 2, generator=gen, dtype=f64),
         "V": torch.randn(40, 2, generator=gen, dtype=f64),
         "Y_row": torch.randn(40, 2, generator=gen, dtype=f64),
         "Y_col": torch.randn(60, 2, generator=gen, dtype=f64),
         "mean_U": torch.zeros(2, dtype=f64), "row_bias": torch.zeros(60, dtype=f64),
         "col_bias": torch.randn(40, generator=gen, dtype=f64)}
    q = z["V"] + m.implicit_sum(z["Y_col"], "col")
    pred = m.mean(z, R.rows, R.cols)
    _translate(z, "U", "mean_U", "V", "col_bias", 1.0, torch.tensor([0.5], dtype=f64), gen, q)
    assert torch.allclose(m.mean(z, R.rows, R.cols), pred)


def test_default_thinning_is_longer_for_factor_means_with_biases():
    # the bias scales of a model with factor means mix more slowly: fit_gibbs keeps every
    # 10th sweep by default there (every 5th otherwise); an explicit thin wins
    R, _ = _small_problem()
    kw = {"num_samples": 2, "burn_in": 0, "progress": False}
    ard = models.BayesianMF(60, 40, rank=2, ard=True, factor_means=True)
    assert inference.fit_gibbs(ard, R, **kw).settings["thin"] == 10
    assert inference.fit_gibbs(models.BayesianMF(60, 40, rank=2), R, **kw).settings["thin"] == 5
    no_bias = models.BayesianMF(60, 40, rank=2, factor_means=True, biases=False)
    assert inference.fit_gibbs(no_bias, R, **kw).settings["thin"] == 5
    assert inference.fit_gibbs(ard, R, thin=3, **kw).settings["thin"] == 3
