"""SVI engine and Gaussian factor models on synthetic data with known truth."""

from __future__ import annotations

import pyro
import pytest
import torch
from pyro.infer import MCMC, NUTS, SVI, Predictive, Trace_ELBO, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoNormal

from bayesmf import data, inference, models
from bayesmf.diagnostics import auc, coverage, rmse
from bayesmf.inference.guides import MeanFieldGuide
from bayesmf.inference.svi import annealed_loss

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def low_rank():
    R, truth = data.synthetic_ratings(
        n_rows=150, n_cols=100, rank=3, density=0.5, noise=0.3, seed=0
    )
    train, test = data.random_split(R, test_fraction=0.2, seed=0)
    return train, test, truth


@pytest.fixture(scope="module")
def fitted(low_rank):
    train, test, truth = low_rank
    torch.set_num_threads(1)
    model = models.BayesianMF(train.n_rows, train.n_cols, rank=3, biases=True)
    fit = inference.fit_svi(
        model, train, epochs=150, batch_size=None, lr=0.05, final_lr=0.005, progress=False, seed=0
    )
    return fit


def test_svi_reaches_noise_floor(low_rank, fitted):
    train, test, truth = low_rank
    pred = fitted.predict(test)
    oracle = rmse(test.values, truth.expected(test.rows, test.cols))
    assert rmse(test.values, pred) < 1.12 * oracle
    # at least as good as the best-regularised MAP (ALS) on the same data
    als_best = min(
        rmse(test.values, inference.als(train, rank=3, reg_u=r, reg_v=r, epochs=100).predict(test))
        for r in (0.3, 1.0, 3.0)
    )
    assert rmse(test.values, pred) < 1.01 * als_best
    # the ELBO went up and the noise scale was learned
    assert fitted.elbo_history[-1] > fitted.elbo_history[0]
    noise = fitted.guide.posterior_mean()["noise"]
    assert noise == pytest.approx(0.3, rel=0.15)


def test_predictive_90_coverage_is_calibrated(low_rank, fitted):
    _, test, _ = low_rank
    lo, hi = fitted.predict_interval(test, level=0.9)
    assert 0.85 <= coverage(test.values, lo, hi) <= 0.95
    lo50, hi50 = fitted.predict_interval(test, level=0.5)
    assert torch.all(hi50 - lo50 < hi - lo)


def test_posterior_std_shrinks_with_more_ratings():
    R, _ = data.synthetic_ratings(n_rows=80, n_cols=120, rank=2, density=0.5, noise=0.5, seed=1)
    # Row r keeps a fraction (r + 1) / n_rows of its ratings: counts grow with r.
    keep_prob = (R.rows.float() + 1) / R.n_rows
    keep = torch.rand(len(R), generator=torch.Generator().manual_seed(0)) < keep_prob
    sub = R.subset(keep)
    model = models.BayesianMF(sub.n_rows, sub.n_cols, rank=2, biases=False)
    fit = inference.fit_svi(model, sub, epochs=120, batch_size=None, lr=0.05, progress=False)
    std = fit.guide.posterior_std()["U"].mean(1)
    counts = sub.row_counts().float()
    few, many = counts < counts.quantile(0.25), counts > counts.quantile(0.75)
    assert std[few].mean() > 1.3 * std[many].mean()
    # rank correlation is clearly negative
    rc = torch.argsort(torch.argsort(counts)).float()
    rs = torch.argsort(torch.argsort(std)).float()
    corr = torch.corrcoef(torch.stack([rc, rs]))[0, 1]
    assert corr < -0.6


def test_minibatch_elbo_is_unbiased_for_full_data_elbo(low_rank):
    train, _, _ = low_rank
    model = models.BayesianMF(train.n_rows, train.n_cols, rank=3)
    model.setup(train)
    guide = MeanFieldGuide(model, seed=0)
    elbo = TraceMeanField_ELBO(max_plate_nesting=1)
    gen = torch.Generator().manual_seed(0)
    pyro.set_rng_seed(0)
    with torch.no_grad():
        full = torch.tensor([elbo.loss(model.model, guide, train) for _ in range(100)])
        mini = torch.tensor(
            [
                elbo.loss(
                    model.model, guide, train, torch.randperm(len(train), generator=gen)[:300]
                )
                for _ in range(200)
            ]
        )
    se = (full.var() / len(full) + mini.var() / len(mini)).sqrt()
    assert abs(full.mean() - mini.mean()) < 4 * se
    # and the minibatch estimate really is noisier (it is a different estimator)
    assert mini.std() > full.std()


