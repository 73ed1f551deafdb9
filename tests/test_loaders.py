"""Dataset sources and loaders: real data (skipped when absent) and small fixture files."""

from __future__ import annotations

import hashlib
import io
import logging
import zipfile
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch

from bayesmf.data import (
    DatasetNotFoundError,
    MovieLens,
    Network,
    Ratings,
    data_home,
    find_dataset,
    find_file,
    from_networkx,
    load_edge_list,
    load_jester,
    load_movielens,
    load_nips234,
    sources,
)
from bayesmf.data.sources import REGISTRY, DatasetChecksumError, DatasetSpec

GENRES_100K = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
]


@pytest.fixture(autouse=True)
def _isolated_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test sees the real cache or $BAYESMF_DATA_DIR, and none may reach the network."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("BAYESMF_CACHE", str(cache))
    monkeypatch.delenv("BAYESMF_DATA_DIR", raising=False)

    def no_network(url: str):
        raise AssertionError(f"test tried to download {url}")

    monkeypatch.setattr(sources, "_downloader", no_network)
    return cache


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


# =========================================================================== real data


def test_ml100k_real(data_dir: Path) -> None:
    ml = load_movielens("100k", root=data_dir, download=False)
    assert isinstance(ml, MovieLens)
    assert len(ml.ratings) == 100_000
    assert list(ml.ratings.columns) == ["user", "item", "rating", "timestamp"]
    assert ml.scale == (1.0, 5.0)
    assert list(ml.item_features.columns) == GENRES_100K
    assert ml.item_features.shape == (1682, 19)
    assert ml.user_features is not None and ml.user_features.shape[0] == 943
    assert ml.items.loc[1, "title"] == "Toy Story (1995)"
    assert ml.items.loc[1, "genres"] == "Animation|Children's|Comedy"

    R = ml.to_ratings()
    assert isinstance(R, Ratings)
    assert R.shape == (943, 1682) and len(R) == 100_000
    assert R.col_features is not None and R.col_features.shape == (1682, 19)
    assert R.col_feature_names == tuple(GENRES_100K)
    assert R.scale == (1.0, 5.0) and R.name == "movielens-100k"
    assert R.row_ids.tolist() == list(range(1, 944))
    assert R.col_ids.tolist() == list(range(1, 1683))
    # features aligned with the column ids
    np.testing.assert_array_equal(
        R.col_features.numpy(), ml.item_features.loc[R.col_ids].to_numpy()
    )
    Ru = ml.to_ratings(user_features=True)
    assert Ru.row_features is not None and Ru.row_features.shape[0] == 943
    assert "age" in Ru.row_feature_names and "gender_F" in Ru.row_feature_names

    train, test = ml.canonical_split("u1")
    assert (len(train), len(test)) == (80_000, 20_000)
    assert train.shape == test.shape == R.shape
    np.testing.assert_array_equal(train.row_ids, R.row_ids)
    np.testing.assert_array_equal(test.col_ids, R.col_ids)
    # u1.base + u1.test is exactly u.data
    def keys(r: Ratings) -> set[int]:
        return set((r.rows * r.n_cols + r.cols).tolist())

    assert keys(train) | keys(test) == keys(R)
    ta, te = ml.canonical_split("ua")
    assert (len(ta), len(te)) == (90_570, 9_430)


