"""Implicit feedback in BayesianMF: the model, its exact Gibbs block, SVI, NUTS, saving."""

from __future__ import annotations

import pyro
import pytest
import torch
from _ratings import distinct_ratings

from bayesmf import data, inference, models
from bayesmf.data import Ratings
from bayesmf.inference import gibbs
from bayesmf.inference.guides import MeanFieldGuide
from bayesmf.inference.objectives import local_elbo_terms

f64 = torch.float64


def _ratings(n_rows: int, n_cols: int, n: int, seed: int) -> Ratings:
    """``n`` distinct random entries, every row and column with at least one."""
    return distinct_ratings(n_rows, n_cols, n, seed)


def _dense_incidence(R: Ratings) -> tuple[torch.Tensor, torch.Tensor]:
    """The normalised user x item and item x user incidences, dense."""
    N, M = R.shape
    A = torch.zeros(N, M, dtype=f64)
    A[R.rows, R.cols] = 1.0
    B = A.T.clone()
    return (A / A.sum(1, keepdim=True).clamp_min(1).sqrt(),
            B / B.sum(1, keepdim=True).clamp_min(1).sqrt())


def _prior_draw(model: models.BayesianMF, R: Ratings, seed: int = 0) -> dict[str, torch.Tensor]:
    pyro.set_rng_seed(seed)
    tr = pyro.poutine.trace(model.model).get_trace(R)
    return {k: v["value"] for k, v in tr.nodes.items()
            if v["type"] == "sample" and k not in ("obs", "ratings")}


def test_implicit_specs_have_their_own_priors_and_global_dims():
    m = models.BayesianMF(7, 5, rank=3, ard=True, factor_means=True, implicit=True)
    specs = {s.name: s for s in m.latent_specs()}
    assert specs["Y_row"].shape == (5, 3) and specs["Y_col"].shape == (7, 3)
    assert specs["Y_row"].prior_scale == "scale_Y_row" and specs["scale_Y_row"].shape == (3,)
    assert specs["Y_col"].prior_mean == "mean_Y_col"
    # not a "user"/"item" first dim: the O(batch) objective draws them in full
    assert specs["Y_row"].dims[0] not in ("user", "item")
    assert m.config()["implicit"] is True
    plain = {s.name for s in models.BayesianMF(7, 5, rank=3).latent_specs()}
    assert not any("Y_" in name for name in plain)


def test_mean_is_the_svdpp_formula_with_sample_dims():
    R = _ratings(9, 6, 25, seed=0)
    m = models.BayesianMF(9, 6, rank=2, implicit=True, factor_means=True)
    m.setup(R)
    z = _prior_draw(m, R)
    A, B = _dense_incidence(R)
    P = z["U"].double() + A @ z["Y_row"].double()
    Q = z["V"].double() + B @ z["Y_col"].double()
    rows = torch.tensor([3, 0, 3, 8, 1])
    cols = torch.tensor([5, 5, 0, 2, 1])  # includes cells never rated
    ref = ((P[rows] * Q[cols]).sum(-1) + z["row_bias"][rows] + z["col_bias"][cols]
           + m.global_mean)
    assert torch.allclose(m.mean(z, rows, cols).double(), ref, atol=1e-5)
    # leading sample dims: each draw's own mean
    zs = {k: torch.stack([v, -v, 2 * v]) for k, v in z.items()}
    out = m.mean(zs, rows, cols)
    assert out.shape == (3, 5)
    assert torch.allclose(out[0], m.mean(z, rows, cols), atol=1e-5)
    assert torch.allclose(out[2], m.mean({k: 2 * v for k, v in z.items()}, rows, cols),
                          atol=1e-4)
    # the O(batch) path: local arrays gathered, the incidence looked up by original index
    uniq, inv = torch.unique(rows, return_inverse=True)
    local = {**z, "U": z["U"][uniq], "row_bias": z["row_bias"][uniq]}
    assert torch.allclose(m.mean(local, inv, cols, feature_rows=rows, feature_cols=cols),
                          m.mean(z, rows, cols), atol=1e-6)


