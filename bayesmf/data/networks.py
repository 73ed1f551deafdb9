"""Symmetric binary networks: adjacency matrices, edge lists, networkx, NIPS 1-17.

All loaders return a :class:`~bayesmf.data.Network` (undirected, unweighted,
without self-links); inputs that are none of these are rejected with a
:class:`ValueError` naming the offending lines, positions, nodes or edges.

* :func:`load_adjacency` reads a dense 0/1 adjacency matrix: CSV, TSV or
  whitespace-separated text (with or without a header row and a first column
  of node names), NumPy ``.npy`` or a SciPy sparse ``.npz``.
* :func:`load_edge_list` reads one link per line.
* :func:`from_networkx` converts a ``networkx.Graph``.
* :func:`load_nips234` reads the NIPS co-authorship benchmark network.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from .containers import Network
from .sources import find_file

__all__ = ["load_adjacency", "load_nips234", "load_edge_list", "from_networkx"]

logger = logging.getLogger(__name__)

_MAX_SHOWN = 5


def _fmt(items: Any) -> str:
    seq = list(items[:_MAX_SHOWN])
    more = f" (and {len(items) - _MAX_SHOWN} more)" if len(items) > _MAX_SHOWN else ""
    return f"[{', '.join(repr(x.item() if isinstance(x, np.generic) else x) for x in seq)}]{more}"


def _is01(field: str) -> bool:
    try:
        return float(field) in (0.0, 1.0)
    except ValueError:
        return False


def _looks_like_header(first: list[str], second: list[str]) -> bool:
    """Whether the first line of a text matrix names the nodes.

    It does when a field after the first is not a number. Numbers are taken
    for node ids only when they are distinct, at least three of them are not
    0/1, and the second line holds 0/1 entries: a data row with a bad entry
    such as 2 is not mistaken for a header (pass ``header=True`` for 0-based
    ids of 3 nodes and such).
    """
    rest = first[1:]
    if not rest:
        return False
    try:
        values = [float(x) for x in rest]
    except ValueError:
        return True
    n_other = sum(v not in (0.0, 1.0) for v in values)
    if len(set(values)) < len(values) or n_other < 3 or n_other < len(values) - 2:
        return False
    return bool(second) and all(_is01(x) for x in second[1:] if x != "")


def _split_line(line: str, sep: str | None) -> list[str]:
    """The fields of one text line (``sep=None``: runs of whitespace)."""
    if sep is None:
        return line.split()
    return [f.strip() for f in next(csv.reader([line], delimiter=sep), [])]


def _sniff_delimiter(lines: list[str]) -> str | None:
    """Tab, comma or semicolon when the first lines hold one; ``None`` for whitespace."""
    for sep in ("\t", ",", ";"):
        if any(sep in ln for ln in lines):
            return sep
    return None


def _positions(i: np.ndarray, j: np.ndarray, where: Callable[[int, int], str]) -> str:
    shown = ", ".join(where(int(a), int(b)) for a, b in zip(i[:_MAX_SHOWN], j[:_MAX_SHOWN],
                                                            strict=True))
    more = f" (and {i.size - _MAX_SHOWN} more)" if i.size > _MAX_SHOWN else ""
    return f"{shown}{more}"


def _check_dense(
    A: np.ndarray, where: Callable[[int, int], str], names: np.ndarray | None
) -> None:
    """Square, finite, 0/1, zero diagonal, symmetric; errors name the positions."""
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"the adjacency matrix must be square, found shape {A.shape}")
    if A.dtype.kind not in "biuf":
        raise ValueError(f"the adjacency matrix must be numeric, found dtype {A.dtype}")
    bad = ~np.isin(A, (0, 1))
    if bad.any():
        i, j = np.nonzero(bad)
        raise ValueError(
            f"entries must be 0 or 1; {int(bad.sum())} are not, at "
            f"{_positions(i, j, where)}: {_fmt(A[i, j])}"
        )
    loops = np.flatnonzero(np.diagonal(A))
    if loops.size:
        nodes = f" (nodes {_fmt(names[loops])})" if names is not None else ""
        raise ValueError(
            f"self-loops (non-zero diagonal) at {_positions(loops, loops, where)}{nodes}; "
            "a network has no self-links"
        )
    i, j = np.nonzero(A != A.T)
    if i.size:
        keep = i < j
        i, j = i[keep], j[keep]
        pairs = ", ".join(
            f"{where(int(a), int(b))} = {float(A[a, b]):g} but {where(int(b), int(a))} = "
            f"{float(A[b, a]):g}"
            for a, b in zip(i[:_MAX_SHOWN], j[:_MAX_SHOWN], strict=True)
        )
        more = f" (and {i.size - _MAX_SHOWN} more)" if i.size > _MAX_SHOWN else ""
        raise ValueError(f"not symmetric at {i.size} pairs: {pairs}{more}")


def _node_names(raw: list[str]) -> np.ndarray:
    """Node labels as int64 when they all are integers, else as strings."""
    arr = np.asarray([r.strip() for r in raw], dtype=str)
    try:
        as_int = arr.astype(np.int64)
    except ValueError:
        return arr
    return as_int if np.array_equal(as_int.astype(str), arr) else arr


def _read_text_adjacency(
    path: Path,
    delimiter: str | None,
    header: bool | None | Literal["infer"],
    labels: bool | Literal["infer"],
) -> tuple[np.ndarray, np.ndarray | None, Callable[[int, int], str]]:
    """Matrix, node names and a position formatter (file line and field) of a text file."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        head = [ln.rstrip("\r\n") for _, ln in zip(range(2), f, strict=False)]
    if not head or not head[0].strip():
        raise ValueError(f"{path}: empty file, or an empty first line")
    sep = _sniff_delimiter(head) if delimiter is None else delimiter
    if sep is not None and sep.isspace() and sep != "\t":
        sep = None  # " " means runs of whitespace
    first = _split_line(head[0], sep)
    trailing = bool(first) and first[-1] == ""  # a delimiter at the end of the line
    if trailing:
        first = first[:-1]
    if header == "infer":
        has_header = _looks_like_header(first, _split_line(head[1], sep) if len(head) > 1 else [])
    else:
        has_header = bool(header)
    try:
        df = pd.read_csv(
            path,
            sep=r"\s+" if sep is None else sep,
            header=None,
            skiprows=1 if has_header else 0,
            keep_default_na=False,
            na_values=[""],
            skip_blank_lines=False,
            skipinitialspace=True,
            encoding="utf-8-sig",
            engine="c",
        )
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} holds a header but no matrix rows") from None
    except pd.errors.ParserError as exc:
        raise ValueError(f"{path}: rows of unequal length: {exc}") from None
    filled = df.notna().any(axis=1).to_numpy()
    if not filled.any():
        raise ValueError(f"{path} holds no matrix rows")
    df = df.iloc[: np.flatnonzero(filled)[-1] + 1]  # blank lines at the end
    if df.shape[1] > 1 and df.iloc[:, -1].isna().all():
        df = df.iloc[:, :-1]  # a delimiter at the end of every line
    if labels == "infer":
        # names when a first-column entry is not a number, or numbers one column too many
        col0 = pd.to_numeric(df.iloc[:, 0], errors="coerce")
        text = col0.isna() & df.iloc[:, 0].notna()
        has_labels = bool(text.any()) or df.shape[1] == df.shape[0] + 1
    else:
        has_labels = bool(labels)
    line0 = 2 if has_header else 1
    field0 = 2 if has_labels else 1

    def where(i: int, j: int) -> str:
        return f"line {i + line0} field {j + field0}"

    body = df.iloc[:, 1:] if has_labels else df
    if all(pd.api.types.is_numeric_dtype(t) for t in body.dtypes):
        A = body.to_numpy(dtype=np.float64, na_value=np.nan)
        raw = None
    else:
        A = body.apply(pd.to_numeric, errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan
        )
        raw = body.to_numpy(dtype=object)
    bad = np.isnan(A)
    if bad.any():
        i, j = np.nonzero(bad)
        cells = "empty cells"
        if raw is not None:
            cells = _fmt([x if isinstance(x, str) else "" for x in raw[i, j]])
        hint = ""
        if i.min() == 0 and not has_header:
            hint = "; pass header=True if the first line holds node names"
        elif j.min() == 0 and not has_labels:
            hint = "; pass labels=True if the first column holds node names"
        raise ValueError(
            f"{path}: missing or non-numeric entries at {_positions(i, j, where)}: "
            f"{cells}{hint}"
        )
    n_rows, n_cols = A.shape
    if n_rows != n_cols:
        hint = ""
        if n_cols == n_rows + 1 and not has_labels:
            hint = " (if the first column holds node names, pass labels=True)"
        elif n_rows == n_cols + 1 and not has_header:
            hint = " (if the first line holds node names, pass header=True)"
        raise ValueError(
            f"{path}: the adjacency matrix must be square, found {n_rows} rows and "
            f"{n_cols} columns{hint}"
        )
    names = None
    if has_labels:
        names = _node_names(df.iloc[:, 0].astype(str).tolist())
    if has_header:
        cols = first[1:] if len(first) == n_cols + 1 else first
        if len(cols) != n_cols:
            raise ValueError(
                f"{path}, line 1: the header holds {len(first)} names for {n_cols} columns"
            )
        col_names = _node_names(cols)
        if names is None:
            names = col_names
        elif not np.array_equal(names.astype(str), col_names.astype(str)):
            k = int(np.flatnonzero(names.astype(str) != col_names.astype(str))[0])
            raise ValueError(
                f"{path}: the header and the first column name the nodes in a different "
                f"order: row {k} (line {k + line0}) is {str(names[k])!r} but column {k} "
                f"(field {k + field0} of line 1) is {str(col_names[k])!r}"
            )
    return A, names, where


