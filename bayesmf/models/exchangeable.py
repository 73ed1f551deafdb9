"""Exchangeable matrix layers (Hartford et al., 2018; Iwata, 2021, Eq. 4).

A layer maps a batch of ``N x M`` matrices with ``C`` channels per element,
``Z`` of shape ``(batch, N, M, C)``, to ``C'`` channels per element by mixing,
for every element ``(n, m)``,

(i) the element itself ``z_nm``,
(ii) the mean over the observed elements of its column, ``mean_{n'} b_{n'm} z_{n'm}``,
(iii) the mean over the observed elements of its row, ``mean_{m'} b_{nm'} z_{nm'}``,
(iv) the mean over the observed elements of the whole matrix, and
(v) a bias,

.. math::

    z'_{nm} = W_1 z_{nm} + W_2 \\frac{\\sum_{n'} b_{n'm} z_{n'm}}{\\sum_{n'} b_{n'm}}
            + W_3 \\frac{\\sum_{m'} b_{nm'} z_{nm'}}{\\sum_{m'} b_{nm'}}
            + W_4 \\frac{\\sum_{n'm'} b_{n'm'} z_{n'm'}}{\\sum_{n'm'} b_{n'm'}} + w_0,

where ``B`` is the 0/1 indicator of the observed entries. Means of rows or
columns without observed entries are 0. The layer is equivariant to
permutations of the rows and of the columns (permuting ``Z`` and ``B`` permutes
the output), and its parameters do not depend on ``N`` or ``M``, so a network of
such layers reads matrices of any size. Padding rows/columns (``B == 0``) never
enter a mean, so padded batches give the same outputs on the real entries.

:class:`ExchangeableEncoder` stacks such layers (ReLU and dropout between them,
nothing after the last) on the input channels ``(b_nm x_nm, b_nm)``;
:class:`ExchangeableMatrixNet` is the EML baseline of Iwata (2021): the same
encoder with one output channel, read as the predicted value of every entry.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

__all__ = ["masked_mean", "ExchangeableLayer", "ExchangeableEncoder", "ExchangeableMatrixNet"]

logger = logging.getLogger(__name__)


def masked_mean(Z: torch.Tensor, B: torch.Tensor, dim: int | tuple[int, ...]) -> torch.Tensor:
    """Mean of ``Z`` over the observed elements (``B == 1``) along ``dim`` (kept).

    Parameters
    ----------
    Z : Tensor, shape (batch, N, M, C)
        Element features.
    B : Tensor, shape (batch, N, M)
        0/1 (or bool) indicator of the observed elements.
    dim : int or tuple of int
        Matrix dimension(s) to average over: 1 (over rows: a column mean), 2
        (over columns: a row mean) or (1, 2).

    Returns
    -------
    Tensor
        ``Z``'s shape with ``dim`` reduced to size 1; 0 where nothing is observed.

    Examples
    --------
    >>> Z = torch.tensor([[1.0, 100.0], [3.0, 5.0]])[None, :, :, None]
    >>> B = torch.tensor([[1.0, 0.0], [1.0, 1.0]])[None]
    >>> masked_mean(Z, B, 2).flatten().tolist()  # row means ignore the unobserved 100
    [1.0, 4.0]
    >>> masked_mean(Z, B, (1, 2)).item()
    3.0
    """
    w = B.to(Z.dtype).unsqueeze(-1)
    num = (Z * w).sum(dim=dim, keepdim=True)
    den = w.sum(dim=dim, keepdim=True).clamp_min(1.0)
    return num / den


class ExchangeableLayer(nn.Module):
    """One exchangeable matrix layer (Eq. 4 of Iwata, 2021) without the activation.

    Parameters
    ----------
    in_channels, out_channels : int
        Channels per element before and after the layer.

    Examples
    --------
    >>> layer = ExchangeableLayer(2, 4)
    >>> Z, B = torch.randn(3, 5, 6, 2), (torch.rand(3, 5, 6) < 0.5).float()
    >>> layer(Z, B).shape
    torch.Size([3, 5, 6, 4])
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        # one weight matrix for [element, column mean, row mean, global mean] and one bias
        self.linear = nn.Linear(4 * self.in_channels, self.out_channels)

    def forward(self, Z: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        _, N, M, _ = Z.shape
        col = masked_mean(Z, B, 1).expand(-1, N, -1, -1)  # mean over rows n' of column m
        row = masked_mean(Z, B, 2).expand(-1, -1, M, -1)  # mean over columns m' of row n
        glob = masked_mean(Z, B, (1, 2)).expand(-1, N, M, -1)
        return self.linear(torch.cat([Z, col, row, glob], dim=-1))


def _input(X: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked (batch, N, M) tensors and the input channels ``(b x, b)``."""
    if X.dim() != 3 or X.shape != B.shape:
        raise ValueError(
            f"X and B must both have shape (batch, N, M); got {tuple(X.shape)}, {tuple(B.shape)}"
        )
    Bf = B.to(X.dtype)
    return Bf, torch.stack([X * Bf, Bf], dim=-1)


class ExchangeableEncoder(nn.Module):
    """A stack of exchangeable layers: ReLU and dropout between layers, none after the last.

    The input channels of element ``(n, m)`` are ``(b_nm x_nm, b_nm)``: the value
    where observed (0 elsewhere) and the observation indicator.

    Parameters
    ----------
    channels : int
        Channels of the hidden layers.
    layers : int
        Number of exchangeable layers (>= 1).
    out_channels : int, optional
        Channels of the last layer (default ``channels``).
    dropout : float
        Dropout probability applied after every hidden activation.

    Examples
    --------
    >>> enc = ExchangeableEncoder(channels=8, layers=2)
    >>> X, B = torch.randn(2, 4, 3), torch.ones(2, 4, 3)
    >>> enc(X, B).shape
    torch.Size([2, 4, 3, 8])
    """

    def __init__(
        self, channels: int = 32, layers: int = 3, out_channels: int | None = None,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if layers < 1 or channels < 1:
            raise ValueError(f"layers and channels must be >= 1, got {layers}, {channels}")
        out = channels if out_channels is None else int(out_channels)
        sizes = [2] + [int(channels)] * (layers - 1) + [out]
        self.layers = nn.ModuleList(
            ExchangeableLayer(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.dropout = nn.Dropout(float(dropout))

    def forward(self, X: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        """``(batch, N, M)`` values and indicators -> ``(batch, N, M, out_channels)``."""
        Bf, Z = _input(X, B)
        for i, layer in enumerate(self.layers):  # loop over layers
            Z = layer(Z, Bf)
            if i < len(self.layers) - 1:
                Z = self.dropout(torch.relu(Z))
        return Z


class ExchangeableMatrixNet(nn.Module):
    """EML baseline: an exchangeable encoder-decoder that predicts every entry directly.

    Parameters
    ----------
    channels, layers, dropout
        As in :class:`ExchangeableEncoder`; the last layer has one channel.

    Examples
    --------
    >>> net = ExchangeableMatrixNet(channels=8, layers=3)
    >>> X, B = torch.randn(2, 5, 4), torch.ones(2, 5, 4)
    >>> net.predict(X, B).shape
    torch.Size([2, 5, 4])
    """

    def __init__(self, channels: int = 32, layers: int = 3, dropout: float = 0.1) -> None:
        super().__init__()
        self.channels, self.n_layers, self.p_dropout = int(channels), int(layers), float(dropout)
        self.encoder = ExchangeableEncoder(channels, layers, out_channels=1, dropout=dropout)

    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {"channels": self.channels, "layers": self.n_layers, "dropout": self.p_dropout}

    def predict(self, X: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        """Predicted values of all entries, shape ``(batch, N, M)``."""
        return self.encoder(X, B).squeeze(-1)

    def forward(self, X: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return self.predict(X, B)
