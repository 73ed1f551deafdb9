"""``bayesmf fit --model sbm`` on an edge-list CSV and on NIPS234."""

from __future__ import annotations

import json

import torch

import bayesmf
from bayesmf import data
from bayesmf.cli import main


def _edge_csv(tmp_path):
    net, _ = data.synthetic_network(40, block_sizes=[25, 15], p_in=0.6, p_out=0.02, seed=0)
    path = tmp_path / "edges.csv"
    lines = ["src,dst"] + [f"n{a},n{b}" for a, b in net.edges.tolist()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_fit_sbm_from_edge_list(tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    rc = main(
        [
            "fit",
            "--edges",
            str(_edge_csv(tmp_path)),
            "--model",
            "sbm",
            "--truncation",
            "4",
            "--restarts",
            "1",
            "--epochs",
            "60",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "test AUC" in text and "effective number of clusters" in text
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["auc"] > 0.8
    assert (out / "blocks.png").stat().st_size > 1000
    fit = bayesmf.load(out / "fit.pt")  # the saved block model reads back as an SBMFit
    assert type(fit).__name__ == "SBMFit"
    assert 1.5 < fit.effective_clusters() < 3.5


def test_fit_network_needs_sbm(tmp_path, capsys):
    rc = main(["fit", "--edges", str(_edge_csv(tmp_path)), "--model", "als"])
    assert rc == 2
    assert "--model sbm" in capsys.readouterr().err


def test_fit_sbm_nips234(data_dir, capsys, one_thread):
    torch.manual_seed(0)
    rc = main(
        [
            "fit",
            "--dataset",
            "nips234",
            "--model",
            "sbm",
            "--data-dir",
            str(data_dir),
            "--offline",
            "--restarts",
            "1",
            "--epochs",
            "40",
            "--quiet",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "n_nodes=234" in text and "test AUC" in text


def test_fit_latent_feature_model_by_nuts_from_edge_list(tmp_path, capsys, one_thread):
    out = tmp_path / "run"
    rc = main(["fit", "--edges", str(_edge_csv(tmp_path)), "--model", "lfm", "--rank", "2",
               "--nuts", "--samples", "30", "--burn-in", "30", "--quiet", "--out", str(out)])
    assert rc == 0
    assert "ranked by posterior medians" in capsys.readouterr().out
    fit = bayesmf.load(out / "fit.pt")
    assert fit.inference_name == "NUTS" and fit.num_draws == 30
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    assert metrics["auc"] > 0.8 and metrics["auc_median"] > 0.8
    assert metrics["auc_median"] != metrics["auc"]  # ranked by another summary of the draws


def test_nuts_refuses_the_block_model(tmp_path, capsys):
    rc = main(["fit", "--edges", str(_edge_csv(tmp_path)), "--model", "sbm", "--nuts"])
    assert rc == 2
    assert "--nuts" in capsys.readouterr().err
