"""Jester dataset 1 (Goldberg et al. 2001): ratings of 100 jokes on a -10..10 scale.

The file ``jester-data-1.xls`` (from ``jester_dataset_1_1.zip``) has one row
per user and 101 columns: the number of jokes the user rated, then the 100
jokes, with ``99`` meaning "not rated". Reading it needs ``xlrd``
(``pip install bayesmf[jester]``).
"""

from __future__ import annotations

import importlib.util
import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from .containers import Ratings
from .sources import find_dataset

__all__ = ["load_jester"]

logger = logging.getLogger(__name__)

_MISSING = 99
_N_JOKES = 100
_SCALE = (-10.0, 10.0)
_MAX_SHOWN = 5


def _rows(mask: np.ndarray) -> str:
    """User rows (0-based) of the True entries, with their spreadsheet row numbers."""
    idx = np.flatnonzero(mask)
    shown = ", ".join(f"{i} (sheet row {i + 1})" for i in idx[:_MAX_SHOWN])
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
    if df.shape[1] != _N_JOKES + 1:
        raise ValueError(
            f"{path}: expected {_N_JOKES + 1} columns (count + {_N_JOKES} jokes), "
            f"found {df.shape[1]}"
        )
    if len(df) == 0:
        raise ValueError(f"{path} holds no users")
    blank = df.isna().to_numpy()
    num = df.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    nonnum = np.isnan(num) & ~blank
    if nonnum.any():
        i, j = np.argwhere(nonnum)[0]
        raise ValueError(
            f"{path}: non-numeric cells in {_rows(nonnum.any(axis=1))}, "
            f"e.g. column {j}: {df.iat[i, j]!r}"
        )
    count = num[:, 0]
    bad = ~np.isfinite(count) | (count != np.round(count)) | (count < 0) | (count > _N_JOKES)
    if bad.any():
        raise ValueError(
            f"{path}: the first column (number of jokes rated) must be an integer in "
            f"0..{_N_JOKES}; {_rows(bad)} hold {count[bad][:_MAX_SHOWN].tolist()}"
        )
    X = num[:, 1:]
    empty = blank[:, 1:]
    if empty.any():
        logger.warning(
            "%s: %d empty cells in %s read as 'not rated' (like %d)",
            path, int(empty.sum()), _rows(empty.any(axis=1)), _MISSING,
        )
    observed = ~empty & (X != _MISSING)
    out = observed & ((X < _SCALE[0]) | (X > _SCALE[1]))
    if out.any():
        raise ValueError(
            f"{path}: ratings outside {_SCALE} (and not the missing code {_MISSING}) in "
            f"{_rows(out.any(axis=1))}, e.g. {X[out][:_MAX_SHOWN].tolist()}"
        )
    n_obs = observed.sum(axis=1)
    mismatch = n_obs != count
    if mismatch.any():
        i = int(np.flatnonzero(mismatch)[0])
        raise ValueError(
            f"{path}: the rating count in the first column disagrees with the number of rated "
            f"jokes in {_rows(mismatch)}; row {i} says {int(count[i])} but rates {int(n_obs[i])}"
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
    """Jester dataset 1 (``jester-data-1.xls``) as :class:`Ratings`.

    Rows are users (ids ``0, 1, ...`` in file order), columns are jokes (ids
    ``1..100``); entries equal to 99 are unobserved. The scale is (-10, 10).
    The real file has 24,983 users (the three dataset-1 files together have
    73,421). Parsing the spreadsheet with ``xlrd`` takes a while.

    Parameters
    ----------
    root : path, optional
        Folder holding ``jester-1/jester-data-1.xls`` (or holding
        ``jester-data-1.xls`` itself); searched before ``$BAYESMF_DATA_DIR``
        and the cache.
    download : bool
        Download and verify ``jester_dataset_1_1.zip`` into the cache when
        the file is not found.

    Raises
    ------
    ValueError
        If the sheet does not have 101 columns, holds non-numeric cells,
        ratings outside -10..10, or a row whose count (first column) differs
        from its number of rated jokes (the row is named).
    DatasetNotFoundError
        If the file is absent and cannot be downloaded.

    Examples
    --------
    >>> from bayesmf.data import load_jester
    >>> R = load_jester()  # doctest: +SKIP
    >>> R.n_cols, R.scale  # doctest: +SKIP
    (100, (-10.0, 10.0))
    """
    folder = find_dataset("jester-1", root=root, download=download)
    return _read_jester_xls(folder / "jester-data-1.xls")
