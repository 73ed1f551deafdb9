"""Safe files: atomic, fingerprinted, checksummed saves of fits and checkpoints.

Every fit and checkpoint bayesmf writes is one ``torch.save`` file holding a plain dict::

    {"format": "bayesmf",          # tag: anything else is a foreign file
     "kind": "svi-checkpoint",     # what the file holds; the loader checks it
     "version": 1,                 # format version of that kind
     "library_version": "0.1.0",   # bayesmf version that wrote it (for messages)
     "fingerprint": {...} | None,  # of the training data, see :func:`fingerprint`
     "settings": {...} | None,     # every setting of the fit (plain values only)
     "sha256": "ab12...",          # sha256 of the payload bytes
     "payload": uint8 tensor}      # the payload, itself serialised by torch.save

Storing the payload as bytes lets the checksum cover every payload byte; the header stays
readable without trusting the payload. Everything is read with the safe unpickler
(``weights_only=True``): payloads are nested dicts/lists of tensors and plain values, and ids of
any type (strings, datetimes, mixed objects) go through :func:`encode_ids`.

Files are written atomically: a unique temporary file in the target folder, flushed and
``fsync``-ed, then moved over the target with :func:`os.replace`. A crash or an error leaves the
previous file intact and no temporary file behind; concurrent writers never mix their bytes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

__all__ = [
    "FitFileError",
    "ResumeMismatch",
    "FileContents",
    "fingerprint",
    "encode_ids",
    "decode_ids",
    "save_file",
    "load_file",
    "check_compatible",
    "atomic_write_bytes",
    "atomic_write_text",
]

FORMAT = "bayesmf"
_PLAIN = (str, int, float, bool, type(None))


class FitFileError(ValueError):
    """A bayesmf file is missing, empty, damaged, foreign, of another kind or too new."""


class MissingFitFile(FitFileError, FileNotFoundError):
    """The file does not exist (also a :class:`FileNotFoundError`)."""


class ResumeMismatch(FitFileError):
    """A checkpoint was written for other training data or other settings.

    Attributes
    ----------
    differences : list of str
        One line per differing item.
    """

    def __init__(self, message: str, differences: list[str]) -> None:
        super().__init__(message)
        self.differences = differences


@dataclass(frozen=True)
class FileContents:
    """What :func:`load_file` read: the header fields and the checked payload."""

    kind: str
    version: int
    fingerprint: dict | None
    settings: dict | None
    payload: Any
    path: Path
    library_version: str


# ----------------------------------------------------------------------------- fingerprints
def _sha(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode())  # lengths delimit consecutive arrays
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _np(t: Any, dtype: str) -> np.ndarray:
    """A tensor/array as a contiguous little-endian numpy array of ``dtype``."""
    if isinstance(t, torch.Tensor):
        t = t.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(t).astype(dtype, copy=False))


def fingerprint(data: Any) -> dict | None:
    """A plain dict that identifies training data: sizes plus a sha256 of the contents.

    Parameters
    ----------
    data : Ratings, Network, Pairs, tensor, ndarray, tuple/list of those, None, or an object
        with a ``fingerprint()`` method returning a dict.

    Returns
    -------
    dict or None
        ``None`` for ``None``; e.g. ``{"kind": "Ratings", "shape": [N, M], "n": n,
        "sha256": ...}`` for ratings (hash of rows and cols as int64 and values as float32).

    Raises
    ------
    TypeError
        For any other type.
    """
    from bayesmf.data.containers import Network, Pairs, Ratings

    if data is None:
        return None
    if callable(getattr(data, "fingerprint", None)):
        return dict(data.fingerprint())
    if isinstance(data, Ratings):
        arrs = (_np(data.rows, "<i8"), _np(data.cols, "<i8"), _np(data.values, "<f4"))
        return {"kind": "Ratings", "shape": list(data.shape), "n": len(data), "sha256": _sha(*arrs)}
    if isinstance(data, Network):
        un = np.zeros((0, 2)) if data.unobserved is None else data.unobserved
        sha = _sha(_np(data.edges, "<i8"), _np(un, "<i8"))
        return {"kind": "Network", "n_nodes": data.n_nodes, "n_edges": data.n_edges, "sha256": sha}
    if isinstance(data, Pairs):
        sha = _sha(_np(data.i, "<i8"), _np(data.j, "<i8"), _np(data.labels, "<f4"))
        return {"kind": "Pairs", "n": len(data), "n_nodes": data.n_nodes, "sha256": sha}
    if isinstance(data, torch.Tensor):
        t = data.detach().cpu().contiguous().reshape(-1)
        raw = t.view(torch.uint8).numpy() if t.dtype != torch.bool else t.numpy()
        shape, dtype = list(data.shape), str(data.dtype)
        return {"kind": "tensor", "shape": shape, "dtype": dtype, "sha256": _sha(raw)}
    if isinstance(data, np.ndarray):
        enc = encode_ids(data)  # raw bytes, or type tags and values for object arrays
        raw = enc["data"].numpy() if "data" in enc else np.frombuffer(repr(enc).encode(), np.uint8)
        return {
            "kind": "tensor",
            "shape": list(data.shape),
            "dtype": str(data.dtype),
            "sha256": _sha(raw),
        }
    if isinstance(data, (tuple, list)):
        return {"kind": "sequence", "items": [fingerprint(x) for x in data]}
    raise TypeError(f"cannot fingerprint training data of type {type(data).__name__}")


# ----------------------------------------------------------------------------- ids
def _encode_item(x: Any) -> tuple[str, Any]:
    """One object-array element as (one-letter type tag, plain value)."""
    import pandas as pd

    if x is None:
        return "n", None
    if isinstance(x, (bool, np.bool_)):
        return "b", bool(x)
    if isinstance(x, (int, np.integer)):
        return "i", str(int(x))  # str: arbitrary precision
    if isinstance(x, (float, np.floating)):
        return "f", float(x)
    if isinstance(x, str):
        return "s", str(x)
    if isinstance(x, pd.Timestamp):
        return "T", [x.isoformat(), None if x.tz is None else str(x.tz), x.unit]
    if isinstance(x, pd.Timedelta):
        return "t", [int(x.value), x.unit]
    if isinstance(x, np.datetime64):
        return "M", [str(x), np.datetime_data(x.dtype)[0]]
    if isinstance(x, dt.datetime):
        return "D", x.isoformat()
    if isinstance(x, dt.date):
        return "d", x.isoformat()
    raise TypeError(f"cannot store an id of type {type(x).__name__}: {x!r}")


def _decode_item(tag: str, v: Any) -> Any:
    import pandas as pd

    if tag in "nbfs":
        return v
    if tag == "i":
        return int(v)
    if tag == "T":
        ts = pd.Timestamp(v[0])
        return (ts if v[1] is None else ts.tz_convert(v[1])).as_unit(v[2])
    if tag == "t":
        return pd.Timedelta(v[0], unit="ns").as_unit(v[1])
    if tag == "M":
        return np.datetime64(v[0], v[1])
    return dt.datetime.fromisoformat(v) if tag == "D" else dt.date.fromisoformat(v)


def encode_ids(ids: Any) -> dict:
    """Ids of any type as a dict that survives ``torch.load(..., weights_only=True)``.

    Arrays of a fixed-size dtype (ints, floats, bools, fixed-width strings, datetime64) are
    stored as their raw bytes and dtype; object arrays (pandas strings, tz-aware Timestamps,
    mixed str/int) element by element with a type tag, so every element keeps its type.

    Raises
    ------
    TypeError
        If an element of an object array has a type that cannot be stored exactly.
    """
    a = np.asarray(ids)
    if a.dtype.kind != "O":
        data = torch.from_numpy(np.frombuffer(np.ascontiguousarray(a).tobytes(), np.uint8).copy())
        return {"kind": "array", "dtype": a.dtype.str, "shape": list(a.shape), "data": data}
    pairs = [_encode_item(x) for x in a.reshape(-1)]
    tags, values = "".join(p[0] for p in pairs), [p[1] for p in pairs]
    return {"kind": "objects", "shape": list(a.shape), "tags": tags, "values": values}


def decode_ids(obj: Mapping[str, Any]) -> np.ndarray:
    """The numpy array that :func:`encode_ids` encoded (equal element-wise, same types)."""
    if obj.get("kind") == "array":
        raw = obj["data"].cpu().numpy().tobytes()
        return np.frombuffer(raw, dtype=np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
    out = np.empty(len(obj["tags"]), dtype=object)
    for k, (tag, v) in enumerate(zip(obj["tags"], obj["values"], strict=True)):
        out[k] = _decode_item(tag, v)
    return out.reshape(obj["shape"])


# ----------------------------------------------------------------------------- writing
def _atomic(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write through a unique temporary file in the same folder, fsync, then os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:  # keep the mode of the file we replace; new files get rw-r--r--
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (POSIX); harmless where unsupported
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see module docstring); returns the path."""
    return _atomic(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (see module docstring); returns the path."""
    return atomic_write_bytes(path, text.encode(encoding))


def _plain(x: Any, where: str) -> Any:
    """A copy of settings with plain values only (tuples become lists, numpy scalars python)."""
    if isinstance(x, (np.bool_, np.integer, np.floating)):
        return x.item()
    if isinstance(x, _PLAIN):
        return x
    if isinstance(x, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(x)]
    if isinstance(x, Mapping):
        if not all(isinstance(k, str) for k in x):
            raise TypeError(f"setting {where or '<root>'} has non-string keys")
        return {k: _plain(v, f"{where}.{k}" if where else k) for k, v in x.items()}
    raise TypeError(f"setting {where!r} is a {type(x).__name__}, not a plain value")


def _check_payload(x: Any, where: str = "payload") -> None:
    """Raise TypeError naming the first value that weights_only=True would refuse."""
    if isinstance(x, (torch.Tensor, torch.dtype, torch.device, torch.Size, bytes, *_PLAIN)):
        return
    if isinstance(x, (list, tuple)):
        for i, v in enumerate(x):
            _check_payload(v, f"{where}[{i}]")
    elif isinstance(x, dict):
        for k, v in x.items():
            _check_payload(k, f"{where} key")
            _check_payload(v, f"{where}[{k!r}]")
    else:
        raise TypeError(f"{where} is a {type(x).__name__}; store tensors and plain values only")


def save_file(
    path: str | os.PathLike,
    kind: str,
    payload: dict,
    *,
    version: int = 1,
    fingerprint: dict | None = None,
    settings: dict | None = None,
) -> Path:
    """Save ``payload`` atomically as a bayesmf file of ``kind`` (format in module docstring).

    Parameters
    ----------
    path : str or path-like
        Target file; its folder is created.
    kind : str
        What the file holds (checked by :func:`load_file`).
    payload : dict
        Nested dicts/lists/tuples of tensors and plain values.
    version : int
        Format version of this kind.
    fingerprint : dict, optional
        :func:`fingerprint` of the training data.
    settings : dict, optional
        Every setting of the fit; plain values only.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    TypeError
        If a setting or a payload value is not plain (the message names it).
    """
    from bayesmf import __version__

    _check_payload(payload)
    buf = io.BytesIO()
    torch.save(payload, buf)
    raw = buf.getvalue()
    header = {
        "format": FORMAT,
        "kind": str(kind),
        "version": int(version),
        "library_version": __version__,
        "fingerprint": None if fingerprint is None else _plain(fingerprint, "fingerprint"),
        "settings": None if settings is None else _plain(settings, ""),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "payload": torch.from_numpy(np.frombuffer(raw, dtype=np.uint8).copy()),
    }
    return _atomic(path, lambda f: torch.save(header, f))


# ----------------------------------------------------------------------------- reading
def _torch_load(source: Any, map_location: Any, path: Path, what: str) -> Any:
    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except Exception as err:
        first = (str(err).strip().splitlines() or [""])[0].split(". ")[0]
        if "Weights only load failed" in first:
            why = (
                f"is damaged or not a bayesmf file ({what} cannot be loaded with weights_only=True)"
            )
        else:
            why = f"is damaged or truncated ({what} unreadable: {type(err).__name__}: {first})"
        raise FitFileError(f"{path}: {why}") from err


def _looks_like_text(path: Path) -> bool:
    """True for a file that is not a zip archive (torch.save's format) but decodes as text."""
    with open(path, "rb") as f:
        start = f.read(512)
    if start.startswith(b"PK\x03\x04"):
        return False
    try:
        text = start.decode("utf-8")
    except UnicodeDecodeError as err:  # a character cut at byte 512 is still text
        if err.start < len(start) - 3:
            return False
        text = start[: err.start].decode("utf-8")
    return all(c.isprintable() or c.isspace() for c in text)


def load_file(
    path: str | os.PathLike,
    kind: str | tuple[str, ...] | None = None,
    *,
    map_location: Any = "cpu",
    versions: Mapping[str, int] | None = None,
) -> FileContents:
    """Load and check a file written by :func:`save_file`.

    Parameters
    ----------
    path : str or path-like
    kind : str or tuple of str, optional
        The kind(s) accepted; ``None`` accepts any.
    map_location : str or torch.device
        Where tensors are loaded.
    versions : dict, optional
        Newest format version readable per kind; a newer file is refused.

    Returns
    -------
    FileContents

    Raises
    ------
    FitFileError
        One error naming the file and the problem: missing (also a FileNotFoundError),
        empty, damaged or truncated, foreign, checksum mismatch, other kind, newer version.
    """
    path = Path(path)
    if not path.exists():
        raise MissingFitFile(f"{path}: no such file")
    if path.is_dir():
        raise FitFileError(f"{path}: is a folder, not a bayesmf file")
    if path.stat().st_size == 0:
        raise FitFileError(f"{path}: empty file (0 bytes)")
    if _looks_like_text(path):
        raise FitFileError(f"{path}: is a text file, not a bayesmf file (a torch.save archive)")
    head = _torch_load(path, map_location, path, "file")
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise FitFileError(
            f"{path}: foreign file: a torch file but not a bayesmf file (no 'format' tag)"
        )
    missing = [k for k in ("kind", "version", "sha256", "payload") if k not in head]
    if missing or not isinstance(head["payload"], torch.Tensor):
        raise FitFileError(f"{path}: damaged: missing or malformed fields {missing or ['payload']}")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and head["kind"] not in kinds:
        want = repr(kinds[0]) if len(kinds) == 1 else "one of " + ", ".join(map(repr, kinds))
        raise FitFileError(f"{path}: holds a {head['kind']!r}, expected {want}")
    newest = None if versions is None else versions.get(head["kind"])
    if newest is not None and head["version"] > newest:
        raise FitFileError(
            f"{path}: {head['kind']!r} format version {head['version']} was written by bayesmf "
            f"{head.get('library_version', '?')}; this version reads up to {newest}: upgrade"
        )
    raw = head["payload"].cpu().numpy().tobytes()
    if hashlib.sha256(raw).hexdigest() != head["sha256"]:
        raise FitFileError(f"{path}: damaged: checksum mismatch (payload sha256 differs)")
    payload = _torch_load(io.BytesIO(raw), map_location, path, "payload")
    return FileContents(
        kind=head["kind"],
        version=int(head["version"]),
        fingerprint=head.get("fingerprint"),
        settings=head.get("settings"),
        payload=payload,
        path=path,
        library_version=str(head.get("library_version", "unknown")),
    )


# ----------------------------------------------------------------------------- resuming
def _data_diffs(old: Any, new: Any, prefix: str = "") -> list[str]:
    if old == new:
        return []
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [f"{prefix}{'none' if old is None else old} vs {'none' if new is None else new}"]
    if old.get("kind") == new.get("kind") == "sequence" and len(old["items"]) == len(new["items"]):
        return [
            d
            for i, (a, b) in enumerate(zip(old["items"], new["items"], strict=True))
            for d in _data_diffs(a, b, f"{prefix}item {i}: ")
        ]
    out = []
    for key in dict.fromkeys([*old, *new]):
        a, b = old.get(key), new.get(key)
        if a != b:
            out.append(
                f"{prefix}content hash differs" if key == "sha256" else f"{prefix}{key} {a} vs {b}"
            )
    return out


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping) and v:
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_compatible(
    contents: FileContents,
    fingerprint: dict | None,
    settings: dict | None,
    *,
    ignore: tuple[str, ...] = (),
) -> None:
    """Check that a checkpoint was written for this training data and these settings.

    Parameters
    ----------
    contents : FileContents
        The loaded checkpoint.
    fingerprint : dict or None
        :func:`fingerprint` of the data now.
    settings : dict or None
        The settings now (nested dicts are compared key by key, as ``outer.inner``).
    ignore : tuple of str
        Setting names (top-level or dotted) not compared, e.g. ``("epochs",)``.

    Raises
    ------
    ResumeMismatch
        Naming the file and every difference: "training data differ: n 90000 vs 80000;
        content hash differs" and "settings differ: lr: 0.1 (file) vs 0.05 (now)".
    """
    diffs = []
    data = _data_diffs(
        contents.fingerprint, None if fingerprint is None else _plain(fingerprint, "fingerprint")
    )
    if data:
        diffs.append("training data differ: " + "; ".join(data))
    old = _flat(contents.settings or {})
    new = _flat(_plain(settings or {}, ""))
    skip = lambda k: any(k == i or k.startswith(i + ".") for i in ignore)  # noqa: E731
    show = lambda d, k: repr(d[k]) if k in d else "missing"  # noqa: E731
    changed = [
        f"{k}: {show(old, k)} (file) vs {show(new, k)} (now)"
        for k in dict.fromkeys([*old, *new])
        if not skip(k) and (k not in old or k not in new or old[k] != new[k])
    ]
    if changed:
        diffs.append("settings differ: " + "; ".join(changed))
    if diffs:
        raise ResumeMismatch(
            f"{contents.path}: cannot resume this {contents.kind!r}: " + " | ".join(diffs), diffs
        )