def _sparse_network(path: Path, A: Any, name: str) -> Network:
    """A :class:`Network` from a SciPy sparse matrix, checked without densifying it."""
    A = A.tocoo()
    A.sum_duplicates()
    A.eliminate_zeros()
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"{path}: the adjacency matrix must be square, found shape {A.shape}")
    n = A.shape[0]
    r, c, v = A.row.astype(np.int64), A.col.astype(np.int64), np.asarray(A.data)

    def where(i: int, j: int) -> str:
        return f"({i}, {j})"

    bad = v != 1
    if bad.any():
        raise ValueError(
            f"{path}: entries must be 0 or 1; {int(bad.sum())} are not, at "
            f"{_positions(r[bad], c[bad], where)}: {_fmt(v[bad])}"
        )
    loops = r == c
    if loops.any():
        raise ValueError(
            f"{path}: self-loops (non-zero diagonal) at "
            f"{_positions(r[loops], c[loops], where)}; a network has no self-links"
        )
    keys, tkeys = r * n + c, c * n + r
    lonely = ~np.isin(keys, tkeys)
    if lonely.any():
        i, j = r[lonely], c[lonely]
        raise ValueError(
            f"{path}: not symmetric at {int(lonely.sum())} pairs: "
            + _positions(i, j, lambda a, b: f"({a}, {b}) = 1 but ({b}, {a}) = 0")
        )
    upper = r < c
    edges = np.stack([r[upper], c[upper]], axis=1)
    return Network(n, edges, name=name)


