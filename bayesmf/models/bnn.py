"""The Bayesian multilayer perceptron shared by the neural models.

A network ``f_theta`` whose weights ``W{l}`` (``(n_in, n_out)``) and biases ``b{l}``
(``(n_out,)``) are latent sites of the model (see :class:`bayesmf.models.BayesianNNMF` and
:class:`bayesmf.models.DPStochasticBlockModel`): :func:`mlp_forward` evaluates it for
draws of those sites, which may carry leading sample dimensions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["ACTIVATIONS", "mlp_forward"]

#: hidden-unit non-linearities by name
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
}


def mlp_forward(
    h: torch.Tensor,
    z: dict[str, torch.Tensor],
    n_layers: int,
    activation: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``f_theta(h)`` for weights ``z["W0"], z["b0"], ...``; no activation after the last layer.

    ``h`` has shape ``(*S, ..., n_in)`` where ``S`` are the sample dimensions of the weights
    (``W{l}``: ``(*S, n_in, n_out)``; none for a single network); the result has shape
    ``(*S, ..., n_out)``.

    Examples
    --------
    >>> z = {"W0": torch.ones(2, 3, 4), "b0": torch.zeros(2, 4),
    ...      "W1": torch.ones(2, 4, 1), "b1": torch.zeros(2, 1)}
    >>> mlp_forward(torch.zeros(2, 5, 6, 3), z, 2, torch.sigmoid)[0, 0, 0]
    tensor([2.])
    """
    lead = h.shape[:-1]
    for layer in range(n_layers):
        W, b = z[f"W{layer}"], z[f"b{layer}"]
        batch = W.shape[:-2]
        h = h.reshape(*batch, -1, h.shape[-1]) @ W + b.unsqueeze(-2)
        h = h.reshape(*lead, -1)
        if layer < n_layers - 1:
            h = activation(h)
    return h
