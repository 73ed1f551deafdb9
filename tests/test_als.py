"""Tests of the vectorised ALS MAP solver and the MAPFactors result."""

from __future__ import annotations

import logging

import pytest
import torch

from bayesmf.data import Ratings, random_split, synthetic_ratings
from bayesmf.diagnostics.metrics import rmse
from bayesmf.inference import MAPFactors, als

pytestmark = pytest.mark.usefixtures("one_thread")


# --------------------------------------------------------------------- helpers


def _tiny(n_rows: int = 7, n_cols: int = 5, density: float = 0.6, seed: int = 3) -> Ratings:
    """A small dense-ish problem (every row and column observed)."""
    R, _ = synthetic_ratings(
        n_rows,
        n_cols,
        rank=2,
        density=density,
        noise=0.3,
        seed=seed,
        cover=True,
        biases=True,
        mean=3.0,
    )
    return R


def _objective(
    R: Ratings, U, V, b, c, mu, reg_u, reg_v, reg_b_rows, reg_b_cols, u0=0.0, v0=0.0, weighted=False
):
    """The regularised objective J written independently of the implementation."""
    x = R.values.double()
    pred = (U[R.rows] * V[R.cols]).sum(-1) + mu
    if b is not None:
        pred = pred + b[R.rows] + c[R.cols]
    wr = R.row_counts().double() if weighted else torch.ones(R.n_rows, dtype=torch.float64)
    wc = R.col_counts().double() if weighted else torch.ones(R.n_cols, dtype=torch.float64)
    J = 0.5 * ((x - pred) ** 2).sum()
    J = J + 0.5 * reg_u * (wr[:, None] * (U - u0) ** 2).sum()
    J = J + 0.5 * reg_v * (wc[:, None] * (V - v0) ** 2).sum()
    if b is not None:
        J = J + 0.5 * reg_b_rows * (wr * b**2).sum() + 0.5 * reg_b_cols * (wc * c**2).sum()
    return J


def _naive_als(
    R: Ratings,
    rank: int,
    reg_u: float,
    reg_v: float,
    epochs: int,
    biases: bool,
    init_scale: float,
    seed: int,
):
    """Reference ALS: an explicit Python loop over rows and columns, float64."""
    gen = torch.Generator().manual_seed(seed)
    U = init_scale * torch.randn(R.n_rows, rank, generator=gen, dtype=torch.float64)
    V = init_scale * torch.randn(R.n_cols, rank, generator=gen, dtype=torch.float64)
    b = torch.zeros(R.n_rows, dtype=torch.float64)
    c = torch.zeros(R.n_cols, dtype=torch.float64)
    x = R.values.double()
    mu = float(x.mean()) if biases else 0.0
    rows, cols = R.rows.tolist(), R.cols.tolist()
    for _ in range(epochs):
        for n in range(R.n_rows):
            A = torch.zeros(rank + biases, rank + biases, dtype=torch.float64)
            y = torch.zeros(rank + biases, dtype=torch.float64)
            for k, (r, m) in enumerate(zip(rows, cols, strict=True)):
                if r != n:
                    continue
                f = torch.cat([V[m], torch.ones(1, dtype=torch.float64)]) if biases else V[m]
                A += torch.outer(f, f)
                y += (x[k] - mu - (c[m] if biases else 0.0)) * f
            A += reg_u * torch.eye(rank + biases, dtype=torch.float64)
            sol = torch.linalg.solve(A, y)
            U[n] = sol[:rank]
            if biases:
                b[n] = sol[rank]
        for m in range(R.n_cols):
            A = torch.zeros(rank + biases, rank + biases, dtype=torch.float64)
            y = torch.zeros(rank + biases, dtype=torch.float64)
            for k, (r, mm) in enumerate(zip(rows, cols, strict=True)):
                if mm != m:
                    continue
                f = torch.cat([U[r], torch.ones(1, dtype=torch.float64)]) if biases else U[r]
                A += torch.outer(f, f)
                y += (x[k] - mu - (b[r] if biases else 0.0)) * f
            A += reg_v * torch.eye(rank + biases, dtype=torch.float64)
            sol = torch.linalg.solve(A, y)
            V[m] = sol[:rank]
            if biases:
                c[m] = sol[rank]
        if biases:
            mu = float((x - (U[R.rows] * V[R.cols]).sum(-1) - b[R.rows] - c[R.cols]).mean())
    return U, V, b, c, mu


