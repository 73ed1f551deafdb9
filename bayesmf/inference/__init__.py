"""How models are fitted: MAP solvers (ALS, SGD), SVI, Gibbs sampling, the SBM's mean-field
VI, unrolled MAP, meta-training and MAML, and the deep MF fitter.

Note that the function ``bayesmf.inference.als`` shadows the module of the same
name; reach the module with ``from bayesmf.inference.als import ...`` or
``sys.modules["bayesmf.inference.als"]``.
"""

from __future__ import annotations

from .als import MAPFactors, als
from .deep_mf_fit import DeepMFFit, fit_deep_mf
from .gibbs import SampleFit, fit_gibbs
from .guides import MeanFieldGuide
from .maml import MAML, maml_train
from .meta_train import MetaTrainResult, evaluate_episodes, meta_train
from .sbm import SBMFit, fit_sbm, load_sbm
from .sgd import sgd_mf
from .svi import VariationalFit, fit_svi, load
from .unrolled import map_objective, unrolled_map

__all__ = [
    "DeepMFFit",
    "MAML",
    "MAPFactors",
    "MeanFieldGuide",
    "MetaTrainResult",
    "SBMFit",
    "SampleFit",
    "VariationalFit",
    "als",
    "evaluate_episodes",
    "fit_deep_mf",
    "fit_gibbs",
    "fit_sbm",
    "fit_svi",
    "load",
    "load_sbm",
    "maml_train",
    "map_objective",
    "meta_train",
    "sgd_mf",
    "unrolled_map",
]
