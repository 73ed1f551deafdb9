"""The O(batch) ELBO of :mod:`bayesmf.inference.objectives` against Pyro's full-array one."""

from __future__ import annotations

import numpy as np
import pyro
import pytest
import torch
from _ratings import distinct_ratings, even_ratings, partition_terms
from pyro.infer import TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger

from bayesmf import data, models
from bayesmf.data import Ratings
from bayesmf.inference.guides import MeanFieldGuide, gather_rows
from bayesmf.inference.loop import LazyAdam, train
from bayesmf.inference.objectives import (
    data_counts,
    local_axis,
    local_elbo_loss,
    local_elbo_terms,
)


def _ratings(n_rows: int, n_cols: int, n: int, seed: int, empty_rows: int = 0) -> Ratings:
    """``n`` distinct random entries; the last ``empty_rows`` rows get none."""
    return distinct_ratings(n_rows, n_cols, n, seed, empty_rows)


def _models(n_rows: int, n_cols: int) -> list[models.GaussianFactorModel]:
    torch.manual_seed(0)
    return [
        models.BayesianMF(n_rows, n_cols, rank=3),
        models.BayesianMF(n_rows, n_cols, rank=3, ard=True, factor_means=True),
        models.BayesianNNMF(
            n_rows,
            n_cols,
            rank=2,
            bilinear_dims=3,
            hidden=(4,),
            item_features=torch.randn(n_cols, 2),
            user_features=torch.randn(n_rows, 3),
        ),
    ]


MODEL_IDS = ["BayesianMF", "BayesianMF-ARD-means", "BayesianNNMF+S"]


def _eps(guide: MeanFieldGuide, particles: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {s.name: torch.randn((particles, *s.shape), generator=gen) for s in guide.specs}


def _draws(guide: MeanFieldGuide, eps: dict[str, torch.Tensor], k: int = 0):
    out = {}
    for s in guide.specs:
        loc, scale = guide.loc_scale(s.name)
        x = loc + scale * eps[s.name][k]
        out[s.name] = x.exp() if s.positive else x
    return out


class _SetValues(Messenger):
    """Give guide sites fixed values (still unobserved, unlike ``poutine.condition``)."""

    def __init__(self, values: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.values = values

    def _pyro_sample(self, msg: dict) -> None:
        if msg["name"] in self.values:
            msg["value"] = self.values[msg["name"]]


def _pyro_loss(model, guide, data, draws, kl_weight=1.0, index=None) -> torch.Tensor:
    """``TraceMeanField_ELBO`` (whole arrays, analytic KL) at the given draws of z."""

    def fixed_guide(*args):
        with _SetValues(draws), pyro.poutine.scale(scale=kl_weight):
            return guide(*args)

    return TraceMeanField_ELBO().differentiable_loss(model.model, fixed_guide, data, index)


def _setup(model, data, seed=0):
    model.setup(data)
    guide = MeanFieldGuide(model, seed=seed)
    with torch.no_grad():  # move the variational parameters away from their init
        gen = torch.Generator().manual_seed(seed + 1)
        for p in guide.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=gen))
    return guide


def test_local_sites_are_the_row_and_column_arrays():
    nnmf = models.BayesianNNMF(5, 4, rank=2, bilinear_dims=3, hidden=(4,))
    axes = {s.name: local_axis(s) for s in nnmf.latent_specs()}
    assert {k for k, v in axes.items() if v == "user"} == {"U", "U_prime"}
    assert {k for k, v in axes.items() if v == "item"} == {"V", "V_prime"}
    assert axes["W0"] is None and axes["b0"] is None and axes["scale_U"] is None
    bmf = models.BayesianMF(5, 4, rank=2, ard=True, factor_means=True)
    axes = {s.name: local_axis(s) for s in bmf.latent_specs()}
    assert {k for k, v in axes.items() if v} == {"U", "V", "row_bias", "col_bias"}
    assert axes["mean_U"] is None and axes["scale_U"] is None