# ----------------------------------------------------------------- accuracy


def test_reaches_noise_floor_on_synthetic_low_rank():
    noise = 0.5
    R, truth = synthetic_ratings(300, 200, rank=5, density=0.5, noise=noise, seed=0)
    train, test = random_split(R, 0.1, seed=0)
    # prior precision relative to unit noise: noise^2 / Var(U_ik) = 0.25 * sqrt(5)
    fit = als(train, rank=5, reg_u=0.5, reg_v=0.5, epochs=100, biases=False)
    pred = fit.predict(test)
    assert rmse(test.values, pred) < 1.1 * noise
    # against the noise-free truth the error is well below the noise level
    assert rmse(truth.expected(test.rows, test.cols), pred) < 0.45 * noise
    assert fit.converged


def test_biases_recover_offsets_on_synthetic():
    noise = 0.5
    R, truth = synthetic_ratings(
        300, 200, rank=3, density=0.3, noise=noise, seed=1, biases=True, mean=3.0
    )
    train, test = random_split(R, 0.1, seed=0)
    fit = als(train, rank=3, reg_u=0.5, reg_v=0.5, epochs=100, biases=True)
    pred = fit.predict(test)
    assert rmse(truth.expected(test.rows, test.cols), pred) < 0.45 * noise
    assert abs(fit.mean - 3.0) < 0.2
    assert torch.corrcoef(torch.stack([fit.row_bias, truth.row_bias]))[0, 1] > 0.9


# --------------------------------------------------------- exact MAP checks


