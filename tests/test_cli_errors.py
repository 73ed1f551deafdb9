"""Everyday mistakes on the command line end in one line on stderr and exit status 2, and a
saved fit of any kind predicts new rows through `bayesmf predict`."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bayesmf.cli import main


@pytest.fixture
def ratings_csv(tmp_path):
    rng = np.random.default_rng(0)
    n_u, n_i = 40, 30
    mean = 3 + rng.normal(size=(n_u, 2)) @ rng.normal(size=(2, n_i))
    u, i = np.nonzero(rng.random((n_u, n_i)) < 0.6)
    df = pd.DataFrame({"uid": [f"u{x}" for x in u], "iid": i + 100,
                       "stars": mean[u, i] + 0.2 * rng.normal(size=u.size)})
    path = tmp_path / "r.csv"
    df.to_csv(path, index=False)
    return df, path


def _one_line_error(capsys, *words: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("bayesmf: error: ") and err.count("\n") == 1, err
    for w in words:
        assert w in err, (w, err)
    return err


def test_missing_column_names_the_flag(ratings_csv, capsys):
    _, path = ratings_csv
    assert main(["fit", "--ratings", str(path), "--user-col", "uid", "--item-col", "iid"]) == 2
    _one_line_error(capsys, "--rating-col", "'rating'", "stars")


def test_headerless_csv_gets_a_hint(ratings_csv, tmp_path, capsys):
    df, _ = ratings_csv
    path = tmp_path / "noheader.csv"
    df.to_csv(path, index=False, header=False)
    assert main(["fit", "--ratings", str(path)]) == 2
    _one_line_error(capsys, "--no-header")
    # and with --no-header and numbered columns it fits
    code = main(["fit", "--ratings", str(path), "--no-header", "--user-col", "0",
                 "--item-col", "1", "--rating-col", "2", "--quiet", "--epochs", "3"])
    assert code == 0


def test_file_that_does_not_exist(tmp_path, capsys):
    assert main(["fit", "--ratings", str(tmp_path / "nope.csv")]) == 2
    _one_line_error(capsys, "nope.csv", "no such file")
    assert main(["fit", "--model", "sbm", "--adjacency", str(tmp_path / "net.csv")]) == 2
    _one_line_error(capsys, "net.csv", "--adjacency")


def test_dataset_not_found_offline_names_the_flags(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BAYESMF_DATA_DIR", raising=False)
    monkeypatch.setenv("BAYESMF_CACHE", str(tmp_path / "cache"))
    code = main(["fit", "--dataset", "movielens-100k", "--offline", "--data-dir",
                 str(tmp_path / "empty")])
    assert code == 2
    err = _one_line_error(capsys)
    assert "download=True" not in err  # no API wording on the command line


def test_predict_with_a_saved_fit(ratings_csv, tmp_path, capsys):
    df, path = ratings_csv
    run = tmp_path / "run"
    common = ["--ratings", str(path), "--user-col", "uid", "--item-col", "iid",
              "--rating-col", "stars", "--quiet"]
    assert main(["fit", *common, "--model", "bmf", "--rank", "2", "--epochs", "20",
                 "--batch-size", "200", "--lr", "0.05", "--out", str(run)]) == 0
    new = df.sample(10, random_state=0)[["uid", "iid"]]
    new_path = tmp_path / "new.csv"
    new.to_csv(new_path, index=False)
    out_csv = tmp_path / "pred.csv"
    assert main(["predict", "--fit", str(run / "fit.pt"), "--ratings", str(new_path),
                 "--user-col", "uid", "--item-col", "iid", "--out", str(out_csv)]) == 0
    pred = pd.read_csv(out_csv)
    assert list(pred.columns) == ["uid", "iid", "prediction", "lower90", "upper90"]
    assert (pred["lower90"] <= pred["prediction"]).all()
    assert (pred["prediction"] <= pred["upper90"]).all()
    assert pred["uid"].tolist() == new["uid"].tolist()
    # a MAP fit predicts without intervals
    assert main(["fit", *common, "--model", "als", "--rank", "2",
                 "--out", str(tmp_path / "a")]) == 0
    assert main(["predict", "--fit", str(tmp_path / "a" / "fit.pt"), "--ratings", str(new_path),
                 "--user-col", "uid", "--item-col", "iid"]) == 0
    text = capsys.readouterr().out
    assert "prediction" in text and "lower90" not in text
    # unknown ids and a damaged fit file: one line each
    pd.DataFrame({"uid": ["nobody"], "iid": [100]}).to_csv(new_path, index=False)
    assert main(["predict", "--fit", str(run / "fit.pt"), "--ratings", str(new_path),
                 "--user-col", "uid", "--item-col", "iid"]) == 2
    _one_line_error(capsys, "not seen in training")
    bad = tmp_path / "bad.pt"
    bad.write_bytes((run / "fit.pt").read_bytes()[:200])
    assert main(["predict", "--fit", str(bad), "--ratings", str(new_path)]) == 2
    _one_line_error(capsys, "bad.pt")


def test_checkpoint_of_other_data_is_refused(ratings_csv, tmp_path, capsys):
    """Resuming a checkpoint with another split stops (it used to return the old posterior)."""
    _, path = ratings_csv
    ck = tmp_path / "ck.pt"
    common = ["fit", "--ratings", str(path), "--user-col", "uid", "--item-col", "iid",
              "--rating-col", "stars", "--model", "bmf", "--rank", "2", "--epochs", "3",
              "--quiet", "--checkpoint", str(ck)]
    assert main([*common, "--seed", "0"]) == 0
    assert main([*common, "--seed", "1"]) == 2
    _one_line_error(capsys, "training data differ", "--overwrite")
    assert main([*common, "--seed", "1", "--overwrite"]) == 0


def test_row_covariance_flag_reaches_the_guide(ratings_csv, tmp_path):
    from bayesmf import inference

    _, path = ratings_csv
    run = tmp_path / "run"
    args = ["fit", "--ratings", str(path), "--user-col", "uid", "--item-col", "iid",
            "--rating-col", "stars", "--model", "bmf", "--rank", "2", "--epochs", "3",
            "--quiet", "--row-covariance"]
    assert main([*args, "--no-collapse-rows", "--out", str(run)]) == 0
    fit = inference.load(run / "fit.pt")
    assert fit.guide.row_covariance and fit.guide.offdiag["U"].shape[-2:] == (2, 2)
    # by default the users are integrated out: the items get the covariances
    assert main([*args, "--out", str(tmp_path / "collapsed")]) == 0
    fit = inference.load(tmp_path / "collapsed" / "fit.pt")
    assert "U" not in fit.guide.offdiag and fit.guide.offdiag["V"].shape[-2:] == (2, 2)


def test_collapse_rows_flag_reaches_the_guide_and_nnmf_is_refused(ratings_csv, tmp_path,
                                                                  capsys):
    from bayesmf import inference
    from bayesmf.inference.collapsed import CollapsedRowsGuide

    _, path = ratings_csv
    run = tmp_path / "run"
    common = ["fit", "--ratings", str(path), "--user-col", "uid", "--item-col", "iid",
              "--rating-col", "stars", "--rank", "2", "--epochs", "3", "--quiet",
              "--collapse-rows", "--out", str(run)]
    assert main([*common, "--model", "bmf"]) == 0
    assert isinstance(inference.load(run / "fit.pt").guide, CollapsedRowsGuide)
    assert main([*common, "--model", "nnmf", "--overwrite"]) == 2
    _one_line_error(capsys, "--collapse-rows", "--model bmf")


def test_gibbs_refuses_the_discretized_likelihood(ratings_csv, capsys):
    _, path = ratings_csv
    args = ["fit", "--ratings", str(path), "--rating-col", "stars", "--user-col", "uid",
            "--item-col", "iid", "--model", "gibbs", "--likelihood", "discretized"]
    assert main(args) == 2
    _one_line_error(capsys, "--model bmf", "Gaussian")
