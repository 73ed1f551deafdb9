"""Helpers shared by the benchmark scripts: machine description, result files, summaries.

Every benchmark writes ``benchmarks/results/<name>.json`` shaped::

    {"machine": {...}, "settings": {...},
     "results": {dataset: {model: {metric: value, metric_std: value, ...}}}}

and a companion ``<name>.md`` with one markdown table per dataset (rows: models,
columns: metrics, ``mean ± std`` where a ``<metric>_std`` entry exists), followed
by the settings and the machine.

The scripts import this module as ``from _common import ...`` (the script's own
folder is on ``sys.path`` when run as ``python benchmarks/<script>.py``).

Examples
--------
>>> mean_std([1.0, 2.0, 3.0])
(2.0, 1.0)
>>> summarize([{"rmse": 1.0}, {"rmse": 3.0}])["rmse_std"]  # doctest: +ELLIPSIS
1.414...
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import os
import platform
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["machine_info", "write_results", "mean_std", "summarize", "format_table", "REPO"]

logger = logging.getLogger("benchmarks")

#: The repository root (parent of ``benchmarks/``).
REPO = Path(__file__).resolve().parents[1]


def machine_info() -> dict[str, Any]:
    """Describe the machine and software the benchmark ran on.

    Returns
    -------
    dict
        Platform, processor, CPU count, torch threads, accelerator (if any),
        python/torch/pyro/numpy versions and the current date/time (UTC, ISO 8601).

    Examples
    --------
    >>> info = machine_info()
    >>> {"platform", "cpu_count", "python", "torch", "numpy", "date"} <= set(info)
    True
    """
    import torch

    try:
        import pyro

        pyro_version = pyro.__version__
    except ImportError:  # pragma: no cover - pyro is a dependency
        pyro_version = None
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "pyro": pyro_version,
        "numpy": np.__version__,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; 0 for a single value).

    Examples
    --------
    >>> mean_std([0.9, 0.9])
    (0.9, 0.0)
    >>> mean_std([5.0])
    (5.0, 0.0)
    """
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        raise ValueError("mean_std of an empty sequence")
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return float(arr.mean()), std


def summarize(runs: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Aggregate per-run metric dicts into ``{metric: mean, metric_std: std, ...}``.

    Metrics are taken from the first run; every run must have them. ``n_runs``
    is added.
    """
    if not runs:
        raise ValueError("no runs to summarize")
    out: dict[str, float] = {}
    for key in runs[0]:
        m, s = mean_std(float(r[key]) for r in runs)
        out[key] = m
        out[f"{key}_std"] = s
    out["n_runs"] = len(runs)
    return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy arrays, torch tensors
        return obj.tolist()
    return obj


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return str(v)
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3e}"
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
    return str(value)


def format_table(models: Mapping[str, Mapping[str, Any]]) -> str:
    """A markdown table: one row per model, one column per metric (``mean ± std``).

    Examples
    --------
    >>> print(format_table({"ALS": {"rmse": 0.9, "rmse_std": 0.01, "n_runs": 5}}))
    | model | rmse | n_runs |
    |---|---|---|
    | ALS | 0.9000 ± 0.0100 | 5 |
    """
    metrics: list[str] = []
    for vals in models.values():
        for k in vals:
            if k.endswith("_std") and k[:-4] in vals:
                continue
            if k not in metrics:
                metrics.append(k)
    lines = ["| model | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for model, vals in models.items():
        cells = []
        for k in metrics:
            if k not in vals:
                cells.append("")
            elif f"{k}_std" in vals:
                cells.append(f"{_fmt(vals[k])} ± {_fmt(vals[f'{k}_std'])}")
            else:
                cells.append(_fmt(vals[k]))
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _settings_lines(d: Mapping[str, Any], indent: str = "") -> list[str]:
    lines = []
    for k, v in d.items():
        if isinstance(v, Mapping):
            lines.append(f"{indent}- **{k}**:")
            lines.extend(_settings_lines(v, indent + "  "))
        else:
            lines.append(f"{indent}- **{k}**: `{json.dumps(_jsonable(v))}`")
    return lines


def write_results(
    name: str,
    results: Mapping[str, Mapping[str, Mapping[str, Any]]],
    settings: Mapping[str, Any],
    out_dir: str | Path = "benchmarks/results",
    machine: Mapping[str, Any] | None = None,
) -> tuple[Path, Path]:
    """Write ``<out_dir>/<name>.json`` and ``<out_dir>/<name>.md``.

    Parameters
    ----------
    name : str
        Benchmark name (file stem).
    results : dict
        ``{dataset: {model: {metric: value}}}``; ``<metric>_std`` entries are
        shown as ``± std`` next to their metric in the markdown.
    settings : dict
        Everything needed to reproduce the run (hyperparameters, splits, seeds).
    out_dir : path
        Output folder; a relative path is taken relative to the repository root.
    machine : dict, optional
        Machine description; default :func:`machine_info`.

    Returns
    -------
    (Path, Path)
        The JSON and markdown paths.
    """
    out = Path(out_dir)
    if not out.is_absolute():
        out = REPO / out
    out.mkdir(parents=True, exist_ok=True)
    machine = dict(machine) if machine is not None else machine_info()
    payload = {
        "machine": _jsonable(machine),
        "settings": _jsonable(settings),
        "results": _jsonable(results),
    }
    json_path = out / f"{name}.json"
    json_path.write_text(json.dumps(payload, indent=2) + "\n")

    md = [f"# {name}", ""]
    for dataset, models in results.items():
        md += [f"## {dataset}", "", format_table(models), ""]
    md += ["## Settings", "", *_settings_lines(settings), ""]
    md += ["## Machine", "", *_settings_lines(machine), ""]
    md_path = out / f"{name}.md"
    md_path.write_text("\n".join(md))
    logger.info("wrote %s and %s", json_path, md_path)
    return json_path, md_path


def default_data_dir() -> str | None:
    """``$BAYESMF_DATA_DIR``, else ``../shared/data`` beside the repository if it exists."""
    env = os.environ.get("BAYESMF_DATA_DIR")
    if env:
        return env
    shared = REPO.parent / "shared" / "data"
    return str(shared) if shared.is_dir() else None
