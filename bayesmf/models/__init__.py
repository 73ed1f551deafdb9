"""Pyro models (priors and likelihoods) and their neural parts. No training loops here.

Each model is an ``nn.Module`` whose ``model(data, index=None, predict=False)`` is a Pyro
model that can be handed to ``pyro.infer.SVI``, ``Predictive`` or ``MCMC`` directly.
"""

from .base import GaussianFactorModel, LatentSpec
from .bayesian_mf import BayesianMF
from .deep_mf import DeepMF, DiscreteDeepMF
from .nnmf import BayesianNNMF
from .quantizer import SmoothQuantizer

__all__ = [
    "BayesianMF",
    "BayesianNNMF",
    "DeepMF",
    "DiscreteDeepMF",
    "GaussianFactorModel",
    "LatentSpec",
    "SmoothQuantizer",
]
