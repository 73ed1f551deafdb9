"""Datasets, containers, splits and samplers.

Everything a model consumes is either a :class:`Ratings` (observed entries of a
matrix) or a :class:`Network` (symmetric 0/1 network). Loaders read the original
public file formats from an explicit ``root=`` (searched alone: a dataset missing
there is an error, never replaced by another copy), else from
``$BAYESMF_DATA_DIR`` or a user cache directory, downloading (with sha256
checks) when allowed. A user's own data come in through :func:`load_adjacency`
(dense 0/1 matrices), :func:`load_edge_list`, :func:`from_networkx`,
:func:`from_dataframe`, :func:`from_scipy` and :func:`from_dense`.

Names are resolved lazily (PEP 562) so that ``import bayesmf.data`` stays cheap
and each module can be imported on its own.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS: dict[str, str] = {
    # containers
    "Ratings": "containers",
    "Network": "containers",
    "Pairs": "containers",
    # where files are looked for, downloads
    "data_home": "sources",
    "find_dataset": "sources",
    "find_file": "sources",
    "DatasetNotFoundError": "sources",
    "DatasetChecksumError": "sources",
    # loaders and converters
    "MovieLens": "movielens",
    "load_movielens": "movielens",
    "load_jester": "jester",
    "load_nips234": "networks",
    "load_edge_list": "networks",
    "load_adjacency": "networks",
    "from_networkx": "networks",
    "from_dataframe": "converters",
    "from_scipy": "converters",
    "from_dense": "converters",
    # splits and samplers
    "random_split": "splits",
    "kfold": "splits",
    "holdout_pairs": "splits",
    "disjoint_split": "splits",
    "holdout_rows_cols": "splits",
    "EpisodeSampler": "episodes",
    "Episode": "episodes",
    # normalisation
    "Standardizer": "normalize",
    "clamp": "normalize",
    # synthetic data with known truth
    "synthetic_ratings": "synthetic",
    "synthetic_network": "synthetic",
    "LowRankTruth": "synthetic",
    "BlockTruth": "synthetic",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bayesmf.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static analysers see the real imports
    from .containers import Network, Pairs, Ratings  # noqa: F401
    from .converters import from_dataframe, from_dense, from_scipy  # noqa: F401
    from .episodes import Episode, EpisodeSampler  # noqa: F401
    from .jester import load_jester  # noqa: F401
    from .movielens import MovieLens, load_movielens  # noqa: F401
    from .networks import (  # noqa: F401
        from_networkx,
        load_adjacency,
        load_edge_list,
        load_nips234,
    )
    from .normalize import Standardizer, clamp  # noqa: F401
    from .sources import (  # noqa: F401
        DatasetChecksumError,
        DatasetNotFoundError,
        data_home,
        find_dataset,
        find_file,
    )
    from .splits import (  # noqa: F401
        disjoint_split,
        holdout_pairs,
        holdout_rows_cols,
        kfold,
        random_split,
    )
    from .synthetic import BlockTruth, LowRankTruth, synthetic_network, synthetic_ratings  # noqa: F401
