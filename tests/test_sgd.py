"""Tests of the minibatch SGD matrix factorisation."""

from __future__ import annotations

import logging

import pytest
import torch

from bayesmf.data import Ratings, random_split, synthetic_ratings
from bayesmf.diagnostics.metrics import rmse
from bayesmf.inference import MAPFactors, sgd_mf

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synthetic() -> tuple[Ratings, Ratings, Ratings, object]:
    R, truth = synthetic_ratings(300, 200, rank=5, density=0.5, noise=0.5, seed=0)
    train, val, test = random_split(R, 0.1, val_fraction=0.1, seed=0)
    return train, val, test, truth


def test_reaches_noise_floor_on_synthetic_low_rank(synthetic):
    train, _, test, truth = synthetic
    fit = sgd_mf(
        train, rank=5, reg=0.02, lr=2.0, batch_size=512, epochs=40, lr_decay=0.95, biases=False
    )
    pred = fit.predict(test)
    assert rmse(test.values, pred) < 1.1 * truth.noise
    assert rmse(truth.expected(test.rows, test.cols), pred) < 0.45 * truth.noise
    assert fit.row_bias is None and fit.mean == 0.0
    assert fit.history[-1] < fit.history[0]


def test_biased_model_on_synthetic(synthetic):
    train, _, test, truth = synthetic
    fit = sgd_mf(train, rank=5, reg=0.02, lr=2.0, batch_size=512, epochs=40, lr_decay=0.95)
    assert fit.row_bias is not None and fit.row_bias.shape == (train.n_rows,)
    assert rmse(truth.expected(test.rows, test.cols), fit.predict(test)) < 0.5 * truth.noise


def test_early_stopping_keeps_the_best_epoch(synthetic):
    train, val, _, _ = synthetic
    # little regularisation and a high rank: overfits, so validation RMSE turns up
    fit = sgd_mf(
        train,
        rank=30,
        reg=1e-4,
        lr=1.0,
        batch_size=256,
        epochs=60,
        lr_decay=1.0,
        val=val,
        patience=3,
    )
    assert fit.converged and fit.n_iter < 60
    assert len(fit.val_history) == len(fit.history) == fit.n_iter
    best = min(fit.val_history)
    assert fit.val_history.index(best) == fit.n_iter - 1 - 3
    # the returned parameters are those of the best epoch
    assert rmse(val.values, fit.predict(val)) == pytest.approx(best, rel=1e-5)


def test_val_without_patience_runs_all_epochs_and_restores_best(synthetic):
    train, val, _, _ = synthetic
    fit = sgd_mf(train, rank=5, reg=0.02, lr=2.0, batch_size=512, epochs=8, val=val)
    assert fit.n_iter == 8 and not fit.converged
    assert rmse(val.values, fit.predict(val)) == pytest.approx(min(fit.val_history), rel=1e-5)


def test_deterministic_given_seed(synthetic):
    train = synthetic[0]
    a = sgd_mf(train, rank=3, epochs=3, seed=1)
    b = sgd_mf(train, rank=3, epochs=3, seed=1)
    c = sgd_mf(train, rank=3, epochs=3, seed=2)
    assert isinstance(a, MAPFactors)
    assert torch.equal(a.U, b.U) and torch.equal(a.V, b.V) and a.history == b.history
    assert not torch.equal(a.U, c.U)


def test_full_batch_gradient_descent_decreases_the_objective():
    """With one batch, no momentum and a small step, each epoch is a gradient step
    on the documented loss, which then decreases monotonically."""
    R, _ = synthetic_ratings(40, 30, rank=3, density=0.4, noise=0.3, seed=3, biases=True)
    fit = sgd_mf(
        R, rank=3, reg=0.05, lr=0.1, batch_size=len(R), epochs=30, momentum=0.0, lr_decay=1.0
    )
    h = torch.tensor(fit.history)
    assert torch.all(h[1:] <= h[:-1])


