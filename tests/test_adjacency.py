"""Dense 0/1 adjacency files (`load_adjacency`), and where the other network loaders meet them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from bayesmf.data import Network, load_adjacency, load_edge_list, load_nips234, sources

# a 4-node network: 0-1, 0-2, 2-3
A4 = np.array([[0, 1, 1, 0], [1, 0, 0, 0], [1, 0, 0, 1], [0, 0, 1, 0]])
EDGES4 = [[0, 1], [0, 2], [2, 3]]
NAMES4 = ["ann", "bob", "cid", "dan"]


@pytest.fixture(autouse=True)
def _no_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the real cache or $BAYESMF_DATA_DIR, and none may reach the network."""
    monkeypatch.setenv("BAYESMF_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("BAYESMF_DATA_DIR", raising=False)

    def no_network(url: str):
        raise AssertionError(f"test tried to download {url}")

    monkeypatch.setattr(sources, "_downloader", no_network)


def _text(A: np.ndarray, sep: str = ",", names: list[str] | None = None, header: bool = False,
          corner: str = "", trailing: str = "") -> str:
    lines = []
    if header:
        assert names is not None
        lines.append(sep.join(([corner] if corner is not None else []) + names))
    for k, row in enumerate(A):
        cells = [str(int(v)) for v in row]
        if names is not None and corner is not None:
            cells = [names[k], *cells]
        lines.append(sep.join(cells) + trailing)
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _same(net: Network, names: list | None = None) -> None:
    assert isinstance(net, Network)
    assert net.n_nodes == 4 and net.edges.tolist() == EDGES4
    np.testing.assert_array_equal(net.adjacency.numpy(), A4)
    if names is not None:
        assert net.names.tolist() == names


# =========================================================================== formats read


def test_csv_plain_like_nips(tmp_path: Path) -> None:
    net = load_adjacency(_write(tmp_path / "plain.csv", _text(A4)))
    _same(net, [0, 1, 2, 3])
    assert net.name == "plain"
    assert load_adjacency(tmp_path / "plain.csv", name="toy").name == "toy"


def test_csv_header_and_labels(tmp_path: Path) -> None:
    f = _write(tmp_path / "hl.csv", _text(A4, names=NAMES4, header=True))
    _same(load_adjacency(f), NAMES4)
    # a named corner cell, and quoted names holding the delimiter
    g = _write(tmp_path / "q.csv", _text(A4, names=['"a, b"', "c", "d", "e"], header=True,
                                         corner="node"))
    assert load_adjacency(g).names.tolist() == ["a, b", "c", "d", "e"]


def test_csv_header_only(tmp_path: Path) -> None:
    f = _write(tmp_path / "h.csv", "ann,bob,cid,dan\n" + _text(A4))
    _same(load_adjacency(f), NAMES4)


def test_csv_labels_only_integer_names(tmp_path: Path) -> None:
    f = _write(tmp_path / "l.csv", _text(A4, names=["10", "20", "30", "40"]))
    net = load_adjacency(f)
    _same(net, [10, 20, 30, 40])
    assert net.names.dtype.kind == "i"


def test_tsv_whitespace_semicolon_trailing(tmp_path: Path) -> None:
    _same(load_adjacency(_write(tmp_path / "a.tsv", _text(A4, "\t", NAMES4, header=True))),
          NAMES4)
    # whitespace: runs of spaces, a header without a corner cell
    ws = "   ann bob  cid dan\n" + "".join(
        f"{n}  {'  '.join(str(v) for v in row)}\n" for n, row in zip(NAMES4, A4, strict=True)
    )
    _same(load_adjacency(_write(tmp_path / "a.txt", ws)), NAMES4)
    _same(load_adjacency(_write(tmp_path / "b.txt", _text(A4, " "))), [0, 1, 2, 3])
    _same(load_adjacency(_write(tmp_path / "a.ssv", _text(A4, ";"))))
    # a delimiter at the end of every line (as some exporters write)
    _same(load_adjacency(_write(tmp_path / "t.csv", _text(A4, trailing=","))))
    _same(load_adjacency(_write(tmp_path / "th.csv",
                                _text(A4, names=NAMES4, header=True, trailing=","))), NAMES4)
    # explicit delimiter and explicit header/labels
    f = _write(tmp_path / "x.dat", _text(A4, "|", NAMES4, header=True))
    _same(load_adjacency(f, delimiter="|", header=True, labels=True), NAMES4)


def test_npy_and_npz(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", A4)
    _same(load_adjacency(tmp_path / "a.npy"), [0, 1, 2, 3])
    np.save(tmp_path / "b.npy", A4.astype(bool))
    _same(load_adjacency(tmp_path / "b.npy"))
    sp.save_npz(tmp_path / "s.npz", sp.csr_matrix(A4))
    net = load_adjacency(tmp_path / "s.npz")
    _same(net)
    assert net.name == "s"
    np.savez(tmp_path / "d.npz", adjacency=A4.astype(np.float32))
    _same(load_adjacency(tmp_path / "d.npz"))


def test_sparse_is_not_densified_and_large(tmp_path: Path) -> None:
    """A sparse ring of 50,000 nodes would need 20 GB dense; it loads from its links."""
    n = 50_000
    i = np.arange(n)
    j = (i + 1) % n
    S = sp.coo_matrix((np.ones(2 * n), (np.r_[i, j], np.r_[j, i])), shape=(n, n))
    sp.save_npz(tmp_path / "ring.npz", S)
    net = load_adjacency(tmp_path / "ring.npz")
    assert net.n_nodes == n and net.n_edges == n


def test_round_trip_from_a_network(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    U = np.triu(rng.random((30, 30)) < 0.2, k=1)
    A = (U | U.T).astype(int)
    names = [f"n{k}" for k in range(30)]
    net = load_adjacency(_write(tmp_path / "r.csv", _text(A, names=names, header=True)))
    np.testing.assert_array_equal(net.adjacency.numpy(), A)
    assert net.names.tolist() == names and net.n_edges == int(U.sum())


# =========================================================================== refusals


def test_asymmetric_refused_with_positions(tmp_path: Path) -> None:
    B = A4.copy()
    B[1, 3] = 1
    with pytest.raises(ValueError, match=r"a\.csv: not symmetric at 1 pairs: line 2 field 4 = 1 "
                                         r"but line 4 field 2 = 0"):
        load_adjacency(_write(tmp_path / "a.csv", _text(B)))
    # with a header and labels the file coordinates shift by one line and one field
    with pytest.raises(ValueError, match=r"line 3 field 5 = 1 but line 5 field 3 = 0"):
        load_adjacency(_write(tmp_path / "b.csv", _text(B, names=NAMES4, header=True)))
    np.save(tmp_path / "c.npy", B)
    with pytest.raises(ValueError, match=r"not symmetric at 1 pairs: \(1, 3\) = 1 but \(3, 1\)"):
        load_adjacency(tmp_path / "c.npy")
    sp.save_npz(tmp_path / "d.npz", sp.csr_matrix(B))
    with pytest.raises(ValueError, match=r"not symmetric at 1 pairs: \(1, 3\) = 1 but \(3, 1\)"):
        load_adjacency(tmp_path / "d.npz")


def test_non_binary_refused_with_positions(tmp_path: Path) -> None:
    B = A4.copy()
    B[0, 1] = B[1, 0] = 2
    with pytest.raises(ValueError, match=r"entries must be 0 or 1; 2 are not, at line 1 field 2, "
                                         r"line 2 field 1: \[2\.0, 2\.0\]"):
        load_adjacency(_write(tmp_path / "a.csv", _text(B)))
    np.save(tmp_path / "b.npy", B * 0.5)
    with pytest.raises(ValueError, match=r"0 or 1; 4 are not, at \(0, 2\), \(2, 0\)"):
        load_adjacency(tmp_path / "b.npy")
    sp.save_npz(tmp_path / "c.npz", sp.csr_matrix(B))
    with pytest.raises(ValueError, match=r"0 or 1; 2 are not, at \(0, 1\), \(1, 0\)"):
        load_adjacency(tmp_path / "c.npz")


def test_self_loops_refused_with_positions_and_names(tmp_path: Path) -> None:
    B = A4.copy()
    B[2, 2] = 1
    with pytest.raises(ValueError, match=r"self-loops \(non-zero diagonal\) at line 3 field 3;"):
        load_adjacency(_write(tmp_path / "a.csv", _text(B)))
    with pytest.raises(ValueError, match=r"at line 4 field 4 \(nodes \['cid'\]\)"):
        load_adjacency(_write(tmp_path / "b.csv", _text(B, names=NAMES4, header=True)))
    sp.save_npz(tmp_path / "c.npz", sp.csr_matrix(B))
    with pytest.raises(ValueError, match=r"self-loops .* at \(2, 2\)"):
        load_adjacency(tmp_path / "c.npz")


def test_malformed_text_refused(tmp_path: Path) -> None:
    # not square: a 4 x 3 block, and a header/labels hint when the shape suggests one
    with pytest.raises(ValueError, match="must be square, found 4 rows and 3 columns"):
        load_adjacency(_write(tmp_path / "a.csv", _text(A4[:, :3])))
    labelled = _write(tmp_path / "b.csv", _text(A4, names=["7", "8", "9", "9"]))
    with pytest.raises(ValueError, match=r"b\.csv: node names are not unique: \[9\]"):
        load_adjacency(labelled)
    with pytest.raises(ValueError, match="4 rows and 5 columns.*pass labels=True"):
        load_adjacency(labelled, labels=False)
    # non-numeric and empty cells are named by line and field
    bad = _text(A4).splitlines()
    bad[2] = "1,0,x,1"
    bad[3] = "0,,1,0"
    with pytest.raises(ValueError, match=r"non-numeric entries at line 3 field 3, "
                                         r"line 4 field 2: \['x', ''\]"):
        load_adjacency(_write(tmp_path / "c.csv", "\n".join(bad) + "\n"))
    # a blank line inside the matrix is a row of empty cells
    with pytest.raises(ValueError, match=r"at line 2 field 1, line 2 field 2, line 2 field 3: "
                                         r"empty cells"):
        load_adjacency(_write(tmp_path / "blank.csv", "0,1,0\n\n1,0,1\n0,1,0\n"))
    # a header forced off: its names are non-numeric cells of line 1, with a hint
    with pytest.raises(ValueError, match=r"line 1 field 2.*pass header=True"):
        load_adjacency(_write(tmp_path / "d.csv", "ann,bob,cid,dan\n" + _text(A4)),
                       header=False)
    # header and first column naming the nodes in different orders
    swapped = _text(A4, names=NAMES4, header=True).replace(",ann,bob,", ",bob,ann,", 1)
    with pytest.raises(ValueError, match=r"different order: row 0 \(line 2\) is 'ann' but "
                                         r"column 0 .* is 'bob'"):
        load_adjacency(_write(tmp_path / "e.csv", swapped))
    with pytest.raises(ValueError, match="empty file"):
        load_adjacency(_write(tmp_path / "f.csv", ""))
    np.save(tmp_path / "g.npy", np.zeros((3, 4)))
    with pytest.raises(ValueError, match=r"must be square, found shape \(3, 4\)"):
        load_adjacency(tmp_path / "g.npy")
    np.savez(tmp_path / "h.npz", a=A4, b=A4)
    with pytest.raises(ValueError, match="holding one array"):
        load_adjacency(tmp_path / "h.npz")


# =========================================================================== other loaders


def test_edge_list_points_to_load_adjacency(tmp_path: Path) -> None:
    plain = _write(tmp_path / "m.csv", _text(A4))
    with pytest.raises(ValueError, match=r"4 x 4 0/1 adjacency matrix, not an edge list; read "
                                         r"it with bayesmf\.data\.load_adjacency\("):
        load_edge_list(plain)
    with pytest.raises(ValueError, match="load_adjacency"):
        load_edge_list(plain, header=None)
    labelled = _write(tmp_path / "n.csv", _text(A4, names=NAMES4, header=True))
    with pytest.raises(ValueError, match="load_adjacency"):
        load_edge_list(labelled)
    # a genuine three-column edge list is still an edge list
    e = _write(tmp_path / "e.csv", "s,t,w\n0,1,1\n1,2,1\n")
    assert load_edge_list(e).n_edges == 2


def test_nips234_reads_through_load_adjacency(tmp_path: Path) -> None:
    """An explicit file in the NIPS format is read (and named after itself)."""
    f = _write(tmp_path / "Protein.csv", _text(A4))
    net = load_nips234(root=f)
    _same(net)
    assert net.name == "Protein"
    B = A4.copy()
    B[0, 3] = 1
    with pytest.raises(ValueError, match=r"Protein2\.csv: not symmetric .* line 1 field 4 = 1"):
        load_nips234(root=_write(tmp_path / "Protein2.csv", _text(B)))


def test_real_nips_csv(data_dir: Path) -> None:
    path = data_dir / "nips234" / "NIPS.csv"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    net = load_adjacency(path)
    ref = load_nips234(root=data_dir, download=False)
    assert (net.n_nodes, net.n_edges) == (234, 598)
    assert net.edges.tolist() == ref.edges.tolist() and ref.name == "nips234"
    with pytest.raises(ValueError, match="234 x 234 0/1 adjacency matrix.*load_adjacency"):
        load_edge_list(path)
