"""Jester dataset 1 (Goldberg et al. 2001): ratings of 100 jokes on a -10..10 scale.

The official file ``jester-data-1.xls`` (from ``jester_dataset_1_1.zip``) has
one row per user and 101 columns: the number of jokes the user rated, then the
100 jokes, with ``99`` meaning "not rated". Reading it needs ``xlrd``
(``pip install bayesmf[jester]``). Its lossless CSV export
``jester-data-1.csv`` (same layout, no header) is read as well, with the pandas
C parser (about a second for the 24,983 x 101 file) and the same checks; both
files have pinned sha256 values in :data:`~bayesmf.data.sources.REGISTRY`.
"""

from __future__ import annotations

import importlib.util
import logging
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .containers import Ratings
from .sources import find_file

__all__ = ["load_jester"]

logger = logging.getLogger(__name__)

_MISSING = 99
_N_JOKES = 100
_SCALE = (-10.0, 10.0)
_MAX_SHOWN = 5
_EXCEL = (".xls", ".xlsx")


def _rows(mask: np.ndarray, unit: str = "sheet row") -> str:
    """User rows (0-based) of the True entries, with their 1-based sheet row / file line."""
    idx = np.flatnonzero(mask)
    shown = ", ".join(f"{i} ({unit} {i + 1})" for i in idx[:_MAX_SHOWN])
    more = f" (and {idx.size - _MAX_SHOWN} more)" if idx.size > _MAX_SHOWN else ""
    return f"{'row' if idx.size == 1 else 'rows'} {shown}{more}"


def _read_jester_xls(path: Path, name: str = "jester-1") -> Ratings:
    """Parse and check a Jester dataset-1 spreadsheet."""
    engine = next(
        (e for e, mod in (("xlrd", "xlrd"), ("calamine", "python_calamine"))
         if importlib.util.find_spec(mod) is not None),
        None,
    )
    if engine is None:
        raise ImportError(
            "reading the Jester .xls files needs xlrd: pip install xlrd (or bayesmf[jester])"
        )
    with warnings.catch_warnings():
        # pandas >= 3 deprecates the xlrd engine in favour of calamine; both read .xls alike
        warnings.filterwarnings("ignore", message="The xlrd engine is deprecated")
        df = pd.read_excel(path, header=None, engine=engine)
    return _to_ratings(df, path, name, unit="sheet row")


def _read_jester_csv(path: Path, name: str = "jester-1") -> Ratings:
    """Parse and check the CSV export of a Jester dataset-1 spreadsheet (no header)."""
    try:
        # numeric files (the normal case) are parsed straight to float64 by the C parser
        df = pd.read_csv(path, header=None, engine="c", skip_blank_lines=False)
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} holds no users") from None
    except pd.errors.ParserError as exc:
        raise ValueError(f"{path}: malformed CSV (rows of unequal length?): {exc}") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not a text CSV file: {exc}") from None
    filled = df.notna().any(axis=1).to_numpy()
    if filled.any():  # blank lines at the very end hold no users
        df = df.iloc[: np.flatnonzero(filled)[-1] + 1]
    return _to_ratings(df, path, name, unit="line")


