"""Differentiable unrolled MAP estimation of matrix factors (Iwata, 2021, Eqs. 6-7).

The Gaussian matrix factorisation ``x_nm = u_n^T v_m + eps`` (unit noise) with
priors ``u_n ~ N(u0_n, 1/lam I)`` and ``v_m ~ N(v0_m, 1/lam I)`` has the MAP
objective

.. math::

    J(U, V) = \\tfrac12 \\lVert B \\circ (X - U V^\\top) \\rVert^2
            + \\tfrac{\\lambda}{2} \\lVert U - U^0 \\rVert^2
            + \\tfrac{\\lambda}{2} \\lVert V - V^0 \\rVert^2 .

:func:`unrolled_map` starts at the prior means and takes ``T`` gradient steps on
``J``, updating ``U`` and ``V`` simultaneously from the same iterate:

.. math::

    U \\leftarrow U - \\eta\\big(-(B \\circ (X - U V^\\top)) V + \\lambda (U - U^0)\\big), \\\\
    V \\leftarrow V - \\eta\\big(-(B \\circ (X - U V^\\top))^\\top U + \\lambda (V - V^0)\\big).

Every operation is a batched tensor operation kept in the autograd graph, so the
imputation error of the adapted factors can be back-propagated through all
``T`` steps into ``U0``, ``V0``, ``lam`` (and whatever network produced them).
The same objective is minimised exactly by :func:`bayesmf.inference.als` with
``biases=False``, ``reg_u = reg_v = lam`` and ``prior_mean_u/v = U0/V0``.
"""

from __future__ import annotations

import logging

import torch

__all__ = ["unrolled_map", "map_objective"]

logger = logging.getLogger(__name__)


def _batched(*ts: torch.Tensor) -> tuple[bool, list[torch.Tensor]]:
    squeeze = ts[0].dim() == 2
    return squeeze, [t.unsqueeze(0) if squeeze else t for t in ts]


def map_objective(
    X: torch.Tensor,
    B: torch.Tensor,
    U: torch.Tensor,
    V: torch.Tensor,
    U0: torch.Tensor,
    V0: torch.Tensor,
    lam: float | torch.Tensor,
) -> torch.Tensor:
    """The MAP objective ``J(U, V)`` per matrix, shape ``(batch,)`` (or scalar unbatched).

    Examples
    --------
    >>> X, B = torch.ones(2, 2), torch.ones(2, 2)
    >>> U = V = torch.ones(2, 1)
    >>> float(map_objective(X, B, U, V, U, V, 1.0))
    0.0
    """
    squeeze, (X, B, U, V, U0, V0) = _batched(X, B, U, V, U0, V0)
    lam = torch.as_tensor(lam, dtype=X.dtype, device=X.device)
    R = B.to(X.dtype) * (X - U @ V.transpose(-1, -2))
    J = 0.5 * (R**2).sum((-1, -2)) + 0.5 * lam * (
        ((U - U0) ** 2).sum((-1, -2)) + ((V - V0) ** 2).sum((-1, -2))
    )
    return J[0] if squeeze else J


def unrolled_map(
    X: torch.Tensor,
    B: torch.Tensor,
    U0: torch.Tensor,
    V0: torch.Tensor,
    lam: float | torch.Tensor,
    step_size: float | torch.Tensor = 1e-2,
    steps: int = 10,
    *,
    return_path: bool = False,
) -> tuple[torch.Tensor, torch.Tensor] | tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``steps`` simultaneous gradient steps of MAP estimation from the prior means.

    Parameters
    ----------
    X : Tensor, shape (batch, N, M) or (N, M)
        Values; only entries with ``B == 1`` are read (others may hold anything finite).
    B : Tensor, shape like ``X``
        0/1 (or bool) indicator of the observed entries. Padding rows/columns
        (all ``B == 0``) just relax to their prior mean.
    U0 : Tensor, shape (batch, N, K) or (N, K)
        Prior means of the row factors (the starting point).
    V0 : Tensor, shape (batch, M, K) or (M, K)
        Prior means of the column factors.
    lam : float or Tensor
        Prior precision ``lambda`` (> 0); a scalar or a ``(batch, 1, 1)`` tensor.
    step_size : float or Tensor
        Step size ``eta``.
    steps : int
        Number of steps ``T`` (0 returns the prior means).
    return_path : bool
        Return the lists ``[U_0, ..., U_T]``, ``[V_0, ..., V_T]`` of all iterates.

    Returns
    -------
    (U, V) : Tensors of the shapes of ``U0`` and ``V0``
        The factors after ``T`` steps, differentiable with respect to ``X``,
        ``U0``, ``V0``, ``lam`` and ``step_size`` (the graph of all steps is kept).

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> X = torch.randn(4, 6, 5, generator=g)
    >>> B = (torch.rand(4, 6, 5, generator=g) < 0.5).float()
    >>> U0 = torch.randn(4, 6, 3, generator=g, requires_grad=True)
    >>> V0 = torch.randn(4, 5, 3, generator=g)
    >>> U, V = unrolled_map(X, B, U0, V0, lam=1.0, step_size=0.05, steps=20)
    >>> U.shape, V.shape
    (torch.Size([4, 6, 3]), torch.Size([4, 5, 3]))
    >>> bool((map_objective(X, B, U, V, U0, V0, 1.0)
    ...       < map_objective(X, B, U0, V0, U0, V0, 1.0)).all())
    True
    >>> ((B * (X - U @ V.mT)) ** 2).sum().backward(); U0.grad.shape
    torch.Size([4, 6, 3])
    """
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if X.shape != B.shape or X.dim() not in (2, 3):
        raise ValueError(f"X and B must have equal shape (batch, N, M); got {X.shape}, {B.shape}")
    squeeze, (X, B, U0, V0) = _batched(X, B, U0, V0)
    if U0.shape[:2] != X.shape[:2] or V0.shape[:2] != (X.shape[0], X.shape[2]):
        raise ValueError(
            f"U0 {tuple(U0.shape)} / V0 {tuple(V0.shape)} do not match X {tuple(X.shape)}"
        )
    if U0.shape[-1] != V0.shape[-1]:
        raise ValueError(f"U0 and V0 must have the same rank, got {U0.shape[-1]}, {V0.shape[-1]}")
    Bf = B.to(X.dtype)
    Xb = torch.where(Bf > 0, X, torch.zeros((), dtype=X.dtype, device=X.device))
    U, V = U0, V0
    path_u, path_v = [U], [V]
    for _ in range(int(steps)):  # loop over the T unrolled steps
        E = Bf * (Xb - U @ V.transpose(-1, -2))  # residual on the observed entries
        grad_u = -(E @ V) + lam * (U - U0)
        grad_v = -(E.transpose(-1, -2) @ U) + lam * (V - V0)
        U, V = U - step_size * grad_u, V - step_size * grad_v  # simultaneous update
        if return_path:
            path_u.append(U)
            path_v.append(V)
    if return_path:
        return ([u[0] for u in path_u], [v[0] for v in path_v]) if squeeze else (path_u, path_v)
    return (U[0], V[0]) if squeeze else (U, V)