def test_ml100k_found_through_env_and_folder_root(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BAYESMF_DATA_DIR", str(data_dir))
    assert find_dataset("ml-100k", download=False) == data_dir / "ml-100k"
    monkeypatch.delenv("BAYESMF_DATA_DIR")
    # root may be the dataset folder itself
    assert find_dataset("ml-100k", root=data_dir / "ml-100k", download=False) == (
        data_dir / "ml-100k"
    )


def test_nips234_real(data_dir: Path) -> None:
    net = load_nips234(root=data_dir, download=False)
    assert isinstance(net, Network)
    assert net.name == "nips234"
    assert net.n_nodes == 234 and net.n_edges == 598
    A = net.adjacency
    assert torch.equal(A, A.T)
    assert torch.all(A.diag() == 0)
    assert int(A.sum()) == 2 * 598


def test_nips234_download_verified(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, _isolated_sources: Path
) -> None:
    """The plain-file download path: served from the shared copy, verified, cached."""
    payload = (data_dir / "nips234" / "NIPS.csv").read_bytes()
    urls: list[str] = []

    def fake(url: str):
        def download(url_: str, output_file: str, pooch_: object, check_only: bool = False):
            urls.append(url_)
            Path(output_file).write_bytes(payload)

        return download

    monkeypatch.setattr(sources, "_downloader", fake)
    net = load_nips234(download=True)
    assert net.n_edges == 598
    assert urls == [REGISTRY["nips234"].url]
    assert (_isolated_sources / "nips234" / "NIPS.csv").is_file()
    # second call: found in the cache, no download
    load_nips234(download=True)
    assert len(urls) == 1


# =========================================================================== sources


def test_data_home_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BAYESMF_CACHE", str(tmp_path / "x"))
    assert data_home() == tmp_path / "x"
    monkeypatch.delenv("BAYESMF_CACHE")
    assert data_home().name == "bayesmf"


def test_registry_is_complete() -> None:
    for name in ["ml-100k", "ml-1m", "ml-10m", "ml-20m", "ml-25m", "ml-latest-small",
                 "jester-1", "nips234"]:
        spec = REGISTRY[name]
        assert spec.url.startswith("https://")
        assert spec.sha256 is not None and len(spec.sha256) == 64
        assert spec.archive in ("zip", None)
    assert REGISTRY["ml-10m"].folder == "ml-10M100K"
    assert REGISTRY["ml-100k"].key_sha256 == (
        "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"
    )


def test_missing_dataset_names_paths_and_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _isolated_sources: Path
) -> None:
    env = tmp_path / "env"
    env.mkdir()
    monkeypatch.setenv("BAYESMF_DATA_DIR", str(env))
    with pytest.raises(DatasetNotFoundError) as err:
        find_dataset("ml-100k", download=False)
    msg = str(err.value)
    assert str(env / "ml-100k" / "u.data") in msg
    assert str(_isolated_sources / "ml-100k" / "u.data") in msg
    assert "https://files.grouplens.org/datasets/movielens/ml-100k.zip" in msg
    assert isinstance(err.value, FileNotFoundError)
    with pytest.raises(DatasetNotFoundError, match="NIPS.csv"):
        load_nips234(download=False)
    with pytest.raises(DatasetNotFoundError, match="jester_dataset_1_1.zip"):
        load_jester(download=False)
    with pytest.raises(DatasetNotFoundError, match="ml-10m.zip"):
        load_movielens("10m", download=False)
    assert not any(env.iterdir())


# --------------------------------------------------------------------------- explicit root


def _nips_like(path: Path, n: int = 5) -> Path:
    """A ring of n nodes in the NIPS.csv format (no header, comma-separated 0/1)."""
    A = np.zeros((n, n), dtype=int)
    for k in range(n):
        A[k, (k + 1) % n] = A[(k + 1) % n, k] = 1
    return _write(path, "\n".join(",".join(map(str, row)) for row in A) + "\n")


def test_explicit_root_file_is_read_not_the_data_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """load_nips234(root="other/Protein.csv") reads Protein.csv even with a data dir set."""
    env = tmp_path / "env"
    _nips_like(env / "nips234" / "NIPS.csv", n=4)
    monkeypatch.setenv("BAYESMF_DATA_DIR", str(env))
    assert load_nips234(download=False).n_nodes == 4  # the data dir, when no root is given
    other = _nips_like(tmp_path / "other" / "Protein.csv", n=7)
    net = load_nips234(root=other)
    assert (net.n_nodes, net.n_edges, net.name) == (7, 7, "Protein")
    assert find_file("nips234", root=other) == other
    # a folder given as root is used in preference to the data dir
    _nips_like(tmp_path / "mine" / "nips234" / "NIPS.csv", n=6)
    assert load_nips234(root=tmp_path / "mine").n_nodes == 6
    assert load_nips234(root=tmp_path / "mine" / "nips234").n_nodes == 6


@pytest.mark.parametrize(
    "load, expected",
    [
        (lambda root: load_movielens("100k", root=root), ["u.data", "ml-100k.zip"]),
        (lambda root: load_movielens("latest-small", root=root), ["ratings.csv"]),
        (lambda root: load_jester(root=root), ["jester-data-1.xls", "jester-data-1.csv"]),
        (lambda root: load_nips234(root=root), ["NIPS.csv"]),
        (lambda root: find_dataset("ml-1m", root=root), ["ratings.dat"]),
    ],
)
def test_empty_root_is_refused_even_with_a_data_dir(
    load, expected: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    _isolated_sources: Path, data_dir_fixture: Path,
) -> None:
    """An explicit root is searched alone: nothing falls through to $BAYESMF_DATA_DIR or the
    cache, and nothing is downloaded (even with download=True, the default)."""
    monkeypatch.setenv("BAYESMF_DATA_DIR", str(data_dir_fixture))
    calls = _serve(monkeypatch, {})
    root = tmp_path / "empty"
    root.mkdir()
    with pytest.raises(DatasetNotFoundError) as err:
        load(root)
    msg = str(err.value)
    assert f"root={str(root)!r}" in msg and "searched alone" in msg
    for name in expected:
        assert name in msg
    assert str(data_dir_fixture) not in msg
    assert calls == [] and not any(root.iterdir())
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        load(tmp_path / "nowhere")


