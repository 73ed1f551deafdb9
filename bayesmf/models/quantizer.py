"""A smooth, learnable quantizer onto discrete rating levels (Nguyen et al., Eq. 4).

For levels :math:`I_1 < \\dots < I_V` spaced by :math:`\\Delta` the quantizer is

.. math::

    G_{\\lambda, b}(x) = \\sum_{v=1}^{V-1} \\big[I_v + \\Delta\\,
        \\sigma(\\lambda (x - b_v))\\big]\\, \\mathbb 1[q_v \\le x < q_{v+1}],

with intervals :math:`[q_v, q_{v+1}) = [I_v, I_{v+1})` between consecutive levels (the
last one closed on the right, inputs outside ``[I_1, I_V]`` are clamped first) and a
learnable boundary :math:`b_v` inside each interval. The uniform quantizer (rounding to the
nearest level) has :math:`\\tilde b_v = (I_v + I_{v+1}) / 2`. As :math:`\\lambda \\to \\infty`
``G`` tends to the hard quantizer with thresholds ``b``; for finite :math:`\\lambda` it is
differentiable in ``x`` and in ``b``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["SmoothQuantizer"]

logger = logging.getLogger(__name__)


class SmoothQuantizer(nn.Module):
    """Smooth quantizer with learnable boundaries (one per gap between levels).

    Parameters
    ----------
    levels : sequence of float
        The ``V >= 2`` equally spaced, increasing levels ``I_1 < ... < I_V``.
    lam : float
        Initial sharpness ``lambda`` of the sigmoid steps (a buffer; set
        :attr:`lam` or call :meth:`set_lam` to anneal it).
    learn_boundaries : bool
        Make the boundaries ``b`` a parameter (otherwise a fixed buffer).

    Attributes
    ----------
    boundaries : torch.Tensor, shape (V - 1,)
        The boundaries ``b_v``, initialised at the midpoints ``b~_v``.
    uniform_boundaries : torch.Tensor, shape (V - 1,)
        The midpoints ``b~_v`` of the uniform quantizer (for the penalty).

    Examples
    --------
    >>> import torch
    >>> q = SmoothQuantizer([1.0, 2.0, 3.0, 4.0, 5.0], lam=1000.0)
    >>> q(torch.tensor([0.2, 1.4, 1.6, 3.4, 4.9, 7.0])).tolist()
    [1.0, 1.0, 2.0, 3.0, 5.0, 5.0]
    >>> q.hard(torch.tensor([2.6])).tolist()
    [3.0]
    >>> q.penalty().item()
    0.0
    """

    def __init__(
        self, levels: Sequence[float], lam: float = 1.0, learn_boundaries: bool = True
    ) -> None:
        super().__init__()
        lv = torch.as_tensor(list(levels), dtype=torch.float32)
        if lv.ndim != 1 or lv.numel() < 2:
            raise ValueError(f"need at least two levels, got {list(levels)}")
        gaps = lv[1:] - lv[:-1]
        if not bool((gaps > 0).all()):
            raise ValueError(f"levels must be strictly increasing, got {lv.tolist()}")
        if not torch.allclose(gaps, gaps[0].expand_as(gaps), rtol=1e-4, atol=1e-6):
            raise ValueError(f"levels must be equally spaced, got {lv.tolist()}")
        if not lam > 0:
            raise ValueError(f"lam must be positive, got {lam}")
        self.register_buffer("levels", lv)
        self.register_buffer("lam", torch.tensor(float(lam)))
        mid = (lv[1:] + lv[:-1]) / 2
        self.register_buffer("uniform_boundaries", mid.clone())
        if learn_boundaries:
            self.boundaries = nn.Parameter(mid.clone())
        else:
            self.register_buffer("boundaries", mid.clone())
        self.delta = float(gaps[0])

    def set_lam(self, lam: float) -> None:
        """Set the sharpness ``lambda`` (> 0)."""
        if not lam > 0:
            raise ValueError(f"lam must be positive, got {lam}")
        self.lam.fill_(float(lam))

    def _interval(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Inputs clamped to ``[I_1, I_V]`` and the index ``v`` of their interval."""
        lv = self.levels
        xc = x.clamp(float(lv[0]), float(lv[-1]))
        # interval v: levels[v] <= x < levels[v+1]; x == I_V belongs to the last interval
        v = torch.bucketize(xc.detach(), lv[1:-1].contiguous(), right=True)
        return xc, v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``G_{lambda,b}(x)``, elementwise, differentiable in ``x`` and ``b``."""
        xc, v = self._interval(x)
        b = self.boundaries.to(xc.dtype)[v]
        lo = self.levels.to(xc.dtype)[v]
        return lo + self.delta * torch.sigmoid(self.lam.to(xc.dtype) * (xc - b))

    def hard(self, x: torch.Tensor) -> torch.Tensor:
        """The limit ``lambda -> inf``: the level reached through the boundaries ``b``."""
        xc, v = self._interval(x)
        b = self.boundaries.detach().to(xc.dtype)[v]
        lo = self.levels.to(xc.dtype)[v]
        return lo + self.delta * (xc > b).to(xc.dtype)

    def penalty(self) -> torch.Tensor:
        """``||b - b~||^2``, the pull towards the uniform quantizer."""
        return (self.boundaries - self.uniform_boundaries).pow(2).sum()

    def extra_repr(self) -> str:
        return f"levels={self.levels.tolist()}, lam={float(self.lam):g}"
