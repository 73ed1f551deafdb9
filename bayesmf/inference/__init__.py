"""How models are fitted: MAP solvers (ALS, SGD), SVI, unrolled MAP, meta-training, MCMC.

Note that the function ``bayesmf.inference.als`` shadows the module of the same
name; reach the module with ``from bayesmf.inference.als import ...`` or
``sys.modules["bayesmf.inference.als"]``.
"""

from __future__ import annotations

from .als import MAPFactors, als
from .deep_mf_fit import DeepMFFit, fit_deep_mf
from .gibbs import SampleFit, fit_gibbs
from .guides import MeanFieldGuide
from .sgd import sgd_mf
from .svi import VariationalFit, fit_svi, load

__all__ = [
    "DeepMFFit",
    "MAPFactors",
    "MeanFieldGuide",
    "SampleFit",
    "VariationalFit",
    "als",
    "fit_deep_mf",
    "fit_gibbs",
    "fit_svi",
    "load",
    "sgd_mf",
]