@pytest.mark.parametrize("biases", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_solution_satisfies_normal_equations(biases: bool, weighted: bool):
    R = _tiny(12, 9)
    reg_u, reg_v, reg_b = 0.7, 1.3, 0.4
    gen = torch.Generator().manual_seed(5)
    u0 = torch.randn(R.n_rows, 3, generator=gen, dtype=torch.float64)
    v0 = 0.5
    fit = als(
        R,
        rank=3,
        reg_u=reg_u,
        reg_v=reg_v,
        reg_bias=reg_b,
        epochs=5000,
        tol=1e-15,
        biases=biases,
        prior_mean_u=u0,
        prior_mean_v=v0,
        weighted_reg=weighted,
        dtype=torch.float64,
    )
    assert fit.U.dtype == torch.float64
    params = [fit.U.clone().requires_grad_(), fit.V.clone().requires_grad_()]
    if biases:
        params += [
            fit.row_bias.clone().requires_grad_(),
            fit.col_bias.clone().requires_grad_(),
            torch.tensor(fit.mean, dtype=torch.float64, requires_grad=True),
        ]
        U, V, b, c, mu = params
    else:
        (U, V), b, c, mu = params, None, None, 0.0
    J = _objective(R, U, V, b, c, mu, reg_u, reg_v, reg_b, reg_b, u0, v0, weighted)
    grads = torch.autograd.grad(J, params)
    for g, p in zip(grads, params, strict=True):
        # the gradient vanishes (its terms are O(1): 1e-6 is ~ sqrt(tol) of the stopping rule)
        assert float(g.abs().max()) < 1e-6 * max(1.0, float(p.detach().abs().max()))
    # and the reported objective is the same J
    assert fit.history[-1] == pytest.approx(float(J.detach()), rel=1e-10)


def test_empty_rows_and_columns_get_their_prior_mean():
    # row 3 and column 4 have no ratings
    R = Ratings(
        [0, 0, 1, 2, 2, 1], [0, 1, 2, 3, 0, 1], [4.0, 3.0, 5.0, 2.0, 1.0, 4.0], shape=(4, 5)
    )
    u0 = torch.arange(8, dtype=torch.float32).reshape(4, 2) / 10
    v0 = torch.tensor([0.3, -0.2])
    fit = als(R, rank=2, reg_u=1.0, reg_v=1.0, epochs=10, prior_mean_u=u0, prior_mean_v=v0)
    assert torch.equal(fit.U[3], u0[3])
    assert torch.equal(fit.V[4], v0)
    assert fit.row_bias[3] == 0 and fit.col_bias[4] == 0
    # with ALS-WR weighting too (a zero count must not make the system singular)
    fit = als(R, rank=2, reg_u=1.0, reg_v=1.0, epochs=10, prior_mean_u=u0, weighted_reg=True)
    assert torch.equal(fit.U[3], u0[3])
    assert torch.isfinite(fit.U).all() and torch.isfinite(fit.V).all()


def test_huge_regularisation_pins_factors_to_prior_mean():
    R = _tiny()
    u0 = torch.randn(R.n_rows, 2, generator=torch.Generator().manual_seed(1))
    v0 = torch.randn(R.n_cols, 2, generator=torch.Generator().manual_seed(2))
    fit = als(
        R,
        rank=2,
        reg_u=1e9,
        reg_v=1e9,
        epochs=5,
        prior_mean_u=u0,
        prior_mean_v=v0,
        dtype=torch.float64,
    )
    torch.testing.assert_close(fit.U, u0.double(), atol=1e-6, rtol=0)
    torch.testing.assert_close(fit.V, v0.double(), atol=1e-6, rtol=0)


def test_prior_mean_shifts_the_row_solution_as_the_map_formula_says():
    R = _tiny(10, 6)
    V = als(R, rank=2, epochs=30, biases=False, dtype=torch.float64).V
    u0 = torch.tensor([1.0, -2.0], dtype=torch.float64)
    lam = 0.8
    # init_scale=0 starts V exactly at its prior mean, so the first row update
    # is the closed form u_n = (V_n^T V_n + lam I)^-1 (V_n^T x_n + lam u0) with V fixed
    fit = als(
        R,
        rank=2,
        reg_u=lam,
        epochs=1,
        biases=False,
        prior_mean_u=u0,
        prior_mean_v=V,
        init_scale=0.0,
        dtype=torch.float64,
    )
    no_prior = als(
        R,
        rank=2,
        reg_u=lam,
        epochs=1,
        biases=False,
        prior_mean_v=V,
        init_scale=0.0,
        dtype=torch.float64,
    )
    eye = torch.eye(2, dtype=torch.float64)
    for n in range(R.n_rows):
        sel = R.rows == n
        Vn, xn = V[R.cols[sel]], R.values[sel].double()
        A = Vn.T @ Vn + lam * eye
        torch.testing.assert_close(fit.U[n], torch.linalg.solve(A, Vn.T @ xn + lam * u0))
        # the shift caused by the prior mean is lam * A^-1 u0
        torch.testing.assert_close(fit.U[n] - no_prior.U[n], torch.linalg.solve(A, lam * u0))


# ------------------------------------------------------ algorithmic checks


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("weighted", [False, True])
def test_objective_history_is_non_increasing(dtype: torch.dtype, weighted: bool):
    R, _ = synthetic_ratings(60, 40, rank=3, density=0.3, noise=0.5, seed=2, biases=True)
    fit = als(
        R, rank=4, reg_u=0.3, reg_v=0.3, epochs=40, tol=0.0, dtype=dtype, weighted_reg=weighted
    )
    h = torch.tensor(fit.history, dtype=torch.float64)
    assert len(h) == 40 and fit.n_iter == 40 and not fit.converged
    slack = 1e-12 if dtype == torch.float64 else 1e-5
    assert torch.all(h[1:] <= h[:-1] * (1 + slack)), h


@pytest.mark.parametrize("biases", [False, True])
def test_batched_equals_naive_per_row_loop(biases: bool):
    R = _tiny(6, 5)
    U, V, b, c, mu = _naive_als(
        R, rank=2, reg_u=0.5, reg_v=0.5, epochs=3, biases=biases, init_scale=0.1, seed=4
    )
    fit = als(
        R,
        rank=2,
        reg_u=0.5,
        reg_v=0.5,
        epochs=3,
        tol=0.0,
        biases=biases,
        seed=4,
        dtype=torch.float64,
    )
    torch.testing.assert_close(fit.U, U, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(fit.V, V, atol=1e-10, rtol=1e-10)
    assert fit.mean == pytest.approx(mu, abs=1e-10)
    if biases:
        torch.testing.assert_close(fit.row_bias, b, atol=1e-10, rtol=1e-10)
        torch.testing.assert_close(fit.col_bias, c, atol=1e-10, rtol=1e-10)


def test_chunking_gives_identical_results():
    R, _ = synthetic_ratings(50, 30, rank=3, density=0.3, noise=0.5, seed=6)
    ref = als(R, rank=3, epochs=5, tol=0.0, chunk_size=len(R))
    for chunk in (1, 7, 100, None):
        fit = als(R, rank=3, epochs=5, tol=0.0, chunk_size=chunk)
        torch.testing.assert_close(fit.U, ref.U, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(fit.V, ref.V, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(fit.row_bias, ref.row_bias, atol=1e-6, rtol=1e-6)
        assert fit.history == pytest.approx(ref.history, rel=1e-6)


def test_deterministic_and_seed_dependent():
    R, _ = synthetic_ratings(40, 30, rank=3, density=0.3, noise=0.5, seed=7)
    a = als(R, rank=3, epochs=3, seed=1)
    b = als(R, rank=3, epochs=3, seed=1)
    c = als(R, rank=3, epochs=3, seed=2)
    assert torch.equal(a.U, b.U) and torch.equal(a.V, b.V)
    assert not torch.equal(a.U, c.U)


def test_logging_and_progress(caplog: pytest.LogCaptureFixture):
    R = _tiny()
    with caplog.at_level(logging.DEBUG, logger="bayesmf.inference.als"):
        fit = als(R, rank=2, epochs=3, tol=0.0, progress=True)
    assert sum("als iter" in r.getMessage() for r in caplog.records) == 3
    assert fit.n_iter == 3


# ------------------------------------------------------------ MAPFactors API


def test_mapfactors_api():
    R = _tiny()
    fit = als(R, rank=2, epochs=5, device="cpu")
    assert isinstance(fit, MAPFactors)
    U, V = fit
    assert U is fit.U and V is fit.V
    assert fit.rank == 2 and (fit.n_rows, fit.n_cols) == R.shape
    p1 = fit.predict(R)
    p2 = fit.predict(R.rows, R.cols)
    p3 = fit.predict(R.rows.tolist(), R.cols.numpy())
    assert torch.equal(p1, p2) and torch.equal(p1, p3)
    manual = (U[R.rows] * V[R.cols]).sum(-1) + fit.row_bias[R.rows] + fit.col_bias[R.cols]
    torch.testing.assert_close(p1, manual + fit.mean)
    clamped = fit.predict(R, clamp=(2.5, 3.5))
    assert clamped.min() >= 2.5 and clamped.max() <= 3.5
    moved = fit.to("cpu", dtype=torch.float64)
    assert moved.U.dtype == torch.float64 and moved.history == fit.history
    assert "MAPFactors" in repr(fit)
    with pytest.raises(ValueError):
        fit.predict(R.rows)
    with pytest.raises(ValueError):
        fit.predict(torch.tensor([R.n_rows]), torch.tensor([0]))
    with pytest.raises(ValueError):
        fit.predict(R, R.cols)
    # clamp=True means "to the scale when one is known", as for every fit
    assert torch.equal(fit.predict(R, clamp=True), fit.predict(R))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"rank": 0},
        {"rank": 2.5},
        {"reg_u": 0.0},
        {"reg_v": -1.0},
        {"reg_bias": 0.0},
        {"epochs": 0},
        {"tol": -1.0},
        {"init_scale": -0.1},
        {"prior_mean_u": torch.zeros(3, 3)},
        {"prior_mean_v": torch.zeros(99, 2)},
        {"chunk_size": 0},
    ],
)
def test_invalid_arguments_raise(kwargs: dict):
    R = _tiny()
    args = {"rank": 2, **kwargs}
    with pytest.raises(ValueError):
        als(R, **args)


def test_not_ratings_raises():
    with pytest.raises(ValueError):
        als(torch.ones(3, 3), rank=2)  # type: ignore[arg-type]


# --------------------------------------------------------------- real data


@pytest.mark.slow
def test_movielens_100k_rmse(data_dir):
    from bayesmf.data import load_movielens

    R = load_movielens("100k", root=data_dir).to_ratings()
    train, test = random_split(R, 0.1, seed=0)
    fit = als(train, rank=10, reg_u=10.0, reg_v=10.0, epochs=20)
    score = rmse(test.values, fit.predict(test, clamp=True))
    assert score <= 0.95, score  # about 0.892 (0.90 after 20 sweeps)


def test_reg_is_shorthand_for_equal_row_and_column_regularisation():
    R, _ = synthetic_ratings(n_rows=40, n_cols=30, rank=2, density=0.5, seed=3)
    short = als(R, rank=2, reg=2.5, epochs=10)
    long = als(R, rank=2, reg_u=2.5, reg_v=2.5, epochs=10)
    other = als(R, rank=2, epochs=10)
    assert torch.equal(short.U, long.U) and torch.equal(short.V, long.V)
    assert not torch.allclose(short.U, other.U)
    with pytest.raises(ValueError, match="reg"):
        als(R, rank=2, reg=0.0)
