"""How models are fitted.

Engines (each returns a :class:`~bayesmf.inference.fits.Fit`, the one result interface):

* :func:`fit_svi` — SVI with a mean-field guide built from the model's sites;
* :func:`fit_gibbs` — blocked Gibbs sampling (several chains) of Bayesian MF;
* :func:`fit_nuts` — NUTS (Pyro's) on any model with continuous latents, for small data;
* :func:`fit_sbm` — the block model's mean-field VI (closed-form q(Z) steps);
* :func:`als`, :func:`sgd_mf` — MAP matrix factorisation;
* :func:`fit_deep_mf` — deep two-branch MF (MAP);
* :func:`meta_train`, :func:`maml_train` — episodic meta-training;
  :func:`fit_meta_posterior` — the posterior under a meta-learned prior, by SVI.

Every iterative engine runs the one training loop (:mod:`.loop`); every file is written and
read by :mod:`.files`; :func:`load` (also ``bayesmf.load``) reads any saved fit. Every engine
runs on one CPU thread by default and restores torch's setting afterwards
(:mod:`.threads`; :func:`set_num_threads` changes it).

Note that the function ``bayesmf.inference.als`` shadows the module of the same name; reach
the module with ``from bayesmf.inference.als import ...``.
"""

from __future__ import annotations

from ..models.unrolled import map_objective, unrolled_map
from .als import MAPFactors, als
from .collapsed import CollapsedRowsGuide
from .deep_mf_fit import DeepMFFit, fit_deep_mf
from .files import FitFileError, ResumeMismatch
from .fits import Fit, NoPosteriorError, load
from .gibbs import SampleFit, fit_gibbs
from .guides import MeanFieldGuide
from .loop import LoopResult
from .maml import MAML, maml_train
from .meta_posterior import MetaPosteriorFit, calibrate_posterior, fit_meta_posterior
from .meta_train import MetaFit, MetaTrainResult, evaluate_episodes, load_meta_model, meta_train
from .mixture import MixtureFit
from .nuts import fit_nuts
from .sbm import SBMFit, fit_sbm, load_sbm
from .sgd import sgd_mf
from .svi import VariationalFit, fit_svi
from .threads import get_num_threads, set_num_threads

__all__ = [
    "CollapsedRowsGuide",
    "DeepMFFit",
    "Fit",
    "FitFileError",
    "LoopResult",
    "MAML",
    "MAPFactors",
    "MeanFieldGuide",
    "MetaFit",
    "MetaPosteriorFit",
    "MetaTrainResult",
    "MixtureFit",
    "NoPosteriorError",
    "ResumeMismatch",
    "SBMFit",
    "SampleFit",
    "VariationalFit",
    "als",
    "calibrate_posterior",
    "evaluate_episodes",
    "fit_deep_mf",
    "fit_gibbs",
    "fit_meta_posterior",
    "fit_nuts",
    "fit_sbm",
    "fit_svi",
    "get_num_threads",
    "load",
    "load_meta_model",
    "load_sbm",
    "maml_train",
    "map_objective",
    "meta_train",
    "set_num_threads",
    "sgd_mf",
    "unrolled_map",
]