@pytest.fixture
def data_dir_fixture(tmp_path: Path) -> Path:
    """A $BAYESMF_DATA_DIR holding every dataset the root tests ask for (tiny files)."""
    env = tmp_path / "env"
    _write_100k(env)
    _write(env / "ml-latest-small" / "ratings.csv", "userId,movieId,rating,timestamp\n")
    _write(env / "ml-1m" / "ratings.dat", "1::1::5::1\n")
    _nips_like(env / "nips234" / "NIPS.csv")
    _write(env / "jester-1" / "jester-data-1.csv", _jester_csv(_jester_rows()))
    return env


def test_root_file_for_a_folder_dataset_is_refused(tmp_path: Path) -> None:
    f = _write(tmp_path / "ml-100k" / "u.data", "1\t1\t5\t1\n")
    with pytest.raises(ValueError, match=r"is a file, but dataset 'ml-100k' is read from a folder"):
        load_movielens("100k", root=f)
    with pytest.raises(ValueError, match="is a file"):
        find_dataset("ml-100k", root=f)


def test_unknown_names() -> None:
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        find_dataset("nope")
    with pytest.raises(ValueError, match="unknown MovieLens variant"):
        load_movielens("7m")


def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _isolated_sources):
    for base in (tmp_path / "root", tmp_path / "env", _isolated_sources):
        _write(base / "ml-1m" / "ratings.dat", "1::1::5::1\n")
    monkeypatch.setenv("BAYESMF_DATA_DIR", str(tmp_path / "env"))
    assert find_dataset("ml-1m", root=tmp_path / "root") == tmp_path / "root" / "ml-1m"
    assert find_dataset("ml-1m") == tmp_path / "env" / "ml-1m"
    monkeypatch.delenv("BAYESMF_DATA_DIR")
    assert find_dataset("ml-1m") == _isolated_sources / "ml-1m"


def _zip_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return buf.getvalue()


def _serve(monkeypatch: pytest.MonkeyPatch, payloads: dict[str, bytes | Exception]) -> list[str]:
    """Replace the network: URL -> bytes written, or an exception raised."""
    calls: list[str] = []

    def factory(url: str):
        def download(url_: str, output_file: str, pooch_: object, check_only: bool = False):
            calls.append(url_)
            payload = payloads[url_]
            if isinstance(payload, Exception):
                raise payload
            Path(output_file).write_bytes(payload)

        return download

    monkeypatch.setattr(sources, "_downloader", factory)
    return calls


def _fake_spec(monkeypatch: pytest.MonkeyPatch, archive: bytes, sha: str | None, **kw) -> None:
    spec = DatasetSpec(
        "toy", "https://example.org/toy.zip", folder="toy", key_file="data.txt",
        archive="zip", sha256=sha, **kw,
    )
    monkeypatch.setitem(REGISTRY, "toy", spec)


def test_download_verified_and_unzipped(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, _isolated_sources: Path
) -> None:
    archive = _zip_bytes({"toy/data.txt": b"1 2 3\n"})
    _fake_spec(monkeypatch, archive, hashlib.sha256(archive).hexdigest())
    calls = _serve(monkeypatch, {"https://example.org/toy.zip": archive})
    env = tmp_path / "readonly"
    env.mkdir()
    monkeypatch.setenv("BAYESMF_DATA_DIR", str(env))
    folder = find_dataset("toy")
    assert folder == _isolated_sources / "toy"
    assert (folder / "data.txt").read_bytes() == b"1 2 3\n"
    assert calls == ["https://example.org/toy.zip"]
    assert not any(env.iterdir())  # nothing written to $BAYESMF_DATA_DIR
    assert find_dataset("toy") == folder and len(calls) == 1


def test_wrong_checksum_is_detected(
    monkeypatch: pytest.MonkeyPatch, _isolated_sources: Path
) -> None:
    archive = _zip_bytes({"toy/data.txt": b"tampered\n"})
    _fake_spec(monkeypatch, archive, "0" * 64)
    _serve(monkeypatch, {"https://example.org/toy.zip": archive})
    with pytest.raises(DatasetChecksumError, match="0{64}"):
        find_dataset("toy")
    # the bad download was deleted and nothing was unpacked
    assert not (_isolated_sources / "toy.zip").exists()
    assert not (_isolated_sources / "toy" / "data.txt").exists()


def test_wrong_checksum_of_real_spec(monkeypatch: pytest.MonkeyPatch, _isolated_sources) -> None:
    """A tampered ML-100K archive is rejected before anything is unpacked."""
    spec = REGISTRY["ml-100k"]
    fake = _zip_bytes({"ml-100k/u.data": b"1\t1\t5\t0\n"})
    _serve(monkeypatch, {spec.url: fake})
    with pytest.raises(DatasetChecksumError, match=spec.sha256):
        load_movielens("100k")
    assert not (_isolated_sources / "ml-100k").exists()


