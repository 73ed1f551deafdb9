"""Data-parallel SVI under ``torchrun``: one process against two, paired and alternating.

``fit_svi`` under ``torch.distributed`` fits on each process's shard of the ratings and
averages the gradients (gloo on the CPU). This script fits Bayesian MF with the mean-field
guide (``collapse_rows=False``: a collapsed fit needs each user's ratings in one process) and
the library's defaults otherwise, once in one process and once in two (``torchrun
--nproc_per_node=2``, one thread each), the order alternating between repeats, and records
the fit's wall time, the CPU of all processes, held-out RMSE (posterior predictive mean, 50
draws), the noise's posterior mean, and the per-step split of
:func:`bayesmf.inference.distributed.time_steps` (loss and backward against the gradient
all-reduce, each timed alone). A third row starts two independent one-process fits at the
same time: how much two processes slow each other on this machine, whatever they compute.
Data: MovieLens-100K (90/10 split, seed 0) and ``scaling.py``'s synthetic ratings (2% held
out).

Run::

    .venv/bin/python benchmarks/distributed.py --sizes ml-100k --batches default 1e5 --merge
    .venv/bin/python benchmarks/distributed.py --sizes 1e6 --merge   # ~10 minutes each
    .venv/bin/python benchmarks/distributed.py --sizes 1e7 --repeats 1 --name distributed_1e7
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, default_data_dir, mean_std, write_results  # noqa: E402

SIZES = ("ml-100k", "1e6", "1e7")
#: rows by number of processes (0: two one-process fits side by side)
NAMES = {1: "1 process", 2: "2 processes", 0: "two 1-process fits at once"}


def worker(size: str, batch: int | None, steps: int, out: str) -> None:
    """One process of a run (under torchrun, or alone): fit, time the steps, rank 0 writes."""
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    if "RANK" in os.environ:
        dist.init_process_group("gloo")
    from scaling import RANK, _data

    from bayesmf import data, inference, models
    from bayesmf.diagnostics.metrics import rmse
    from bayesmf.inference import distributed

    if size == "ml-100k":
        R = data.load_movielens("100k", root=default_data_dir()).to_ratings(
            item_features=False)
        train, test = data.random_split(R, test_fraction=0.1, seed=0)
    else:
        R = _data(size)
        train, test = data.random_split(R, 0.02, seed=0)
    model = models.BayesianMF(*R.shape, rank=RANK)
    c0 = time.process_time()
    fit = inference.fit_svi(model, train, collapse_rows=False, seed=0, progress=False,
                            **({} if batch is None else {"batch_size": batch}))
    cpu = time.process_time() - c0
    timing = distributed.time_steps(fit, train, steps=steps)
    cpus = distributed.gather_objects(cpu)
    if distributed.rank() == 0:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
        Path(out).write_text(json.dumps({
            "processes": distributed.world_size(), "n_ratings": len(R),
            "batch": fit.settings["batch_size"], "epochs": fit.settings["epochs"],
            "wall_s": fit.fit_seconds, "cpu_s": sum(cpus),
            "rmse": float(rmse(test.values, fit.predict(test, num_samples=50))),
            "noise": float(fit.guide.posterior_mean()["noise"]),
            "peak_rss_mb_rank0": peak, **timing,
        }))
    if distributed.is_distributed():
        dist.destroy_process_group()


def _launch(size: str, processes: int, batch: int | None, steps: int, out: Path
            ) -> subprocess.Popen[str]:
    args = [str(Path(__file__)), "--worker", size, str(batch), str(steps), str(out)]
    launch = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={processes}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if default_data_dir():
        env["BAYESMF_DATA_DIR"] = default_data_dir()
    return subprocess.Popen(launch + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, cwd=REPO, env=env)


def run(size: str, processes: int, batch: int | None, steps: int) -> dict[str, Any]:
    """One fit with ``processes`` processes in fresh interpreters; its JSON. ``processes=0``:
    two independent one-process fits at the same time (what two processes on this machine
    slow each other by), their mean."""
    with tempfile.TemporaryDirectory() as tmp:
        outs = [Path(tmp) / f"result{k}.json" for k in range(2 if processes == 0 else 1)]
        jobs = [_launch(size, processes or 1, batch, steps, out) for out in outs]
        for job in jobs:
            _, err = job.communicate()
            if job.returncode != 0:
                raise RuntimeError(f"{size} x{processes} failed:\n{err[-2000:]}")
        rs = [json.loads(out.read_text()) for out in outs]
    return {k: (sum(r[k] for r in rs) / len(rs) if isinstance(rs[0][k], float) else rs[0][k])
            for k in rs[0]}


def summarise(runs: dict[int, list[dict[str, Any]]], tag: str = ""
              ) -> dict[str, dict[str, Any]]:
    """Mean ± std per process count, and the paired wall-time ratio (two over one)."""
    rows: dict[str, dict[str, Any]] = {}
    for procs, rs in runs.items():
        row: dict[str, Any] = {"batch": rs[0]["batch"], "epochs": rs[0]["epochs"],
                               "repeats": len(rs)}
        for key in ("wall_s", "cpu_s", "rmse", "noise", "step_ms", "allreduce_ms"):
            row[key], row[f"{key}_std"] = mean_std(r[key] for r in rs)
        row["allreduce_share"] = row["allreduce_ms"] / (row["step_ms"] + row["allreduce_ms"])
        row["floats"] = rs[0]["floats"]
        rows[NAMES[procs] + tag] = row
    for procs in (2, 0):
        ratio = [b["wall_s"] / a["wall_s"] for a, b in zip(runs[1], runs[procs], strict=True)]
        r, s = mean_std(ratio)
        rows[f"{NAMES[procs]} / 1 process (paired){tag}"] = {
            "wall_ratio": r, "wall_ratio_std": s,
            "wall_ratio_per_repeat": [round(x, 3) for x in ratio]}
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["ml-100k", "1e6"], choices=SIZES)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--steps", type=int, default=50, help="steps timed by time_steps")
    p.add_argument("--batches", nargs="+", default=["default"],
                   help="batch sizes to run ('default': fit_svi's), each at 1 and 2 processes")
    p.add_argument("--name", default="distributed")
    p.add_argument("--merge", action="store_true",
                   help="keep the other rows of an earlier results file of the same name")
    p.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        size, batch, steps, out = args.worker
        worker(size, None if batch == "None" else int(batch), int(steps), out)
        return 0
    old = REPO / "benchmarks" / "results" / f"{args.name}.json"
    results: dict[str, dict[str, Any]] = (
        json.loads(old.read_text())["results"] if args.merge and old.exists() else {})
    for size in args.sizes:
        results.setdefault(size, {})
        for b in args.batches:
            batch = None if b == "default" else int(float(b))
            runs: dict[int, list[dict[str, Any]]] = {1: [], 2: [], 0: []}
            for rep in range(args.repeats):
                for procs in ((1, 2, 0) if rep % 2 == 0 else (0, 2, 1)):  # alternating order
                    r = run(size, procs, batch, args.steps)
                    runs[procs].append(r)
                    print(f"{size:8s} {NAMES[procs]:26s} batch {r['batch']:>7d}  wall "
                          f"{r['wall_s']:6.1f} s  cpu {r['cpu_s']:6.1f} s  rmse {r['rmse']:.4f}"
                          f"  step {r['step_ms']:.2f} ms  all-reduce {r['allreduce_ms']:.2f} ms",
                          flush=True)
            results[size].update(summarise(runs, "" if batch is None else f", batch {b}"))
    settings = {
        "model": "BayesianMF(rank=10); fit_svi(model, train, collapse_rows=False, seed=0), "
                 "defaults otherwise (batch 10,000 raised to 5 ratings per row of the longest "
                 "array; 60 epochs)",
        "launch": "1 process: python; 2 processes: python -m torch.distributed.run "
                  "--standalone --nproc_per_node=2 (gloo), OMP_NUM_THREADS=1, one thread each",
        "data": "MovieLens-100K random_split(0.1, seed=0); synthetic: scaling.py's rank-10 "
                "ratings (noise 0.5), random_split(0.02, seed=0)",
        "order": "1 process, 2 processes, two 1-process fits at once on even repeats, the "
                 "reverse on odd ones",
        "side_by_side": "'two 1-process fits at once': two independent one-process fits "
                        "started together (no torch.distributed), the mean of their numbers: "
                        "how much two processes slow each other on this machine's two cores",
        "wall_s": "fit_svi's fit_seconds on rank 0 (the loop, without start-up and loading)",
        "cpu_s": "process CPU of fit_svi, summed over the processes",
        "timing": f"distributed.time_steps(fit, train, steps={args.steps}): median ms of the "
                  "loss + backward and of the gradient all-reduce, each after a barrier",
        "rmse": "held-out, posterior predictive mean of 50 draws",
        "cores": os.cpu_count(),
    }
    write_results(args.name, results, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