@pytest.mark.parametrize("k", range(3), ids=MODEL_IDS)
@pytest.mark.parametrize("kl_weight", [1.0, 0.3])
def test_full_batch_equals_pyro_trace_mean_field_elbo(k, kl_weight):
    """Same draws: the full-batch value is Pyro's full-array negative ELBO exactly, also
    with rows without any rating (their KL still counts)."""
    R = _ratings(12, 9, 50, seed=k, empty_rows=2)
    model = _models(12, 9)[k]
    guide = _setup(model, R)
    eps = _eps(guide)
    ours = local_elbo_terms(model, guide, R, None, 1, eps).loss(kl_weight)
    ref = _pyro_loss(model, guide, R, _draws(guide, eps), kl_weight)
    assert torch.allclose(ours, ref, rtol=1e-5, atol=1e-3), (float(ours), float(ref))
    # index = all positions (shuffled) is the same estimate
    perm = torch.randperm(len(R), generator=torch.Generator().manual_seed(0))
    again = local_elbo_terms(model, guide, R, perm, 1, eps).loss(kl_weight)
    assert torch.allclose(again, ours, rtol=1e-5, atol=1e-3)


@pytest.mark.parametrize("k", range(3), ids=MODEL_IDS)
def test_minibatch_likelihood_uses_the_right_rows_and_features(k):
    """The gathered arrays and remapped indices give the full arrays' mean function."""
    R = _ratings(15, 11, 70, seed=3)
    model = _models(15, 11)[k]
    guide = _setup(model, R)
    eps = _eps(guide, particles=2)
    idx = torch.tensor([5, 3, 40, 41, 0, len(R) - 1, 12])
    terms = local_elbo_terms(model, guide, R, idx, 2, eps)
    full = {
        name: torch.stack([_draws(guide, eps, j)[name] for j in range(2)])
        for name in eps
    }
    ll = model.log_likelihood(full, R.rows[idx], R.cols[idx], R.values[idx])
    expected = ll.sum(-1).mean(0) * len(R) / len(idx)
    assert torch.allclose(terms.loglik, expected, rtol=1e-5)


@pytest.mark.parametrize("k", range(3), ids=MODEL_IDS)
def test_minibatch_estimate_is_unbiased_over_a_partition(k):
    """With the same draws of z, the mean of the minibatch estimates over the batches of
    any partition into equal parts is the full-batch value (likelihood and local KL)."""
    R = even_ratings(20, 13, 120, seed=5, parts=8, empty_rows=1)
    model = _models(20, 13)[k]
    guide = _setup(model, R)
    full, parts = partition_terms(model, guide, R, _eps(guide, particles=2), 2, parts=8)
    for field in ("loglik", "kl_global", "kl_local"):
        values = torch.stack([getattr(t, field) for t in parts])
        assert torch.allclose(values.mean(), getattr(full, field), rtol=1e-4), field
    # the estimates do vary from batch to batch (the test is not vacuous)
    assert torch.stack([t.kl_local for t in parts]).std() > 1e-3 * full.kl_local.abs()


def test_random_minibatches_average_to_the_full_batch_value():
    """Uniformly random batches (fresh each time, fixed z): unbiased within MC error."""
    R = _ratings(25, 16, 150, seed=7)
    model = models.BayesianMF(25, 16, rank=3)
    guide = _setup(model, R)
    eps = _eps(guide)
    with torch.no_grad():
        full = float(local_elbo_terms(model, guide, R, None, 1, eps).loss())
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        vals = torch.stack([
            local_elbo_terms(model, guide, R, torch.randperm(len(R), generator=gen)[:17], 1,
                             eps).loss()
            for _ in range(300)
        ])
    se = float(vals.std()) / len(vals) ** 0.5
    assert abs(float(vals.mean()) - full) < 4 * se