def test_logging(caplog: pytest.LogCaptureFixture, synthetic):
    with caplog.at_level(logging.DEBUG, logger="bayesmf.inference.loop"):
        sgd_mf(synthetic[0], rank=2, epochs=2, progress=True)
    assert sum("SGD epoch" in r.getMessage() for r in caplog.records) == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rank": 0},
        {"reg": 0.0},
        {"reg_bias": -1.0},
        {"lr": 0.0},
        {"epochs": 0},
        {"batch_size": 0},
        {"momentum": 1.0},
        {"lr_decay": 0.0},
        {"init_scale": -1.0},
        {"patience": 2},  # without val
    ],
)
def test_invalid_arguments_raise(kwargs: dict):
    R = Ratings([0, 1], [1, 0], [1.0, 2.0], shape=(2, 2))
    with pytest.raises(ValueError):
        sgd_mf(R, **kwargs)


def test_val_of_other_shape_raises():
    R = Ratings([0, 1], [1, 0], [1.0, 2.0], shape=(2, 2))
    other = Ratings([0], [0], [1.0], shape=(3, 2))
    with pytest.raises(ValueError):
        sgd_mf(R, val=other)


def test_divergence_is_reported():
    R, _ = synthetic_ratings(30, 20, rank=2, density=0.5, seed=0)
    with pytest.raises(FloatingPointError):
        sgd_mf(R, rank=2, lr=1e6, epochs=3)


@pytest.mark.slow
def test_movielens_100k_rmse(data_dir):
    from bayesmf.data import load_movielens

    R = load_movielens("100k", root=data_dir).to_ratings()
    train, test = random_split(R, 0.1, seed=0)
    fit = sgd_mf(train)  # the defaults
    score = rmse(test.values, fit.predict(test, clamp=True))
    assert score <= 0.95, score  # about 0.895


def _dense_heavy_ball(R: Ratings, rank: int, epochs: int, batch_size: int, lr: float,
                      momentum: float, lr_decay: float, reg: float, seed: int):
    """The reference: every array moved by its momentum at every step (O(rows) a step)."""
    gen = torch.Generator().manual_seed(seed)
    dt = R.values.dtype
    U = 0.1 * torch.randn(R.shape[0], rank, generator=gen, dtype=dt)
    V = 0.1 * torch.randn(R.shape[1], rank, generator=gen, dtype=dt)
    b, c = torch.zeros(R.shape[0], dtype=dt), torch.zeros(R.shape[1], dtype=dt)
    mu = float(R.values.mean())
    params = [U, V, b, c]
    bufs = [torch.zeros_like(p) for p in params]
    for epoch in range(epochs):
        for idx in torch.randperm(len(R), generator=gen).split(batch_size):
            r, k, xb = R.rows[idx], R.cols[idx], R.values[idx]
            u, v, br, ck = U[r], V[k], b[r], c[k]
            err = (u * v).sum(-1) + mu + br + ck - xb
            g = 2.0 / len(idx)
            grads = [torch.zeros_like(p) for p in params]
            grads[0].index_add_(0, r, g * (err[:, None] * v + reg * u))
            grads[1].index_add_(0, k, g * (err[:, None] * u + reg * v))
            grads[2].index_add_(0, r, g * (err + reg * br))
            grads[3].index_add_(0, k, g * (err + reg * ck))
            for p, buf, gr in zip(params, bufs, grads, strict=True):
                buf.mul_(momentum).add_(gr)
                p.sub_(lr * lr_decay**epoch * buf)
    return U, V, b, c


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_lazy_momentum_equals_the_dense_update(momentum):
    """Rows untouched by a step (most of them, with a batch of 8 on 60 x 50) are caught up
    in closed form; the fit equals the dense heavy-ball update's up to rounding, also when
    a row occurs twice in a batch and across the epochs' changes of step size."""
    R32, _ = synthetic_ratings(60, 50, rank=2, density=0.2, noise=0.3, seed=5, biases=True)
    R = Ratings(R32.rows, R32.cols, R32.values.double(), shape=R32.shape)
    kw = {"epochs": 3, "batch_size": 8, "lr": 0.05, "momentum": momentum, "lr_decay": 0.8,
          "reg": 0.05, "seed": 4}
    fit = sgd_mf(R, rank=2, **kw)
    want = _dense_heavy_ball(R, 2, **kw)
    for got, ref in zip((fit.U, fit.V, fit.row_bias, fit.col_bias), want, strict=True):
        assert torch.allclose(got, ref, atol=1e-10, rtol=1e-8)
    assert not torch.allclose(want[0], 0.1 * torch.randn(60, 2, dtype=torch.float64,
                              generator=torch.Generator().manual_seed(4)))  # it moved
