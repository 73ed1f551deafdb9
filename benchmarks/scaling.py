"""How the cost of every engine grows with the number of ratings (issue 11).

For each engine (ALS iteration, SGD epoch, SVI epoch (``fit_svi``'s default for Bayesian
MF, the users integrated out, and the mean-field guide: ``collapse_rows=False``), Gibbs
sweep, and myFM's Gibbs sample as
the peer when it is installed) and each size (synthetic rank-10 ratings at 1e5, 1e6, 1e7 and
the real Jester dataset 1, 1.8 M ratings) a fresh worker process builds the data, runs the
engine for 1 and for 1 + ``units`` units of work and reports

* the time per unit, ``(t(1 + units) - t(1)) / units`` (set-up excluded), wall and CPU;
* the peak resident memory above the worker's baseline after its imports (data included);
* the minor page faults per unit (first touches of fresh memory: the allocator's share).

The growth exponent of each engine is the slope of log(time per unit) against log(ratings)
over the synthetic sizes. Results: ``benchmarks/results/scaling.{json,md,png}``.

Run::

    .venv/bin/python benchmarks/scaling.py            # 1e5, 1e6, 1e7 and Jester
    .venv/bin/python benchmarks/scaling.py --quick    # 1e5 and 1e6, one unit

myFM runs in ``.bench-venv`` (``python3 -m venv .bench-venv; .bench-venv/bin/pip install
torch==2.13.0 myfm "setuptools<81" -e .``; myFM 0.4 imports ``pkg_resources``) when that
exists; it is a benchmark extra, never a dependency.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import REPO, default_data_dir, write_results

log = logging.getLogger("benchmarks.scaling")

ENGINES = ("ALS", "SGD", "SVI", "SVI mean-field", "Gibbs", "myFM")
UNIT = {"ALS": "iteration", "SGD": "epoch",
        "SVI": "epoch (default: users integrated out; batch max(10k, 5 x items))",
        "SVI mean-field": "epoch (batch_size 10k, raised to 5 ratings per row of the longest "
                          "axis)", "Gibbs": "sweep", "myFM": "sample"}
#: the mean-field guide's minibatch (ratings) as asked: fit_svi raises it to five ratings
#: per row of the longest axis (svi.minibatch_size: 50,000 at 1e6, 500,000 at 1e7)
MEAN_FIELD_BATCH = 10_000
#: engine names of results files written before fit_svi integrated the users out by
#: default (those files have an "SVI collapsed" row; their "SVI" was the mean-field guide)
OLD_NAMES = {"SVI collapsed": "SVI", "SVI": "SVI mean-field"}
RANK = 10


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _data(size: str):
    """Ratings of the given size: ``"1e5"``-style synthetic, or ``"jester"``."""
    from bayesmf import data

    if size == "jester":
        ds = data.load_jester(root=default_data_dir(), download=False)
        return ds.to_ratings() if hasattr(ds, "to_ratings") else ds
    n = int(float(size))
    # users x items with ~100 ratings per user and 1% density, as in MovieLens-like data
    n_rows = max(1000, n // 100)
    n_cols = max(500, min(n_rows, int(n / (0.01 * n_rows))))
    density = n / (n_rows * n_cols)
    R, _ = data.synthetic_ratings(n_rows=n_rows, n_cols=n_cols, rank=RANK, density=density,
                                  noise=0.5, biases=True, seed=0)
    return R


def _run(engine: str, R, units: int) -> None:
    from bayesmf import inference, models

    if engine == "ALS":
        inference.als(R, rank=RANK, reg=10.0, epochs=units, tol=0.0, progress=False)
    elif engine == "SGD":
        inference.sgd_mf(R, rank=RANK, epochs=units, lr=0.1, progress=False)  # any scale
    elif engine == "SVI":  # the default: the users integrated out (collapse_rows)
        inference.fit_svi(models.BayesianMF(*R.shape, rank=RANK), R, epochs=units,
                          batch_size=10_000, lr=0.05, progress=False)
    elif engine == "SVI mean-field":
        inference.fit_svi(models.BayesianMF(*R.shape, rank=RANK), R, epochs=units,
                          batch_size=MEAN_FIELD_BATCH, lr=0.05, progress=False,
                          collapse_rows=False)
    elif engine == "Gibbs":
        inference.fit_gibbs(models.BayesianMF(*R.shape, rank=RANK, ard=True, factor_means=True),
                            R, num_samples=units, burn_in=0, thin=1, progress=False)
    elif engine == "myFM":
        import myfm
        import numpy as np
        import scipy.sparse as sps

        n = len(R)
        rows, cols = R.rows.numpy(), R.cols.numpy()
        X = sps.csr_matrix(
            (np.ones(2 * n), (np.repeat(np.arange(n), 2),
                              np.stack([rows, R.shape[0] + cols], 1).ravel())),
            shape=(n, R.shape[0] + R.shape[1]))
        myfm.MyFMRegressor(rank=RANK, random_seed=0).fit(
            X, R.values.numpy().astype(np.float64), n_iter=units, n_kept_samples=units)
    else:
        raise ValueError(engine)


def worker(engine: str, size: str, units: int) -> dict[str, Any]:
    """Measure one engine at one size in this (fresh) process."""
    import torch

    torch.set_num_threads(1)
    if engine != "myFM":
        import bayesmf.inference  # noqa: F401  (imports before the baseline)
    else:
        import myfm  # noqa: F401
        import scipy.sparse  # noqa: F401
    base = _rss_mb()
    R = _data(size)
    if len(R) <= 2_000_000:  # a first, untimed unit: one-time costs (caches, JIT) excluded
        _run(engine, R, 1)
    times = {}
    for u in (1, 1 + units):
        t0, c0 = time.perf_counter(), time.process_time()
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        _run(engine, R, u)
        times[u] = (time.perf_counter() - t0, time.process_time() - c0,
                    resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    wall = (times[1 + units][0] - times[1][0]) / units
    cpu = (times[1 + units][1] - times[1][1]) / units
    out = {"n_ratings": len(R), "shape": list(R.shape), "seconds_per_unit": max(wall, 1e-9),
           "cpu_seconds_per_unit": max(cpu, 1e-9), "peak_mb_above_import": _rss_mb() - base,
           # minor page faults (first touches of fresh memory) per unit of work
           "page_faults_per_unit": max(0.0, (times[1 + units][2] - times[1][2]) / units)}
    if engine == "SVI mean-field":
        from bayesmf import models
        from bayesmf.inference.svi import minibatch_size

        batch = minibatch_size(models.BayesianMF(*R.shape, rank=RANK), len(R), MEAN_FIELD_BATCH)
        out["batch"] = batch
        out["rows_per_rating"] = rows_per_rating(R, batch)
    return out


def rows_per_rating(R, batch: int) -> float:
    """Rows and columns the mean-field guide draws in a step, per rating of the batch: an
    axis no longer than the batch whole, a longer one at the batch's distinct indices
    (one random batch)."""
    import torch

    b = min(batch, len(R))
    idx = torch.randperm(len(R), generator=torch.Generator().manual_seed(0))[:b]
    drawn = sum(n if n <= b else len(torch.unique(a[idx]))
                for a, n in ((R.rows, R.shape[0]), (R.cols, R.shape[1])))
    return drawn / b


def _python_for(engine: str) -> str | None:
    if engine != "myFM":
        return sys.executable
    py = REPO / ".bench-venv" / "bin" / "python"
    if not py.exists():
        return None
    ok = subprocess.run([str(py), "-c", "import myfm"], capture_output=True)
    return str(py) if ok.returncode == 0 else None


def measure(engine: str, size: str, units: int) -> dict[str, Any] | None:
    py = _python_for(engine)
    if py is None:
        log.warning("%s is not installed (.bench-venv): skipped", engine)
        return None
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONWARNINGS": "ignore"}
    cmd = [py, str(Path(__file__)), "--worker", engine, size, str(units)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if out.returncode != 0:
        log.warning("%s at %s failed: %s", engine, size, out.stderr.strip().splitlines()[-1:])
        return None
    return json.loads(out.stdout.strip().splitlines()[-1])


def _default_units(size: str, engine: str | None = None) -> int:
    """Enough units that their time stands well above the set-up's noise: a Gibbs sweep is
    a tenth of the others' units or less, and its one-time set-up at 1e7 (sorting, 5-6 s)
    varied by a second between runs, more than two sweeps."""
    return {"1e5": 10, "1e6": 3}.get(size, 2) * (10 if engine == "Gibbs" else 1)


def exponent(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of log(y) on log(x)."""
    xs = [math.log(x) for x, _ in points]
    ys = [math.log(y) for _, y in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs)