def test_loss_without_eps_matches_pyro_in_expectation():
    """Fresh draws (the fitting path): same mean as Pyro's estimator within MC error."""
    R = _ratings(10, 8, 40, seed=11)
    model = models.BayesianMF(10, 8, rank=2)
    guide = _setup(model, R)
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    elbo = TraceMeanField_ELBO()
    with torch.no_grad():
        ours = torch.stack([local_elbo_loss(model, guide, R, None) for _ in range(100)])
        ref = torch.stack(
            [elbo.differentiable_loss(model.model, guide, R, None) for _ in range(100)]
        )
    se = float((ours.var() / len(ours) + ref.var() / len(ref)).sqrt())
    assert abs(float(ours.mean() - ref.mean())) < 4 * se
    assert 0.5 < float(ours.std() / ref.std()) < 2


@pytest.mark.parametrize("k", range(3), ids=MODEL_IDS)
def test_gradients_reach_only_the_batch_rows_and_the_globals(k):
    R = _ratings(30, 20, 120, seed=2, empty_rows=1)
    model = _models(30, 20)[k]
    guide = _setup(model, R)
    idx = torch.tensor([0, 7, 33, 90])
    local_elbo_loss(model, guide, R, idx).backward()
    empty_row = 29
    touched = {
        "user": set(R.rows[idx].tolist()) | {empty_row},  # empty rows: KL every step
        "item": set(R.cols[idx].tolist()),
    }
    for spec in guide.specs:
        axis = local_axis(spec)
        for params in (guide.locs, guide.raw_scales):
            g = params[spec.name].grad
            assert g is not None and torch.isfinite(g).all()
            if axis is None:
                assert g.abs().sum() > 0, spec.name
                continue
            nonzero = set(torch.nonzero(g.reshape(len(g), -1).abs().sum(1)).flatten().tolist())
            assert nonzero == touched[axis], spec.name


def test_counts_are_cached_per_data_object():
    R = _ratings(6, 5, 15, seed=0, empty_rows=1)
    c = data_counts(R, "user")
    assert data_counts(R, "user") is c
    assert c.total.tolist() == np.bincount(R.rows.numpy(), minlength=6).tolist()
    assert c.empty.tolist() == [5] and data_counts(R, "item").empty.numel() == 0
    other = Ratings(R.rows[:-1], R.cols[:-1], R.values[:-1], shape=R.shape)
    assert int(data_counts(other, "user").total.sum()) == len(R) - 1
    with pytest.raises(ValueError, match="square"):
        data_counts(R, "node")


class _NodeModel(models.GaussianFactorModel):
    """A square model whose arrays are indexed by both ends of a pair (as a network's)."""

    def __init__(self, n: int, rank: int = 2) -> None:
        super().__init__(n, n)
        self.rank = rank

    def config(self) -> dict:
        return {"n": self.n_rows, "rank": self.rank}

    def latent_specs(self):
        from bayesmf.models.base import LatentSpec

        n, k = self.n_rows, self.rank
        return [
            LatentSpec("noise", (), positive=True, init_loc=1.0),
            LatentSpec("scale_U", (k,), positive=True, init_loc=0.5, dims=("factor",)),
            LatentSpec("lam", (k,), dims=("factor",)),
            LatentSpec("U", (n, k), prior_scale="scale_U", dims=("node", "factor")),
            LatentSpec("b", (n,), prior_scale=0.7, dims=("node",)),
        ]

    def mean(self, z, rows, cols):
        u = z["U"].index_select(z["U"].dim() - 2, rows)
        v = z["U"].index_select(z["U"].dim() - 2, cols)
        b = z["b"]
        out = (u * v * z["lam"].unsqueeze(-2)).sum(-1) + self.global_mean
        return out + b.index_select(b.dim() - 1, rows) + b.index_select(b.dim() - 1, cols)


