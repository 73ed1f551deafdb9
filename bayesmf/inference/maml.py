"""MAML (Finn et al., 2017) of a network that imputes matrices, e.g. the EML baseline.

The "MAML of EML" baseline of Iwata (2021, Table 1): the meta-learned object is the
*initialisation* of the parameters of an exchangeable matrix network
(:class:`~bayesmf.models.ExchangeableMatrixNet`). For each task (a partially observed
matrix ``X`` with indicator ``S``) the parameters are adapted by ``inner_steps`` plain
gradient steps of size ``inner_lr`` on the task's own observed entries; every inner step
hides a fresh random half of the observed entries from the network's input and fits them
from the other half (the episodic train/test split of :func:`meta_train`, inside the
task). The adapted network then predicts the whole matrix from all of ``(X, S)``.

The inner loop is vectorised over the tasks of a batch with :func:`torch.func.vmap` of
:func:`torch.func.grad` of :func:`torch.func.functional_call`; the outer (meta) gradient
flows through the inner steps (second-order MAML, ``first_order=False``).

:class:`MAML` wraps the network as a module with ``predict(X, B)``, so the episodic
:func:`~bayesmf.inference.meta_train` (Adam on the initialisation on the one training loop:
early stopping on the meta-validation MSE, checkpoints, divergence errors) trains it
unchanged; :func:`maml_train` is a shortcut. The result is a
:class:`~bayesmf.inference.MetaFit` holding the wrapper (saved with the network's class and
configuration, so :func:`bayesmf.inference.load` rebuilds it).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from ..data.episodes import EpisodeSampler
from .meta_train import MetaFit, meta_train
from .threads import uses_fit_threads

__all__ = ["MAML", "maml_train"]

logger = logging.getLogger(__name__)


class MAML(nn.Module):
    """A matrix-imputation network whose initialisation is meta-learned by MAML.

    Parameters
    ----------
    net : nn.Module
        Maps ``(X, B)`` of shape ``(batch, N, M)`` to predictions ``(batch, N, M)``
        (``forward``), e.g. :class:`~bayesmf.models.ExchangeableMatrixNet`.
    inner_steps : int
        Gradient steps on each task's observed entries (5 in Iwata, 2021).
    inner_lr : float
        Step size of the inner gradient steps.
    inner_ratio : float
        Fraction of the observed entries given as input in each inner step; the
        rest are the inner loss's targets.
    first_order : bool
        Drop the second-order terms of the meta-gradient (first-order MAML).
    seed : int
        Seed of the inner splits in ``eval()`` mode (so that evaluation is
        deterministic); in ``train()`` mode the global torch RNG is used.

    Examples
    --------
    >>> from bayesmf.models import ExchangeableMatrixNet
    >>> _ = torch.manual_seed(0)
    >>> maml = MAML(ExchangeableMatrixNet(channels=4, layers=2, dropout=0.0), inner_steps=2)
    >>> X, B = torch.randn(3, 6, 5), (torch.rand(3, 6, 5) < 0.5).float()
    >>> maml.predict(X * B, B).shape
    torch.Size([3, 6, 5])
    >>> losses = maml.inner_losses(X * B, B)
    >>> losses.shape  # (inner_steps + 1, batch): the inner loss before and after each step
    torch.Size([3, 3])
    """

    def __init__(
        self, net: nn.Module, inner_steps: int = 5, inner_lr: float = 0.1, *,
        inner_ratio: float = 0.5, first_order: bool = False, seed: int = 0,
    ) -> None:
        super().__init__()
        if inner_steps < 0 or not inner_lr > 0 or not 0 < inner_ratio < 1:
            raise ValueError("need inner_steps >= 0, inner_lr > 0, 0 < inner_ratio < 1")
        self.net = net
        self.inner_steps, self.inner_lr = int(inner_steps), float(inner_lr)
        self.inner_ratio, self.first_order, self.seed = float(inner_ratio), bool(first_order), seed

    def config(self) -> dict[str, Any]:
        """The MAML settings (the network's own are in ``net.config()``)."""
        return {"inner_steps": self.inner_steps, "inner_lr": self.inner_lr,
                "inner_ratio": self.inner_ratio, "first_order": self.first_order}

    # ------------------------------------------------------------------ pieces
    def _splits(self, B: torch.Tensor) -> torch.Tensor:
        """``(steps, batch, N, M)`` 0/1 input masks: a random part of the observed entries."""
        shape = (max(self.inner_steps, 1), *B.shape)
        if self.training:
            u = torch.rand(shape, dtype=B.dtype, device=B.device)
        else:
            g = torch.Generator(device=B.device).manual_seed(self.seed)
            u = torch.rand(shape, generator=g, dtype=B.dtype, device=B.device)
        return B * (u < self.inner_ratio).to(B.dtype)

    def _call(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
              X: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        """The network on ONE matrix ``(N, M)`` with the given parameters -> ``(N, M)``."""
        return functional_call(self.net, (params, buffers), (X[None] * B[None], B[None]))[0]

    def _inner_loss(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                    X: torch.Tensor, inp: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        pred = self._call(params, buffers, X, inp)
        return (target * (pred - X) ** 2).sum() / target.sum().clamp_min(1.0)

    def _adapt_one(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                   X: torch.Tensor, B: torch.Tensor, splits: torch.Tensor
                   ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Inner loop of one task; returns the adapted parameters and the inner losses."""
        g_fn = grad(self._inner_loss, has_aux=False)
        losses = []
        for t in range(self.inner_steps):  # the inner gradient steps (sequential)
            inp = splits[t]
            target = B - inp
            losses.append(self._inner_loss(params, buffers, X, inp, target))
            g = g_fn(params, buffers, X, inp, target)
            if self.first_order:
                g = {k: v.detach() for k, v in g.items()}
            params = {k: p - self.inner_lr * g[k] for k, p in params.items()}
        inp = splits[-1]
        losses.append(self._inner_loss(params, buffers, X, inp, B - inp))
        return params, torch.stack(losses)

    def adapt(self, X: torch.Tensor, B: torch.Tensor
              ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Per-task adapted parameters (leading batch dimension) and inner losses.

        Returns
        -------
        params : dict of Tensor
            Each parameter of the network with a leading ``batch`` dimension.
        losses : Tensor, shape (inner_steps + 1, batch)
            The inner loss before each step and after the last (on the last split).
        """
        X, B = _check(X, B)
        params = dict(self.net.named_parameters())
        buffers = dict(self.net.named_buffers())
        splits = self._splits(B).transpose(0, 1)  # (batch, steps, N, M)
        with torch.enable_grad():
            fn = vmap(self._adapt_one, in_dims=(None, None, 0, 0, 0), randomness="different")
            new, losses = fn(params, buffers, X, B, splits)
        return new, losses.T

    def predict(self, X: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        """Predictions of every entry after adapting to each matrix, ``(batch, N, M)``.

        Differentiable with respect to the initialisation (the meta-parameters).
        """
        X, B = _check(X, B)
        params, _ = self.adapt(X, B)
        buffers = dict(self.net.named_buffers())
        if not torch.is_grad_enabled():
            params = {k: v.detach() for k, v in params.items()}
        fn = vmap(self._call, in_dims=(0, None, 0, 0), randomness="different")
        return fn(params, buffers, X, B)

    def forward(self, X: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        return self.predict(X, B)

    @torch.no_grad()
    def inner_losses(self, X: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
        """The inner losses ``(inner_steps + 1, batch)`` (see :meth:`adapt`), detached."""
        return self.adapt(X, B)[1].detach()


def _check(X: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if X.dim() != 3 or X.shape != B.shape:
        raise ValueError(f"X and B must have shape (batch, N, M); got {tuple(X.shape)}, "
                         f"{tuple(B.shape)}")
    Bf = B.to(X.dtype)
    return X * Bf, Bf


@uses_fit_threads
def maml_train(
    net: nn.Module,
    train_sampler: EpisodeSampler,
    val_sampler: Any = None,
    *,
    inner_steps: int = 5,
    inner_lr: float = 0.1,
    first_order: bool = False,
    **kw: Any,
) -> tuple[MAML, MetaFit]:
    """Meta-train the initialisation of ``net`` by MAML with :func:`meta_train`.

    Parameters
    ----------
    net : nn.Module
        The network (its parameters are the initialisation, updated in place).
    train_sampler, val_sampler, **kw
        As in :func:`meta_train` (``steps``, ``lr``, ``final_lr``, ``eval_every``,
        ``patience``, ``clip_norm``, ``seed``, ``checkpoint``, ``resume``, ``max_seconds``,
        ``progress``, ...).
    inner_steps, inner_lr, first_order
        As in :class:`MAML`.

    Returns
    -------
    (MAML, MetaFit)
        The wrapper holding the best (meta-validation) initialisation, and the fit (whose
        ``model`` is the same wrapper).

    Examples
    --------
    >>> from bayesmf.data import EpisodeSampler, synthetic_ratings
    >>> from bayesmf.models import ExchangeableMatrixNet
    >>> R, _ = synthetic_ratings(40, 30, density=0.5, seed=0)
    >>> tr = EpisodeSampler(R, n_rows=8, n_cols=8, batch_size=2, seed=0)
    >>> maml, res = maml_train(ExchangeableMatrixNet(channels=4, layers=2), tr, tr, steps=4,
    ...                        inner_steps=2, lr=1e-3, val_episodes=2, eval_every=2)
    >>> res.steps, res.best_val < 10.0
    (4, True)
    """
    model = MAML(net, inner_steps, inner_lr, first_order=first_order)
    res = meta_train(model, train_sampler, val_sampler, **kw)
    return model, res
