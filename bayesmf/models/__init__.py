"""Pyro models (priors and likelihoods) and their neural parts. No training loops here.

Each model is an ``nn.Module``; the Gaussian factor models' ``model(data, index=None,
predict=False)`` is a Pyro model that can be handed to ``pyro.infer.SVI``, ``Predictive`` or
``MCMC`` directly.

* :class:`BayesianMF`, :class:`BayesianNNMF`: Bayesian (neural-network) MF for ratings;
* :class:`DPStochasticBlockModel`: stick-breaking Dirichlet-process block model for networks;
* :class:`MetaPriorMF`: meta-learned neural prior means for MF without shared rows/columns
  (with the exchangeable matrix layers and the EML baseline network);
* :class:`DeepMF`, :class:`DiscreteDeepMF`: deep two-branch MF and its discrete variant.
"""

from .autorec import AutoRec
from .base import BernoulliFactorModel, FactorModel, GaussianFactorModel, LatentSpec
from .bayesian_mf import BayesianMF
from .deep_mf import DeepMF, DiscreteDeepMF
from .exchangeable import ExchangeableEncoder, ExchangeableLayer, ExchangeableMatrixNet
from .latent_network import LatentFeatureNetwork
from .meta_prior import FixedPriorMF, MetaPosterior, MetaPriorMF
from .nnmf import BayesianNNMF
from .quantizer import SmoothQuantizer
from .sbm import DPStochasticBlockModel

__all__ = [
    "BernoulliFactorModel",
    "FactorModel",
    "LatentFeatureNetwork",
    "AutoRec",
    "BayesianMF",
    "BayesianNNMF",
    "DPStochasticBlockModel",
    "DeepMF",
    "DiscreteDeepMF",
    "ExchangeableEncoder",
    "ExchangeableLayer",
    "ExchangeableMatrixNet",
    "FixedPriorMF",
    "GaussianFactorModel",
    "LatentSpec",
    "MetaPosterior",
    "MetaPriorMF",
    "SmoothQuantizer",
]
