"""The optimisers of the training loop: Adam, and Adam at the cost of the touched rows.

:class:`torch.optim.Optimizer` wraps its methods so that their first call imports torch's
compiler (``torch._dynamo``, with sympy and FSDP): 1.5 CPU seconds on this project's test
machine, paid by the first fit of every process, a third of a default Bayesian MF fit on
MovieLens-100K. Nothing here is compiled, so :class:`Adam` and :class:`LazyAdam` are
built on a small base of their own, :class:`Optimizer`: ``param_groups`` (whose ``"lr"``
the loop schedules), ``state``, ``step``, ``zero_grad`` and ``state_dict`` /
``load_state_dict`` in torch's format (a checkpoint of :class:`torch.optim.Adam` loads
into :class:`Adam` and back). :class:`Adam`'s arithmetic is torch's own (its fused kernel
through the functional :func:`torch.optim.adam.adam`), so it takes exactly
:class:`torch.optim.Adam`'s steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim.adam import adam as _adam

__all__ = ["Adam", "LazyAdam", "Optimizer"]


class Optimizer:
    """Parameter groups, per-parameter state and their (de)serialisation.

    Parameters
    ----------
    params : iterable
        Tensors, or dicts with ``"params"`` and per-group settings (parameter groups).
    defaults : dict
        Settings of every group that does not give its own.
    """

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        if isinstance(params, torch.Tensor):
            raise TypeError("params must be an iterable of tensors or dicts, not a tensor")
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__} got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        self.defaults = dict(defaults)
        self.param_groups: list[dict[str, Any]] = []
        seen: set[int] = set()
        for g in groups:
            ps = [g["params"]] if isinstance(g["params"], torch.Tensor) else list(g["params"])
            if any(id(p) in seen for p in ps):
                raise ValueError("a parameter appears in more than one group")
            seen.update(id(p) for p in ps)
            self.param_groups.append({**self.defaults, **g, "params": ps})
        self.state: dict[torch.Tensor, dict[str, Any]] = {}

    @staticmethod
    def _adam_settings(name: str, lr: float, betas: tuple[float, float],
                       eps: float) -> dict[str, Any]:
        """The settings Adam and LazyAdam share, checked."""
        if not lr > 0 or not eps >= 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"bad {name} settings: lr={lr}, betas={betas}, eps={eps}")
        return {"lr": lr, "betas": tuple(betas), "eps": eps}

    @staticmethod
    def _evaluate(closure: Callable[[], Any] | None) -> Any:
        """A step's ``closure`` (re-evaluates the loss), with gradients on; its value."""
        if closure is None:
            return None
        with torch.enable_grad():
            return closure()

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop (or zero) every parameter's gradient."""
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.detach_().zero_()

    def state_dict(self) -> dict[str, Any]:
        """``{"state": {i: ...}, "param_groups": [...]}`` with parameters numbered in group
        order, as :meth:`torch.optim.Optimizer.state_dict` writes it."""
        index: dict[int, int] = {}
        groups = []
        for g in self.param_groups:
            ids = [index.setdefault(id(p), len(index)) for p in g["params"]]
            groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": ids})
        state = {index[id(p)]: dict(s) for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` (or torch's) wrote for the same parameter shapes:
        group settings, and each parameter's state on its device (floating tensors in its
        dtype, as torch does, the step counts and integer tensors as they are), copied: the
        optimiser that wrote it may go on stepping its own."""
        saved = state_dict["param_groups"]
        if [len(s["params"]) for s in saved] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("the saved state has other parameter groups than this optimiser")
        by_id: dict[Any, torch.Tensor] = {}
        for s, g in zip(saved, self.param_groups, strict=True):
            by_id.update(zip(s["params"], g["params"], strict=True))
            g.update({k: v for k, v in s.items() if k != "params"})

        fused = {id(p) for g in self.param_groups if g.get("fused") for p in g["params"]}

        def cast(p: torch.Tensor, key: str, v: Any) -> Any:
            if not torch.is_tensor(v):
                return v
            if key == "step":  # on the CPU, or the parameter's device for a fused kernel
                return v.to(p.device if id(p) in fused else "cpu", copy=True)
            if not v.is_floating_point():
                return v.to(p.device, copy=True)
            return v.to(device=p.device, dtype=p.dtype, copy=True)

        self.state = {}
        for k, s in state_dict["state"].items():
            p = by_id[k]
            self.state[p] = {key: cast(p, key, v) for key, v in s.items()}


def _fusable(params: list[Any]) -> bool | None:
    """Whether Adam's fused kernel (one pass per step instead of several, 2.5x faster on
    rows of 10 floats) takes these parameters: floating point, on the CPU or CUDA."""
    flat = [p for group in params for p in (group["params"] if isinstance(group, dict)
                                            else [group])]
    ok = bool(flat) and all(torch.is_floating_point(p) and p.device.type in ("cpu", "cuda")
                            for p in flat)
    return True if ok else None


class Adam(Optimizer):
    """Adam (Kingma & Ba), :class:`torch.optim.Adam`'s steps without its compiler import.

    Each step runs torch's own Adam kernel (fused where the parameters allow it, else the
    multi-tensor one) through :func:`torch.optim.adam.adam`, so the parameters, moments and
    step counts equal :class:`torch.optim.Adam`'s, and the two load each other's
    ``state_dict``. Dense gradients only (sparse rows: :class:`LazyAdam`).

    Parameters
    ----------
    params : iterable
        Parameters (or parameter groups).
    lr : float
        Learning rate (scheduled through ``param_groups[i]["lr"]``).
    betas : (float, float)
        Decay rates of the first and second moments.
    eps : float
        Added to the root of the second moment.
    fused : bool, optional
        Use the fused kernel (default: when every parameter is floating point on the CPU
        or CUDA).

    Examples
    --------
    >>> p = torch.nn.Parameter(torch.zeros(3))
    >>> opt = Adam([p], lr=0.1)
    >>> (p - 1.0).pow(2).sum().backward()
    >>> opt.step()
    >>> [round(x, 4) for x in p.detach().tolist()]  # Adam's first step: lr
    [0.1, 0.1, 0.1]
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        fused: bool | None = None,
    ) -> None:
        settings = self._adam_settings("Adam", lr, betas, eps)
        params = list(params)
        fused = _fusable(params) if fused is None else (fused or None)
        # (torch.optim.Adam's group keys, so that the two read each other's state_dict)
        super().__init__(params, {**settings, "weight_decay": 0, "amsgrad": False,
                                  "maximize": False, "foreach": None, "capturable": False,
                                  "differentiable": False, "fused": fused})

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One Adam update of every parameter with a gradient (``closure``: re-evaluates
        the loss, as for any torch optimiser; its value is returned)."""
        loss = self._evaluate(closure)
        for group in self.param_groups:
            params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
            fused = bool(group["fused"])
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Adam takes dense gradients; step sparse rows with "
                                       "LazyAdam")
                state = self.state.get(p)
                if not state:
                    state = self.state[p] = {
                        # torch's layout: a float32 step count, on the device when fused
                        "step": torch.zeros((), dtype=torch.float32,
                                            device=p.device if fused else "cpu"),
                        "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                        "exp_avg_sq": torch.zeros_like(p,
                                                       memory_format=torch.preserve_format),
                    }
                params.append(p)
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                steps.append(state["step"])
            if not params:
                continue
            b1, b2 = group["betas"]
            _adam(params, grads, exp_avgs, exp_avg_sqs, [], steps,
                  foreach=None if fused else group["foreach"], fused=fused or None,
                  amsgrad=False, beta1=b1, beta2=b2, lr=group["lr"], weight_decay=0.0,
                  eps=group["eps"], maximize=False)
        return loss


class LazyAdam(Optimizer):
    """Adam for parameters with sparse (row) gradients, at the cost of the touched rows.

    For each row present in a (coalesced) sparse gradient, the update is
    :class:`torch.optim.Adam`'s (same moments, bias corrections and ``eps``), computed on the
    gathered rows (``index_select`` / ``index_copy_`` / ``index_add_``), so a step costs the
    rows it touched, not the whole array. A row absent from a step (zero gradient) would
    still move under dense Adam, by its decaying momentum; with ``catch_up`` (default) those
    skipped moves are applied in closed form when the row is next touched -- the geometric
    sum ``r (1 - r^k) / (1 - r)``, ``r = beta1 / sqrt(beta2)``, of ``k`` skipped steps, and
    the moments decayed by ``beta^k`` -- which reproduces dense Adam up to ``eps`` and to
    the learning rate and bias corrections of the skipped steps (taken as the current
    ones); without it, rows keep their parameters and moments while untouched, as in
    :class:`torch.optim.SparseAdam` ("lazy" Adam), which converges more slowly for rows
    seen in a fraction of the steps. The step count (bias corrections) is the parameter's.
    A dense gradient updates every row (plain Adam, after catching up); so does a sparse one
    touching more than ``dense_fraction`` of the rows, made dense (the same update with
    the catch-up, and cheaper: whole-array arithmetic beats gathering at such fractions).

    Parameters
    ----------
    params : iterable
        Parameters (or parameter groups).
    lr : float
        Learning rate (scheduled like any optimiser's ``param_groups[i]["lr"]``).
    betas : (float, float)
        Decay rates of the first and second moments.
    eps : float
        Added to the root of the second moment.
    catch_up : bool
        Apply the skipped momentum steps of a row when it is next touched.
    dense_fraction : float
        Share of the rows above which a sparse gradient is stepped as a dense one (the cost
        of a step stays that of the touched rows, at most ``1 / dense_fraction`` times it).
        Measured on one core (100,000 x 10 rows): the sparse update costs 0.9 ms for 6% of
        the rows and 3.8 ms for 30% against 5-8 ms for the dense one with its catch-up.

    Examples
    --------
    >>> from bayesmf.inference.guides import gather_rows
    >>> p = torch.nn.Parameter(torch.zeros(4, 2))
    >>> opt = LazyAdam([p], lr=0.1)
    >>> gather_rows(p, torch.tensor([1])).sum().backward()
    >>> opt.step()
    >>> [round(x, 4) for x in p.detach()[:, 0].tolist()]  # only row 1 moved, by lr
    [0.0, -0.1, 0.0, 0.0]
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        catch_up: bool = True,
        dense_fraction: float = 0.5,
    ) -> None:
        defaults = {**self._adam_settings("LazyAdam", lr, betas, eps),
                    "catch_up": bool(catch_up), "dense_fraction": float(dense_fraction)}
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One update of every parameter with a gradient (``closure``: re-evaluates the
        loss, as for any torch optimiser; its value is returned)."""
        loss = self._evaluate(closure)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self._update(p, group)
        return loss

    def _update(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
        state = self.state.setdefault(p, {})
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
            # the step at which each row was last updated (for the catch-up)
            state["last_step"] = torch.zeros(p.shape[:1], dtype=torch.long, device=p.device)
        state["step"] += 1
        t = state["step"]
        m_all, v_all, last = state["exp_avg"], state["exp_avg_sq"], state["last_step"]
        step_size, bc2_sqrt = lr / (1 - b1**t), math.sqrt(1 - b2**t)
        grad = p.grad
        if grad.is_sparse and grad._nnz() > group["dense_fraction"] * max(len(p), 1):
            grad = grad.to_dense()  # (rows repeated in an uncoalesced gradient: summed)
        if grad.is_sparse:  # the touched rows only (gathered, updated, written back)
            grad = _coalesced(grad)
            idx, g = grad.indices()[0], grad.values()
            m, v = m_all.index_select(0, idx), v_all.index_select(0, idx)
            skipped = t - 1 - last.index_select(0, idx)
        else:  # every row
            idx, g, m, v = None, grad, m_all, v_all
            skipped = t - 1 - last
        delta = None
        if group["catch_up"] and p.dim() and bool((skipped > 0).any()):
            k = skipped.to(p.dtype).view(-1, *([1] * (p.dim() - 1)))
            r = b1 / math.sqrt(b2)
            moves = r * (1 - torch.pow(r, k)) / (1 - r)
            delta = moves * m / (v.sqrt() + eps) * (-step_size * bc2_sqrt)
            m.mul_(torch.pow(b1, k))
            v.mul_(torch.pow(b2, k))
        m.lerp_(g, 1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        if idx is None:
            if delta is not None:
                p.add_(delta)
            p.addcdiv_(m, v.sqrt().div_(bc2_sqrt).add_(eps), value=-step_size)
            last.fill_(t)
            return
        m_all.index_copy_(0, idx, m)
        v_all.index_copy_(0, idx, v)
        last.index_fill_(0, idx, t)
        update = m.div_(v.sqrt_().div_(bc2_sqrt).add_(eps)).mul_(-step_size)
        if delta is not None:
            update.add_(delta)
        # rows unique (coalesced): gather, add, write back -- about twice as fast as
        # index_add_ (a scatter-add) on rows of a few floats
        p.index_copy_(0, idx, p.index_select(0, idx).add_(update))


def _coalesced(grad: torch.Tensor) -> torch.Tensor:
    """A sparse gradient in coalesced form (unique, sorted rows), without the sort when its
    row indices already increase (as a gather by :func:`torch.unique`'s rows gives)."""
    if grad.is_coalesced():
        return grad
    idx = grad._indices()
    if idx.shape[0] == 1 and idx.shape[1] > 1 and bool((idx[0, 1:] > idx[0, :-1]).all()):
        return torch.sparse_coo_tensor(idx, grad._values(), grad.shape, is_coalesced=True,
                                       check_invariants=False)
    return grad.coalesce()