def test_node_arrays_of_a_network_model():
    """Arrays indexed by both ends: exact full batch against Pyro, unbiased over a
    partition, gradients only at the batch's nodes (and nodes without any pair)."""
    R0 = _ratings(14, 13, 64, seed=4, empty_rows=1)  # node 13: in no pair
    R = Ratings(R0.rows, R0.cols, R0.values, shape=(14, 14))
    model = _NodeModel(14)
    guide = _setup(model, R)
    assert {local_axis(s) for s in guide.specs} == {None, "node"}
    eps = _eps(guide, particles=2)
    full = local_elbo_terms(model, guide, R, None, 2, eps)
    for k in range(2):
        ours = local_elbo_terms(model, guide, R, None, 1, {n: e[k : k + 1] for n, e in eps.items()})
        ref = _pyro_loss(model, guide, R, _draws(guide, eps, k))
        assert torch.allclose(ours.loss(), ref, rtol=1e-5, atol=1e-3)
    n = len(R) - len(R) % 8
    R8 = Ratings(R.rows[:n], R.cols[:n], R.values[:n], shape=R.shape)
    full = local_elbo_terms(model, guide, R8, None, 2, eps)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(3))
    parts = [local_elbo_terms(model, guide, R8, idx, 2, eps) for idx in perm.chunk(8)]
    for field in ("loglik", "kl_global", "kl_local"):
        mean = torch.stack([getattr(t, field) for t in parts]).mean()
        assert torch.allclose(mean, getattr(full, field), rtol=1e-4), field
    idx = torch.tensor([1, 5])
    guide.zero_grad()
    local_elbo_loss(model, guide, R8, idx).backward()
    nodes = set(R8.rows[idx].tolist()) | set(R8.cols[idx].tolist())
    nodes |= set(data_counts(R8, "node").empty.tolist())
    g = guide.locs["U"].grad
    assert 13 in nodes
    assert set(torch.nonzero(g.abs().sum(1)).flatten().tolist()) == nodes


def test_bad_arguments():
    R = _ratings(6, 5, 15, seed=0)
    model = models.BayesianMF(6, 5, rank=2)
    guide = _setup(model, R)
    with pytest.raises(ValueError, match="kl_weight"):
        local_elbo_loss(model, guide, R, None, kl_weight=0.0)
    with pytest.raises(ValueError, match="num_particles"):
        local_elbo_loss(model, guide, R, None, num_particles=0)
    with pytest.raises(ValueError, match="empty"):
        local_elbo_loss(model, guide, R, torch.tensor([], dtype=torch.long))


# ---- sparse gradients of the local rows and the lazy Adam that steps them (O(batch) steps)


@pytest.mark.parametrize("shape", [(7,), (7, 3), (7, 2, 3)])
def test_gather_rows_gradient_is_the_sparse_form_of_index_select_s(shape):
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(shape, generator=gen)
    idx = torch.tensor([5, 1, 3, 1])  # a repeated row sums its gradients
    w = torch.randn((4, *shape[1:]), generator=gen)
    sparse, dense = torch.nn.Parameter(base.clone()), torch.nn.Parameter(base.clone())
    (gather_rows(sparse, idx) * w).sum().backward()
    (dense.index_select(0, idx) * w).sum().backward()
    assert sparse.grad.is_sparse and not dense.grad.is_sparse
    assert torch.equal(gather_rows(sparse, idx).detach(), base[idx])
    assert torch.allclose(sparse.grad.to_dense(), dense.grad)
    assert sparse.grad.coalesce().indices().tolist() == [[1, 3, 5]]


