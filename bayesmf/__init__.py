"""bayesmf: probabilistic matrix factorization on Pyro.

Subpackages (imported on first use, so ``import bayesmf`` is instant)
-----------------------------------------------------------------------
data
    Datasets (real file formats, downloads, caching), containers, splits, samplers.
models
    Pyro models (what is believed: priors and likelihoods) and their neural parts.
inference
    How models are fitted: SVI, Gibbs, the block model's VI, MAP solvers (ALS, SGD),
    deep MF, meta-training; the one training loop, the one result interface, safe files.
diagnostics
    Metrics, ArviZ conversion and plots.

:func:`load` reads any saved fit, whatever the engine.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

__version__ = "0.2.0.dev0"
__all__ = ["data", "models", "inference", "diagnostics", "load", "__version__"]

_SUBMODULES = ("data", "models", "inference", "diagnostics")

logging.getLogger(__name__).addHandler(logging.NullHandler())


def load(path: Any, device: Any = None) -> Any:
    """Load any saved fit (MAP, SVI, Gibbs, block model, deep MF, meta-trained prior).

    See :func:`bayesmf.inference.load`.
    """
    from .inference.fits import load as _load

    return _load(path, device=device)


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'bayesmf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_SUBMODULES))