def load_adjacency(
    path: str | Path,
    *,
    delimiter: str | None = None,
    header: bool | None | Literal["infer"] = "infer",
    labels: bool | Literal["infer"] = "infer",
    name: str | None = None,
) -> Network:
    """A network from a dense 0/1 adjacency matrix file.

    The matrix must be square and symmetric, hold only 0 and 1 and have a zero
    diagonal: entry ``(i, j)`` is 1 when nodes ``i`` and ``j`` are linked.

    Formats, chosen by the file name:

    * ``.npy``: a 2-D NumPy array (read without pickles).
    * ``.npz``: a SciPy sparse matrix saved by :func:`scipy.sparse.save_npz`
      (checked without densifying), or a NumPy archive holding one array.
    * anything else: delimited text (CSV, TSV, ``;`` or whitespace), with
      optionally a header row and/or a first column of node names.

    Parameters
    ----------
    path : path
        The file.
    delimiter : str, optional
        Field separator of a text file; by default tab, comma or semicolon if
        the first two lines hold one, else runs of whitespace.
    header : bool, None or "infer"
        Whether the first line holds node names (``None`` as ``False``). With
        ``"infer"`` it does when a field after the first is not 0 or 1.
    labels : bool or "infer"
        Whether the first column holds node names. With ``"infer"`` it does
        when any of its entries is not 0 or 1.
    name : str, optional
        The network's name (default: the file name without its suffix).

    Returns
    -------
    Network
        Node names are the labels (integers when all of them are, else
        strings), else the header's names, else ``0..n-1``.

    Raises
    ------
    ValueError
        For a matrix that is not square, has missing, non-numeric or non-0/1
        entries, a non-zero diagonal or is not symmetric (the positions are
        named: file line and field for text, ``(row, column)`` for arrays),
        or a header whose names differ from the first column's.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from bayesmf.data import load_adjacency
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "friends.csv"
    >>> _ = f.write_text(",ann,bob,cid\\nann,0,1,1\\nbob,1,0,0\\ncid,1,0,0\\n")
    >>> net = load_adjacency(f)
    >>> net.names.tolist(), net.edges.tolist(), net.name
    (['ann', 'bob', 'cid'], [[0, 1], [0, 2]], 'friends')
    >>> _ = f.write_text("0 1 0\\n1 0 1\\n0 0 0\\n")
    >>> load_adjacency(f)
    Traceback (most recent call last):
    ...
    ValueError: ...friends.csv: not symmetric at 1 pairs: line 2 field 3 = 1 but line 3 field 2 = 0
    """
    path = Path(path)
    name = path.stem if name is None else name
    suffix = path.suffix.lower()
    if suffix == ".npz":
        import scipy.sparse as sp

        try:
            S = sp.load_npz(path)
        except (ValueError, KeyError, OSError):
            with np.load(path, allow_pickle=False) as z:
                if len(z.files) != 1:
                    raise ValueError(
                        f"{path}: neither a scipy.sparse.save_npz file nor a NumPy archive "
                        f"holding one array (it holds {z.files})"
                    ) from None
                A, names = z[z.files[0]], None
        else:
            return _sparse_network(path, S, name)
        where: Callable[[int, int], str] = lambda i, j: f"({i}, {j})"  # noqa: E731
    elif suffix == ".npy":
        A, names = np.load(path, allow_pickle=False), None
        where = lambda i, j: f"({i}, {j})"  # noqa: E731
    else:
        A, names, where = _read_text_adjacency(path, delimiter, header, labels)
    try:
        _check_dense(A, where, names)
        return Network.from_adjacency(A, names=names, name=name)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def load_nips234(root: str | Path | None = None, download: bool = True) -> Network:
    """The NIPS 1-17 co-authorship network of the 234 most connected authors.

    Read from ``nips234/NIPS.csv`` (a comma-separated 0/1 adjacency matrix
    without header; Miller, Griffiths & Jordan 2009; Lloyd et al. 2012): 234
    nodes, 598 links. Node names are ``0..233`` (the file carries no names).
    The file is read by :func:`load_adjacency` (which reads other layouts).

    Parameters
    ----------
    root : path, optional
        Where to look, instead of ``$BAYESMF_DATA_DIR`` and the cache: a
        folder holding ``nips234/NIPS.csv``, the ``nips234`` folder, or a file
        in the same format (any name; the network is then named after it).
        Nothing else is searched and nothing is downloaded when it is given.
    download : bool
        Download (and verify) the file into the cache when ``root`` is not
        given and the file is not found.

    Raises
    ------
    ValueError
        If the file is not a square, symmetric 0/1 matrix with a zero diagonal
        (the lines and fields are named).
    DatasetNotFoundError
        If the file is not under ``root``, or is absent and cannot be
        downloaded.

    Examples
    --------
    >>> from bayesmf.data import load_nips234
    >>> net = load_nips234()  # doctest: +SKIP
    >>> net.n_nodes, net.n_edges  # doctest: +SKIP
    (234, 598)
    """
    path = find_file("nips234", root=root, download=download)
    name = "nips234" if path.name == "NIPS.csv" else path.stem
    return load_adjacency(path, delimiter=",", header=None, labels=False, name=name)


