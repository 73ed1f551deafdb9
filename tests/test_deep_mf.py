"""Tests of the deep two-branch MF (DMF), its discrete variant (DMF-D) and their fitter."""

from __future__ import annotations

import numpy as np
import pyro
import pytest
import torch

from bayesmf import inference
from bayesmf.data import Ratings, holdout_rows_cols, random_split
from bayesmf.diagnostics.metrics import rmse
from bayesmf.inference import DeepMFFit, NoPosteriorError, ResumeMismatch, files, fit_deep_mf
from bayesmf.inference.deep_mf_fit import reindex
from bayesmf.models import DeepMF, DiscreteDeepMF, SmoothQuantizer
from bayesmf.models.deep_mf import BIAS_PRIOR_SCALE, rating_matrix

torch.set_num_threads(1)


def planted(n_rows: int = 150, n_cols: int = 120, rank: int = 2, density: float = 0.35,
            noise: float = 0.3, seed: int = 0) -> Ratings:
    """Integer-ish ratings in [1, 5] with a planted rank-``rank`` structure."""
    g = torch.Generator().manual_seed(seed)
    U = torch.randn(n_rows, rank, generator=g)
    V = torch.randn(n_cols, rank, generator=g)
    M = 3.0 + 1.1 * (U @ V.T) / rank**0.5 + noise * torch.randn(n_rows, n_cols, generator=g)
    mask = torch.rand(n_rows, n_cols, generator=g) < density
    r, c = torch.nonzero(mask, as_tuple=True)
    return Ratings(r, c, M[r, c].clamp(1, 5), shape=(n_rows, n_cols), scale=(1.0, 5.0))


@pytest.fixture(scope="module")
def data() -> tuple[Ratings, Ratings, Ratings]:
    return random_split(planted(), 0.2, val_fraction=0.05, seed=0)


@pytest.fixture(scope="module")
def fitted(data):
    train, val, _ = data
    torch.manual_seed(0)
    model = DeepMF(*train.shape, hidden=(64,), rank=8, gamma=1e-4, scale=(1, 5))
    return fit_deep_mf(model, train, epochs=60, batch_size=1024, lr=3e-3, val=val,
                       exclude_targets=True, seed=0)


# ----------------------------------------------------------------- the model


def test_cosine_in_range_and_scaling_round_trips():
    torch.manual_seed(1)
    m = DeepMF(20, 30, hidden=(16, 8), rank=3, scale=(1, 5))
    X, Y = 50 * torch.randn(40, 30), 50 * torch.randn(40, 20)
    with torch.no_grad():
        out = m(X, Y)
    assert out.shape == (40,)
    assert float(out.abs().max()) <= 1.0
    # parallel and antiparallel vectors hit the ends exactly
    u = torch.randn(5, 3)
    assert torch.allclose(m.cosine(u, 2 * u), torch.ones(5))
    assert torch.allclose(m.cosine(u, -u), -torch.ones(5))
    r = torch.tensor([1.0, 2.0, 3.0, 4.5, 5.0])
    assert torch.allclose(m.to_unit(r), torch.tensor([-1.0, -0.5, 0.0, 0.75, 1.0]))
    assert torch.allclose(m.to_rating(m.to_unit(r)), r)
    m2 = DeepMF(2, 2, scale=(-10, 10))
    assert torch.allclose(m2.to_rating(m2.to_unit(torch.tensor([-10.0, 3.0]))),
                          torch.tensor([-10.0, 3.0]))


def test_sparse_and_dense_inputs_agree(data):
    train, _, _ = data
    torch.manual_seed(0)
    m = DeepMF(*train.shape, hidden=(8,), rank=4)
    Xs, Ys = m.inputs(train)
    Xd, Yd = m.inputs(train, sparse=False)
    assert torch.allclose(m.embed_rows(Xs), m.embed_rows(Xd), atol=1e-5)
    assert torch.allclose(m.embed_cols(Ys), m.embed_cols(Yd), atol=1e-5)
    assert torch.equal(Yd, Xd.T)


