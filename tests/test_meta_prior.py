"""Meta-learned neural priors (Iwata, 2021): layers, unrolled MAP, meta-training, posterior."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from bayesmf import data, inference, models
from bayesmf.data import Ratings
from bayesmf.inference.meta_posterior import (
    MetaPosteriorFit,
    block_ratings,
    calibrate_posterior,
    fit_meta_posterior,
)
from bayesmf.inference.meta_train import MetaFit, episode_loss
from bayesmf.models.exchangeable import ExchangeableLayer, masked_mean
from bayesmf.models.meta_prior import FixedPriorMF
from bayesmf.models.unrolled import map_objective

pytestmark = pytest.mark.usefixtures("one_thread")


def _xb(batch: int, N: int, M: int, seed: int = 0, density: float = 0.5,
        dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(batch, N, M, generator=g, dtype=dtype)
    B = (torch.rand(batch, N, M, generator=g) < density).to(dtype)
    return X * B, B


def _small_model(**kw) -> models.MetaPriorMF:
    opts = dict(channels=8, layers=3, rank=4, steps=4, step_size=0.05, hidden=8, mlp_layers=2)
    opts.update(kw)
    return models.MetaPriorMF(**opts).eval()


# ---------------------------------------------------------------- exchangeable layers


def test_masked_mean_ignores_unobserved():
    X, B = _xb(2, 5, 6)
    Z = X.unsqueeze(-1)
    garbage = Z + 100.0 * (1 - B).unsqueeze(-1)
    for dim in (1, 2, (1, 2)):
        torch.testing.assert_close(masked_mean(Z, B, dim), masked_mean(garbage, B, dim))
    # all-unobserved rows give 0, not NaN
    B0 = B.clone()
    B0[:, 0] = 0
    assert torch.all(masked_mean(Z, B0, 2)[:, 0] == 0)


def test_layer_and_encoder_permutation_equivariant():
    X, B = _xb(3, 7, 5, seed=1)
    pr, pc = torch.randperm(7), torch.randperm(5)
    layer = ExchangeableLayer(2, 6)
    Z = torch.stack([X, B], -1)
    out = layer(Z, B)
    torch.testing.assert_close(layer(Z[:, pr][:, :, pc], B[:, pr][:, :, pc]),
                               out[:, pr][:, :, pc])
    enc = models.ExchangeableEncoder(channels=8, layers=3).eval()
    torch.testing.assert_close(enc(X[:, pr][:, :, pc], B[:, pr][:, :, pc]),
                               enc(X, B)[:, pr][:, :, pc])


def test_prior_means_equivariant_and_ignore_unobserved():
    m = _small_model()
    X, B = _xb(2, 6, 9, seed=2)
    U0, V0 = m.prior_means(X, B)
    assert U0.shape == (2, 6, 4) and V0.shape == (2, 9, 4)
    pr, pc = torch.randperm(6), torch.randperm(9)
    U0p, V0p = m.prior_means(X[:, pr][:, :, pc], B[:, pr][:, :, pc])
    torch.testing.assert_close(U0p, U0[:, pr])
    torch.testing.assert_close(V0p, V0[:, pc])
    # values at unobserved entries are never read
    U0g, V0g = m.prior_means(X + 50.0 * (1 - B), B)
    torch.testing.assert_close(U0g, U0)
    torch.testing.assert_close(V0g, V0)
    # unbatched input works and agrees
    u, v = m.prior_means(X[0], B[0])
    torch.testing.assert_close(u, U0[0])
    torch.testing.assert_close(v, V0[0])


def test_variable_sizes_in_one_batch_match_one_at_a_time():
    m = _small_model()
    eml = models.ExchangeableMatrixNet(channels=8).eval()
    a = _xb(1, 5, 7, seed=3)
    b = _xb(1, 8, 4, seed=4)
    Xp = torch.zeros(2, 8, 7)
    Bp = torch.zeros(2, 8, 7)
    Xp[0, :5, :7], Bp[0, :5, :7] = a[0][0], a[1][0]
    Xp[1, :8, :4], Bp[1, :8, :4] = b[0][0], b[1][0]
    Up, Vp = m.adapt(Xp, Bp)
    Pe = eml.predict(Xp, Bp)
    for i, ((X, B), (n, mm)) in enumerate(zip((a, b), ((5, 7), (8, 4)), strict=True)):
        U, V = m.adapt(X, B)
        torch.testing.assert_close(Up[i, :n], U[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(Vp[i, :mm], V[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(Pe[i, :n, :mm], eml.predict(X, B)[0], atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------- unrolled MAP


def test_unrolled_map_matches_hand_loop():
    X, B = _xb(3, 6, 5, seed=5, dtype=torch.float64)
    g = torch.Generator().manual_seed(6)
    U0 = torch.randn(3, 6, 2, generator=g, dtype=torch.float64)
    V0 = torch.randn(3, 5, 2, generator=g, dtype=torch.float64)
    lam, eta, T = 0.7, 0.03, 7
    U, V = inference.unrolled_map(X, B, U0, V0, lam, eta, T)
    for b in range(3):  # Eqs. (6)-(7) written out per matrix, per row and per column
        u, v = U0[b].clone(), V0[b].clone()
        for _ in range(T):
            new_u, new_v = u.clone(), v.clone()
            for n in range(6):
                gu = sum(-B[b, n, m] * (X[b, n, m] - u[n] @ v[m]) * v[m] for m in range(5))
                new_u[n] = u[n] - eta * (gu + lam * (u[n] - U0[b, n]))
            for m in range(5):
                gv = sum(-B[b, n, m] * (X[b, n, m] - u[n] @ v[m]) * u[n] for n in range(6))
                new_v[m] = v[m] - eta * (gv + lam * (v[m] - V0[b, m]))
            u, v = new_u, new_v
        torch.testing.assert_close(U[b], u)
        torch.testing.assert_close(V[b], v)
    U1, V1 = inference.unrolled_map(X[0], B[0], U0[0], V0[0], lam, eta, T)
    torch.testing.assert_close(U1, U[0])
    Up, _ = inference.unrolled_map(X, B, U0, V0, lam, eta, T, return_path=True)
    assert len(Up) == T + 1 and torch.equal(Up[0], U0) and torch.equal(Up[-1], U)


def test_unrolled_map_gradient_matches_finite_differences():
    X, B = _xb(2, 4, 3, seed=7, dtype=torch.float64)
    g = torch.Generator().manual_seed(8)
    U0 = torch.randn(2, 4, 2, generator=g, dtype=torch.float64, requires_grad=True)
    V0 = torch.randn(2, 3, 2, generator=g, dtype=torch.float64)
    lam = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    Xt = torch.randn(2, 4, 3, generator=g, dtype=torch.float64)

    def loss(U0: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        U, V = inference.unrolled_map(X, B, U0, V0, lam, 0.1, 10)
        return ((U @ V.mT - Xt) ** 2).sum()

    assert torch.autograd.gradcheck(loss, (U0, lam))


def test_unrolled_map_approaches_als_with_many_steps():
    g = torch.Generator().manual_seed(9)
    N, M, K = 12, 10, 2
    truth = torch.randn(N, K, generator=g, dtype=torch.float64) @ torch.randn(
        K, M, generator=g, dtype=torch.float64)
    B = (torch.rand(N, M, generator=g) < 0.8).double()
    X = (truth + 0.05 * torch.randn(N, M, generator=g, dtype=torch.float64)) * B
    U0 = 0.5 * torch.randn(N, K, generator=g, dtype=torch.float64)
    V0 = 0.5 * torch.randn(M, K, generator=g, dtype=torch.float64)
    # small lambda: nearly the unregularised MAP; ALS started (init_scale=0) at the prior means
    # like the gradient steps, so both reach the same (non-convex) optimum
    lam = 1e-2
    U, V = inference.unrolled_map(X, B, U0, V0, lam, 0.05, 6000)
    r, c = B.nonzero(as_tuple=True)
    R = Ratings(r, c, X[r, c], shape=(N, M))
    f = inference.als(R, rank=K, reg_u=lam, reg_v=lam, biases=False, epochs=2000, tol=1e-14,
                      prior_mean_u=U0, prior_mean_v=V0, init_scale=0.0, dtype=torch.float64)
    P_gd, P_als = U @ V.T, f.U @ f.V.T
    torch.testing.assert_close(P_gd[B > 0], P_als[B > 0], atol=2e-2, rtol=0)
    j_gd = float(map_objective(X, B, U, V, U0, V0, lam))
    j_als = float(map_objective(X, B, f.U, f.V, U0, V0, lam))
    j_start = float(map_objective(X, B, U0, V0, U0, V0, lam))
    assert abs(j_gd - j_als) < 0.01 * j_als and j_als < 0.01 * j_start


# ------------------------------------------------------------------------ meta-training


def _clustered(n_rows: int, n_cols: int, seed: int, density: float = 0.5) -> Ratings:
    """Tasks sharing low-rank structure: rows and columns from three shared prototypes."""
    g = torch.Generator().manual_seed(seed)
    cu = 1.2 * torch.randn(3, 2, generator=torch.Generator().manual_seed(123))
    cv = 1.2 * torch.randn(3, 2, generator=torch.Generator().manual_seed(456))
    U = cu[torch.randint(0, 3, (n_rows,), generator=g)] + 0.1 * torch.randn(n_rows, 2, generator=g)
    V = cv[torch.randint(0, 3, (n_cols,), generator=g)] + 0.1 * torch.randn(n_cols, 2, generator=g)
    X = U @ V.T + 0.1 * torch.randn(n_rows, n_cols, generator=g)
    r, c = (torch.rand(n_rows, n_cols, generator=g) < density).nonzero(as_tuple=True)
    return Ratings(r, c, X[r, c], shape=(n_rows, n_cols))


def _mf_mse(episodes: list) -> float:
    sse, n = 0.0, 0
    for ep in episodes:
        for b in range(len(ep)):  # per-matrix MAP baseline
            r, c = ep.train_mask[b].nonzero(as_tuple=True)
            R = Ratings(r, c, ep.X[b][r, c], shape=tuple(ep.train_mask[b].shape))
            f = inference.als(R, rank=2, reg_u=1.0, reg_v=1.0, epochs=50)
            P = f.U @ f.V.T + f.mean + f.row_bias[:, None] + f.col_bias[None]
            t = ep.test_mask[b]
            sse += float(((P - ep.X[b])[t] ** 2).sum())
            n += int(t.sum())
    return sse / n


def test_meta_training_beats_per_matrix_mf_on_heldout_tasks(tmp_path):
    torch.manual_seed(0)
    train = data.EpisodeSampler(_clustered(200, 200, 0), 12, 12, 0.5, batch_size=8, seed=0)
    val = data.EpisodeSampler(_clustered(60, 60, 2), 12, 12, 0.5, batch_size=8)
    test = data.EpisodeSampler(_clustered(100, 100, 1), 12, 12, 0.5, batch_size=8).fixed(16)
    m = models.MetaPriorMF(channels=16, layers=3, rank=4, steps=5, step_size=0.05, hidden=16,
                           mlp_layers=2, dropout=0.0)
    res = inference.meta_train(m, train, val, steps=300, lr=3e-3, eval_every=100,
                               val_episodes=16, checkpoint=tmp_path / "ck.pt", progress=False)
    assert isinstance(res, MetaFit) and isinstance(res, inference.Fit)
    assert res.finished and res.steps == 300 and len(res.evaluations) == 3
    assert res.history["step"] == [100.0, 200.0, 300.0]
    assert res.best_val == min(h["val_mse"] for h in res.evaluations)
    assert res.best_step == res.evaluations[res.history["val"].index(res.best_val)]["step"]
    ours, mf = inference.evaluate_episodes(m, test), _mf_mse(test)
    assert ours < 0.5 * mf, (ours, mf)
    # the fit predicts the query entries of new episodes, the model's prediction there
    ep = test[0]
    pred = res.predict(ep)
    assert pred.shape == (int(ep.test_mask.sum()),)
    torch.testing.assert_close(pred, m.eval().predict(ep.X_train, ep.train_mask)[ep.test_mask])
    # save -> inference.load gives identical predictions, and the history and settings
    back = inference.load(res.save(tmp_path / "fit.pt"))
    assert isinstance(back, MetaFit) and isinstance(back.model, models.MetaPriorMF)
    assert torch.equal(back.predict(ep), pred)
    assert back.evaluations == res.evaluations and back.best_step == res.best_step
    assert back.settings["lr"] == 3e-3 and back.train_fingerprint == res.train_fingerprint
    # a bare model saves as a MetaFit, and load_meta_model reads its MetaPriorMF back
    path = MetaFit(m, finished=True).save(tmp_path / "m.pt")
    assert isinstance(inference.load(path), MetaFit)
    m2 = inference.load_meta_model(path).eval()
    torch.testing.assert_close(m2.predict(ep.X_train, ep.train_mask), m.eval().predict(
        ep.X_train, ep.train_mask))


def _resume_run(R, ck, **kw):
    torch.manual_seed(0)
    m = _small_model(dropout=0.0)
    s = data.EpisodeSampler(R, 8, 8, 0.5, batch_size=4, seed=kw.pop("sampler_seed", 0))
    opts = dict(steps=12, lr=1e-3, eval_every=4, val_episodes=4, checkpoint=ck)
    opts.update(kw)
    return m, inference.meta_train(m, s, s, **opts)


def test_meta_train_resumes_from_checkpoint(tmp_path):
    R = _clustered(60, 60, 3)
    ck = tmp_path / "ck.pt"
    m, r = _resume_run(R, ck, max_seconds=0.0)  # stops after the first round of 4 steps
    assert not r.finished and r.steps == 4
    m, r = _resume_run(R, ck, stop_after=1)  # resumes, one more round, stops
    assert not r.finished and r.steps == 8
    m, r = _resume_run(R, ck)  # resumes to the end
    assert r.finished and r.steps == 12 and [h["step"] for h in r.evaluations] == [4, 8, 12]
    ck.unlink()
    m_ref, r_ref = _resume_run(R, ck)  # same stream without the interruptions
    assert r_ref.steps == 12
    assert r.history["val"] == r_ref.history["val"]  # exact resume (sampler and optimiser)
    for a, b in zip(m.state_dict().values(), m_ref.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def test_meta_train_refuses_to_resume_other_settings_or_episodes(tmp_path):
    R = _clustered(60, 60, 3)
    ck = tmp_path / "ck.pt"
    _, r = _resume_run(R, ck)
    assert r.finished and r.steps == 12
    # a finished 12-step checkpoint with another step budget or lr: refused, naming it
    with pytest.raises(inference.ResumeMismatch, match=r"steps: 12 \(file\) vs 200 \(now\)"):
        _resume_run(R, ck, steps=200)
    with pytest.raises(inference.ResumeMismatch, match=r"lr: 0.001 \(file\) vs 0.01"):
        _resume_run(R, ck, lr=1e-2)
    # other episodes: another task, or the sampler's seed
    with pytest.raises(inference.ResumeMismatch, match="training data differ.*content hash"):
        _resume_run(_clustered(60, 60, 4), ck)
    with pytest.raises(inference.ResumeMismatch, match="training data differ.*seed 0 vs 5"):
        _resume_run(R, ck, sampler_seed=5)
    # resume=False starts afresh and overwrites the checkpoint
    _, r2 = _resume_run(R, ck, steps=8, resume=False)
    assert r2.finished and r2.steps == 8


def test_meta_train_nan_loss_raises_naming_the_step():
    R = _clustered(40, 40, 3)
    s = data.EpisodeSampler(R, 8, 8, 0.5, batch_size=2, seed=0)
    calls = [0]

    def nan_at_third(model, ep):
        calls[0] += 1
        loss = episode_loss(model, ep)
        return loss * float("nan") if calls[0] == 3 else loss

    # before: returned finished=True with the untrained initial weights
    with pytest.raises(FloatingPointError, match=r"epoch 0, step 2.*meta-training step 3 of 10"):
        inference.meta_train(_small_model(dropout=0.0), s, s, steps=10, eval_every=5,
                             val_episodes=2, loss_fn=nan_at_third)


def test_meta_train_old_spelling_grad_clip_warns():
    R = _clustered(40, 40, 3)
    s = data.EpisodeSampler(R, 8, 8, 0.5, batch_size=2, seed=0)
    with pytest.warns(DeprecationWarning, match="grad_clip"):
        res = inference.meta_train(_small_model(), s, None, steps=2, eval_every=2,
                                   grad_clip=1.0)
    assert res.settings["clip_norm"] == 1.0 and math.isnan(res.best_val) and res.steps == 2
    with pytest.raises(TypeError, match="unexpected keyword"):
        inference.meta_train(_small_model(), s, None, steps=2, bogus=1)


def test_episode_sampler_fingerprint():
    R = _clustered(40, 40, 3)
    a = data.EpisodeSampler(R, 8, 8, 0.5, batch_size=2, seed=0)
    fp = inference.files.fingerprint(a)
    assert fp["kind"] == "EpisodeSampler" and fp["seed"] == 0 and fp["shapes"] == [[40, 40]]
    a.sample()  # drawing does not change what identifies the sampler
    assert inference.files.fingerprint(a) == fp
    assert inference.files.fingerprint(data.EpisodeSampler(R, 8, 8, 0.5, batch_size=2)) == fp
    for other in (data.EpisodeSampler(R, 8, 9, 0.5, batch_size=2),
                  data.EpisodeSampler(R, 8, 8, 0.5, batch_size=2, seed=1),
                  data.EpisodeSampler(_clustered(40, 40, 4), 8, 8, 0.5, batch_size=2)):
        assert inference.files.fingerprint(other) != fp


# --------------------------------------------------------------------------- posterior


def test_fixed_prior_mf_is_a_gaussian_factor_model_with_the_given_prior_means():
    g = torch.Generator().manual_seed(0)
    U0, V0 = torch.randn(6, 2, generator=g), torch.randn(5, 2, generator=g)
    m = FixedPriorMF(6, 5, 2, U0, V0, prior_scale=1e-3, noise=1.0)
    assert isinstance(m, models.GaussianFactorModel)
    X = torch.randn(1, 6, 5, generator=g)
    R = block_ratings(X, torch.ones(1, 6, 5, dtype=torch.bool))
    fit = inference.fit_svi(m, R, epochs=100, batch_size=None, lr=0.05, seed=0)
    # a tight prior: the posterior mean is the prior means' product, whatever the data
    pred = fit.predict(R, num_samples=200)
    torch.testing.assert_close(pred, (U0 @ V0.T).reshape(-1), atol=0.02, rtol=0)


def test_posterior_intervals_cover_and_center(tmp_path):
    torch.manual_seed(0)
    m = _small_model(rank=2)
    X, B = _xb(2, 8, 7, seed=10, density=0.6)
    fit = fit_meta_posterior(m, X, B, steps=100, seed=0)
    # fitted by the library's SVI engine: a VariationalFit of a GaussianFactorModel
    assert isinstance(fit, MetaPosteriorFit) and isinstance(fit, inference.VariationalFit)
    assert isinstance(fit.model, models.GaussianFactorModel)
    assert fit.settings["engine"].startswith("svi") and fit.settings["epochs"] == 100
    assert fit.settings["batch_size"] == int(B.sum())
    post = fit.summary(0.9, num_samples=300, seed=0)
    assert post.mean.shape == (2, 8, 7) and post.U_loc.shape == (2, 8, 2)
    assert torch.all(post.lower < post.mean) and torch.all(post.mean < post.upper)
    assert torch.all(post.std >= 1.0)  # predictive sd includes the unit noise
    assert post.elbo[-1] > post.elbo[0]  # the ELBO rose
    # the 90% interval of N(., >=1) is at least 2 * 1.645 wide
    assert float((post.upper - post.lower).min()) > 3.0
    # the posterior is deterministic given the seed
    post2 = fit_meta_posterior(m, X, B, steps=100, seed=0).summary(0.9, 300, seed=0)
    torch.testing.assert_close(post.mean, post2.mean)
    # the one interface: predict / predict_interval at the query entries of an Episode
    hidden = (torch.rand(2, 8, 7, generator=torch.Generator().manual_seed(1)) < 0.3)
    hidden &= B == 0
    ep = data.Episode(X + hidden * 0.5, B > 0, hidden, torch.zeros(2, 8, dtype=torch.long),
                      torch.zeros(2, 7, dtype=torch.long), torch.zeros(2, dtype=torch.long))
    pred = fit.predict(ep, num_samples=4000)
    torch.testing.assert_close(pred, post.mean[hidden], atol=0.15, rtol=0)
    draws = post.draws(4000, seed=1)  # the exact predictive sd agrees with draws
    torch.testing.assert_close(post.std, draws.std(0), rtol=0.1, atol=0)
    lo, hi = fit.predict_interval(ep, 0.9, num_samples=2000)
    torch.testing.assert_close(lo, post.lower[hidden], atol=0.3, rtol=0)
    assert torch.all(hi - lo > 3.0)
    # save -> inference.load gives identical predictions
    back = inference.load(fit.save(tmp_path / "post.pt"))
    assert isinstance(back, MetaPosteriorFit) and back.batch_shape == (2, 8, 7)
    assert torch.equal(back.predict(ep, seed=3), fit.predict(ep, seed=3))
    assert torch.equal(back.summary(0.5, 50).lower, fit.summary(0.5, 50).lower)
    # the network was not changed and the global random stream not consumed
    state = torch.get_rng_state()
    fit_meta_posterior(m, X, B, steps=5, seed=0)
    assert torch.equal(torch.get_rng_state(), state)


def test_calibrated_posterior_covers_on_heldout_synthetic_tasks(tmp_path):
    """Precision and noise chosen on validation tasks give ~90% coverage on other tasks."""
    val = data.EpisodeSampler(_clustered(60, 60, 2), 12, 12, 0.5, batch_size=16).fixed(16)
    test = data.EpisodeSampler(_clustered(100, 100, 1), 12, 12, 0.5, batch_size=16).fixed(
        16, seed=1)[0]
    m = _small_model(rank=2)
    assert not m.calibrated
    out = calibrate_posterior(m, val, precisions=(0.3, 1.0, 3.0), noises=(0.5,),
                              steps=40, num_samples=100)
    assert m.calibrated and len(out["grid"]) >= 4
    assert float(m.post_precision) == pytest.approx(out["precision"])
    assert float(m.post_noise) == pytest.approx(out["noise"])
    fit = fit_meta_posterior(m, test.X_train, test.train_mask, steps=60)
    assert fit.noise == pytest.approx(out["noise"])  # the calibrated values are the defaults
    assert fit.settings["precision"] == pytest.approx(out["precision"])
    cov = fit.summary(0.9, num_samples=200).coverage(test.X, test.test_mask)
    assert 0.8 <= cov <= 0.97, cov
    # the calibration is saved with the model; models saved without it still load
    m2 = inference.load_meta_model(MetaFit(m, finished=True).save(tmp_path / "m.pt"))
    assert m2.calibrated and float(m2.post_noise) == pytest.approx(out["noise"])
    state = {k: v for k, v in m.state_dict().items() if k not in ("post_precision", "post_noise")}
    torch.save({"config": m.config(), "state_dict": state}, tmp_path / "old.pt")
    assert not inference.load_meta_model(tmp_path / "old.pt").calibrated
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the old spelling num_steps= warns
        with pytest.raises(DeprecationWarning, match="num_steps"):
            fit_meta_posterior(m, test.X_train, test.train_mask, num_steps=2)


def test_meta_prior_load_names_the_file_of_a_foreign_or_other_fit(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(inference.FitFileError, match="foreign.pt"):
        inference.load_meta_model(tmp_path / "foreign.pt")
    eml = MetaFit(models.ExchangeableMatrixNet(channels=4), finished=True)
    with pytest.raises(inference.FitFileError, match="ExchangeableMatrixNet, not a MetaPriorMF"):
        inference.load_meta_model(eml.save(tmp_path / "eml.pt"))
    with pytest.raises(inference.FitFileError, match="missing.pt"):
        inference.load_meta_model(tmp_path / "missing.pt")
