"""Deep two-branch matrix factorization (DMF) and its discrete variant (DMF-D).

Nguyen, Tsiligianni & Deligiannis, "Matrix factorization via deep learning": a row
network :math:`h_X` maps the row vector :math:`X_i \\in \\mathbb R^{m}` of the partially
observed matrix (unobserved entries zero) to a latent vector, a column network
:math:`h_Y` maps the column vector :math:`Y_j \\in \\mathbb R^{n}` to another, and the
prediction is their cosine similarity

.. math::

    \\hat R_{ij} = \\cos\\big(h_X(X_i), h_Y(Y_j)\\big) \\in [-1, 1].

Ratings in :math:`[\\alpha, \\beta]` live on the cosine's scale through
:math:`M \\mapsto (M - \\mu) / (\\mu - \\alpha)`, :math:`\\mu = (\\alpha + \\beta)/2`
(:meth:`DeepMF.to_unit`, :meth:`DeepMF.to_rating`). The objective of the paper is the
mean squared error on the observed training entries plus
:math:`\\gamma(\\lVert W_X \\rVert^2 + \\lVert W_Y \\rVert^2)` on the weight matrices.

Because the inputs are rows and columns of ratings, a new row (user) is embedded by
feeding its observed ratings on the known columns through :math:`h_X` -- no retraining.

:meth:`DeepMF.model` states the same belief as a Pyro model: a Gaussian likelihood with
noise :math:`\\sigma` around the cosine output and Gaussian priors on the weights whose
scale :math:`\\sigma / \\sqrt{N\\gamma}` (``N`` training ratings) makes the MAP estimate
exactly the minimiser of the paper's objective (biases get a wide prior). Training loops
live in :mod:`bayesmf.inference.deep_mf_fit`.

:class:`DiscreteDeepMF` (DMF-D) passes the cosine through a learnable
:class:`~bayesmf.models.quantizer.SmoothQuantizer` onto the (scaled) rating levels, with
the penalty :math:`\\gamma_2 \\lVert b - \\tilde b \\rVert^2` pulling the boundaries
towards the uniform quantizer.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ..data.containers import Ratings
from .quantizer import SmoothQuantizer

__all__ = ["DeepMF", "DiscreteDeepMF", "rating_matrix"]

logger = logging.getLogger(__name__)

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
    "identity": nn.Identity,
}

#: weight prior scale used for the biases in the Pyro model (practically flat)
BIAS_PRIOR_SCALE = 10.0


def rating_matrix(
    ratings: Ratings,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    *,
    sparse: bool = True,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """The ``n_rows x n_cols`` matrix of (transformed) observed values, zeros elsewhere.

    Parameters
    ----------
    ratings : Ratings
        The observed entries; only these enter the matrix.
    transform : callable, optional
        Applied to the values first (e.g. :meth:`DeepMF.to_unit`).
    sparse : bool
        Return a coalesced sparse COO tensor (default) or a dense one.
    device : str or torch.device, optional
        Default: the device of ``ratings``.

    Examples
    --------
    >>> from bayesmf.data import Ratings
    >>> R = Ratings([0, 1], [2, 0], [5.0, 1.0], shape=(2, 3))
    >>> rating_matrix(R, lambda v: v - 3, sparse=False).tolist()
    [[0.0, 0.0, 2.0], [-2.0, 0.0, 0.0]]
    """
    dev = torch.device(device) if device is not None else ratings.device
    v = ratings.values.to(dev, torch.float32)
    if transform is not None:
        v = transform(v)
    idx = torch.stack([ratings.rows.to(dev), ratings.cols.to(dev)])
    X = torch.sparse_coo_tensor(
        idx, v, ratings.shape, device=dev, check_invariants=False
    ).coalesce()
    return X if sparse else X.to_dense()


class _Branch(nn.Module):
    """Fully connected network whose first layer accepts sparse (COO) inputs."""

    def __init__(
        self, in_dim: int, hidden: Sequence[int], out_dim: int, activation: str
    ) -> None:
        super().__init__()
        dims = [int(in_dim), *(int(h) for h in hidden), int(out_dim)]
        pairs = zip(dims[:-1], dims[1:], strict=True)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in pairs)
        self.act = _ACTIVATIONS[activation]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k, layer in enumerate(self.layers):
            if k == 0 and x.is_sparse:
                x = torch.sparse.mm(x, layer.weight.t()) + layer.bias
            else:
                x = layer(x)
            if k < len(self.layers) - 1:
                x = self.act(x)
        return x


class DeepMF(PyroModule):
    """Two-branch deep MF with cosine output (DMF).

    Parameters
    ----------
    n_rows, n_cols : int
        Shape of the training matrix: the row network takes vectors of length ``n_cols``,
        the column network vectors of length ``n_rows``.
    hidden : sequence of int
        Widths of the hidden layers of each branch (``()``: a linear map).
    rank : int
        The number of latent factors ``d`` (the output width of each branch).
        (``latent_dim=`` is the deprecated spelling, kept for one release.)
    activation : str
        Hidden activation: ``"relu"``, ``"tanh"``, ``"sigmoid"``, ``"elu"``,
        ``"leaky_relu"`` or ``"identity"``.
    scale : (float, float)
        The rating scale ``(alpha, beta)``.
    gamma : float
        Weight-decay ``gamma`` of the objective (on the weight matrices, not the biases).
    noise : float
        Likelihood standard deviation ``sigma`` (on the ``[-1, 1]`` scale) of the Pyro model.

    Examples
    --------
    >>> import torch
    >>> from bayesmf.data import synthetic_ratings
    >>> _ = torch.manual_seed(0)
    >>> m = DeepMF(30, 20, hidden=(16,), rank=4, scale=(1, 5))
    >>> R, _ = synthetic_ratings(30, 20, density=0.3, seed=0)
    >>> X, Y = m.inputs(R)          # rows and columns of the scaled training matrix
    >>> X.shape, Y.shape
    (torch.Size([30, 20]), torch.Size([20, 30]))
    >>> out = m(X.to_dense()[:3], Y.to_dense()[:3])
    >>> bool(out.abs().max() <= 1), m.to_rating(m.to_unit(torch.tensor(4.0))).item()
    (True, 4.0)
    """

    def __init__(
        self,
        n_rows: int,
        n_cols: int,
        hidden: Sequence[int] = (512,),
        rank: int = 64,
        activation: str = "relu",
        scale: tuple[float, float] = (1.0, 5.0),
        gamma: float = 1e-4,
        noise: float = 0.5,
        **deprecated: Any,
    ) -> None:
        super().__init__()
        rank = _rank_from(rank, deprecated, type(self).__name__)
        if n_rows < 1 or n_cols < 1:
            raise ValueError(f"n_rows and n_cols must be positive, got {n_rows}, {n_cols}")
        if rank < 1 or any(int(h) < 1 for h in hidden):
            raise ValueError(f"widths must be positive, got hidden={hidden}, rank={rank}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation}")
        lo, hi = (float(s) for s in scale)
        if not lo < hi:
            raise ValueError(f"scale must be (low, high) with low < high, got {scale}")
        if gamma < 0 or noise <= 0:
            raise ValueError(f"need gamma >= 0 and noise > 0, got {gamma}, {noise}")
        self.n_rows, self.n_cols = int(n_rows), int(n_cols)
        self.hidden = tuple(int(h) for h in hidden)
        self.rank = int(rank)
        self.activation = activation
        self.scale = (lo, hi)
        self.gamma = float(gamma)
        self.noise = float(noise)
        self.row_net = _Branch(self.n_cols, self.hidden, self.rank, activation)
        self.col_net = _Branch(self.n_rows, self.hidden, self.rank, activation)

    @property
    def latent_dim(self) -> int:
        """Deprecated alias of :attr:`rank` (kept for one release)."""
        warnings.warn(f"{type(self).__name__}.latent_dim is deprecated, use .rank",
                      DeprecationWarning, stacklevel=2)
        return self.rank

    # ----------------------------------------------------------------- scaling
    @property
    def mid(self) -> float:
        """``mu = (alpha + beta) / 2``."""
        return 0.5 * (self.scale[0] + self.scale[1])

    @property
    def half_range(self) -> float:
        """``mu - alpha``."""
        return self.mid - self.scale[0]

    def to_unit(self, r: torch.Tensor) -> torch.Tensor:
        """Ratings in ``[alpha, beta]`` to ``[-1, 1]``: ``(r - mu) / (mu - alpha)``."""
        return (r - self.mid) / self.half_range

    def to_rating(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_unit`: ``mu + (mu - alpha) x``."""
        return self.mid + self.half_range * x

    def config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {
            "n_rows": self.n_rows,
            "n_cols": self.n_cols,
            "hidden": list(self.hidden),
            "rank": self.rank,
            "activation": self.activation,
            "scale": list(self.scale),
            "gamma": self.gamma,
            "noise": self.noise,
        }

    # ------------------------------------------------------------------ inputs
    def inputs(
        self, ratings: Ratings, *, sparse: bool = True, device: str | torch.device | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Row inputs ``X`` (``n_rows x n_cols``) and column inputs ``Y = X^T`` built
        from the scaled values of ``ratings`` (zeros where unobserved)."""
        if ratings.shape != (self.n_rows, self.n_cols):
            raise ValueError(
                f"ratings have shape {ratings.shape}, the model takes "
                f"({self.n_rows}, {self.n_cols})"
            )
        X = rating_matrix(ratings, self.to_unit, sparse=sparse, device=device)
        Y = X.t().coalesce() if sparse else X.t().contiguous()
        return X, Y

    # ------------------------------------------------------------- the network
    def embed_rows(self, X: torch.Tensor) -> torch.Tensor:
        """``h_X(X)`` for row vectors ``X`` of shape ``(k, n_cols)`` (dense or sparse)."""
        return self.row_net(X)

    def embed_cols(self, Y: torch.Tensor) -> torch.Tensor:
        """``h_Y(Y)`` for column vectors ``Y`` of shape ``(k, n_rows)`` (dense or sparse)."""
        return self.col_net(Y)

    @staticmethod
    def cosine(u: torch.Tensor, v: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
        """Cosine similarity of matching rows of ``u`` and ``v``, in ``[-1, 1]``."""
        num = (u * v).sum(-1)
        den = u.norm(dim=-1).clamp_min(eps) * v.norm(dim=-1).clamp_min(eps)
        return (num / den).clamp(-1.0, 1.0)

    def output(self, cos: torch.Tensor) -> torch.Tensor:
        """Map the cosine to the model's prediction on the unit scale (identity for DMF)."""
        return cos

    def predict_unit(
        self, U: torch.Tensor, V: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
    ) -> torch.Tensor:
        """Prediction (unit scale) at ``(rows, cols)`` from row/column embeddings."""
        return self.output(self.cosine(U[rows], V[cols]))

    def forward(self, X_rows: torch.Tensor, Y_cols: torch.Tensor) -> torch.Tensor:
        """Prediction on the ``[-1, 1]`` scale for matching row/column vectors.

        Parameters
        ----------
        X_rows : torch.Tensor, shape (B, n_cols)
            Row vectors (scaled ratings, zeros where unobserved).
        Y_cols : torch.Tensor, shape (B, n_rows)
            Column vectors.
        """
        return self.output(self.cosine(self.embed_rows(X_rows), self.embed_cols(Y_cols)))

    # --------------------------------------------------------------- objective
    def weight_matrices(self) -> list[torch.Tensor]:
        """The weight matrices ``W_X, W_Y`` of both branches (biases excluded)."""
        return [layer.weight for net in (self.row_net, self.col_net) for layer in net.layers]

    def weight_penalty(self) -> torch.Tensor:
        """``||W_X||^2 + ||W_Y||^2``."""
        return sum(w.pow(2).sum() for w in self.weight_matrices())  # type: ignore[return-value]

    def penalty(self) -> torch.Tensor:
        """The full regulariser of the objective: ``gamma (||W_X||^2 + ||W_Y||^2)``."""
        return self.gamma * self.weight_penalty()

    def objective(
        self, pred_unit: torch.Tensor, target_unit: torch.Tensor, loss: str = "mse"
    ) -> torch.Tensor:
        """The paper's objective: MSE on the given entries plus :meth:`penalty`
        (``loss="l1"``: mean absolute error instead of the MSE)."""
        err = pred_unit - target_unit
        data = err.pow(2).mean() if loss == "mse" else err.abs().mean()
        return data + self.penalty()

    # ------------------------------------------------------------ Pyro model
    def _prior_scale(self, n: int, gamma: float) -> float:
        return self.noise / math.sqrt(max(n, 1) * gamma) if gamma > 0 else BIAS_PRIOR_SCALE

    def _sample_params(self, n: int) -> dict[str, torch.Tensor]:
        """Sample every network parameter from its prior (one site per tensor)."""
        weight_ids = {id(w) for w in self.weight_matrices()}
        w_scale = self._prior_scale(n, self.gamma)
        params: dict[str, torch.Tensor] = {}
        for name, p in self.named_parameters():
            if id(p) in weight_ids:
                scale = w_scale
            elif name.startswith("quantizer."):
                continue  # handled by the subclass
            else:
                scale = BIAS_PRIOR_SCALE
            prior = dist.Normal(torch.zeros_like(p), scale).to_event(p.dim())
            params[name] = pyro.sample(name, prior)
        return params

    def model(
        self,
        data: Ratings,
        index: torch.Tensor | None = None,
        predict: bool = False,
        inputs: Ratings | None = None,
    ) -> torch.Tensor:
        """The Pyro model: weight priors and a Gaussian likelihood around the cosine.

        Parameters
        ----------
        data : Ratings
            The ratings whose (scaled) values are modelled.
        index : LongTensor, optional
            Positions of a minibatch of ``data``; the likelihood is scaled by
            ``len(data) / len(index)``.
        predict : bool
            Leave the ratings unobserved (for ``Predictive``).
        inputs : Ratings, optional
            Ratings the input vectors are built from (default ``data``: the training
            matrix); pass the training ratings when ``data`` are test entries.

        Notes
        -----
        With the weight prior ``N(0, sigma^2 / (N gamma))`` (``N = len(data)``), the
        negative log joint equals ``N / (2 sigma^2)`` times the paper's objective plus
        a constant (and the biases' wide prior), so its MAP estimate is the DMF fit.
        Sites are named after the module parameters (``"row_net.layers.0.weight"``...).
        """
        from torch.func import functional_call

        n = len(data)
        params = self._sample_params(n)
        params.update(self._sample_extra(n))
        X, Y = self.inputs(data if inputs is None else inputs)
        U = functional_call(self.row_net, _strip(params, "row_net."), (X,))
        V = functional_call(self.col_net, _strip(params, "col_net."), (Y,))
        target = self.to_unit(data.values.float())
        with pyro.plate("ratings", n, subsample=index) as idx:
            mu = self._predict_with(params, U, V, data.rows[idx], data.cols[idx])
            obs = None if predict else target[idx]
            return pyro.sample("obs", dist.Normal(mu, self.noise), obs=obs)

    def _sample_extra(self, n: int) -> dict[str, torch.Tensor]:
        return {}

    def _predict_with(
        self,
        params: dict[str, torch.Tensor],
        U: torch.Tensor,
        V: torch.Tensor,
        rows: torch.Tensor,
        cols: torch.Tensor,
    ) -> torch.Tensor:
        return self.cosine(U[rows], V[cols])


def _rank_from(rank: int, deprecated: dict[str, Any], where: str) -> int:
    """``rank``, or the deprecated ``latent_dim=`` (DeprecationWarning, kept for one release);
    TypeError for any other unexpected keyword."""
    if "latent_dim" in deprecated:
        rank = deprecated.pop("latent_dim")
        warnings.warn(f"{where}: 'latent_dim=' is deprecated, use 'rank='", DeprecationWarning,
                      stacklevel=3)
    if deprecated:
        raise TypeError(f"{where}() got unexpected keyword arguments {sorted(deprecated)}")
    return rank


def _strip(params: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


class DiscreteDeepMF(DeepMF):
    """DMF followed by a learnable smooth quantizer onto the rating levels (DMF-D).

    Parameters
    ----------
    n_rows, n_cols, hidden, rank, activation, scale, gamma, noise
        As for :class:`DeepMF` (``latent_dim=``: the deprecated spelling of ``rank=``).
    levels : sequence of float, optional
        The rating levels on the original scale (default ``alpha, alpha + 1, ..., beta``).
    gamma_b : float
        Weight ``gamma_2`` of the penalty ``||b - b~||^2`` on the boundaries.
    lam : float
        Initial sharpness of the quantizer (annealed by the fitter).

    Examples
    --------
    >>> import torch
    >>> _ = torch.manual_seed(0)
    >>> m = DiscreteDeepMF(30, 20, hidden=(8,), rank=4, scale=(1, 5), lam=1e4)
    >>> m.quantizer.levels.tolist()     # the levels 1..5 on the unit scale
    [-1.0, -0.5, 0.0, 0.5, 1.0]
    >>> out = m(torch.randn(6, 20), torch.randn(6, 30))
    >>> set(m.to_rating(out).round(decimals=2).tolist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    True
    """

    def __init__(
        self,
        n_rows: int,
        n_cols: int,
        hidden: Sequence[int] = (512,),
        rank: int = 64,
        activation: str = "relu",
        scale: tuple[float, float] = (1.0, 5.0),
        gamma: float = 1e-4,
        noise: float = 0.5,
        levels: Sequence[float] | None = None,
        gamma_b: float = 1e-2,
        lam: float = 1.0,
        **deprecated: Any,
    ) -> None:
        rank = _rank_from(rank, deprecated, type(self).__name__)
        super().__init__(n_rows, n_cols, hidden, rank, activation, scale, gamma, noise)
        if levels is None:
            lo, hi = self.scale
            if lo != round(lo) or hi != round(hi):
                raise ValueError(f"give the levels explicitly for the scale {self.scale}")
            levels = [float(v) for v in range(int(lo), int(hi) + 1)]
        if gamma_b < 0:
            raise ValueError(f"gamma_b must be >= 0, got {gamma_b}")
        self.rating_levels = tuple(float(v) for v in levels)
        self.gamma_b = float(gamma_b)
        unit = [float(self.to_unit(torch.tensor(v))) for v in self.rating_levels]
        self.quantizer = SmoothQuantizer(unit, lam=lam)

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg.update(levels=list(self.rating_levels), gamma_b=self.gamma_b,
                   lam=float(self.quantizer.lam))
        return cfg

    def set_lam(self, lam: float) -> None:
        """Set the quantizer's sharpness ``lambda``."""
        self.quantizer.set_lam(lam)

    def output(self, cos: torch.Tensor) -> torch.Tensor:
        """``G_{lambda,b}(cos)``."""
        return self.quantizer(cos)

    def hard_output(self, cos: torch.Tensor) -> torch.Tensor:
        """The ``lambda -> inf`` limit: exactly one of the levels."""
        return self.quantizer.hard(cos)

    def penalty(self) -> torch.Tensor:
        """``gamma ||W||^2 + gamma_2 ||b - b~||^2``."""
        return super().penalty() + self.gamma_b * self.quantizer.penalty()

    def _sample_extra(self, n: int) -> dict[str, torch.Tensor]:
        q = self.quantizer
        scale = self._prior_scale(n, self.gamma_b)
        prior = dist.Normal(q.uniform_boundaries, scale).to_event(1)
        return {"quantizer.boundaries": pyro.sample("quantizer.boundaries", prior)}

    def _predict_with(
        self,
        params: dict[str, torch.Tensor],
        U: torch.Tensor,
        V: torch.Tensor,
        rows: torch.Tensor,
        cols: torch.Tensor,
    ) -> torch.Tensor:
        from torch.func import functional_call

        cos = self.cosine(U[rows], V[cols])
        b = {"boundaries": params["quantizer.boundaries"]}
        return functional_call(self.quantizer, b, (cos,))