@pytest.mark.parametrize("k", range(3), ids=MODEL_IDS)
def test_sparse_guide_gives_the_dense_gradients_at_the_batch_rows(k):
    """Same draws: a guide with ``sparse_grads`` gives exactly the gradients of the dense
    one, sparse for the local arrays whose rows were gathered; and only its local arrays
    are in the sparse parameter group."""
    R = _ratings(30, 20, 120, seed=2, empty_rows=1)
    idx = torch.tensor([0, 7, 33, 90, 101, 5])  # 6 ratings: fewer than 20 items and 30 users
    grads = {}
    for sparse in (False, True):
        model = _models(30, 20)[k]
        guide = _setup(model, R)
        guide.sparse_grads = sparse
        eps = _eps(guide)
        local_elbo_terms(model, guide, R, idx, 1, eps).loss().backward()
        grads[sparse] = {n: p.grad for n, p in guide.named_parameters()}
        dense_group, sparse_group = guide.parameter_groups()
        local = {s.name for s in guide.specs if local_axis(s)}
        names = {id(p): n.split(".")[1] for n, p in guide.named_parameters()}
        assert {names[id(p)] for p in sparse_group} == (local if sparse else set())
        assert len(dense_group) + len(sparse_group) == len(list(guide.parameters()))
    for name, g in grads[True].items():
        site = name.split(".")[1]
        assert g.is_sparse == (site in local), name
        g = g.to_dense() if g.is_sparse else g
        assert torch.allclose(g, grads[False][name], rtol=1e-5, atol=1e-6), name


def _toy_problem(n_rows: int, rows_per_step: list[torch.Tensor]):
    """A (n_rows, 3) table fitted to targets by minibatches of rows (gather_rows)."""
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(n_rows, 3, generator=gen)
    table = torch.nn.Module()
    table.w = torch.nn.Parameter(torch.zeros(n_rows, 3))
    table.b = torch.nn.Parameter(torch.zeros(3))

    def step(epoch: int, s: int, sparse: bool) -> torch.Tensor:
        idx = rows_per_step[s]
        w = gather_rows(table.w, idx) if sparse else table.w.index_select(0, idx)
        loss = 50.0 * ((w + table.b - target[idx]) ** 2).sum()  # large: clipping acts
        loss.backward()
        return loss.detach()

    return table, step


