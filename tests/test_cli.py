"""The `bayesmf` command: demo, fit on MovieLens and on a user's CSV, help."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from bayesmf.cli import build_parser, main


def _number(pattern: str, text: str) -> float:
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in output:\n{text}"
    return float(m.group(1))


def test_demo_reaches_noise_floor(capsys):
    assert main(["demo", "--quiet", "--rows", "400", "--cols", "300", "--density", "0.3"]) == 0
    out = capsys.readouterr().out
    svi = _number(r"BayesianMF \(SVI\)\s+([\d.]+)", out)
    als = _number(r"ALS \(MAP\)\s+([\d.]+)", out)
    noise = _number(r"noise floor \(noise std\)\s+([\d.]+)", out)
    mean_only = _number(r"global mean\s+([\d.]+)", out)
    assert svi < 1.12 * noise < mean_only
    assert svi <= 1.01 * als
    cover90 = _number(r"90% interval covers ([\d.]+)%", out)
    assert 85.0 <= cover90 <= 95.0
    assert "elpd" in out and "noise" in out


def test_fit_movielens_random_split(data_dir, capsys, tmp_path):
    code = main(
        [
            "fit",
            "--dataset",
            "movielens-100k",
            "--data-dir",
            str(data_dir),
            "--offline",
            "--model",
            "als",
            "--quiet",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert _number(r"test RMSE ([\d.]+)", out) <= 0.95
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    assert metrics["n_train"] == 90_000 and metrics["n_test"] == 10_000
    import bayesmf

    fit = bayesmf.load(tmp_path / "run" / "fit.pt")  # a MAP fit loads like every other fit
    assert type(fit).__name__ == "MAPFactors" and fit.U.shape == (943, 10)


def test_fit_user_csv(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n_u, n_i, k = 80, 60, 2
    mean = rng.normal(size=(n_u, k)) @ rng.normal(size=(k, n_i))
    u, i = np.nonzero(rng.random((n_u, n_i)) < 0.5)
    df = pd.DataFrame(
        {"uid": u + 1000, "iid": i, "stars": mean[u, i] + 0.1 * rng.normal(size=u.size)}
    )
    path = tmp_path / "mine.tsv"
    df.to_csv(path, sep="\t", index=False)
    code = main(
        [
            "fit",
            "--ratings",
            str(path),
            "--sep",
            "\t",
            "--user-col",
            "uid",
            "--item-col",
            "iid",
            "--rating-col",
            "stars",
            "--rank",
            "2",
            "--reg",
            "0.5",
            "--quiet",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert _number(r"test RMSE ([\d.]+)", out) < 0.5 * df["stars"].std()


def _rank2_csv(tmp_path, seed: int):
    """A 60 x 40 rank-2 ratings table (60% observed, noise 0.2) written as a CSV."""
    rng = np.random.default_rng(seed)
    n_u, n_i = 60, 40
    mean = 3 + rng.normal(size=(n_u, 2)) @ rng.normal(size=(2, n_i))
    u, i = np.nonzero(rng.random((n_u, n_i)) < 0.6)
    df = pd.DataFrame({"user": u, "item": i, "rating": mean[u, i] + 0.2 * rng.normal(size=u.size)})
    path = tmp_path / "r.csv"
    df.to_csv(path, index=False)
    return df, path


def test_fit_nnmf_on_user_csv_saves_a_loadable_fit(tmp_path, capsys):
    from bayesmf import inference

    df, path = _rank2_csv(tmp_path, seed=1)
    args = ["fit", "--ratings", str(path), "--model", "nnmf", "--rank", "2", "--bilinear-dims",
            "3", "--hidden", "", "--epochs", "80", "--kl-warmup", "20", "--batch-size", "500",
            "--lr", "0.05", "--quiet", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert _number(r"test RMSE ([\d.]+)", out) < 0.6 * df["rating"].std()
    assert 0.75 <= _number(r"90% interval coverage ([\d.]+)", out) <= 1.0
    fit = inference.load(tmp_path / "run" / "fit.pt")
    assert fit.settings["kl_warmup"] == 20 and len(fit.elbo_history) == 80


def test_fit_gibbs_with_ard_on_user_csv(tmp_path, capsys):
    from bayesmf import inference

    df, path = _rank2_csv(tmp_path, seed=2)
    args = ["fit", "--ratings", str(path), "--model", "gibbs", "--ard", "--rank", "3",
            "--samples", "60", "--warmup", "30", "--quiet", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert _number(r"test RMSE ([\d.]+)", out) < 0.5 * df["rating"].std()
    assert 0.8 <= _number(r"90% interval coverage ([\d.]+)", out) <= 1.0
    fit = inference.load(tmp_path / "run" / "fit.pt")
    assert isinstance(fit, inference.SampleFit) and fit.draws["scale_U"].shape == (1, 60, 3)


def test_fit_needs_a_source(capsys):
    assert main(["fit", "--model", "als"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--dataset" in err and "--ratings" in err


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["fit", "--help"])
    text = capsys.readouterr().out
    for opt in (
        "--dataset",
        "--ratings",
        "--model",
        "--rank",
        "--reg",
        "--split",
        "--out",
        "--data-dir",
        "--offline",
        "--scale",
        "--duplicates",
        "--adjacency",
        "--no-header",
        "--burn-in",
    ):
        assert opt in text
    assert "(default: 10)" in text and "(default: als)" in text  # every default is shown