def plot(results: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for engine, by_size in results.items():
        pts = sorted((r["n_ratings"], r) for s, r in by_size.items() if s != "jester")
        if not pts:
            continue
        n = [p[0] for p in pts]
        axes[0].loglog(n, [p[1]["cpu_seconds_per_unit"] for p in pts], "o-", label=engine)
        axes[1].loglog(n, [max(p[1]["peak_mb_above_import"], 1.0) for p in pts], "o-",
                       label=engine)
        if "jester" in by_size:
            j = by_size["jester"]
            axes[0].loglog([j["n_ratings"]], [j["cpu_seconds_per_unit"]], "k*")
    axes[0].set(xlabel="ratings", ylabel="CPU seconds per unit of work (1 thread)",
                title="time (★ Jester)")
    axes[1].set(xlabel="ratings", ylabel="peak MB above import", title="memory")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1e5 and 1e6 only")
    p.add_argument("--sizes", nargs="+", default=None, help="e.g. 1e5 1e6 1e7 jester")
    p.add_argument("--engines", nargs="+", default=list(ENGINES), choices=ENGINES)
    p.add_argument("--units", type=int, default=None, help="units of work timed per size")
    p.add_argument("--merge", action="store_true",
                   help="keep the other engines/sizes of an existing results file")
    p.add_argument("--render", action="store_true",
                   help="measure nothing: rebuild the tables and the plot from the results file")
    p.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        engine, size, units = args.worker
        print(json.dumps(worker(engine, size, int(units))))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sizes = args.sizes or (["1e5", "1e6"] if args.quick else ["1e5", "1e6", "1e7", "jester"])
    units = args.units
    results: dict[str, dict[str, Any]] = {e: {} for e in args.engines}
    name = "scaling_quick" if args.quick else "scaling"
    old = REPO / "benchmarks" / "results" / f"{name}.json"
    if (args.merge or args.render) and old.exists():
        recorded = json.loads(old.read_text())["settings"]
        raw = recorded["raw"]
        if "SVI collapsed" in raw:  # an older file
            raw = {OLD_NAMES.get(e, e): r for e, r in raw.items()}
        for engine, by_size in raw.items():
            results.setdefault(engine, {}).update(by_size)
        if args.render:
            sizes, units = recorded["sizes"], recorded["units"]
    for size in [] if args.render else sizes:
        for engine in args.engines:  # engines alternate within each size
            r = measure(engine, size, units or _default_units(size, engine))
            if r is not None:  # (dated: a merged file may hold runs of several days)
                results[engine][size] = {**r, "measured": time.strftime("%Y-%m-%d")}
                log.info("%-6s %-7s %8.3f s/%s  %7.0f MB", engine, size, r["seconds_per_unit"],
                         UNIT[engine], r["peak_mb_above_import"])
    results = {e: results[e] for e in sorted(results, key=lambda e: ENGINES.index(e)
                                             if e in ENGINES else len(ENGINES))}
    table: dict[str, dict[str, Any]] = {}
    for engine, by_size in results.items():
        synth = [(r["n_ratings"], r) for s, r in by_size.items() if s != "jester"]
        row: dict[str, Any] = {"unit": UNIT[engine]}
        for s, r in by_size.items():
            row[f"cpu_s_per_unit@{s}"] = r["cpu_seconds_per_unit"]
            row[f"MB@{s}"] = r["peak_mb_above_import"]
        for s, r in by_size.items():
            if "page_faults_per_unit" in r:
                row[f"page_faults_per_unit@{s}"] = r["page_faults_per_unit"]
        if len(synth) >= 2:
            row["time_exponent"] = exponent([(n, r["cpu_seconds_per_unit"]) for n, r in synth])
            row["wall_time_exponent"] = exponent([(n, r["seconds_per_unit"]) for n, r in synth])
            row["memory_exponent"] = exponent(
                [(n, max(r["peak_mb_above_import"], 1.0)) for n, r in synth])
        if by_size:
            table[engine] = row
    sections: dict[str, Any] = {"scaling": table}
    mf = results.get("SVI mean-field", {})
    if any("rows_per_rating" in r for r in mf.values()):
        # the guide's step costs its batch's ratings and the rows and columns it draws
        sections["SVI mean-field: work per rating"] = {
            s: {"rows_per_rating": r["rows_per_rating"],
                "cpu_us_per_rating": 1e6 * r["cpu_seconds_per_unit"] / r["n_ratings"],
                "cpu_us_per_rating_and_row": 1e6 * r["cpu_seconds_per_unit"]
                / (r["n_ratings"] * (1 + r["rows_per_rating"]))}
            for s, r in mf.items() if "rows_per_rating" in r}
    settings = {"rank": RANK, "sizes": sizes,
                "units": units or {s: _default_units(s) for s in sizes}, "threads": 1,
                "units_gibbs": units or {s: _default_units(s, "Gibbs") for s in sizes},
                "svi": "fit_svi(BayesianMF) with its defaults: the users integrated out "
                       "(collapse_rows), minibatches of whole users, raised to 5 ratings per "
                       "item (50,000 ratings at 1e6 and 1e7); the items drawn whole at every "
                       "step. 'SVI mean-field': collapse_rows=False, batch_size 10k, which "
                       "fit_svi raises to 5 ratings per row of the longest axis (50,000 at "
                       "1e6, 500,000 at 1e7; until 2026-12-02 it stood at 10k)",
                "data": "synthetic_ratings (rank 10, biases, ~100 ratings per user) and "
                        "Jester dataset 1 (jester-1/jester-data-1.csv)",
                "engines": {e: UNIT[e] for e in results},
                "myFM": "MyFMRegressor(rank=10) on one-hot user+item features, .bench-venv",
                # when each row was measured: rows of different runs (--merge) may come from
                # machines of different speeds; each row's exponent is from one run
                "measured": {e: sorted({r.get("measured", "undated (an earlier run)")
                                        for r in by_size.values()})
                             for e, by_size in results.items()},
                "raw": results}
    json_path, _ = write_results(name, sections, settings)
    plot(results, json_path.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