def _to_ratings(df: pd.DataFrame, path: Path, name: str, unit: str) -> Ratings:
    """Check a raw Jester table (count column + 100 jokes) and build :class:`Ratings`.

    ``unit`` names the 1-based position of a user's row in the file
    (``"sheet row"`` or ``"line"``) in error messages.
    """
    if df.shape[1] != _N_JOKES + 1:
        raise ValueError(
            f"{path}: expected {_N_JOKES + 1} columns (count + {_N_JOKES} jokes), "
            f"found {df.shape[1]}"
        )
    if len(df) == 0:
        raise ValueError(f"{path} holds no users")
    blank = df.isna().to_numpy()
    if all(pd.api.types.is_numeric_dtype(t) for t in df.dtypes):
        num = df.to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        num = df.apply(pd.to_numeric, errors="coerce").to_numpy(
            dtype=np.float64, na_value=np.nan
        )
    nonnum = np.isnan(num) & ~blank
    if nonnum.any():
        i, j = np.argwhere(nonnum)[0]
        raise ValueError(
            f"{path}: non-numeric cells in {_rows(nonnum.any(axis=1), unit)}, "
            f"e.g. column {j}: {df.iat[i, j]!r}"
        )
    count = num[:, 0]
    bad = ~np.isfinite(count) | (count != np.round(count)) | (count < 0) | (count > _N_JOKES)
    if bad.any():
        raise ValueError(
            f"{path}: the first column (number of jokes rated) must be an integer in "
            f"0..{_N_JOKES}; {_rows(bad, unit)} hold {count[bad][:_MAX_SHOWN].tolist()}"
        )
    X = num[:, 1:]
    empty = blank[:, 1:]
    if empty.any():
        logger.warning(
            "%s: %d empty cells in %s read as 'not rated' (like %d)",
            path, int(empty.sum()), _rows(empty.any(axis=1), unit), _MISSING,
        )
    observed = ~empty & (X != _MISSING)
    out = observed & ((X < _SCALE[0]) | (X > _SCALE[1]))
    if out.any():
        raise ValueError(
            f"{path}: ratings outside {_SCALE} (and not the missing code {_MISSING}) in "
            f"{_rows(out.any(axis=1), unit)}, e.g. {X[out][:_MAX_SHOWN].tolist()}"
        )
    n_obs = observed.sum(axis=1)
    mismatch = n_obs != count
    if mismatch.any():
        i = int(np.flatnonzero(mismatch)[0])
        raise ValueError(
            f"{path}: the rating count in the first column disagrees with the number of rated "
            f"jokes in {_rows(mismatch, unit)}; row {i} says {int(count[i])} but rates "
            f"{int(n_obs[i])}"
        )
    rows, cols = np.nonzero(observed)
    if rows.size == 0:
        raise ValueError(f"{path} holds no ratings")
    return Ratings(
        rows=rows,
        cols=cols,
        values=X[rows, cols].astype(np.float32),
        shape=(X.shape[0], _N_JOKES),
        row_ids=np.arange(X.shape[0]),
        col_ids=np.arange(1, _N_JOKES + 1),
        scale=_SCALE,
        name=name,
    )


def load_jester(root: str | Path | None = None, download: bool = True) -> Ratings:
    """Jester dataset 1 (``jester-data-1.xls`` or its CSV export) as :class:`Ratings`.

    Rows are users (ids ``0, 1, ...`` in file order), columns are jokes (ids
    ``1..100``); entries equal to 99 are unobserved. The scale is (-10, 10).
    The real file has 24,983 users and 1,810,455 ratings (the three dataset-1
    files together have 73,421 users). The official spreadsheet is preferred
    when both forms are present; parsing it with ``xlrd`` takes a while, the
    CSV about a second.

    Parameters
    ----------
    root : path, optional
        Where to look, instead of ``$BAYESMF_DATA_DIR`` and the cache: a
        folder holding ``jester-1/jester-data-1.xls`` (or ``.csv``), the
        ``jester-1`` folder itself, or the file itself (any name; ``.xls`` /
        ``.xlsx`` are read as spreadsheets, anything else as CSV). Nothing
        else is searched and nothing is downloaded when it is given.
    download : bool
        Download and verify ``jester_dataset_1_1.zip`` into the cache when
        ``root`` is not given and neither file is found.

    Raises
    ------
    ValueError
        If the table does not have 101 columns, holds non-numeric cells,
        ratings outside -10..10 (other than the code 99), or a row whose count
        (first column) differs from its number of rated jokes (the row and its
        line / sheet row are named).
    DatasetNotFoundError
        If the file is not under ``root``, or is absent and cannot be
        downloaded.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from bayesmf.data import load_jester
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "jester.csv"
    >>> _ = f.write_text("2,8.5,-3.25" + ",99" * 98 + "\\n1" + ",99" * 99 + ",10\\n")
    >>> R = load_jester(root=f)
    >>> R.shape, len(R), R.scale
    ((2, 100), 3, (-10.0, 10.0))
    >>> load_jester().shape  # doctest: +SKIP
    (24983, 100)
    """
    t0 = time.perf_counter()
    path = find_file("jester-1", root=root, download=download)
    if path.suffix.lower() in _EXCEL:
        R = _read_jester_xls(path)
    else:
        R = _read_jester_csv(path)
    logger.info("loaded %s (%d ratings) in %.2f s", path, len(R), time.perf_counter() - t0)
    return R