def test_lazy_adam_equals_adam_when_every_row_has_a_gradient():
    """Each step touches every row: the sparse route (LazyAdam, joint clipping, both
    schedules) takes exactly the dense Adam route's steps."""
    perms = [torch.randperm(6, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    out = {}
    for sparse in (False, True):
        table, step = _toy_problem(6, perms)
        res = train(lambda e, s, f=step, sp=sparse: f(e, s, sp), {"t": table}, epochs=4,
                    steps_per_epoch=3, lr=0.1, final_lr=0.01, clip_norm=5.0,
                    sparse_params=[table.w] if sparse else None, progress=False)
        out[sparse] = (table.w.detach().clone(), table.b.detach().clone(), res.history)
    assert torch.allclose(out[True][0], out[False][0], atol=1e-6)
    assert torch.allclose(out[True][1], out[False][1], atol=1e-6)
    assert out[True][2]["lr"] == out[False][2]["lr"]
    assert out[True][2]["loss"] == pytest.approx(out[False][2]["loss"], rel=1e-5)


def test_lazy_adam_moves_only_the_touched_rows_and_keeps_their_moments():
    p = torch.nn.Parameter(torch.zeros(5, 2))
    opt = LazyAdam([p], lr=0.1, dense_fraction=1.0)  # (default: >50% of the rows: dense)
    gather_rows(p, torch.tensor([1, 3])).sum().backward()
    opt.step()
    moved = p.detach().abs().sum(1) > 0
    assert moved.tolist() == [False, True, False, True, False]
    assert torch.allclose(p.detach()[1], torch.full((2,), -0.1))  # Adam's first step: lr
    m_before = opt.state[p]["exp_avg"].clone()
    p.grad = None
    gather_rows(p, torch.tensor([4, 3])).sum().backward()  # unsorted rows: coalesced
    opt.step()
    m = opt.state[p]["exp_avg"]
    assert torch.equal(m[1], m_before[1])  # untouched: moments neither used nor decayed
    assert torch.allclose(m[3], 0.9 * m_before[3] + 0.1)
    assert p.detach()[0].abs().sum() == 0 and p.detach()[4].abs().sum() > 0
    assert opt.state[p]["step"] == 2
    with pytest.raises(ValueError, match="LazyAdam"):
        LazyAdam([p], lr=0.0)


def test_lazy_adam_catch_up_follows_dense_adam_on_intermittent_rows():
    """After a warm-up (bias corrections near 1), rows touched in a random half of the
    steps, with noisy targets: with the catch-up, the rows of the last step (all of them)
    equal dense Adam's (zero gradients in between); plain lazy Adam drifts from it."""
    gen = torch.Generator().manual_seed(0)
    steps = 500
    targets = torch.randn(steps, 8, 3, generator=gen)
    subsets = [torch.nonzero(torch.rand(8, generator=gen) < 0.5).flatten() for _ in range(40)]
    subsets = [torch.arange(8)] * (steps - 41) + subsets + [torch.arange(8)]
    params = {}
    for name in ("dense", "catch_up", "lazy"):
        p = torch.nn.Parameter(torch.zeros(8, 3))
        opt = (torch.optim.Adam([p], lr=0.01) if name == "dense"
               else LazyAdam([p], lr=0.01, catch_up=name == "catch_up", dense_fraction=1.0))
        for idx, target in zip(subsets, targets, strict=True):
            opt.zero_grad()
            rows = p.index_select(0, idx) if name == "dense" else gather_rows(p, idx)
            ((rows - target[idx]) ** 2).sum().backward()
            opt.step()
        params[name] = p.detach()
    err = {k: float((params[k] - params["dense"]).abs().max()) for k in ("catch_up", "lazy")}
    assert err["catch_up"] < 1e-3 and err["lazy"] > 10 * err["catch_up"], err


def test_sparse_params_are_refused_without_an_optimiser():
    table, step = _toy_problem(4, [torch.arange(4)])
    with pytest.raises(ValueError, match="sparse_params"):
        train(lambda e, s: step(e, s, True), {"t": table}, epochs=1, steps_per_epoch=1,
              lr=0.1, optimizer="none", sparse_params=[table.w], progress=False)


@pytest.fixture(scope="module")
def tall_ratings():
    """More users (300) than a minibatch (200): the user rows take the sparse route."""
    from bayesmf import data

    R, _ = data.synthetic_ratings(n_rows=300, n_cols=40, rank=2, density=0.25, noise=0.3,
                                  seed=1)
    return data.random_split(R, test_fraction=0.2, seed=0)


def test_fit_svi_resumes_exactly_with_lazy_adam_state(tmp_path):
    """1,000 users, minibatches of 40: each step touches under 10% of the user rows, which
    LazyAdam steps lazily (with catch-up); its state is checkpointed and resumed exactly."""
    from bayesmf import data, inference

    train_r, _ = data.synthetic_ratings(n_rows=1000, n_cols=8, rank=2, density=0.25, seed=2)
    opts = {"epochs": 3, "batch_size": 40, "lr": 0.05, "progress": False, "seed": 3,
            "collapse_rows": False, "min_ratings_per_row": 0}  # the batch as given

    def fit(**kw):
        model = models.BayesianMF(train_r.n_rows, train_r.n_cols, rank=2)
        return inference.fit_svi(model, train_r, **opts, **kw)

    straight = fit()
    assert straight.settings["local_optimizer"] == "lazy_adam (axes longer than a batch)"
    assert straight.settings["batch_size"] == 40  # the users (1,000) take the sparse route
    ckpt = tmp_path / "svi.ckpt"
    first = fit(checkpoint=ckpt, checkpoint_every=1, stop_after=2)
    assert not first.settings["finished"]
    resumed = fit(checkpoint=ckpt, checkpoint_every=1)
    assert resumed.settings["finished"] and resumed.settings["epochs_run"] == 3
    for k, v in straight.guide.state_dict().items():
        assert torch.equal(v, resumed.guide.state_dict()[k]), k
    assert straight.history["elbo"] == resumed.history["elbo"]
    assert not straight.guide.sparse_grads  # a returned guide is dense again


def test_fit_svi_with_sparse_rows_recovers_the_ratings(tall_ratings):
    """Minibatches of 250 among 300 users (sparse route): held-out RMSE near the noise
    (0.3; 0.39 here, as the dense route's) and far below predicting the mean (0.89)."""
    from bayesmf import inference

    train_r, test_r = tall_ratings
    model = models.BayesianMF(train_r.n_rows, train_r.n_cols, rank=2)
    fit = inference.fit_svi(model, train_r, epochs=60, batch_size=250, lr=0.1,
                            final_lr=0.01, progress=False, seed=0, collapse_rows=False,
                            min_ratings_per_row=0)  # the batch as given: sparse rows
    rmse = float(((fit.predict(test_r) - test_r.values) ** 2).mean().sqrt())
    baseline = float(test_r.values.std())
    assert rmse < 0.5 * baseline and rmse < 0.45, (rmse, baseline)


def test_whole_sparse_step_touches_only_the_batch_rows():
    """Forward, backward and optimiser step at N = M = 20,000, batch 1,000: on the sparse
    route (gathered rows, LazyAdam) only the rows the batch drew (and rows without any
    rating, whose KL enters every step) change, so a step's work does not grow with the
    matrix (the time itself is measured in benchmarks/scaling.py, not here)."""
    n_rows = n_cols = 20_000
    gen = torch.Generator().manual_seed(0)
    flat = torch.randint(n_rows * n_cols, (200_000,), generator=gen).unique()
    R = Ratings(flat // n_cols, flat % n_cols, torch.rand(len(flat), generator=gen) * 4 + 1,
                shape=(n_rows, n_cols))
    idx = torch.randperm(len(R), generator=gen)[:1000]
    model = models.BayesianMF(n_rows, n_cols, rank=4)
    model.setup(R)
    guide = MeanFieldGuide(model, sparse_grads=True)
    dense_group, sparse_group = guide.parameter_groups()
    assert sparse_group, "the user/item arrays must be on the sparse route"
    opts = [torch.optim.Adam(dense_group, lr=0.01), LazyAdam(sparse_group, lr=0.01)]
    before = guide.locs["U"].detach().clone()
    for o in opts:
        o.zero_grad(set_to_none=True)
    local_elbo_loss(model, guide, R, idx).backward()
    assert guide.locs["U"].grad.is_sparse
    for o in opts:
        o.step()
    changed = (guide.locs["U"].detach() != before).any(-1)
    allowed = torch.zeros(n_rows, dtype=torch.bool)
    allowed[R.rows[idx]] = True
    allowed[R.row_counts() == 0] = True
    assert changed.any() and not bool((changed & ~allowed).any())
    assert int(changed.sum()) <= int(allowed.sum()) < n_rows // 4


def test_whole_rows_fixes_which_arrays_get_dense_gradients():
    """With ``whole_rows`` an axis no longer than it is drawn whole at every step, also on a
    short last batch, so its gradient is always dense and ``parameter_groups`` (same value)
    puts it with the dense parameters; without it a short batch would gather it (sparse)."""
    R, _ = data.synthetic_ratings(n_rows=30, n_cols=200, rank=2, density=0.3, seed=0)
    m = models.BayesianMF(30, 200, rank=2)
    m.setup(R)
    guide = MeanFieldGuide(m, sparse_grads=True)
    short = torch.arange(5)
    local_elbo_loss(m, guide, R, short, whole_rows=50).backward()
    assert not guide.locs["U"].grad.is_sparse  # 30 users <= 50: whole
    assert guide.locs["V"].grad.is_sparse  # 200 items > 50: the batch's rows
    guide.zero_grad()
    local_elbo_loss(m, guide, R, short).backward()
    assert guide.locs["U"].grad.is_sparse  # 30 users > 5 ratings: gathered
    dense, sparse = guide.parameter_groups(whole_rows=50)
    ids = {id(p) for p in sparse}
    assert id(guide.locs["U"]) not in ids and id(guide.locs["V"]) in ids
    assert id(guide.raw_scales["V"]) in ids and len(dense) + len(sparse) == len(
        list(guide.parameters()))