def _is_number(x: Any) -> bool:
    try:
        float(x)
    except (TypeError, ValueError):
        return False
    return True


def _column(df: pd.DataFrame, key: int | str, what: str) -> pd.Series:
    if isinstance(key, str):
        if key not in df.columns:
            raise ValueError(f"{what} column {key!r} not found; columns are {list(df.columns)}")
        return df[key]
    if key in df.columns:
        return df[key]
    if not -df.shape[1] <= key < df.shape[1]:
        raise ValueError(f"{what} column {key} out of range: the file has {df.shape[1]} columns")
    return df.iloc[:, key]


def _square_01(df: pd.DataFrame) -> int:
    """The size n when ``df`` is an n x n 0/1 matrix (maybe with a header row read as
    column names and/or a first column of labels), else 0."""
    n_rows, n_cols = df.shape
    if n_cols < 3:
        return 0
    for k in (0, 1):  # k = 1: a first column of node labels
        n = n_cols - k
        if n not in (n_rows, n_rows + 1):
            continue
        block = df.iloc[:, k:]
        if all(pd.api.types.is_numeric_dtype(t) for t in block.dtypes) and bool(
            block.isin([0, 1]).all().all()
        ):
            return n
    return 0


def load_edge_list(
    path: str | Path,
    source: int | str = 0,
    target: int | str = 1,
    sep: str = ",",
    header: int | str | None = "infer",
) -> Network:
    """A network from an edge-list file (one undirected link per line).

    Node names are the sorted unique labels of both endpoint columns; nodes
    without links cannot appear. ``(a, b)`` and ``(b, a)`` are the same link,
    and a link listed several times is kept once (logged at INFO). Other
    columns (weights, dates) are ignored.

    Parameters
    ----------
    path : path
        The file, read with :func:`pandas.read_csv`.
    source, target : int or str
        The endpoint columns, by position (int) or by header name (str).
    sep : str
        Field separator.
    header : int, "infer" or None
        As in :func:`pandas.read_csv`; ``None`` for a file without header.

    Raises
    ------
    ValueError
        For an empty file, missing columns, missing endpoints or self-loops
        (the rows are named), or a file that is a square 0/1 adjacency
        matrix (read those with :func:`load_adjacency`).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from bayesmf.data import load_edge_list
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "edges.csv"
    >>> _ = f.write_text("src,dst\\nann,bob\\nbob,cid\\nbob,ann\\n")
    >>> net = load_edge_list(f)
    >>> net.names.tolist(), net.edges.tolist()
    (['ann', 'bob', 'cid'], [[0, 1], [1, 2]])
    """
    path = Path(path)
    try:
        df = pd.read_csv(
            path, sep=sep, header=header, skipinitialspace=True, skip_blank_lines=False
        )
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} holds no edges") from None
    except pd.errors.ParserError as exc:
        raise ValueError(f"{path}: malformed edge list: {exc}") from None
    filled = df.notna().any(axis=1).to_numpy()
    if not filled.any():
        raise ValueError(f"{path} holds no edges")
    df = df.iloc[: np.flatnonzero(filled)[-1] + 1]  # blank lines at the end hold no edges
    square = _square_01(df)
    if square:
        raise ValueError(
            f"{path} looks like a {square} x {square} 0/1 adjacency matrix, not an edge list; "
            f"read it with bayesmf.data.load_adjacency({str(path)!r})"
        )
    a = _column(df, source, "source")
    b = _column(df, target, "target")
    # file line of the first data row
    line0 = 1 if header is None else (2 if header == "infer" else int(header) + 2)
    if header == "infer" and all(
        _is_number(c) for c in (a.name, b.name)
    ) and pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b):
        logger.warning(
            "%s: the first line (%s, %s) was read as a header but looks like an edge; "
            "pass header=None if the file has no header",
            path, a.name, b.name,
        )
    for s, what in ((a, "source"), (b, "target")):
        bad = s.isna().to_numpy()
        if bad.any():
            raise ValueError(
                f"{path}: missing {what} node at lines {_fmt(np.flatnonzero(bad) + line0)}"
            )
    av, bv = a.to_numpy(), b.to_numpy()
    if not (pd.api.types.is_numeric_dtype(a) and pd.api.types.is_numeric_dtype(b)):
        av, bv = a.astype(str).to_numpy(dtype=object), b.astype(str).to_numpy(dtype=object)
    names, inv = np.unique(np.concatenate([av, bv]), return_inverse=True)
    inv = inv.reshape(-1)
    i, j = inv[: len(df)], inv[len(df):]
    loops = i == j
    if loops.any():
        raise ValueError(
            f"{path}: self-loops at lines {_fmt(np.flatnonzero(loops) + line0)} "
            f"(nodes {_fmt(pd.unique(names[i[loops]]))}); a network has no self-links"
        )
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    keys = lo.astype(np.int64) * len(names) + hi
    ukeys, first = np.unique(keys, return_index=True)
    if ukeys.size < keys.size:
        dup = np.ones(keys.size, dtype=bool)
        dup[first] = False
        logger.info(
            "%s: %d lines repeat a link already listed (either direction), kept once: lines %s",
            path, int(dup.sum()), _fmt(np.flatnonzero(dup) + line0),
        )
    edges = np.stack([ukeys // len(names), ukeys % len(names)], axis=1)
    return Network(len(names), edges, names=names, name=path.stem)


def from_networkx(G: Any) -> Network:
    """A :class:`Network` from an undirected, simple, unweighted ``networkx.Graph``.

    Node names are ``list(G.nodes)`` in the graph's order (isolated nodes
    included); the network's name is ``G.name`` or ``"network"``.

    Raises
    ------
    ValueError
        For directed graphs, multigraphs, self-loops (nodes named), or edges
        whose ``weight`` attribute is not 1 (edges named).

    Examples
    --------
    >>> import networkx as nx
    >>> from bayesmf.data import from_networkx
    >>> net = from_networkx(nx.path_graph(["a", "b", "c"]))
    >>> net.names.tolist(), net.n_edges
    (['a', 'b', 'c'], 2)
    """
    import networkx as nx

    if G.is_directed():
        raise ValueError("directed graphs are not supported; use G.to_undirected() if links "
                         "are symmetric")
    if G.is_multigraph():
        raise ValueError("multigraphs are not supported; collapse parallel edges with nx.Graph(G)")
    loops = list(nx.nodes_with_selfloops(G))
    if loops:
        raise ValueError(f"self-loops at nodes {_fmt(loops)}; a network has no self-links")
    weights = nx.get_edge_attributes(G, "weight")
    if weights:
        edges_w = list(weights)
        raw = pd.Series(list(weights.values()), dtype=object)
        w = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~(w == 1)
        if bad.any():
            where = [(edges_w[k], raw[k]) for k in np.flatnonzero(bad)[:_MAX_SHOWN]]
            raise ValueError(
                f"{int(bad.sum())} edges have a weight other than 1, e.g. {where}; "
                "only unweighted 0/1 networks are supported"
            )
    nodes = list(G.nodes)
    names = np.fromiter(nodes, dtype=object, count=len(nodes))
    kind = pd.api.types.infer_dtype(names, skipna=False)
    if kind == "integer":
        names = names.astype(np.int64)
    elif kind == "string":
        names = names.astype(str)
    else:
        try:
            np.unique(names)
        except TypeError:
            raise ValueError(
                f"node labels of mixed types ({kind}) cannot be ordered; relabel them, e.g. "
                "nx.convert_node_labels_to_integers(G, label_attribute='name')"
            ) from None
    A = nx.to_scipy_sparse_array(G, nodelist=nodes, weight=None, format="coo")
    keep = A.row < A.col
    edges = np.stack([A.row[keep], A.col[keep]], axis=1).astype(np.int64)
    return Network(len(nodes), edges, names=names, name=G.name or "network")
