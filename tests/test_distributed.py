"""Data-parallel fits on torch.distributed: 2 gloo processes equal 1 process.

Two processes are started once for the module (``torch.multiprocessing``, forked where the
platform allows so that they need not import torch and Pyro again; a gloo group on a file
store in a temporary folder; one thread each); each fits SVI (full batch and minibatches) and
ALS on its shard of the same small data and writes what it got; the tests compare that with
single-process fits made in this process first.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from pathlib import Path
from typing import Any

import pyro
import pytest
import torch
import torch.distributed as dist
from pyro.infer import TraceMeanField_ELBO

from bayesmf import data, models
from bayesmf.inference import als, distributed, fit_svi
from bayesmf.inference.guides import MeanFieldGuide
from bayesmf.inference.objectives import local_elbo_terms
from bayesmf.inference.svi import annealed_loss

WORLD = 2
# (the mean-field guide: a single process would otherwise integrate the users out)
SVI = dict(epochs=12, batch_size=None, lr=0.05, seed=3, progress=False, collapse_rows=False)
MINI = dict(epochs=3, batch_size=100, lr=0.05, seed=1, progress=False, collapse_rows=False)
ALS = dict(rank=3, reg=2.0, epochs=8, tol=0.0, seed=2, dtype=torch.float64)


def _data() -> data.Ratings:
    R, _ = data.synthetic_ratings(n_rows=30, n_cols=25, rank=2, density=0.4, noise=0.3,
                                  biases=True, seed=0)
    return R


def _model(R: data.Ratings) -> models.BayesianMF:
    return models.BayesianMF(*R.shape, rank=2)


def _worker(rank: int, world: int, store: str, out: str) -> None:
    """One process: join the gloo group, fit on its shard, write the results."""
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                            world_size=world)
    try:
        R = _data()
        full = fit_svi(_model(R), R, **SVI)
        rowcov = fit_svi(_model(R), R, **SVI, row_covariance=True)
        mini = fit_svi(_model(R), R, **MINI, checkpoint=Path(out) / f"ckpt{rank}.bmf")
        ck = Path(out) / "resume.bmf"  # killed after one epoch, then resumed
        fit_svi(_model(R), R, **MINI, checkpoint=ck, stop_after=1)
        resumed = fit_svi(_model(R), R, **MINI, checkpoint=ck)
        factors = als(R, **ALS)
        torch.save({
            "rank": distributed.rank(), "world": distributed.world_size(),
            "shard": len(distributed.shard(R)),
            "svi": full.guide.state_dict(), "svi_elbo": full.history["elbo"],
            "rowcov": rowcov.guide.state_dict(),
            "mini": mini.guide.state_dict(), "mini_elbo": mini.history["elbo"],
            "mini_settings": mini.settings, "resumed": resumed.guide.state_dict(),
            "U": factors.U, "V": factors.V, "b": factors.row_bias, "c": factors.col_bias,
            "mean": factors.mean, "als_history": factors.history,
        }, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def singles() -> dict[str, Any]:
    """The single-process fits (made before the processes start, which then inherit the
    imports they triggered)."""
    R = _data()
    return {"svi": fit_svi(_model(R), R, **SVI), "mini": fit_svi(_model(R), R, **MINI),
            "rowcov": fit_svi(_model(R), R, **SVI, row_covariance=True),
            "als": als(R, **ALS)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, singles: dict[str, Any]
         ) -> list[dict[str, Any]]:
    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with the gloo backend is not available in this torch")
    out = tmp_path_factory.mktemp("dist")
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the started processes
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    try:
        torch.multiprocessing.start_processes(
            _worker, args=(WORLD, str(out / "store"), str(out)), nprocs=WORLD, join=True,
            start_method=method)
    finally:
        if old is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old
    results = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for r, res in enumerate(results):
        res["ckpt_exists"] = (out / f"ckpt{r}.bmf").exists()
    return results


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> float:
    assert a.keys() == b.keys()
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst <= atol, f"largest difference {worst:.3g} > {atol}"
    return worst


def test_processes_hold_disjoint_shards(runs: list[dict[str, Any]]) -> None:
    R = _data()
    assert [r["rank"] for r in runs] == [0, 1] and all(r["world"] == WORLD for r in runs)
    assert sum(r["shard"] for r in runs) == len(R)
    assert all(r["shard"] < len(R) for r in runs)


def test_full_batch_svi_equals_single_process(runs: list[dict[str, Any]],
                                              singles: dict[str, Any]) -> None:
    R = _data()
    single = singles["svi"]
    ref = single.guide.state_dict()
    moved = max(float((ref[k] - MeanFieldGuide(_model(R), seed=3).state_dict()[k])
                      .abs().max()) for k in ref)
    assert moved > 0.1  # the fit did move the parameters: the comparison below means something
    for r in runs:
        _close(r["svi"], ref, atol=1e-5)  # float32 rounding: about 2e-7
        # the averaged loss is the full negative ELBO: the histories agree too
        assert r["svi_elbo"] == pytest.approx(single.history["elbo"], rel=1e-4)
        # each row's full covariance too (the O(batch) objective has its KL in closed form)
        _close(r["rowcov"], singles["rowcov"].guide.state_dict(), atol=1e-5)


def test_minibatch_svi_agrees_across_processes(runs: list[dict[str, Any]],
                                               singles: dict[str, Any]) -> None:
    """Same steps on every process, one checkpoint (rank 0's), a finite ELBO near the
    single-process one."""
    a, b = runs
    _close(a["mini"], b["mini"], atol=0.0)
    assert a["mini_elbo"] == b["mini_elbo"] and all(math.isfinite(x) for x in a["mini_elbo"])
    assert a["mini_settings"]["world_size"] == WORLD
    assert a["ckpt_exists"] and not b["ckpt_exists"]
    for r in runs:  # a killed and resumed run (checkpoint broadcast from rank 0) is exact
        _close(r["resumed"], r["mini"], atol=0.0)
    single = singles["mini"]
    assert a["mini_elbo"][-1] == pytest.approx(single.history["elbo"][-1], abs=0.5)


def test_als_equals_single_process(runs: list[dict[str, Any]], singles: dict[str, Any]
                                   ) -> None:
    single = singles["als"]
    for r in runs:
        for name, ref in (("U", single.U), ("V", single.V), ("b", single.row_bias),
                          ("c", single.col_bias)):
            assert torch.allclose(r[name], ref, atol=1e-9), name
        assert r["mean"] == pytest.approx(single.mean, abs=1e-12)
        assert r["als_history"] == pytest.approx(single.history, rel=1e-12)


def test_shard_losses_average_to_the_full_negative_elbo() -> None:
    """The scaling itself, without processes: with the same draws, the average over shards of
    ``world * (shard likelihood) + KL`` is the full-data loss."""
    R = _data()
    model = _model(R)
    model.setup(R)
    guide = MeanFieldGuide(model, seed=0)
    elbo = TraceMeanField_ELBO(max_plate_nesting=1)

    def loss(d: data.Ratings, scale: float) -> float:
        pyro.set_rng_seed(7)  # the same draws of z for every call
        with torch.no_grad():
            return float(annealed_loss(elbo, model, guide, d, None, 1.0, scale))

    full = loss(R, 1.0)
    for parts in (2, 3):
        for strided in (True, False):
            avg = sum(loss(distributed.shard(R, part=p, parts=parts, strided=strided), parts)
                      for p in range(parts)) / parts
            assert avg == pytest.approx(full, rel=1e-5)
    # a likelihood scale that ignores the shard (1 instead of 2) is biased
    half = sum(loss(distributed.shard(R, part=p, parts=2), 1.0) for p in range(2)) / 2
    assert abs(half - full) > 0.1 * abs(full)


def test_shard_local_elbos_average_to_the_full_negative_elbo() -> None:
    """What a data-parallel fit_svi step computes: each process's O(batch) estimate from its
    shard, likelihood counted ``world`` times. With the same draws, averaged over the
    processes and over equal minibatches of each shard it is the full data's negative ELBO
    exactly; the KL taken from each shard as if it were all of the data is what makes it so
    (a likelihood scale of 1 is biased)."""
    R = _data()
    model = _model(R)
    model.setup(R)
    guide = MeanFieldGuide(model, seed=0)
    gen = torch.Generator().manual_seed(7)
    eps = {s.name: torch.randn((1, *s.shape), generator=gen) for s in guide.specs}

    def loss(d: data.Ratings, index: torch.Tensor | None, scale: float) -> float:
        with torch.no_grad():
            return float(local_elbo_terms(model, guide, d, index, eps=eps, whole_rows=10,
                                          likelihood_scale=scale).loss())

    full = loss(R, None, 1.0)
    for parts in (2, 3):
        shards = [distributed.shard(R, part=p, parts=parts) for p in range(parts)]
        avg = sum(loss(d, None, parts) for d in shards) / parts
        assert avg == pytest.approx(full, rel=1e-5)
        # minibatches: each shard in two equal halves (rows gathered: whole_rows=10)
        assert all(len(d) % 2 == 0 for d in shards)  # (300 ratings)
        halves = [(d, i) for d in shards for i in torch.arange(len(d)).tensor_split(2)]
        avg = sum(loss(d, i, parts) for d, i in halves) / len(halves)
        assert avg == pytest.approx(full, rel=1e-5)
    half = sum(loss(distributed.shard(R, part=p, parts=2), None, 1.0) for p in range(2)) / 2
    assert abs(half - full) > 0.1 * abs(full)


def test_helpers_without_a_process_group() -> None:
    assert not distributed.is_distributed()
    assert (distributed.rank(), distributed.world_size()) == (0, 1)
    R = _data()
    assert distributed.shard(R) is R
    t = torch.arange(3.0)
    assert distributed.all_reduce_(t) is t and t.tolist() == [0.0, 1.0, 2.0]
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 3.0)
    assert distributed.all_reduce_grads([p], torch.tensor(1.5)) == 1.5
    assert p.grad.tolist() == [3.0, 3.0]
    idx = [distributed.shard_index(10, part=k, parts=3, strided=s) for k in range(3)
           for s in (True,)]
    assert sorted(torch.cat(idx).tolist()) == list(range(10))
    blocks = [distributed.shard_index(10, part=k, parts=3, strided=False) for k in range(3)]
    assert torch.cat(blocks).tolist() == list(range(10))
    assert [len(b) for b in blocks] == [4, 3, 3]
    with pytest.raises(ValueError, match="processes"):
        distributed.shard(R.subset([0]), part=0, parts=2)
    with pytest.raises(ValueError, match="part"):
        distributed.shard_index(5, part=2, parts=2)
