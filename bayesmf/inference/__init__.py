"""How models are fitted: MAP solvers (ALS, SGD), SVI, unrolled MAP, meta-training, MCMC."""

__all__: list[str] = []