def test_kl_weight_scales_only_the_kl_term(low_rank):
    train, _, _ = low_rank
    model = models.BayesianMF(train.n_rows, train.n_cols, rank=3)
    model.setup(train)
    guide = MeanFieldGuide(model, seed=0)
    elbo = TraceMeanField_ELBO(max_plate_nesting=1)
    idx = torch.arange(200)

    def loss(beta: float) -> float:
        pyro.set_rng_seed(5)  # the same draw of z for every weight
        with torch.no_grad():
            return annealed_loss(elbo, model, guide, train, idx, beta).item()

    # -ELBO_beta = -E log p(x|z) + beta KL is affine in beta, with slope KL(q || p) > 0
    l1, l_half, l_quarter = loss(1.0), loss(0.5), loss(0.25)
    kl = 2 * (l1 - l_half)
    assert kl > 0
    assert l_half - l_quarter == pytest.approx(kl / 4, rel=1e-4)
    # and beta = 1 is Pyro's plain ELBO
    pyro.set_rng_seed(5)
    with torch.no_grad():
        assert elbo.differentiable_loss(model.model, guide, train, idx).item() == pytest.approx(l1)
    with pytest.raises(ValueError, match="kl_weight"):
        annealed_loss(elbo, model, guide, train, idx, 0.0)


