"""Pyro models (priors and likelihoods) and their neural parts. No training loops here.

Each model is an ``nn.Module`` whose ``model(data, index=None, predict=False)`` is a Pyro
model that can be handed to ``pyro.infer.SVI``, ``Predictive`` or ``MCMC`` directly.
"""

from .base import GaussianFactorModel, LatentSpec
from .bayesian_mf import BayesianMF
from .nnmf import BayesianNNMF

__all__ = ["BayesianMF", "BayesianNNMF", "GaussianFactorModel", "LatentSpec"]