def test_pyro_model_map_is_the_paper_objective(data):
    """log p(theta, data) = -N/(2 sigma^2) * objective(theta) - biases^2/(2 s_b^2) + const."""
    train, _, _ = data
    torch.manual_seed(0)
    m = DeepMF(*train.shape, hidden=(8,), rank=4, gamma=1e-3, noise=0.4)
    n = len(train)
    bias_names = [k for k, _ in m.named_parameters() if k.endswith("bias")]

    def log_joint(state):
        m.load_state_dict(state)
        cond = {k: v.detach() for k, v in m.named_parameters()}
        tr = pyro.poutine.trace(pyro.condition(m.model, data=cond)).get_trace(train)
        return float(tr.log_prob_sum())

    def objective(state):
        m.load_state_dict(state)
        X, Y = m.inputs(train)
        with torch.no_grad():
            pred = m.predict_unit(m.embed_rows(X), m.embed_cols(Y), train.rows, train.cols)
            obj = float(m.objective(pred, m.to_unit(train.values)))
        b2 = sum(float(state[k].pow(2).sum()) for k in bias_names)
        return -n / (2 * m.noise**2) * obj - b2 / (2 * BIAS_PRIOR_SCALE**2)

    s1 = {k: v.clone() for k, v in m.state_dict().items()}
    s2 = {k: v + 0.1 * torch.randn_like(v) for k, v in s1.items()}
    d_pyro = log_joint(s2) - log_joint(s1)
    d_obj = objective(s2) - objective(s1)
    assert abs(d_obj) > 1.0
    assert d_pyro == pytest.approx(d_obj, rel=1e-3)
    # subsampled minibatch and predictive mode run too
    tr = pyro.poutine.trace(m.model).get_trace(train, index=torch.arange(10), predict=True)
    assert tr.nodes["obs"]["value"].shape == (10,)


def test_discrete_pyro_model_has_boundary_site(data):
    train, _, _ = data
    m = DiscreteDeepMF(*train.shape, hidden=(8,), rank=4, lam=50.0)
    tr = pyro.poutine.trace(m.model).get_trace(train, index=torch.arange(7))
    assert tr.nodes["quantizer.boundaries"]["value"].shape == (4,)
    assert tr.nodes["obs"]["value"].shape == (7,)


# ------------------------------------------------------------- the quantizer


def test_smooth_quantizer_tends_to_hard_quantizer():
    q = SmoothQuantizer([-1.0, -0.5, 0.0, 0.5, 1.0])
    with torch.no_grad():
        q.boundaries.copy_(torch.tensor([-0.8, -0.2, 0.3, 0.7]))  # learned, not midpoints
    x = torch.linspace(-1.2, 1.2, 2001)
    away = (x[:, None] - q.boundaries.detach()[None]).abs().min(1).values > 0.02
    hard = q.hard(x)
    assert set(hard.tolist()) <= {-1.0, -0.5, 0.0, 0.5, 1.0}
    assert float(q.hard(torch.tensor([-0.81, -0.79, 0.29, 0.31])).sub(
        torch.tensor([-1.0, -0.5, 0.0, 0.5])).abs().max()) == 0.0
    diffs = []
    for lam in (1.0, 10.0, 100.0, 1000.0, 1e4):
        q.set_lam(lam)
        with torch.no_grad():
            diffs.append(float((q(x) - hard)[away].abs().max()))
    assert all(a > b for a, b in zip(diffs[:-1], diffs[1:], strict=True)), diffs
    assert diffs[0] > 0.1 and diffs[-1] < 1e-6
    # finite lambda: non-zero gradients for the input and the boundaries
    q.set_lam(20.0)
    xg = torch.tensor([-0.75, -0.1, 0.35, 0.66], requires_grad=True)
    q(xg).sum().backward()
    assert bool((xg.grad.abs() > 1e-3).all())
    assert bool((q.boundaries.grad.abs() > 1e-3).all())


def test_quantizer_penalty_and_validation():
    q = SmoothQuantizer([1.0, 2.0, 3.0])
    assert q.uniform_boundaries.tolist() == [1.5, 2.5]
    with torch.no_grad():
        q.boundaries.add_(torch.tensor([0.1, -0.2]))
    assert float(q.penalty().detach()) == pytest.approx(0.05)
    with pytest.raises(ValueError):
        SmoothQuantizer([1.0, 3.0, 2.0])
    with pytest.raises(ValueError):
        SmoothQuantizer([1.0, 2.0, 4.0])