def test_kl_warmup_schedule_is_recorded(low_rank):
    train, _, _ = low_rank
    fit = inference.fit_svi(
        models.BayesianMF(train.n_rows, train.n_cols, rank=2), train, epochs=4, batch_size=1000,
        kl_warmup=2, progress=False,
    )
    w = fit.history["kl_weight"]
    steps = -(-len(train) // 1000)
    assert w[0] == pytest.approx(1 / 2) and w[1:] == [1.0, 1.0, 1.0]
    assert steps > 1
    with pytest.raises(ValueError, match="kl_warmup"):
        inference.fit_svi(models.BayesianMF(train.n_rows, train.n_cols, rank=2), train,
                          epochs=2, kl_warmup=3, progress=False)


def test_checkpoint_resume_equals_uninterrupted_run(low_rank, tmp_path):
    train, test, _ = low_rank
    opts = {"epochs": 6, "batch_size": 1000, "lr": 0.05, "seed": 3, "progress": False,
            "val": test, "kl_warmup": 4, "restarts": 1}  # KL warm-up spans the break

    def make():
        return models.BayesianNNMF(train.n_rows, train.n_cols, rank=2, bilinear_dims=3, hidden=(4,))

    straight = inference.fit_svi(make(), train, **opts)
    ckpt = tmp_path / "run.ckpt"
    part = inference.fit_svi(
        make(), train, checkpoint=ckpt, checkpoint_every=1, stop_after=3, **opts
    )
    assert len(part.elbo_history) == 3 and ckpt.exists()
    resumed = inference.fit_svi(
        make(), train, checkpoint=ckpt, checkpoint_every=1, resume=True, **opts
    )
    assert resumed.elbo_history == straight.elbo_history
    for k, v in straight.guide.state_dict().items():
        assert torch.equal(v, resumed.guide.state_dict()[k]), k
    # a checkpoint written with other settings is refused
    with pytest.raises(ValueError, match="settings differ: lr"):
        inference.fit_svi(make(), train, checkpoint=ckpt, resume=True, **{**opts, "lr": 0.01})


def test_nan_elbo_stops_with_a_clear_error(low_rank, monkeypatch):
    train, _, _ = low_rank
    model = models.BayesianMF(train.n_rows, train.n_cols, rank=2)
    monkeypatch.setattr(model, "mean", lambda z, r, c: torch.full(r.shape, float("nan")))
    with pytest.raises(FloatingPointError, match="epoch 0, step 0; last good checkpoint: none"):
        inference.fit_svi(model, train, epochs=2, progress=False, collapse_rows=False)


def test_bad_data_is_refused(low_rank):
    train, _, _ = low_rank
    with pytest.raises(ValueError, match="shape"):
        inference.fit_svi(models.BayesianMF(10, 10), train, epochs=1, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        data.Ratings([0, 1], [0, 1], [1.0, float("nan")], shape=(2, 2))
    with pytest.raises(TypeError, match="Ratings"):
        inference.fit_svi(models.BayesianMF(2, 2), torch.ones(2, 2), epochs=1, progress=False)
    with pytest.raises(ValueError, match="checkpoint path"):
        inference.fit_svi(models.BayesianMF(train.n_rows, train.n_cols), train,
                          checkpoint_every=1)
    with pytest.raises(ValueError, match="item_features must have shape"):
        models.BayesianNNMF(5, 4, item_features=torch.ones(3, 2))


def test_save_load_round_trip(low_rank, fitted, tmp_path):
    _, test, _ = low_rank
    path = fitted.save(tmp_path / "fit.pt")
    torch.load(path, weights_only=True)  # safe to load
    again = inference.load(path)
    assert torch.equal(again.predict(test), fitted.predict(test))
    assert again.elbo_history == fitted.elbo_history
    assert again.train_info["shape"] == [test.n_rows, test.n_cols]


def test_nnmf_with_side_information_uses_the_features():
    R, _ = data.synthetic_ratings(n_rows=40, n_cols=30, rank=2, density=0.4, seed=2)
    feats = torch.eye(30)[:, :5]
    m = models.BayesianNNMF(40, 30, rank=2, bilinear_dims=3, hidden=(), item_features=feats)
    m.setup(R)
    assert m.n_inputs == 2 * 2 + 3 + 5
    z = MeanFieldGuide(m).sample_latents(2)
    z["W0"][:, -5:, :] = 0.0
    base = m.mean(z, R.rows, R.cols)
    z["W0"][:, -5 + 1, :] = 1.0  # weight of feature 1 only moves items having it
    moved = (m.mean(z, R.rows, R.cols) - base).abs() > 1e-6
    assert torch.equal(moved[0], R.cols == 1)


def test_nnmf_mean_matches_a_hand_written_network():
    m = models.BayesianNNMF(
        6, 5, rank=2, bilinear_dims=3, bilinear_rank=2, hidden=(4,), global_mean=1.5
    )
    z = MeanFieldGuide(m, seed=1).sample_latents(1)
    z = {k: v[0] for k, v in z.items()}
    rows, cols = torch.tensor([0, 5, 2]), torch.tensor([4, 0, 2])
    bil = (z["U_prime"][rows] * z["V_prime"][cols]).sum(-1)
    x = torch.cat([z["U"][rows], z["V"][cols], bil], -1)
    h = torch.sigmoid(x @ z["W0"] + z["b0"])
    expect = (h @ z["W1"] + z["b1"]).squeeze(-1) + 1.5
    assert torch.allclose(m.mean(z, rows, cols), expect, atol=1e-6)


@pytest.mark.parametrize("ard", [False, True], ids=["plain", "ard-means"])
def test_models_work_with_pyro_svi_predictive_and_nuts(ard):
    R, _ = data.synthetic_ratings(n_rows=12, n_cols=10, rank=2, density=0.5, noise=0.3, seed=0)
    m = models.BayesianMF(12, 10, rank=2, ard=ard, factor_means=ard)
    m.setup(R)
    pyro.clear_param_store()
    guide = AutoNormal(m.model)
    svi = SVI(m.model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    assert torch.isfinite(torch.tensor(svi.step(R)))
    draws = Predictive(m.model, guide=guide, num_samples=4)(R, predict=True)
    assert draws["obs"].shape == (4, len(R))
    mcmc = MCMC(NUTS(m.model), num_samples=3, warmup_steps=3, disable_progbar=True)
    mcmc.run(R)
    samples = mcmc.get_samples()
    assert samples["U"].shape == (3, 12, 2)
    if ard:
        assert samples["scale_U"].shape == (3, 2) and samples["mean_V"].shape == (3, 2)
    pyro.clear_param_store()


def test_fit_svi_hands_the_block_model_to_its_own_fitter():
    net, _ = data.synthetic_network(80, block_sizes=[40, 25, 15], p_in=0.5, p_out=0.03, seed=1)
    train, test = data.holdout_pairs(net, 0.1, seed=0)
    fit = inference.fit_svi(
        models.DPStochasticBlockModel(80, truncation=6), train, epochs=60, lr=0.05,
        progress=False,
    )
    assert isinstance(fit, inference.SBMFit) and len(fit.elbo_history) > 0
    assert auc(test.labels, fit.predict(test)) > 0.8  # same as fit_sbm itself (0.84)
    assert abs(fit.effective_clusters() - 3) <= 1
    with pytest.raises(ValueError, match="kl_warmup"):
        inference.fit_svi(models.DPStochasticBlockModel(80), train, epochs=4, kl_warmup=2)


def test_default_length_is_the_models_schedule_with_its_own_step_floor():
    """The linear NNMF's tuned schedule (25 epochs of 9 steps on ML-100K) is its floor: the
    generic 500-step floor stretched it to 56 epochs there, no better at twice the time."""
    from bayesmf.inference.svi import MIN_DEFAULT_STEPS, default_epochs

    vi0, bmf = models.BayesianNNMF(943, 1682, hidden=()), models.BayesianMF(943, 1682)
    assert default_epochs(vi0, 90_000, 10_000) == 25
    assert default_epochs(bmf, 90_000, 10_000) == 60
    assert default_epochs(bmf, 60, None) == MIN_DEFAULT_STEPS  # one step an epoch
    R, _ = data.synthetic_ratings(n_rows=20, n_cols=15, rank=2, density=1.0, seed=0)
    m = models.BayesianNNMF(20, 15, rank=2, bilinear_dims=2, hidden=())
    fit = inference.fit_svi(m, R, batch_size=100, seed=0, progress=False)
    assert len(fit.elbo_history) == default_epochs(m, len(R), 100) == 75  # 3 steps an epoch


def test_batches_hold_five_ratings_per_row_of_the_longest_axis():
    """A batch of about one rating per row leaves most rows one rating or none a step, and
    the fit explains the data by noise (``RATINGS_PER_ROW``): a smaller ``batch_size`` is
    raised, and the fit's settings say what it used."""
    from bayesmf.inference.svi import RATINGS_PER_ROW, default_epochs, minibatch_size

    R, _ = data.synthetic_ratings(n_rows=60, n_cols=40, rank=2, density=0.5, seed=0)
    m = models.BayesianMF(60, 40, rank=2)
    assert minibatch_size(m, len(R), 100) == RATINGS_PER_ROW * 60 == 300  # the users
    assert minibatch_size(m, len(R), 100, collapse_rows=True) == 200  # the items only
    assert minibatch_size(m, len(R), 500) == 500
    assert minibatch_size(m, len(R), None) == minibatch_size(m, 250, 100) + 950 == len(R)
    net = models.LatentFeatureNetwork(100, rank=2)  # a node: two ends of each pair
    assert minibatch_size(net, 4950, 100) == 250
    fit = inference.fit_svi(m, R, batch_size=100, epochs=2, collapse_rows=False,
                            progress=False)
    assert fit.settings["batch_size"] == 300
    assert fit.settings["local_optimizer"] == "adam (every array drawn whole)"
    asked = inference.fit_svi(m, R, batch_size=100, epochs=2, collapse_rows=False,
                              progress=False, min_ratings_per_row=0)  # the batch as given
    assert asked.settings["batch_size"] == 100 and asked.settings["min_ratings_per_row"] == 0
    with pytest.raises(ValueError, match="min_ratings_per_row"):
        inference.fit_svi(m, R, min_ratings_per_row=-1, progress=False)
    # the default length counts the steps of the raised batch (4 an epoch, not 12)
    fit = inference.fit_svi(m, R, batch_size=100, collapse_rows=False, progress=False)
    assert len(fit.elbo_history) == default_epochs(m, len(R), 300) == 125
