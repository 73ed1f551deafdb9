"""MovieLens ratings (GroupLens) in their original file formats.

Supported variants and their files (inside the dataset folder found by
:func:`~bayesmf.data.find_dataset`):

========== ============== ===================================================
variant    folder         files
========== ============== ===================================================
100k       ml-100k        u.data, u.item, u.genre, u.user, u1-u5/ua/ub splits
1m         ml-1m          ratings.dat, movies.dat (latin-1), users.dat
10m        ml-10M100K     ratings.dat, movies.dat
20m        ml-20m         ratings.csv, movies.csv
25m        ml-25m         ratings.csv, movies.csv
latest-small ml-latest-small ratings.csv, movies.csv
========== ============== ===================================================

The ``::``-separated ``.dat`` files are read with the pandas C parser using
``:`` as the separator (every other field is then empty and is checked to be),
which keeps the 10M file fast. Malformed lines raise :class:`ValueError` naming
the file and the line number.
"""

from __future__ import annotations

import csv
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .containers import Ratings
from .converters import from_dataframe
from .sources import find_dataset

__all__ = ["MovieLens", "load_movielens", "VARIANTS"]

logger = logging.getLogger(__name__)

_MAX_SHOWN = 5

VARIANTS: dict[str, str] = {
    "100k": "ml-100k",
    "1m": "ml-1m",
    "10m": "ml-10m",
    "20m": "ml-20m",
    "25m": "ml-25m",
    "latest-small": "ml-latest-small",
}
"""MovieLens variant -> dataset name in :data:`bayesmf.data.sources.REGISTRY`."""

_SCALES: dict[str, tuple[float, float]] = {
    "100k": (1.0, 5.0),
    "1m": (1.0, 5.0),
    "10m": (0.5, 5.0),
    "20m": (0.5, 5.0),
    "25m": (0.5, 5.0),
    "latest-small": (0.5, 5.0),
}

_SPLITS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")

# ml-1m README: occupation codes of users.dat
_OCCUPATIONS_1M = {
    0: "other",
    1: "academic/educator",
    2: "artist",
    3: "clerical/admin",
    4: "college/grad student",
    5: "customer service",
    6: "doctor/health care",
    7: "executive/managerial",
    8: "farmer",
    9: "homemaker",
    10: "K-12 student",
    11: "lawyer",
    12: "programmer",
    13: "retired",
    14: "sales/marketing",
    15: "scientist",
    16: "self-employed",
    17: "technician/engineer",
    18: "tradesman/craftsman",
    19: "unemployed",
    20: "writer",
}

_RATING_COLUMNS = ["user", "item", "rating", "timestamp"]
_PARSER_RE = re.compile(r"Expected (\d+) fields in line (\d+), saw (\d+)")


# --------------------------------------------------------------------------- parsing


def _lines(mask: np.ndarray, offset: int) -> str:
    """1-based line numbers of the True rows, for messages."""
    idx = np.flatnonzero(mask)
    shown = ", ".join(str(int(i) + offset) for i in idx[:_MAX_SHOWN])
    more = f" (and {idx.size - _MAX_SHOWN} more)" if idx.size > _MAX_SHOWN else ""
    return f"{'line' if idx.size == 1 else 'lines'} {shown}{more}"


def _require(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"MovieLens file {path} is missing")
    return path


