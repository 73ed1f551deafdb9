"""AutoRec: autoencoders over the rows or columns of a partially observed matrix.

Sedhain, Menon, Sanner & Xie, "AutoRec: Autoencoders Meet Collaborative Filtering" (WWW 2015).
Item-based AutoRec (*I-AutoRec*) encodes each column of the ``N x M`` matrix -- the vector of
one item's ratings by the ``N`` users, zeros where unobserved -- and reconstructs it; user-based
AutoRec (*U-AutoRec*) does the same with the rows. The reconstruction of a vector at an
unobserved position is the prediction of that entry. Training minimises the squared error on
the *observed* entries only plus an L2 penalty on the weight matrices,

.. math::

    \\sum_{(i, j) \\in \\Omega} (X_{ij} - \\hat X_{ij})^2
    + \\frac{\\lambda}{2} \\sum_l \\lVert W_l \\rVert_F^2 .

:class:`AutoRec` holds ``batch`` *independent* networks, one per matrix of a batch of
equally-sized matrices (e.g. the meta-test matrices of :class:`bayesmf.data.EpisodeSampler`,
or one matrix repeated with ``batch`` different ``lambda``), evaluated together with batched
matrix products: the objective is a sum over the networks, so each network's gradient -- and
any element-wise optimiser such as Adam -- only sees its own matrix. It states the network and
its objective; the optimiser is the caller's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["AutoRec"]

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
    "relu": torch.relu,
    "identity": lambda x: x,
}


class AutoRec(nn.Module):
    """A batch of independent AutoRec networks (I-AutoRec or U-AutoRec).

    Each network maps a vector of length ``d`` (``d = n_rows`` for ``by="item"``, whose inputs
    are the columns; ``d = n_cols`` for ``by="user"``, whose inputs are the rows) through
    ``len(hidden)`` hidden layers (activation ``activation``) to a linear output of length
    ``d``. With the default ``hidden=(32, 32)`` it is the four-layer feed-forward autoencoder
    (input, two hidden layers of 32 units, output) of Iwata (2021)'s AutoRec baselines.

    Parameters
    ----------
    n_rows, n_cols : int
        Shape ``N x M`` of each matrix.
    by : {"item", "user"}
        ``"item"``: encode columns (I-AutoRec); ``"user"``: encode rows (U-AutoRec).
    hidden : sequence of int
        Widths of the hidden layers (at least one).
    batch : int
        Number of independent networks (matrices handled at once).
    activation : {"sigmoid", "tanh", "relu", "identity"}
        Hidden activation (Sedhain et al. use the sigmoid).
    weight_decay : float or sequence of float
        ``lambda`` of the L2 penalty, one value for all networks or one per network.

    Attributes
    ----------
    weights, biases : nn.ParameterList
        ``weights[l]`` has shape ``(batch, d_in, d_out)``, ``biases[l]`` ``(batch, d_out)``.
    weight_decay : torch.Tensor, shape (batch,)
        A buffer: the penalty weight of each network.

    Examples
    --------
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> net = AutoRec(6, 5, by="item", batch=3, weight_decay=[0.0, 0.1, 1.0])
    >>> X = torch.randn(3, 6, 5)
    >>> mask = torch.rand(3, 6, 5) < 0.5
    >>> net(X * mask).shape, net.objective(X, mask).shape
    (torch.Size([3, 6, 5]), torch.Size([3]))
    """

    def __init__(
        self,
        n_rows: int,
        n_cols: int,
        by: str = "item",
        hidden: Sequence[int] = (32, 32),
        batch: int = 1,
        activation: str = "sigmoid",
        weight_decay: float | Sequence[float] = 0.0,
    ) -> None:
        super().__init__()
        if by not in ("item", "user"):
            raise ValueError(f"by must be 'item' or 'user', got {by!r}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got "
                             f"{activation!r}")
        hidden = tuple(int(h) for h in hidden)
        if int(n_rows) < 1 or int(n_cols) < 1 or int(batch) < 1:
            raise ValueError(f"n_rows, n_cols and batch must be positive, got {n_rows}, "
                             f"{n_cols}, {batch}")
        if not hidden or any(h < 1 for h in hidden):
            raise ValueError(f"hidden must be a non-empty sequence of positive widths, got "
                             f"{hidden}")
        wd = torch.as_tensor(weight_decay, dtype=torch.float32).reshape(-1)
        if wd.numel() == 1:
            wd = wd.expand(int(batch)).clone()
        if wd.shape != (int(batch),) or not bool(torch.isfinite(wd).all()) or bool((wd < 0).any()):
            raise ValueError(f"weight_decay must be one non-negative value or one per network "
                             f"({batch}), got {weight_decay}")
        self.n_rows, self.n_cols = int(n_rows), int(n_cols)
        self.by = by
        self.hidden = hidden
        self.batch = int(batch)
        self.activation = activation
        self.register_buffer("weight_decay", wd)
        d = self.n_rows if by == "item" else self.n_cols
        widths = (d, *hidden, d)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for d_in, d_out in zip(widths[:-1], widths[1:], strict=True):
            bound = 1.0 / math.sqrt(d_in)  # nn.Linear's default initialisation
            self.weights.append(nn.Parameter(
                torch.empty(self.batch, d_in, d_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(self.batch, d_out).uniform_(-bound, bound)))

    def config(self) -> dict[str, Any]:
        """Constructor arguments (plain values)."""
        return {"n_rows": self.n_rows, "n_cols": self.n_cols, "by": self.by,
                "hidden": list(self.hidden), "batch": self.batch,
                "activation": self.activation, "weight_decay": self.weight_decay.tolist()}

    def _check(self, X: torch.Tensor) -> None:
        if X.dim() != 3 or tuple(X.shape) != (self.batch, self.n_rows, self.n_cols):
            raise ValueError(f"expected a tensor of shape {(self.batch, self.n_rows, self.n_cols)}"
                             f", got {tuple(X.shape)}")

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        """Reconstruct every row/column vector.

        Parameters
        ----------
        X : torch.Tensor, shape (batch, n_rows, n_cols)
            The observed values, **zeros where unobserved** (see :meth:`predict`).

        Returns
        -------
        torch.Tensor, shape (batch, n_rows, n_cols)
            The reconstruction, i.e. a prediction of every entry.
        """
        self._check(X)
        act = _ACTIVATIONS[self.activation]
        h = X.transpose(1, 2) if self.by == "item" else X  # (batch, vectors, d)
        last = len(self.weights) - 1
        for i, (W, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            h = torch.baddbmm(b.unsqueeze(1), h, W)
            if i < last:
                h = act(h)
        return h.transpose(1, 2) if self.by == "item" else h

    def predict(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Predictions of all entries from the observed ones.

        Parameters
        ----------
        X : torch.Tensor, shape (batch, n_rows, n_cols)
            Values (anything where ``mask`` is False: it is zeroed).
        mask : torch.Tensor of bool or float, shape (batch, n_rows, n_cols)
            The observed entries.

        Returns
        -------
        torch.Tensor, shape (batch, n_rows, n_cols)
        """
        return self(X * mask.to(X.dtype))

    def penalty(self) -> torch.Tensor:
        """``lambda / 2 * sum_l ||W_l||^2`` of each network (biases not penalised), shape
        ``(batch,)``."""
        sq = sum(W.pow(2).sum((1, 2)) for W in self.weights)
        return 0.5 * self.weight_decay * sq

    def objective(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Sedhain et al.'s objective of each network on its matrix.

        The squared reconstruction error summed over the observed entries (``mask``) plus
        :meth:`penalty`. Inputs are ``X`` zeroed outside ``mask``; unobserved entries
        contribute nothing.

        Parameters
        ----------
        X : torch.Tensor, shape (batch, n_rows, n_cols)
            Values.
        mask : torch.Tensor of bool, shape (batch, n_rows, n_cols)
            The observed (training) entries.

        Returns
        -------
        torch.Tensor, shape (batch,)
            One objective per network; their sum has independent gradients per network.
        """
        m = mask.to(X.dtype)
        err = (self.predict(X, m) - X) * m
        return err.pow(2).sum((1, 2)) + self.penalty()
