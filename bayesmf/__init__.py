"""bayesmf: probabilistic matrix factorization on Pyro.

Subpackages
-----------
data
    Datasets (real file formats, downloads, caching), containers, splits, samplers.
models
    Pyro models (what is believed: priors and likelihoods) and their neural parts.
inference
    How models are fitted: SVI engine, MAP solvers (ALS, SGD, unrolled MAP), MCMC.
diagnostics
    Metrics, ArviZ conversion and plots.
"""

import logging

from . import data, diagnostics, inference, models

__version__ = "0.1.0"
__all__ = ["data", "models", "inference", "diagnostics", "__version__"]

logging.getLogger(__name__).addHandler(logging.NullHandler())