def test_unpinned_download_warns_and_records_sha(
    monkeypatch: pytest.MonkeyPatch, _isolated_sources: Path, caplog: pytest.LogCaptureFixture
) -> None:
    archive = _zip_bytes({"toy/data.txt": b"x\n"})
    _fake_spec(monkeypatch, archive, None)
    _serve(monkeypatch, {"https://example.org/toy.zip": archive})
    with caplog.at_level(logging.WARNING, logger="bayesmf.data.sources"):
        folder = find_dataset("toy")
    assert "no pinned checksum" in caplog.text
    recorded = (folder / ".sha256").read_text().split()[0]
    assert recorded == hashlib.sha256(archive).hexdigest()


def test_failed_download_tries_mirrors_then_reports(
    monkeypatch: pytest.MonkeyPatch, _isolated_sources: Path
) -> None:
    archive = _zip_bytes({"toy/data.txt": b"x\n"})
    sha = hashlib.sha256(archive).hexdigest()
    _fake_spec(monkeypatch, archive, sha, mirrors=("https://mirror.org/toy.zip",))
    calls = _serve(monkeypatch, {
        "https://example.org/toy.zip": OSError("connection refused"),
        "https://mirror.org/toy.zip": archive,
    })
    assert find_dataset("toy") == _isolated_sources / "toy"
    assert calls == ["https://example.org/toy.zip", "https://mirror.org/toy.zip"]

    _fake_spec(monkeypatch, archive, sha)
    (_isolated_sources / "toy" / "data.txt").unlink()
    (_isolated_sources / "toy.zip").unlink()
    _serve(monkeypatch, {"https://example.org/toy.zip": OSError("connection refused")})
    with pytest.raises(DatasetNotFoundError) as err:
        find_dataset("toy")
    assert "connection refused" in str(err.value)
    assert "https://example.org/toy.zip" in str(err.value)
    assert str(_isolated_sources / "toy" / "data.txt") in str(err.value)


def test_archive_without_key_file(monkeypatch: pytest.MonkeyPatch) -> None:
    archive = _zip_bytes({"other/readme.txt": b"x\n"})
    _fake_spec(monkeypatch, archive, hashlib.sha256(archive).hexdigest())
    _serve(monkeypatch, {"https://example.org/toy.zip": archive})
    with pytest.raises(DatasetNotFoundError, match="holds no toy/data.txt"):
        find_dataset("toy")


# =========================================================================== MovieLens 100K format

U_DATA = "1\t10\t5\t881250949\n2\t10\t3\t891717742\n1\t20\t4\t878887116\n3\t30\t1\t880606923\n"
U_GENRE = "".join(f"{g}|{k}\n" for k, g in enumerate(GENRES_100K)) + "\n"


def _u_item_line(item: int, title: str, flags: list[int]) -> str:
    return f"{item}|{title}|01-Jan-1995||http://x|" + "|".join(map(str, flags))


def _write_100k(base: Path, u_data: str = U_DATA) -> Path:
    folder = base / "ml-100k"
    flags = [[0] * 19 for _ in range(3)]
    flags[0][1] = flags[0][5] = 1  # Action, Comedy
    flags[1][8] = 1  # Drama
    flags[2][0] = 1  # unknown
    items = [_u_item_line(10, "Amélie (2001)", flags[0]), _u_item_line(20, "B (1995)", flags[1]),
             _u_item_line(30, "C (1996)", flags[2])]
    _write(folder / "u.data", u_data)
    _write(folder / "u.item", "\n".join(items) + "\n", encoding="latin-1")
    _write(folder / "u.genre", U_GENRE)
    _write(folder / "u.user", "1|24|M|technician|85711\n2|53|F|other|94043\n3|23|M|writer|32067\n")
    _write(folder / "u1.base", "1\t10\t5\t881250949\n2\t10\t3\t891717742\n3\t30\t1\t880606923\n")
    _write(folder / "u1.test", "1\t20\t4\t878887116\n")
    return folder


