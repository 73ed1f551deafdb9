"""Safe files: atomic writes, checksums, clear errors, fingerprints, ids of any type."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
import torch

from bayesmf.data import Network, from_dense
from bayesmf.inference import files
from bayesmf.inference.files import (
    FitFileError,
    ResumeMismatch,
    check_compatible,
    decode_ids,
    encode_ids,
    fingerprint,
    load_file,
    save_file,
)


def _ratings(value: float = 4.0, extra: bool = False):
    X = np.full((4, 5), np.nan, dtype=np.float32)
    X[0, 1], X[1, 2], X[2, 0], X[3, 4] = value, 3.0, 5.0, 1.0
    if extra:
        X[3, 3] = 2.0
    return from_dense(X)


def _payload() -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "state": {"U": torch.randn(50, 8, generator=g), "V": torch.randn(40, 8, generator=g)},
        "losses": [1.5, 1.25, torch.tensor([0.5, 0.25])],
        "step": 7,
        "name": "svi",
        "flags": (True, None),
    }


def _saved(tmp_path, **kw):
    R = _ratings()
    path = tmp_path / "fit.pt"
    settings = {"lr": 0.1, "epochs": 10, "rank": 8, "opt": {"name": "adam", "betas": (0.9, 0.99)}}
    save_file(path, "svi-fit", _payload(), fingerprint=fingerprint(R), settings=settings, **kw)
    return path, R, settings


def test_round_trip_nested_payload(tmp_path):
    path, R, settings = _saved(tmp_path, version=3)
    c = load_file(path, "svi-fit")
    want = _payload()
    assert torch.equal(c.payload["state"]["U"], want["state"]["U"])
    assert torch.equal(c.payload["losses"][2], want["losses"][2])
    assert c.payload["losses"][:2] == [1.5, 1.25] and c.payload["step"] == 7
    assert c.payload["flags"] == (True, None) and c.payload["name"] == "svi"
    assert c.kind == "svi-fit" and c.version == 3 and c.path == path
    assert c.fingerprint == fingerprint(R)
    assert c.settings["opt"]["betas"] == [0.9, 0.99]  # tuples stored as lists
    raw = torch.load(path, weights_only=True)  # the outer file itself is weights_only-safe
    assert raw["format"] == "bayesmf" and raw["payload"].dtype == torch.uint8
    check_compatible(c, fingerprint(R), settings)  # same data and settings: no error


def test_checksum_detects_flipped_payload_bytes(tmp_path):
    path, _, _ = _saved(tmp_path)
    good = path.read_bytes()
    # The U tensor's bytes appear verbatim inside the stored payload bytes.
    u = _payload()["state"]["U"].numpy().tobytes()
    at = good.find(u[:256])
    assert at > 0
    bad = bytearray(good)
    bad[at + 100 : at + 164] = bytes(b ^ 0xFF for b in bad[at + 100 : at + 164])
    path.write_bytes(bytes(bad))
    with pytest.raises(FitFileError, match="fit.pt: damaged: checksum mismatch"):
        load_file(path)
    # Flips anywhere in the middle of the file: always one FitFileError naming the file.
    for start in range(len(good) // 4, 3 * len(good) // 4, len(good) // 9):
        bad = bytearray(good)
        bad[start : start + 64] = bytes(b ^ 0xFF for b in bad[start : start + 64])
        path.write_bytes(bytes(bad))
        with pytest.raises(FitFileError, match="fit.pt"):
            load_file(path)


@pytest.mark.parametrize("damage", ["missing", "empty", "half", "random", "foreign", "text"])
def test_bad_files_give_one_clear_error(tmp_path, damage):
    path, _, _ = _saved(tmp_path)
    good = path.read_bytes()
    if damage == "missing":
        path.unlink()
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "half":
        path.write_bytes(good[: len(good) // 2])
    elif damage == "random":
        path.write_bytes(np.random.default_rng(0).bytes(5000))
    elif damage == "foreign":
        torch.save({"a": 1}, path)
    else:
        path.write_text("user,item,rating\n1,2,3.5\n")
    with pytest.raises(FitFileError) as err:
        load_file(path, "svi-fit")
    msg = str(err.value)
    assert str(path) in msg
    expected = {"missing": "no such file", "empty": "empty", "foreign": "foreign", "text": "text"}
    assert expected.get(damage, "damaged") in msg
    if damage == "missing":
        assert isinstance(err.value, FileNotFoundError)


def test_wrong_kind_and_newer_version(tmp_path):
    path, _, _ = _saved(tmp_path, version=2)
    with pytest.raises(FitFileError, match="holds a 'svi-fit', expected 'sbm-fit'"):
        load_file(path, "sbm-fit")
    with pytest.raises(FitFileError, match="one of 'a', 'b'"):
        load_file(path, ("a", "b"))
    assert load_file(path, ("a", "svi-fit")).kind == "svi-fit"
    with pytest.raises(FitFileError, match="version 2.*reads up to 1"):
        load_file(path, versions={"svi-fit": 1})
    assert load_file(path, versions={"svi-fit": 2}).version == 2


def test_check_compatible_names_every_difference(tmp_path):
    path, R, settings = _saved(tmp_path)
    c = load_file(path)
    other = _ratings(extra=True)
    now = {**settings, "lr": 0.05, "epochs": 20, "opt": {"name": "sgd", "betas": [0.9, 0.99]}}
    with pytest.raises(ResumeMismatch) as err:
        check_compatible(c, fingerprint(other), now)
    msg = str(err.value)
    assert str(path) in msg
    assert "training data differ: n 4 vs 5; content hash differs" in msg
    assert "lr: 0.1 (file) vs 0.05 (now)" in msg and "epochs: 10 (file) vs 20 (now)" in msg
    assert "opt.name: 'adam' (file) vs 'sgd' (now)" in msg
    assert "betas" not in msg and "rank" not in msg  # equal settings are not listed
    assert len(err.value.differences) == 2
    # Same shape and size, one value changed: only the hash differs.
    with pytest.raises(ResumeMismatch, match="data differ: content hash differs"):
        check_compatible(c, fingerprint(_ratings(value=2.0)), settings)
    # Ignored names are not compared; a new or dropped setting is named.
    with pytest.raises(ResumeMismatch) as err:
        check_compatible(c, fingerprint(R), {**now, "seed": 1}, ignore=("lr", "epochs", "opt"))
    assert err.value.differences == ["settings differ: seed: missing (file) vs 1 (now)"]
    check_compatible(c, fingerprint(R), now, ignore=("lr", "epochs", "opt.name"))


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    path, _, _ = _saved(tmp_path)
    before = path.read_bytes()

    def broken_save(obj, f, *a, **k):
        f.write(b"partial bytes")
        raise RuntimeError("disk full")

    monkeypatch.setattr(files.torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        save_file(path, "svi-fit", {"x": torch.ones(3)})
    monkeypatch.undo()

    def broken_replace(src, dst):
        raise OSError("replace failed")

    monkeypatch.setattr(files.os, "replace", broken_replace)
    with pytest.raises(OSError, match="replace failed"):
        files.atomic_write_text(path, "new text")
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["fit.pt"]  # no *.tmp left
    assert load_file(path, "svi-fit").payload["step"] == 7


def test_concurrent_writers_and_reader(tmp_path):
    path = tmp_path / "sub" / "ckpt.pt"
    save_file(path, "ckpt", {"w": torch.zeros(2000), "who": -1})
    errors: list[BaseException] = []

    def writer(who: int) -> None:
        try:
            for k in range(15):
                w = torch.full((2000,), float(who * 100 + k))
                save_file(path, "ckpt", {"w": w, "who": who})
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def reader() -> None:
        try:
            for _ in range(30):
                c = load_file(path, "ckpt")
                w = c.payload["w"]
                assert torch.all(w == w[0])  # never a mix of two writers
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in (1, 2)]
    threads.append(threading.Thread(target=reader))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    final = load_file(path, "ckpt").payload
    assert final["who"] in (1, 2) and float(final["w"][0]) == final["who"] * 100 + 14
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]


def test_atomic_text_and_bytes(tmp_path):
    p = files.atomic_write_text(tmp_path / "a" / "metrics.json", '{"rmse": 0.9}')
    assert p.read_text() == '{"rmse": 0.9}'
    files.atomic_write_bytes(p, b"\x00\x01")
    assert p.read_bytes() == b"\x00\x01"


IDS = {
    "str": np.array(["u1", "u22", "ü"]),
    "int": np.array([3, 1, 2**40], dtype=np.int64),
    "uint8": np.array([1, 255], dtype=np.uint8),
    "float": np.array([0.5, -1.25]),
    "bool": np.array([True, False]),
    "datetime64": np.array(["2020-01-01T00:00:01.123456789", "1999-12-31"], "datetime64[ns]"),
    "timestamps_tz": pd.date_range("2021-03-28", periods=3, freq="h", tz="Europe/Paris"),
    "timestamps": pd.DatetimeIndex(["2020-01-01", "2020-06-01 12:00"]),
    "pandas_str": pd.Index(["a", "bb"]),
    "mixed": np.array(["a", 1, 2.5, True, None, 2**70], dtype=object),
    "object_datetimes": np.array([np.datetime64("2020-01-01", "D"), pd.Timedelta("1h")], object),
}


@pytest.mark.parametrize("name", sorted(IDS))
def test_ids_survive_save_and_load(tmp_path, name):
    ids = IDS[name]
    path = save_file(tmp_path / "ids.pt", "ids", {"row_ids": encode_ids(ids)})
    back = decode_ids(load_file(path).payload["row_ids"])
    want = np.asarray(ids)
    assert back.dtype == want.dtype and back.shape == want.shape
    assert all(a == b for a, b in zip(back.tolist(), want.tolist(), strict=True))
    assert [type(x) for x in back.tolist()] == [type(x) for x in want.tolist()]
    if name == "timestamps_tz":
        assert [str(x.tz) for x in back] == ["Europe/Paris"] * 3
        assert [x.utcoffset() for x in back] == [x.utcoffset() for x in ids]


def test_ids_refuse_unknown_types():
    with pytest.raises(TypeError, match="complex"):
        encode_ids(np.array([1j, "a"], dtype=object))


def test_fingerprints():
    assert fingerprint(None) is None
    a, b = fingerprint(_ratings()), fingerprint(_ratings())
    assert a == b and a["kind"] == "Ratings" and a["shape"] == [4, 5] and a["n"] == 4
    assert fingerprint(_ratings(value=4.5))["sha256"] != a["sha256"]
    adj = np.zeros((4, 4), dtype=int)
    adj[0, 1] = adj[1, 0] = adj[2, 3] = adj[3, 2] = 1
    net = fingerprint(Network.from_adjacency(adj))
    assert net["kind"] == "Network" and (net["n_nodes"], net["n_edges"]) == (4, 2)
    held = Network(4, [[0, 1], [2, 3]], unobserved=[[0, 2]])
    assert fingerprint(held)["sha256"] != net["sha256"]
    p = fingerprint(Network.from_adjacency(adj).pairs())
    assert p["kind"] == "Pairs" and p["n"] == 6 and p["n_nodes"] == 4
    t = fingerprint(torch.arange(6.0).reshape(2, 3))
    assert t["shape"] == [2, 3] and t["dtype"] == "torch.float32"
    assert t != fingerprint(torch.arange(6.0).reshape(3, 2))
    assert fingerprint(np.arange(3))["kind"] == "tensor"
    seq = fingerprint((_ratings(), None))
    assert seq == {"kind": "sequence", "items": [a, None]}

    class Sampler:
        def fingerprint(self) -> dict:
            return {"kind": "EpisodeSampler", "seed": 3}

    assert fingerprint(Sampler()) == {"kind": "EpisodeSampler", "seed": 3}
    with pytest.raises(TypeError, match="dict"):
        fingerprint({"a": 1})


def test_non_plain_settings_and_payload_are_named(tmp_path):
    with pytest.raises(TypeError, match="'opt.device'"):
        save_file(tmp_path / "x.pt", "k", {}, settings={"opt": {"device": object()}})
    with pytest.raises(TypeError, match=r"payload\['ids'\] is a ndarray"):
        save_file(tmp_path / "x.pt", "k", {"ids": np.arange(3)})
    assert not list(tmp_path.iterdir())