def _read_table(
    path: Path,
    names: list[str],
    *,
    sep: str,
    header: list[str] | None = None,
    dat: bool = False,
    int_cols: tuple[str, ...] = (),
    float_cols: tuple[str, ...] = (),
    str_cols: tuple[str, ...] = (),
    required: tuple[str, ...] = (),
    encoding: str = "utf-8",
    quoting: int = csv.QUOTE_NONE,
) -> pd.DataFrame:
    """Read a delimited file strictly; errors name ``path`` and the line number.

    ``header`` is the expected header line (checked, then skipped); ``None``
    for a file without one. ``dat=True`` reads a ``::``-separated file with
    ``sep=":"``: the fields are then at even positions and the odd positions
    must be empty.
    """
    n = len(names)
    if header is not None:
        with open(path, encoding=encoding, newline="") as f:
            found = next(csv.reader(f), [])
        if [h.strip() for h in found] != header:
            raise ValueError(f"{path}, line 1: expected the header {header}, found {found}")
    width = 2 * n - 1 if dat else n
    positions = list(range(0, width, 2)) if dat else list(range(n))
    pos = dict(zip(names, positions, strict=True))
    offset = 1 if header is None else 2  # line number of the first data row
    try:
        df = pd.read_csv(
            path,
            sep=sep,
            header=None,
            skiprows=0 if header is None else 1,
            dtype={pos[c]: str for c in str_cols},
            keep_default_na=False,
            na_values=[""],
            skip_blank_lines=False,
            quoting=quoting,
            encoding=encoding,
            engine="c",
        )
    except pd.errors.ParserError as exc:
        m = _PARSER_RE.search(str(exc))
        if m is None:
            raise ValueError(f"{path}: malformed file ({exc})") from None
        expected, line, saw = (int(g) for g in m.groups())
        if expected < width:  # the first data line is short; pandas blames a later one
            line, saw = offset, expected
        count = (saw + 1) // 2 if dat else saw
        what = "more" if saw > width else "fewer"
        raise ValueError(
            f"{path}, line {line}: malformed line, {what} than {n} fields "
            f"(found {count}{' pieces' if dat else ''} separated by "
            f"{':' if dat else repr(sep)})"
        ) from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} holds no data") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} cannot be decoded as {encoding}: {exc}") from None
    # drop blank lines at the very end of the file (they hold no data)
    filled = df.notna().any(axis=1).to_numpy()
    if not filled.any():
        raise ValueError(f"{path} holds no data")
    df = df.iloc[: np.flatnonzero(filled)[-1] + 1]
    if df.shape[1] < width:
        raise ValueError(
            f"{path}, line {offset}: expected {n} fields, found "
            f"{(df.shape[1] + 1) // 2 if dat else df.shape[1]}"
        )
    if df.shape[1] > width:
        extra = df.iloc[:, width:].notna().any(axis=1).to_numpy()
        if extra.any():
            raise ValueError(f"{path}, {_lines(extra, offset)}: more than {n} fields")
        df = df.iloc[:, :width]
    if dat:
        odd = df.iloc[:, 1::2].notna().any(axis=1).to_numpy()
        if odd.any():
            raise ValueError(
                f"{path}, {_lines(odd, offset)}: malformed line, fields must be separated "
                "by '::' (found a single ':')"
            )
    df = df.iloc[:, positions]
    df.columns = names
    for c in int_cols + float_cols:
        s = df[c]
        if pd.api.types.is_integer_dtype(s):  # clean already (and exact beyond 2**53)
            df[c] = s.astype(np.int64) if c in int_cols else s.astype(np.float64)
            continue
        num = s if pd.api.types.is_numeric_dtype(s) else pd.to_numeric(s, errors="coerce")
        x = num.to_numpy(dtype=np.float64, na_value=np.nan)
        bad = ~np.isfinite(x)
        if c in int_cols:
            bad |= x != np.round(x)
        if bad.any():
            kind = "an integer" if c in int_cols else "a number"
            raise ValueError(
                f"{path}, {_lines(bad, offset)}: field {c!r} must be {kind}, got "
                f"{s[bad].head(_MAX_SHOWN).tolist()} (a missing field reads as nan)"
            )
        df[c] = x.astype(np.int64) if c in int_cols else x
    for c in required:
        bad = (df[c].isna() | (df[c].astype(str).str.len() == 0)).to_numpy()
        if bad.any():
            raise ValueError(f"{path}, {_lines(bad, offset)}: field {c!r} is missing")
    for c in str_cols:
        df[c] = df[c].fillna("")
    return df


def _read_ratings(path: Path, fmt: str, scale: tuple[float, float]) -> pd.DataFrame:
    """user, item, rating, timestamp from a ``tab``, ``dat`` or ``csv`` ratings file."""
    _require(path)
    kw: dict[str, Any] = {
        "tab": {"sep": "\t"},
        "dat": {"sep": ":", "dat": True},
        "csv": {
            "sep": ",",
            "header": ["userId", "movieId", "rating", "timestamp"],
            "quoting": csv.QUOTE_MINIMAL,
        },
    }[fmt]
    df = _read_table(
        path, _RATING_COLUMNS, int_cols=("user", "item", "timestamp"), float_cols=("rating",), **kw
    )
    r = df["rating"].to_numpy()
    bad = (r < scale[0]) | (r > scale[1])
    if bad.any():
        raise ValueError(
            f"{path}, {_lines(bad, 2 if fmt == 'csv' else 1)}: ratings "
            f"{r[bad][:_MAX_SHOWN].tolist()} outside the scale {scale}"
        )
    return df


def _genre_strings(flags: pd.DataFrame) -> pd.Series:
    """'Action|Comedy' strings from 0/1 genre flag columns (vectorized)."""
    names = np.array([f"{c}|" for c in flags.columns], dtype=object)
    joined = (flags.to_numpy(dtype=np.int64).astype(object) * names).sum(axis=1)
    return pd.Series(joined, index=flags.index, dtype=object).astype(str).str.rstrip("|")


