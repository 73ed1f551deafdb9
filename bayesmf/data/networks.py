"""Symmetric binary networks: the NIPS 1-17 co-authorship network, edge lists, networkx.

All loaders return a :class:`~bayesmf.data.Network` (undirected, unweighted,
without self-links); inputs that are none of these are rejected with a
:class:`ValueError` naming the offending rows, nodes or edges.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .containers import Network
from .sources import find_dataset

__all__ = ["load_nips234", "load_edge_list", "from_networkx"]

logger = logging.getLogger(__name__)

_MAX_SHOWN = 5


def _fmt(items: Any) -> str:
    seq = list(items[:_MAX_SHOWN])
    more = f" (and {len(items) - _MAX_SHOWN} more)" if len(items) > _MAX_SHOWN else ""
    return f"[{', '.join(repr(x.item() if isinstance(x, np.generic) else x) for x in seq)}]{more}"


def load_nips234(root: str | Path | None = None, download: bool = True) -> Network:
    """The NIPS 1-17 co-authorship network of the 234 most connected authors.

    Read from ``nips234/NIPS.csv`` (a comma-separated 0/1 adjacency matrix
    without header; Miller, Griffiths & Jordan 2009; Lloyd et al. 2012): 234
    nodes, 598 links. Node names are ``0..233`` (the file carries no names).

    Parameters
    ----------
    root : path, optional
        Folder holding ``nips234/NIPS.csv`` (or ``NIPS.csv`` itself); searched
        before ``$BAYESMF_DATA_DIR`` and the cache.
    download : bool
        Download (and verify) the file into the cache when not found.

    Raises
    ------
    ValueError
        If the file is not a square, symmetric 0/1 matrix with a zero diagonal.

    Examples
    --------
    >>> from bayesmf.data import load_nips234
    >>> net = load_nips234()  # doctest: +SKIP
    >>> net.n_nodes, net.n_edges  # doctest: +SKIP
    (234, 598)
    """
    path = find_dataset("nips234", root=root, download=download) / "NIPS.csv"
    try:
        A = np.loadtxt(path, delimiter=",", ndmin=2)
    except ValueError as exc:
        raise ValueError(f"{path}: not a comma-separated numeric matrix: {exc}") from None
    try:
        return Network.from_adjacency(A, name="nips234")
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


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
        (the rows are named).

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
