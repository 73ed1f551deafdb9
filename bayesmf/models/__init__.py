"""Pyro models (priors and likelihoods) and their neural parts. No training loops here."""

__all__: list[str] = []