def _one_hot(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    return pd.get_dummies(df[columns], prefix=columns, prefix_sep="_", dtype=np.float32)


def _check_unique_ids(ids: pd.Series, path: Path, offset: int = 1) -> None:
    dup = ids.duplicated(keep=False).to_numpy()
    if dup.any():
        raise ValueError(f"{path}, {_lines(dup, offset)}: duplicated ids {ids[dup].unique()[:5]}")


def _read_dat_movies(path: Path, encoding: str) -> pd.DataFrame:
    """movies.dat ``id::title::genres`` (titles may hold ':')."""
    _require(path)
    try:
        text = path.read_text(encoding=encoding)
    except UnicodeDecodeError as exc:
        if encoding == "latin-1":  # pragma: no cover - latin-1 decodes any byte
            raise
        logger.info("%s is not %s (%s); reading it as latin-1", path, encoding, exc)
        text = path.read_text(encoding="latin-1")
    lines = pd.Series(text.splitlines(), dtype=object)
    filled = (lines.str.len() > 0).to_numpy()
    if not filled.any():
        raise ValueError(f"{path} holds no data")
    lines = lines.iloc[: np.flatnonzero(filled)[-1] + 1]
    parts = lines.str.extract(r"^([^:]*)::(.*)::([^:]*)$")
    bad = parts[0].isna().to_numpy()
    if bad.any():
        raise ValueError(f"{path}, {_lines(bad, 1)}: expected 'id::title::genres'")
    ids = pd.to_numeric(parts[0], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(ids) | (ids != np.round(ids))
    if bad.any():
        raise ValueError(
            f"{path}, {_lines(bad, 1)}: movie id must be an integer, got "
            f"{parts[0][bad].head(_MAX_SHOWN).tolist()}"
        )
    movies = pd.DataFrame(
        {"title": parts[1].to_numpy(), "genres": parts[2].to_numpy()},
        index=pd.Index(ids.astype(np.int64), name="item"),
    )
    _check_unique_ids(movies.index.to_series(), path)
    return movies


def _read_csv_movies(path: Path) -> pd.DataFrame:
    _require(path)
    df = _read_table(
        path, ["item", "title", "genres"], sep=",", header=["movieId", "title", "genres"],
        quoting=csv.QUOTE_MINIMAL,
        int_cols=("item",), str_cols=("title", "genres"), required=("title",),
    )
    _check_unique_ids(df["item"], path, offset=2)
    return df.set_index("item")


# --------------------------------------------------------------------------- dataset


@dataclass(eq=False)
class MovieLens:
    """A MovieLens dataset with its original ids and side information.

    Attributes
    ----------
    variant : str
        ``"100k"``, ``"1m"``, ``"10m"``, ``"20m"``, ``"25m"`` or ``"latest-small"``.
    path : pathlib.Path
        The dataset folder the files were read from.
    ratings : pandas.DataFrame
        Columns ``user, item, rating, timestamp`` with the ORIGINAL ids, in file
        order.
    items : pandas.DataFrame
        Movie metadata (``title``, ``genres`` as ``'A|B'`` strings, and for 100k
        ``release_date``, ``video_release_date``, ``imdb_url``), indexed by item id.
    item_features : pandas.DataFrame
        Genre one-hot columns (float32) indexed by item id; for 100k exactly the
        19 flag columns of ``u.item`` named from ``u.genre``.
    user_features : pandas.DataFrame or None
        For 100k and 1m: ``age`` (float) and one-hot ``gender_*`` and
        ``occupation_*`` columns, indexed by user id; None for other variants.
    users : pandas.DataFrame or None
        The raw user table (100k, 1m) indexed by user id.
    scale : (float, float)
        The rating scale: (1, 5) for 100k/1m, (0.5, 5) otherwise.
    """

    variant: str
    path: Path
    ratings: pd.DataFrame
    items: pd.DataFrame
    item_features: pd.DataFrame
    user_features: pd.DataFrame | None
    scale: tuple[float, float]
    users: pd.DataFrame | None = None

    @property
    def name(self) -> str:
        return f"movielens-{self.variant}"

    def __repr__(self) -> str:
        return (
            f"MovieLens(variant={self.variant!r}, ratings={len(self.ratings)}, "
            f"items={len(self.items)}, path='{self.path}')"
        )

    def _features(
        self, item_features: bool, user_features: bool
    ) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
        if user_features and self.user_features is None:
            raise ValueError(f"{self.name} has no user features (only 100k and 1m have users)")
        return (
            self.user_features if user_features else None,
            self.item_features if item_features else None,
        )

    def to_ratings(self, item_features: bool = True, user_features: bool = False) -> Ratings:
        """All ratings as :class:`Ratings` (rows = users, columns = items).

        Ids are mapped to indices in sorted order over the users/items that have
        ratings; features are aligned to those indices.

        Parameters
        ----------
        item_features : bool
            Attach the genre one-hot columns as ``col_features``.
        user_features : bool
            Attach the user features as ``row_features`` (100k and 1m only).

        Examples
        --------
        >>> from bayesmf.data import load_movielens
        >>> load_movielens("100k").to_ratings()  # doctest: +SKIP
        Ratings(name='movielens-100k', shape=(943, 1682), n=100000, ...)
        """
        uf, itf = self._features(item_features, user_features)
        return from_dataframe(
            self.ratings,
            "user",
            "item",
            "rating",
            scale=self.scale,
            user_features=uf,
            item_features=itf,
            name=self.name,
        )

    def canonical_split(
        self, name: str, item_features: bool = True, user_features: bool = False
    ) -> tuple[Ratings, Ratings]:
        """The published ML-100K train/test split ``name`` (``"u1"``..``"u5"``, ``"ua"``, ``"ub"``).

        Read from ``<name>.base`` and ``<name>.test``; both :class:`Ratings` have
        the same shape, id maps and features as :meth:`to_ratings`.

        Raises
        ------
        ValueError
            For another variant, an unknown split name, a malformed file, ids
            absent from ``u.data`` or a pair in both files.

        Examples
        --------
        >>> from bayesmf.data import load_movielens
        >>> train, test = load_movielens("100k").canonical_split("u1")  # doctest: +SKIP
        >>> len(train), len(test)  # doctest: +SKIP
        (80000, 20000)
        """
        if self.variant != "100k":
            raise ValueError(f"canonical splits exist for MovieLens 100k only, not {self.variant}")
        if name not in _SPLITS:
            raise ValueError(f"unknown split {name!r}; choose one of {', '.join(_SPLITS)}")
        uf, itf = self._features(item_features, user_features)
        user_ids = np.unique(self.ratings["user"].to_numpy())
        item_ids = np.unique(self.ratings["item"].to_numpy())
        parts = []
        for part in ("base", "test"):
            path = self.path / f"{name}.{part}"
            df = _read_ratings(path, "tab", self.scale)
            parts.append(
                from_dataframe(
                    df,
                    scale=self.scale,
                    user_features=uf,
                    item_features=itf,
                    name=f"{self.name}-{name}-{'train' if part == 'base' else 'test'}",
                    user_ids=user_ids,
                    item_ids=item_ids,
                )
            )
        train, test = parts
        n_cols = train.n_cols
        both = np.intersect1d(
            (train.rows * n_cols + train.cols).numpy(), (test.rows * n_cols + test.cols).numpy()
        )
        if both.size:
            pairs = [(user_ids[k // n_cols], item_ids[k % n_cols]) for k in both[:_MAX_SHOWN]]
            raise ValueError(
                f"{name}.base and {name}.test share {both.size} (user, item) pairs, e.g. {pairs}"
            )
        return train, test


# --------------------------------------------------------------------------- loaders


def _load_100k(folder: Path) -> dict[str, Any]:
    ratings = _read_ratings(folder / "u.data", "tab", _SCALES["100k"])
    genre = _read_table(
        _require(folder / "u.genre"), ["genre", "code"], sep="|",
        int_cols=("code",), str_cols=("genre",), required=("genre",),
    ).sort_values("code")
    genres = genre["genre"].tolist()
    meta = ["item", "title", "release_date", "video_release_date", "imdb_url"]
    names = meta + [f"g{k}" for k in range(len(genres))]
    items = _read_table(
        _require(folder / "u.item"), names, sep="|", encoding="latin-1",
        int_cols=("item", *names[len(meta):]), str_cols=tuple(meta[1:]),
    )
    _check_unique_ids(items["item"], folder / "u.item")
    items = items.set_index("item")
    flags = items[names[len(meta):]].set_axis(genres, axis=1)
    bad = ~flags.isin([0, 1]).all(axis=1).to_numpy()
    if bad.any():
        raise ValueError(
            f"{folder / 'u.item'}: genre flags must be 0/1; items {items.index[bad][:5].tolist()}"
        )
    items = items[meta[1:]].assign(genres=_genre_strings(flags))
    users = _read_table(
        _require(folder / "u.user"), ["user", "age", "gender", "occupation", "zip"], sep="|",
        int_cols=("user",), float_cols=("age",), str_cols=("gender", "occupation", "zip"),
        required=("gender", "occupation"),
    )
    _check_unique_ids(users["user"], folder / "u.user")
    users = users.set_index("user")
    user_features = pd.concat(
        [users[["age"]].astype(np.float32), _one_hot(users, ["gender", "occupation"])], axis=1
    )
    return {
        "ratings": ratings,
        "items": items,
        "item_features": flags.astype(np.float32),
        "users": users,
        "user_features": user_features,
    }


def _load_1m(folder: Path) -> dict[str, Any]:
    ratings = _read_ratings(folder / "ratings.dat", "dat", _SCALES["1m"])
    movies = _read_dat_movies(folder / "movies.dat", encoding="latin-1")
    users = _read_table(
        _require(folder / "users.dat"), ["user", "gender", "age", "occupation", "zip"],
        sep=":", dat=True, int_cols=("user", "age", "occupation"), str_cols=("gender", "zip"),
        required=("gender",),
    )
    _check_unique_ids(users["user"], folder / "users.dat")
    users = users.set_index("user")
    codes = users["occupation"]
    users["occupation"] = codes.map(_OCCUPATIONS_1M).fillna(codes.astype(str)).astype(str)
    user_features = pd.concat(
        [users[["age"]].astype(np.float32), _one_hot(users, ["gender", "occupation"])], axis=1
    )
    return {
        "ratings": ratings,
        "items": movies,
        "item_features": movies["genres"].str.get_dummies(sep="|").astype(np.float32),
        "users": users,
        "user_features": user_features,
    }


def _load_10m(folder: Path) -> dict[str, Any]:
    ratings = _read_ratings(folder / "ratings.dat", "dat", _SCALES["10m"])
    movies = _read_dat_movies(folder / "movies.dat", encoding="utf-8")
    return {
        "ratings": ratings,
        "items": movies,
        "item_features": movies["genres"].str.get_dummies(sep="|").astype(np.float32),
    }


def _load_csv(folder: Path, variant: str) -> dict[str, Any]:
    ratings = _read_ratings(folder / "ratings.csv", "csv", _SCALES[variant])
    movies = _read_csv_movies(folder / "movies.csv")
    return {
        "ratings": ratings,
        "items": movies,
        "item_features": movies["genres"].str.get_dummies(sep="|").astype(np.float32),
    }


def load_movielens(
    variant: str = "100k", root: str | Path | None = None, download: bool = True
) -> MovieLens:
    """Load a MovieLens dataset from its original files.

    Parameters
    ----------
    variant : str
        ``"100k"``, ``"1m"``, ``"10m"``, ``"20m"``, ``"25m"`` or
        ``"latest-small"`` (an ``"ml-"`` prefix is accepted).
    root : path, optional
        Folder holding the dataset folder (e.g. ``root/ml-100k/u.data``) or
        the dataset folder itself. When given it is the only place searched:
        ``$BAYESMF_DATA_DIR`` and the cache are not, nothing is downloaded,
        and a missing dataset raises (see :func:`~bayesmf.data.find_dataset`).
    download : bool
        Download (and verify) the archive into the cache when ``root`` is not
        given and the dataset is not found.

    Returns
    -------
    MovieLens

    Raises
    ------
    DatasetNotFoundError
        If the files are not under ``root`` (the message names it and the
        expected files), or are absent and cannot be downloaded.
    ValueError
        For an unknown variant, a ``root`` that is a file, or a malformed file
        (naming file and line).

    Examples
    --------
    >>> from bayesmf.data import load_movielens
    >>> ml = load_movielens("100k")  # doctest: +SKIP
    >>> ml.to_ratings().shape  # doctest: +SKIP
    (943, 1682)
    """
    key = variant.lower().removeprefix("ml-")
    if key not in VARIANTS:
        raise ValueError(
            f"unknown MovieLens variant {variant!r}; choose one of {', '.join(VARIANTS)}"
        )
    t0 = time.perf_counter()
    folder = find_dataset(VARIANTS[key], root=root, download=download)
    if key == "100k":
        parts = _load_100k(folder)
    elif key == "1m":
        parts = _load_1m(folder)
    elif key == "10m":
        parts = _load_10m(folder)
    else:
        parts = _load_csv(folder, key)
    parts["item_features"].index.name = "item"
    if parts.get("user_features") is not None:
        parts["user_features"].index.name = "user"
    parts.setdefault("user_features", None)
    ml = MovieLens(variant=key, path=folder, scale=_SCALES[key], **parts)
    logger.info("loaded %r in %.2f s", ml, time.perf_counter() - t0)
    return ml