def test_ml100k_fixture(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _write_100k(tmp_path)
    with caplog.at_level(logging.WARNING):
        ml = load_movielens("ml-100k", root=tmp_path, download=False)
    assert "sha256" in caplog.text  # the fixture u.data is not the published file
    assert len(ml.ratings) == 4
    assert ml.ratings["rating"].dtype == np.float64
    assert ml.items.loc[10, "title"] == "Amélie (2001)"
    assert ml.items.loc[10, "genres"] == "Action|Comedy"
    assert ml.items.loc[30, "genres"] == "unknown"
    assert list(ml.item_features.columns) == GENRES_100K
    uf = ml.user_features
    assert uf is not None
    assert uf.loc[2, "age"] == 53.0 and uf.loc[2, "gender_F"] == 1.0
    assert uf.loc[1, "occupation_technician"] == 1.0
    R = ml.to_ratings(user_features=True)
    assert R.shape == (3, 3) and R.scale == (1.0, 5.0)
    assert R.to_dense()[0].tolist()[:2] == [5.0, 4.0]
    train, test = ml.canonical_split("u1")
    assert (len(train), len(test)) == (3, 1) and train.shape == test.shape == R.shape
    with pytest.raises(ValueError, match="unknown split"):
        ml.canonical_split("u9")


@pytest.mark.parametrize(
    "bad_line, what",
    [
        ("2\t20\t3\t891717742\t7", "more than 4 fields"),  # too many fields
        ("2\t20\t3", "field 'timestamp'"),  # too few fields
        ("2\tabc\t3\t891717742", "field 'item'"),  # non-numeric
        ("2\t20\t3.5.1\t891717742", "field 'rating'"),  # non-numeric rating
        ("2\t20\t9\t891717742", "outside the scale"),
        ("", "field 'user'"),  # an empty line in the middle
    ],
)
def test_ml100k_malformed_line(tmp_path: Path, bad_line: str, what: str) -> None:
    lines = U_DATA.splitlines()
    lines.insert(2, bad_line)  # becomes line 3
    folder = _write_100k(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="line 3") as err:
        load_movielens("100k", root=tmp_path, download=False)
    assert str(folder / "u.data") in str(err.value)
    assert what in str(err.value)


def test_ml100k_first_line_too_many_fields(tmp_path: Path) -> None:
    _write_100k(tmp_path, "1\t10\t5\t881250949\t1\n" + U_DATA)
    with pytest.raises(ValueError, match=r"u\.data, line 1: more than 4 fields"):
        load_movielens("100k", root=tmp_path, download=False)


def test_ml100k_trailing_blank_lines_ok(tmp_path: Path) -> None:
    _write_100k(tmp_path, U_DATA + "\n\n")
    assert len(load_movielens("100k", root=tmp_path, download=False).ratings) == 4


def test_ml100k_missing_side_file(tmp_path: Path) -> None:
    folder = _write_100k(tmp_path)
    (folder / "u.item").unlink()
    with pytest.raises(FileNotFoundError, match="u.item"):
        load_movielens("100k", root=tmp_path, download=False)


# =========================================================================== MovieLens 1M / 10M


def _write_1m(base: Path, ratings: str | None = None) -> Path:
    folder = base / "ml-1m"
    _write(folder / "ratings.dat", ratings or
           "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n")
    _write(folder / "movies.dat",
           "661::James and the Giant Peach (1996)::Animation|Children's|Musical\n"
           "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n"
           "2000::Café au lait: Métisse (1993)::Comedy\n",
           encoding="latin-1")
    _write(folder / "users.dat", "1::F::1::10::48067\n2::M::56::16::70072\n")
    return folder


def test_ml1m_fixture(tmp_path: Path) -> None:
    _write_1m(tmp_path)
    ml = load_movielens("1m", root=tmp_path, download=False)
    assert ml.scale == (1.0, 5.0)
    assert ml.ratings.shape == (3, 4)
    assert ml.ratings["timestamp"].tolist() == [978300760, 978302109, 978298413]
    assert ml.items.loc[2000, "title"] == "Café au lait: Métisse (1993)"
    assert ml.items.loc[661, "genres"] == "Animation|Children's|Musical"
    assert set(ml.item_features.columns) == {"Animation", "Children's", "Musical", "Drama",
                                             "Comedy"}
    assert ml.item_features.loc[1193, "Drama"] == 1.0
    uf = ml.user_features
    assert uf is not None and uf.loc[2, "age"] == 56.0
    assert uf.loc[1, "gender_F"] == 1.0 and uf.loc[1, "occupation_K-12 student"] == 1.0
    assert uf.loc[2, "occupation_self-employed"] == 1.0
    R = ml.to_ratings(user_features=True)
    assert R.shape == (2, 2)  # items without ratings are not columns
    assert R.col_ids.tolist() == [661, 1193] and R.name == "movielens-1m"
    with pytest.raises(ValueError, match="100k only"):
        ml.canonical_split("u1")


def test_ml1m_single_colon_is_rejected(tmp_path: Path) -> None:
    folder = _write_1m(tmp_path, "1::1193::5::978300760\n1:661::3::978302109\n")
    with pytest.raises(ValueError, match="line 2") as err:
        load_movielens("1m", root=tmp_path, download=False)
    assert str(folder / "ratings.dat") in str(err.value)


def test_ml1m_bad_movie_line(tmp_path: Path) -> None:
    folder = _write_1m(tmp_path)
    _write(folder / "movies.dat", "661::Peach (1996)::Animation\nnot a movie line\n")
    with pytest.raises(ValueError, match=r"movies\.dat, line 2"):
        load_movielens("1m", root=tmp_path, download=False)


def test_ml10m_fixture(tmp_path: Path) -> None:
    folder = tmp_path / "ml-10M100K"
    _write(folder / "ratings.dat", "1::122::5::838985046\n1::185::3.5::838983525\n"
                                   "2::122::0.5::838983392\n")
    _write(folder / "movies.dat", "122::Boomerang (1992)::Comedy|Romance\n"
                                  "185::Star Wars: Episode IV - A New Hope (1977)::Action|Sci-Fi\n")
    ml = load_movielens("10m", root=tmp_path, download=False)
    assert ml.path == folder and ml.scale == (0.5, 5.0)
    assert ml.ratings["rating"].tolist() == [5.0, 3.5, 0.5]
    assert ml.items.loc[185, "title"] == "Star Wars: Episode IV - A New Hope (1977)"
    assert ml.user_features is None
    R = ml.to_ratings()
    assert R.shape == (2, 2) and R.col_features is not None and R.col_features.shape == (2, 4)
    with pytest.raises(ValueError, match="no user features"):
        ml.to_ratings(user_features=True)


# =========================================================================== MovieLens csv variants


@pytest.mark.parametrize("variant", ["20m", "25m", "latest-small"])
def test_movielens_csv_fixture(tmp_path: Path, variant: str) -> None:
    folder = tmp_path / f"ml-{variant}"
    _write(folder / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,1112486027\n"
                                   "1,29,4.0,1112484676\n7,2,0.5,1094785740\n")
    _write(folder / "movies.csv", 'movieId,title,genres\n2,Jumanji (1995),Adventure|Fantasy\n'
                                  '11,"American President, The (1995)",Comedy|Romance\n'
                                  '29,"City of Lost Children, The (1995)",(no genres listed)\n')
    ml = load_movielens(variant, root=tmp_path, download=False)
    assert ml.scale == (0.5, 5.0)
    assert ml.items.loc[11, "title"] == "American President, The (1995)"
    assert ml.ratings["user"].tolist() == [1, 1, 7]
    assert "(no genres listed)" in ml.item_features.columns
    R = ml.to_ratings()
    assert R.shape == (2, 2) and R.name == f"movielens-{variant}"
    assert R.col_feature_names == tuple(ml.item_features.columns)
    np.testing.assert_array_equal(R.values.numpy(), np.array([3.5, 4.0, 0.5], dtype=np.float32))


def test_movielens_csv_malformed(tmp_path: Path) -> None:
    folder = tmp_path / "ml-latest-small"
    _write(folder / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,1\n1,29,x,2\n")
    _write(folder / "movies.csv", "movieId,title,genres\n2,J (1995),Adventure\n")
    with pytest.raises(ValueError, match=r"ratings\.csv, line 3: field 'rating'"):
        load_movielens("latest-small", root=tmp_path, download=False)


def test_movielens_csv_wrong_header(tmp_path: Path) -> None:
    folder = tmp_path / "ml-25m"
    _write(folder / "ratings.csv", "movieId,userId,rating,timestamp\n1,2,3.5,1\n")
    _write(folder / "movies.csv", "movieId,title,genres\n2,J (1995),Adventure\n")
    with pytest.raises(ValueError, match=r"ratings\.csv, line 1: expected the header"):
        load_movielens("25m", root=tmp_path, download=False)


def test_movielens_rated_item_without_metadata(tmp_path: Path) -> None:
    folder = tmp_path / "ml-20m"
    _write(folder / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,3.5,1\n1,99,4,2\n")
    _write(folder / "movies.csv", "movieId,title,genres\n2,J (1995),Adventure\n")
    ml = load_movielens("20m", root=tmp_path, download=False)
    with pytest.raises(ValueError, match="no row for ids"):
        ml.to_ratings()
    assert len(ml.to_ratings(item_features=False)) == 2


# =========================================================================== Jester


def _write_xls(path: Path, rows: list[list[float | None]]) -> Path:
    import xlwt

    path.parent.mkdir(parents=True, exist_ok=True)
    wb = xlwt.Workbook()
    ws = wb.add_sheet("jester")
    for i, row in enumerate(rows):
        for j, v in enumerate(row):
            if v is not None:
                ws.write(i, j, v)
    wb.save(str(path))
    return path


def _jester_rows() -> list[list[float | None]]:
    rng = np.random.default_rng(0)
    rows = []
    for n_rated in (100, 3, 50, 0):
        vals = np.full(100, 99.0)
        idx = rng.choice(100, size=n_rated, replace=False)
        vals[idx] = np.round(rng.uniform(-10, 10, size=n_rated), 2)
        rows.append([float(n_rated), *vals.tolist()])
    return rows


def test_jester_fixture(tmp_path: Path) -> None:
    rows = _jester_rows()
    _write_xls(tmp_path / "jester-1" / "jester-data-1.xls", rows)
    R = load_jester(root=tmp_path, download=False)
    assert R.shape == (4, 100) and len(R) == 153
    assert R.scale == (-10.0, 10.0) and R.name == "jester-1"
    assert R.row_ids.tolist() == [0, 1, 2, 3] and R.col_ids.tolist() == list(range(1, 101))
    dense = np.asarray(rows)[:, 1:]
    obs = dense != 99
    np.testing.assert_allclose(R.to_dense().numpy()[obs], dense[obs], atol=1e-5)
    assert torch.isnan(R.to_dense()[~torch.as_tensor(obs)]).all()


def test_jester_count_mismatch_names_row(tmp_path: Path) -> None:
    rows = _jester_rows()
    rows[2][0] = 49.0
    _write_xls(tmp_path / "jester-data-1.xls", rows)
    with pytest.raises(ValueError, match=r"row 2 \(sheet row 3\)"):
        load_jester(root=tmp_path, download=False)


def test_jester_out_of_range_and_shape(tmp_path: Path) -> None:
    rows = _jester_rows()
    rows[1][1:] = [12.0 if v != 99.0 else v for v in rows[1][1:]]
    _write_xls(tmp_path / "a" / "jester-data-1.xls", rows)
    with pytest.raises(ValueError, match=r"outside \(-10.0, 10.0\).*row 1"):
        load_jester(root=tmp_path / "a", download=False)
    _write_xls(tmp_path / "b" / "jester-data-1.xls", [r[:50] for r in _jester_rows()])
    with pytest.raises(ValueError, match="expected 101 columns"):
        load_jester(root=tmp_path / "b", download=False)


def test_jester_empty_cells_are_missing_but_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = _jester_rows()
    rows[1] = [None if v == 99.0 else v for v in rows[1]]
    _write_xls(tmp_path / "jester-data-1.xls", rows)
    with caplog.at_level(logging.WARNING):
        R = load_jester(root=tmp_path, download=False)
    assert "empty cells" in caplog.text and len(R) == 153


def _jester_csv(rows: list[list[float | None]]) -> str:
    return "".join(
        ",".join("" if v is None else f"{v:g}" for v in row) + "\n" for row in rows
    )


def test_jester_csv_fixture(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = _jester_rows()
    _write(tmp_path / "jester-1" / "jester-data-1.csv", _jester_csv(rows))
    with caplog.at_level(logging.WARNING):
        R = load_jester(root=tmp_path, download=False)
    assert "sha256" in caplog.text  # the fixture is not the published CSV
    assert R.shape == (4, 100) and len(R) == 153
    assert R.scale == (-10.0, 10.0) and R.name == "jester-1"
    assert R.row_ids.tolist() == [0, 1, 2, 3] and R.col_ids.tolist() == list(range(1, 101))
    dense = np.asarray(rows)[:, 1:]
    obs = dense != 99
    np.testing.assert_allclose(R.to_dense().numpy()[obs], dense[obs], atol=1e-5)
    assert torch.isnan(R.to_dense()[~torch.as_tensor(obs)]).all()
    # the folder itself, or the file under any name, as root
    assert len(load_jester(root=tmp_path / "jester-1")) == 153
    other = _write(tmp_path / "mine.txt", _jester_csv(rows))
    assert len(load_jester(root=other)) == 153


def test_jester_csv_and_xls_agree_and_xls_is_preferred(tmp_path: Path) -> None:
    rows = _jester_rows()
    _write_xls(tmp_path / "jester-1" / "jester-data-1.xls", rows)
    rows_csv = [list(r) for r in rows]
    rows_csv[1] = [1.0, 5.0] + [99.0] * 99  # a different table, to see which file is read
    _write(tmp_path / "jester-1" / "jester-data-1.csv", _jester_csv(rows_csv))
    assert len(load_jester(root=tmp_path)) == 153  # the official spreadsheet wins
    from_csv = load_jester(root=tmp_path / "jester-1" / "jester-data-1.csv")
    assert len(from_csv) == 151
    (tmp_path / "jester-1" / "jester-data-1.csv").write_text(_jester_csv(rows))
    a = load_jester(root=tmp_path / "jester-1" / "jester-data-1.csv")
    b = load_jester(root=tmp_path / "jester-1" / "jester-data-1.xls")
    assert torch.equal(a.to_dense().nan_to_num(123.0), b.to_dense().nan_to_num(123.0))


def test_jester_csv_refusals(tmp_path: Path) -> None:
    rows = _jester_rows()
    rows[2][0] = 49.0
    f = _write(tmp_path / "count.csv", _jester_csv(rows))
    with pytest.raises(ValueError, match=r"count.*disagrees.*row 2 \(line 3\); row 2 says 49 "
                                         r"but rates 50"):
        load_jester(root=f)
    rows = _jester_rows()
    k = next(j for j, v in enumerate(rows[3]) if j > 0 and v == 99.0)
    rows[3][k] = -10.5  # row 3 rates nothing, so this is both out of range and uncounted
    f = _write(tmp_path / "range.csv", _jester_csv(rows))
    with pytest.raises(ValueError, match=r"outside \(-10.0, 10.0\).*row 3 \(line 4\).*-10.5"):
        load_jester(root=f)
    f = _write(tmp_path / "text.csv", _jester_csv(_jester_rows()).replace("99", "x", 1))
    with pytest.raises(ValueError, match=r"non-numeric cells in row 1 \(line 2\).*'x'"):
        load_jester(root=f)
    f = _write(tmp_path / "narrow.csv", _jester_csv([r[:50] for r in _jester_rows()]))
    with pytest.raises(ValueError, match="expected 101 columns"):
        load_jester(root=f)
    with pytest.raises(ValueError, match="no users"):
        load_jester(root=_write(tmp_path / "empty.csv", ""))


def test_jester_csv_real(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = data_dir / "jester-1" / "jester-data-1.csv"
    if not path.is_file():
        pytest.skip(f"{path} not available (see issue 14)")
    pinned = dict(REGISTRY["jester-1"].alt_files)["jester-data-1.csv"]
    assert sources.sha256sum(path) == pinned
    R = load_jester(root=data_dir, download=False)
    assert R.shape == (24_983, 100) and len(R) == 1_810_455
    assert R.scale == (-10.0, 10.0)
    v = R.values.double()
    assert -10.0 <= float(v.min()) and float(v.max()) <= 10.0
    assert abs(float(v.sum()) - 1_592_764.74) < 1.0  # SOURCE.md: sum of all ratings
    # found through $BAYESMF_DATA_DIR too (the .xls is not there)
    monkeypatch.setenv("BAYESMF_DATA_DIR", str(data_dir))
    assert find_file("jester-1", download=False) == path


# =========================================================================== edge lists, networkx


def test_edge_list(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    f = _write(tmp_path / "coauthors.csv",
               "a,b,weight\nann,bob,1\nbob,cid,1\nbob,ann,2\ncid,bob,1\ndan,ann,1\nann,bob,1\n")
    with caplog.at_level(logging.INFO, logger="bayesmf.data.networks"):
        net = load_edge_list(f)
    assert "3 lines repeat a link" in caplog.text
    assert net.names.tolist() == ["ann", "bob", "cid", "dan"]
    assert net.edges.tolist() == [[0, 1], [0, 3], [1, 2]]
    assert net.name == "coauthors"
    by_name = load_edge_list(f, source="b", target="a")
    assert by_name.edges.tolist() == net.edges.tolist()


def test_edge_list_numeric_no_header(tmp_path: Path) -> None:
    f = _write(tmp_path / "e.tsv", "10\t2\n2\t1\n")
    net = load_edge_list(f, sep="\t", header=None)
    assert net.names.tolist() == [1, 2, 10]  # sorted numerically
    assert net.edges.tolist() == [[0, 1], [1, 2]]


def test_edge_list_header_that_looks_like_an_edge(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    f = _write(tmp_path / "e.csv", "1,2\n2,3\n3,1\n\n")
    with caplog.at_level(logging.WARNING):
        net = load_edge_list(f)
    assert "pass header=None" in caplog.text and net.n_edges == 2
    assert load_edge_list(f, header=None).n_edges == 3


def test_edge_list_errors(tmp_path: Path) -> None:
    loop = _write(tmp_path / "loop.csv", "s,t\n1,2\n3,3\n")
    with pytest.raises(ValueError, match=r"self-loops at lines \[3\]"):
        load_edge_list(loop)
    hole = _write(tmp_path / "hole.csv", "s,t\n1,2\n3,\n4,5\n")
    with pytest.raises(ValueError, match=r"missing target node at lines \[3\]"):
        load_edge_list(hole)
    blank = _write(tmp_path / "blank.csv", "s,t\n1,2\n3,4\n\n4,5\n")
    with pytest.raises(ValueError, match=r"missing source node at lines \[4\]"):
        load_edge_list(blank)
    with pytest.raises(ValueError, match="column 'x' not found"):
        load_edge_list(loop, source="x")
    with pytest.raises(ValueError, match="out of range"):
        load_edge_list(loop, target=5)
    empty = _write(tmp_path / "empty.csv", "s,t\n")
    with pytest.raises(ValueError, match="no edges"):
        load_edge_list(empty)


def test_from_networkx() -> None:
    G = nx.Graph(name="toy")
    G.add_nodes_from(["z", "y", "x", "lonely"])
    G.add_edge("z", "y", weight=1)
    G.add_edge("x", "y")
    net = from_networkx(G)
    assert net.names.tolist() == ["z", "y", "x", "lonely"]  # G.nodes order, isolated kept
    assert net.edges.tolist() == [[0, 1], [1, 2]]
    assert net.name == "toy" and net.n_nodes == 4
    assert set(map(frozenset, net.to_networkx().edges)) == set(map(frozenset, G.edges))


@pytest.mark.parametrize(
    "graph, match",
    [
        (nx.DiGraph([(0, 1)]), "directed"),
        (nx.MultiGraph([(0, 1), (0, 1)]), "multigraph"),
        (nx.Graph([(0, 1), (2, 2)]), r"self-loops at nodes \[2\]"),
        (nx.Graph([(0, 1, {"weight": 2.5}), (1, 2, {"weight": 1})]), "weight other than 1"),
    ],
)
def test_from_networkx_rejects(graph: nx.Graph, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        from_networkx(graph)