def test_the_training_incidence_is_fixed_at_setup():
    R = _ratings(8, 6, 20, seed=1)
    m = models.BayesianMF(8, 6, rank=2, implicit=True)
    with pytest.raises(RuntimeError, match="setup"):
        m.mean(_prior_draw(models.BayesianMF(8, 6, rank=2), R) | {
            "Y_row": torch.zeros(6, 2), "Y_col": torch.zeros(8, 2)},
            R.rows, R.cols)
    m.setup(R)
    z = _prior_draw(m, R, seed=3)
    before = m.mean(z, R.rows, R.cols)
    # predicting other cells does not change who rated what
    test = Ratings(torch.tensor([0, 7]), torch.tensor([5, 0]), torch.tensor([3.0, 4.0]),
                   shape=(8, 6))
    m.mean(z, test.rows, test.cols)
    assert torch.equal(m.mean(z, R.rows, R.cols), before)
    # the incidence comes from the data given to setup: fewer training ratings, other sums
    sub = Ratings(R.rows[:-3], R.cols[:-3], R.values[:-3], shape=R.shape)
    m.setup(sub)
    assert not torch.allclose(m.mean(z, R.rows, R.cols), before)


@pytest.mark.parametrize("shape", [(5, 7), (7, 4)], ids=["thin-basis", "full-basis"])
@pytest.mark.parametrize("ard", [True, False])
def test_implicit_block_draws_the_exact_conditional(shape, ard):
    """Y | P against a dense computation: precision alpha I + beta A^T A per factor, linear
    term alpha m_Y + beta A^T (P - m_U); the factors are independent."""
    N, M = shape
    K = 2
    R = _ratings(N, M, (N * M) // 2, seed=2)
    m = models.BayesianMF(N, M, rank=K, implicit=True)
    m.setup(R)
    imp = gibbs._implicit(m, "row", torch.device("cpu"))
    gen = torch.Generator().manual_seed(0)
    P = torch.randn(N, K, generator=gen, dtype=f64)
    m_u = torch.tensor([0.3, -0.2], dtype=f64)
    m_y = torch.tensor([-0.1, 0.4], dtype=f64)
    rep_prec = torch.tensor([2.0, 5.0] if ard else [3.0], dtype=f64)
    prior_prec = torch.tensor([4.0, 0.7] if ard else [1.5], dtype=f64)
    S = 20_000
    # S draws at once: the columns are independent, so tile them (S copies of the K factors)
    draws = gibbs._sample_implicit(
        imp, P.repeat(1, S), m_u.repeat(S), rep_prec.expand(K).repeat(S), m_y.repeat(S),
        prior_prec.expand(K).repeat(S), gen).reshape(M, S, K).transpose(0, 1)  # (S, M, K)
    A, _ = _dense_incidence(R)
    for k in range(K):
        a = prior_prec[k if ard else 0]
        b = rep_prec[k if ard else 0]
        prec = a * torch.eye(M, dtype=f64) + b * A.T @ A
        cov = torch.linalg.inv(prec)
        mean = cov @ (a * m_y[k] + b * A.T @ (P[:, k] - m_u[k]))
        x = draws[:, :, k]
        se = cov.diagonal().sqrt() / S**0.5
        assert ((x.mean(0) - mean).abs() < 4.5 * se).all()
        assert torch.allclose(torch.cov(x.T), cov, atol=0.04 * float(cov.diagonal().max()))
    cross = (draws[:, :, 0] - draws[:, :, 0].mean(0)).T @ (
        draws[:, :, 1] - draws[:, :, 1].mean(0)) / S
    assert cross.abs().max() < 0.05 * float(draws.var(0).max())


def _synthetic(seed: int = 0) -> tuple[Ratings, Ratings]:
    R, _ = data.synthetic_ratings(n_rows=50, n_cols=36, rank=2, density=0.5, noise=0.3,
                                  seed=seed)
    return data.random_split(R, test_fraction=0.2, seed=seed)


def test_gibbs_samples_the_implicit_model():
    train, test = _synthetic()
    m = models.BayesianMF(50, 36, rank=2, ard=True, factor_means=True, implicit=True)
    fit = inference.fit_gibbs(m, train, num_samples=40, burn_in=40, progress=False, thin=1)
    for name, shape in (("Y_row", (36, 2)), ("Y_col", (50, 2)), ("scale_Y_row", (2,)),
                        ("mean_Y_col", (2,))):
        assert fit.draws[name].shape == (1, 40, *shape)
    assert 0.22 < float(fit.draws["noise"].mean()) < 0.4
    assert fit.settings["accept_rate"] > 0.7 and fit.settings["accept_rate_rescale"] > 0.7
    pred = fit.predict(test)
    assert float(((pred - test.values) ** 2).mean().sqrt()) < 0.45
    # the implicit arrays move (they are sampled, not stuck at their start)
    assert float(fit.draws["Y_row"][0].std(0).mean()) > 1e-3


def test_rescaling_with_implicit_arrays_keeps_predictions():
    """The rescaling move scales each side's whole representation: U and Y_row by c, V and
    Y_col by 1/c, so every prediction is unchanged."""
    R = _ratings(6, 5, 15, seed=4)
    m = models.BayesianMF(6, 5, rank=2, ard=True, factor_means=True, implicit=True)
    m.setup(R)
    z = {k: v.double() for k, v in _prior_draw(m, R, seed=1).items()}
    arrays = ["U", "V", "Y_row", "Y_col"]
    scale_of = {a: f"scale_{a}" for a in arrays}
    mean_of = {a: f"mean_{a}" for a in arrays}
    sl = {f"scale_{a}": slice(2 * i, 2 * i + 2) for i, a in enumerate(arrays)}
    t = torch.cat([z[f"scale_{a}"].log() for a in arrays])
    pred = m.mean(z, R.rows, R.cols)
    std = {a: (z[a] - z[mean_of[a]]) / z[scale_of[a]] for a in arrays}
    gen = torch.Generator().manual_seed(0)
    moved = dict(z)
    t2, _ = gibbs._rescale(moved, t, sl, scale_of, mean_of, dict.fromkeys(arrays, 1.0),
                           torch.zeros(8, dtype=f64), torch.ones(8, dtype=f64), gen)
    assert torch.allclose(m.mean(moved, R.rows, R.cols), pred, atol=1e-6)
    assert not torch.allclose(moved["U"], z["U"])  # it moved
    for i, a in enumerate(arrays):
        s = t2[2 * i : 2 * i + 2].exp()
        assert torch.allclose((moved[a] - moved[mean_of[a]]) / s, std[a], atol=1e-6)


def test_parallel_chains_set_up_the_incidence_and_match_sequential():
    train, _ = _synthetic(1)
    kw = {"num_samples": 5, "burn_in": 3, "thin": 1, "num_chains": 2, "progress": False,
          "seed": 4}
    m = models.BayesianMF(50, 36, rank=2, implicit=True)
    seq = inference.fit_gibbs(m, train, parallel=False, **kw)
    par = inference.fit_gibbs(models.BayesianMF(50, 36, rank=2, implicit=True), train,
                              parallel=True, **kw)
    for k in seq.draws:
        assert torch.allclose(seq.draws[k], par.draws[k], atol=1e-6), k


def test_gibbs_fit_round_trip_keeps_the_incidence(tmp_path):
    train, test = _synthetic(2)
    m = models.BayesianMF(50, 36, rank=2, implicit=True)
    fit = inference.fit_gibbs(m, train, num_samples=4, burn_in=3, progress=False, thin=1)
    path = tmp_path / "imp.pt"
    fit.save(path)
    back = inference.load(path)
    assert back.model.implicit
    assert torch.allclose(back.predict(test), fit.predict(test))


def test_local_elbo_is_unbiased_with_implicit_arrays():
    """The implicit arrays are global sites (drawn whole); the minibatch estimates average to
    the full-batch value over a partition, and the likelihood part equals the full-array
    model's on the batch."""
    R = _ratings(14, 10, 64, seed=6)
    model = models.BayesianMF(14, 10, rank=2, ard=True, factor_means=True, implicit=True)
    model.setup(R)
    torch.manual_seed(0)
    guide = MeanFieldGuide(model)
    gen = torch.Generator().manual_seed(0)
    eps = {s.name: torch.randn((2, *s.shape), generator=gen) for s in guide.specs}
    full = local_elbo_terms(model, guide, R, None, 2, eps)
    perm = torch.randperm(len(R), generator=torch.Generator().manual_seed(1))
    parts = [local_elbo_terms(model, guide, R, idx, 2, eps) for idx in perm.chunk(8)]
    for field in ("loglik", "kl_global", "kl_local"):
        values = torch.stack([getattr(t, field) for t in parts])
        assert torch.allclose(values.mean(), getattr(full, field), rtol=1e-4), field
    # the likelihood of one batch against the full arrays' mean function
    idx = perm[:9]
    z = {}
    for s in guide.specs:
        loc, scale = guide.loc_scale(s.name)
        x = loc + scale * eps[s.name]
        z[s.name] = x.exp() if s.positive else x
    ll = model.log_likelihood(z, R.rows[idx], R.cols[idx], R.values[idx])
    terms = local_elbo_terms(model, guide, R, idx, 2, eps)
    assert torch.allclose(terms.loglik, ll.sum(-1).mean(0) * len(R) / len(idx), rtol=1e-5)


def test_svi_fits_the_implicit_model():
    train, test = _synthetic(3)
    m = models.BayesianMF(50, 36, rank=2, implicit=True)
    torch.set_num_threads(1)
    fit = inference.fit_svi(m, train, epochs=120, batch_size=None, lr=0.05, final_lr=0.005,
                            seed=0, progress=False)
    pred = fit.predict(test)
    base = float(((train.values.mean() - test.values) ** 2).mean().sqrt())
    assert float(((pred - test.values) ** 2).mean().sqrt()) < 0.6 * base
    assert fit.elbo_history[-1] > fit.elbo_history[0]


def test_nuts_runs_on_the_implicit_model():
    from pyro.infer import MCMC, NUTS

    R = _ratings(6, 5, 16, seed=8)
    m = models.BayesianMF(6, 5, rank=1, biases=False, implicit=True)
    m.setup(R)
    pyro.set_rng_seed(0)
    mcmc = MCMC(NUTS(m.model, max_tree_depth=4), num_samples=15, warmup_steps=15,
                disable_progbar=True)
    mcmc.run(R)
    s = mcmc.get_samples()
    assert s["Y_row"].shape == (15, 5, 1) and s["Y_col"].shape == (15, 6, 1)
    assert torch.isfinite(m.mean(s, R.rows, R.cols)).all()


def test_svi_fit_of_the_implicit_model_saves_and_loads(tmp_path):
    """The training incidence is part of the saved fit (an SVI fit lost it before)."""
    import bayesmf
    from bayesmf import data, inference, models

    R, _ = data.synthetic_ratings(n_rows=30, n_cols=20, rank=2, density=0.4, seed=0)
    fit = inference.fit_svi(models.BayesianMF(30, 20, rank=2, implicit=True), R, epochs=3,
                            batch_size=None)
    again = bayesmf.load(fit.save(tmp_path / "fit.pt"))
    torch.testing.assert_close(again.predict(R), fit.predict(R))