# ------------------------------------------------------------------- fitting


def test_dmf_beats_global_mean_on_planted_structure(data, fitted):
    train, _, test = data
    mean_rmse = rmse(test.values, torch.full_like(test.values, float(train.values.mean())))
    dmf_rmse = rmse(test.values, fitted.predict(test))
    assert dmf_rmse < 0.5 * mean_rmse, (dmf_rmse, mean_rmse)
    assert fitted.history["val_rmse"][fitted.best_epoch - 1] == min(fitted.history["val_rmse"])


def test_training_inputs_contain_no_heldout_entry(data, monkeypatch):
    train, val, test = data
    n_cols = train.n_cols
    held = set((val.rows * n_cols + val.cols).tolist()) | set(
        (test.rows * n_cols + test.cols).tolist())
    train_keys = set((train.rows * n_cols + train.cols).tolist())
    seen: list[set[int]] = []
    orig = DeepMF.embed_rows

    def spy(self, X):
        Xc = X.coalesce() if X.is_sparse else X.to_sparse().coalesce()
        i = Xc.indices()
        seen.append(set((i[0] * n_cols + i[1]).tolist()))
        return orig(self, X)

    monkeypatch.setattr(DeepMF, "embed_rows", spy)
    torch.manual_seed(0)
    for exclude in (False, True):
        seen.clear()
        m = DeepMF(*train.shape, hidden=(8,), rank=4)
        fit = fit_deep_mf(m, train, epochs=2, batch_size=2000, val=val, exclude_targets=exclude)
        assert len(seen) >= 2 * (len(train) // 2000)
        for keys in seen:
            assert not keys & held
            assert keys <= train_keys
        if exclude:  # each step leaves its minibatch out, so some training entries are missing
            assert any(len(k) < len(train_keys) for k in seen)
    # predictions do not depend on the values of the entries being predicted
    p1 = fit.predict(test)
    p2 = fit.predict(test.with_values(torch.full_like(test.values, 5.0)))
    assert torch.equal(p1, p2)
    X = rating_matrix(fit.train, m.to_unit).to_dense()
    assert bool((X[test.rows, test.cols] == 0).all())


def test_new_rows_and_cols_without_retraining(data, fitted):
    train, _, test = data
    before = {k: v.clone() for k, v in fitted.model.state_dict().items()}
    known = fitted.predict(test)
    # new rows: feed rows 0..19 of the training matrix as if they were new
    rows = torch.arange(20)
    obs = reindex(train, rows, torch.arange(train.n_cols))
    sel = test.rows < 20
    p_new = fitted.predict_new_rows(obs, (test.rows[sel], test.cols[sel]))
    assert torch.allclose(p_new, known[sel], atol=1e-5)
    # new columns: columns 0..14 of the training matrix
    obs_c = reindex(train, torch.arange(train.n_rows), torch.arange(15))
    selc = test.cols < 15
    p_newc = fitted.predict_new_cols(obs_c, (test.rows[selc], test.cols[selc]))
    assert torch.allclose(p_newc, known[selc], atol=1e-5)
    # both new
    both = sel & selc
    p_both = fitted.predict_new(obs, obs_c, (test.rows[both], test.cols[both]))
    assert torch.allclose(p_both, known[both], atol=1e-5)
    # no parameter moved and the cached known-row factors are intact
    after = fitted.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(fitted.predict(test), known)
    with pytest.raises(ValueError):
        fitted.predict_new_rows(reindex(train, rows, torch.arange(10)), (rows, rows))


def test_extension_areas_beat_the_mean():
    R = planted(200, 160, density=0.35, seed=3)
    ext = holdout_rows_cols(R, 0.15, 0.15, seed=0)
    kr, nr, kc, nc = ext.known_rows, ext.new_rows, ext.known_cols, ext.new_cols
    A1 = reindex(ext.area_I, kr, kc)
    train, val = random_split(A1, 0.1, seed=0)
    torch.manual_seed(0)
    m = DeepMF(*A1.shape, hidden=(64,), rank=8, gamma=1e-4)
    fit = fit_deep_mf(m, train, epochs=40, batch_size=1024, lr=3e-3, exclude_targets=True,
                      val=val)
    mu = float(train.values.mean())
    A2, A3, A4 = reindex(ext.area_II, nr, kc), reindex(ext.area_III, kr, nc), \
        reindex(ext.area_IV, nr, nc)
    half2 = torch.arange(len(A2)) % 2 == 0
    half3 = torch.arange(len(A3)) % 2 == 0
    t2, t3 = A2.subset(~half2), A3.subset(~half3)
    scores = {
        "II": rmse(t2.values, fit.predict_new_rows(A2.subset(half2), t2)),
        "III": rmse(t3.values, fit.predict_new_cols(A3.subset(half3), t3)),
        "IV": rmse(A4.values, fit.predict_new(A2, A3, A4)),
    }
    base = {"II": rmse(t2.values, torch.full_like(t2.values, mu)),
            "III": rmse(t3.values, torch.full_like(t3.values, mu)),
            "IV": rmse(A4.values, torch.full_like(A4.values, mu))}
    for k in scores:
        assert scores[k] < 0.7 * base[k], (k, scores, base)


def test_discrete_fit_lands_on_levels_and_anneals(data, fitted):
    train, val, test = data
    d = DiscreteDeepMF(*train.shape, hidden=(64,), rank=8, gamma=1e-4, gamma_b=1e-3)
    d.load_state_dict(fitted.model.state_dict(), strict=False)
    fit = fit_deep_mf(d, train, epochs=4, batch_size=1024, lr=1e-4, boundary_lr=1e-2,
                      lam_schedule=(2.0, 200.0), val=val, monitor="mae", loss="l1")
    assert fit.history["lam"][0] == pytest.approx(2.0)
    assert fit.history["lam"][-1] == pytest.approx(200.0)
    p = fit.predict(test, discrete="hard")
    assert set(p.tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert not torch.equal(d.quantizer.boundaries.detach(), d.quantizer.uniform_boundaries)
    mean_rmse = rmse(test.values, torch.full_like(test.values, float(train.values.mean())))
    assert rmse(test.values, p) < mean_rmse
    r = fitted.predict(test, discrete="round")
    assert torch.equal(r, torch.round(r))
    with pytest.raises(ValueError):
        fitted.predict(test, discrete="hard")


def test_discrete_mse_fine_tune_with_separate_boundary_lr(data, fitted):
    """The paper's MSE objective with a tiny network lr and a larger boundary lr (the
    benchmark's tuned DMF-D): the boundaries move, the warm-started network barely does."""
    train, val, test = data
    d = DiscreteDeepMF(*train.shape, hidden=(64,), rank=8, gamma=1e-4, gamma_b=1e-3)
    d.load_state_dict(fitted.model.state_dict(), strict=False)
    w0 = [w.detach().clone() for w in d.weight_matrices()]
    fit = fit_deep_mf(d, train, epochs=3, batch_size=1024, lr=1e-6, boundary_lr=1e-2,
                      lam_schedule=(2.0, 200.0), val=val, monitor="mae", loss="mse")
    moved = (d.quantizer.boundaries.detach() - d.quantizer.uniform_boundaries).abs().max()
    assert float(moved) > 1e-3
    drift = max(float((w.detach() - w_0).abs().max()) for w, w_0 in zip(d.weight_matrices(), w0,
                                                                 strict=True))
    assert drift < 1e-4
    assert fit.settings["loss"] == "mse" and fit.settings["boundary_lr"] == 1e-2
    p = fit.predict(test, discrete="hard")
    assert set(p.tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}


def test_fit_validates_arguments(data):
    train, val, _ = data
    m = DeepMF(*train.shape, hidden=(4,), rank=2)
    with pytest.raises(ValueError):
        fit_deep_mf(m, train, patience=2)
    with pytest.raises(ValueError):
        fit_deep_mf(DeepMF(3, 3), train)
    with pytest.raises(ValueError):
        fit_deep_mf(m, train, gamma_b=0.1)
    with pytest.raises(ValueError):
        DeepMF(3, 3, activation="swishy")


# ------------------------------------------- the one loop, the one result interface


def small(seed: int = 0) -> Ratings:
    """A small planted problem with string row ids and datetime column ids."""
    import pandas as pd

    R = planted(40, 30, density=0.5, seed=seed)
    return R.replace(row_ids=np.array([f"user-{i}" for i in range(40)], dtype=object),
                     col_ids=np.array(list(pd.date_range("2020-01-01", periods=30, tz="UTC")),
                                      dtype=object))


def test_rank_is_the_name_and_latent_dim_is_deprecated():
    m = DeepMF(5, 4, hidden=(3,), rank=2)
    assert m.rank == 2 and m.config()["rank"] == 2 and "latent_dim" not in m.config()
    assert m.row_net.layers[-1].out_features == 2
    for cls in (DeepMF, DiscreteDeepMF):
        with pytest.warns(DeprecationWarning, match="'latent_dim=' is deprecated, use 'rank='") \
                as rec:
            old = cls(5, 4, hidden=(3,), latent_dim=3)
        assert rec[0].filename == __file__  # points at the caller
        assert old.rank == 3 and old.col_net.layers[-1].out_features == 3
        with pytest.warns(DeprecationWarning):
            assert old.latent_dim == 3
        assert cls(**old.config()).rank == 3  # the config rebuilds the model
        with pytest.raises(TypeError, match="latent_dims"):
            cls(5, 4, latent_dims=3)


def test_save_load_round_trip_gives_identical_predictions(data, fitted, tmp_path):
    train, _, test = data
    path = fitted.save(tmp_path / "dmf.pt")
    torch.load(path, weights_only=True)  # safe to load
    rng = torch.get_rng_state()
    again = inference.load(path)
    assert torch.equal(torch.get_rng_state(), rng)  # loading draws nothing
    assert isinstance(again, DeepMFFit) and again.kind == "DeepMFFit"
    assert not again.has_posterior and again.inference_name == "MAP (deep MF)"
    assert again.model is not fitted.model
    assert torch.equal(again.predict(test), fitted.predict(test))
    assert torch.equal(again.predict(test, discrete="round"),
                       fitted.predict(test, discrete="round"))
    obs = reindex(train, torch.arange(10), torch.arange(train.n_cols))
    sel = test.rows < 10
    pair = (test.rows[sel], test.cols[sel])
    assert torch.equal(again.predict_new_rows(obs, pair), fitted.predict_new_rows(obs, pair))
    assert again.best_epoch == fitted.best_epoch and again.history == fitted.history
    assert again.train_info["fingerprint"] == files.fingerprint(train)
    assert again.settings["config"] == fitted.settings["config"]
    with pytest.raises(NoPosteriorError, match="point estimate"):
        again.predict_interval(test)
    # clamp / num_samples / seed are accepted as by every fit; predictions stay in the scale
    p = again.predict(test, clamp=True, num_samples=5, seed=1)
    assert torch.equal(p, again.predict(test)) and float(p.min()) >= 1 and float(p.max()) <= 5


def test_discrete_fit_with_any_ids_round_trips(tmp_path):
    R = small()
    torch.manual_seed(0)
    d = DiscreteDeepMF(*R.shape, hidden=(8,), rank=3, gamma_b=1e-3)
    fit = fit_deep_mf(d, R, epochs=3, batch_size=200, lr=1e-2, lam_schedule=(2.0, 20.0),
                      val=R, monitor="mae")
    again = inference.load(fit.save(tmp_path / "dmfd.pt"))
    assert type(again.model) is DiscreteDeepMF
    assert float(again.model.quantizer.lam) == pytest.approx(20.0)
    assert torch.equal(again.predict(R, discrete="hard"), fit.predict(R, discrete="hard"))
    assert torch.equal(again.predict(R), fit.predict(R))
    assert list(again.train.row_ids) == list(R.row_ids)
    assert list(again.train.col_ids) == list(R.col_ids)
    assert type(again.train.col_ids[0]) is type(R.col_ids[0])
    assert torch.equal(again.train.values, R.values) and again.train.scale == R.scale


def test_checkpoint_resume_equals_uninterrupted_run(tmp_path):
    R = small()
    val = small(seed=1)
    opts = {"epochs": 5, "batch_size": 300, "lr": 1e-2, "seed": 4, "val": val,
            "lam_schedule": (2.0, 50.0), "exclude_targets": True, "monitor": "mae"}

    def make() -> DiscreteDeepMF:
        torch.manual_seed(0)
        return DiscreteDeepMF(*R.shape, hidden=(8,), rank=3)

    straight = fit_deep_mf(make(), R, **opts)
    ckpt = tmp_path / "run.ckpt"
    part = fit_deep_mf(make(), R, checkpoint=ckpt, checkpoint_every=1, stop_after=2, **opts)
    assert len(part.history["loss"]) == 2 and not part.settings["finished"] and ckpt.exists()
    resumed = fit_deep_mf(make(), R, checkpoint=ckpt, checkpoint_every=1, **opts)
    assert resumed.history["loss"] == straight.history["loss"]
    assert resumed.history["lam"] == straight.history["lam"]
    assert resumed.history["val_mae"] == straight.history["val_mae"]
    assert resumed.best_epoch == straight.best_epoch
    for k, v in straight.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    # other settings or other data are refused, naming what differs
    with pytest.raises(ResumeMismatch, match="lr"):
        fit_deep_mf(make(), R, checkpoint=ckpt, **{**opts, "lr": 3e-3})
    with pytest.raises(ResumeMismatch, match="lam_schedule"):
        fit_deep_mf(make(), R, checkpoint=ckpt, **{**opts, "lam_schedule": (1.0, 50.0)})
    other = R.with_values(R.values.flip(0))
    with pytest.raises(ResumeMismatch, match="data"):
        fit_deep_mf(make(), other, checkpoint=ckpt, **opts)
    # resume=False starts afresh (and equals the uninterrupted run)
    fresh = fit_deep_mf(make(), R, checkpoint=ckpt, resume=False, **opts)
    assert fresh.history["loss"] == straight.history["loss"]


def test_nan_stops_with_an_error_naming_epoch_and_step():
    R = small()
    m = DeepMF(*R.shape, hidden=(8,), rank=3)
    with torch.no_grad():
        m.row_net.layers[0].bias[0] = float("nan")
    with pytest.raises(FloatingPointError, match="epoch 0, step 0; last good checkpoint: none"):
        fit_deep_mf(m, R, epochs=2, batch_size=300)


def test_patience_counts_evaluations(monkeypatch):
    """Validation every 2 epochs, each evaluation worse than the first: with patience 3 the
    fit stops after the 4th evaluation (epoch 8), whatever the epochs in between."""
    R = small()
    calls = [0]
    orig = DeepMFFit.predict

    def worse_each_time(self, data, **kw):
        if data is R:  # the validation data: error 0.1, 0.2, 0.3, ...
            calls[0] += 1
            return data.values + 0.1 * calls[0]
        return orig(self, data, **kw)

    monkeypatch.setattr(DeepMFFit, "predict", worse_each_time)
    fit = fit_deep_mf(DeepMF(*R.shape, hidden=(8,), rank=3), R, epochs=30, batch_size=300,
                      val=R, eval_every=2, patience=3)
    assert fit.history["val_epoch"] == [1, 3, 5, 7]
    assert fit.history["val_rmse"] == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert fit.settings["epochs_run"] == 8 and fit.settings["stopped_early"]
    assert fit.best_epoch == 2


def test_learning_rate_schedule():
    R = small()
    torch.manual_seed(0)
    fit = fit_deep_mf(DeepMF(*R.shape, hidden=(8,), rank=3), R, epochs=4, batch_size=300,
                      lr=1e-2)
    assert fit.history["lr"] == [1e-2] * 4  # default: constant (as tuned)
    assert fit.settings["final_lr"] == 1e-2
    fit = fit_deep_mf(DeepMF(*R.shape, hidden=(8,), rank=3), R, epochs=4, batch_size=300,
                      lr=1e-2, final_lr=1e-3, clip_norm=1.0)
    lrs = fit.history["lr"]  # exponential decay per epoch towards final_lr
    assert lrs[0] == pytest.approx(1e-2) and lrs[-1] == pytest.approx(1e-2 * 0.1 ** 0.75)
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    assert fit.settings["clip_norm"] == 1.0 and fit.settings["final_lr"] == 1e-3
