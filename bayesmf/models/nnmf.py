"""Bayesian neural-network matrix factorization (Dziugaite & Roy 2015, made Bayesian as in
Kampman & Heaukulani 2019).

x_nm ~ N(f_theta([U_n, V_m, <U'_n1, V'_m1>, ..., <U'_nD, V'_mD>]), sigma^2) with
U_n, V_m in R^K, U'_nd, V'_md in R^K' and f_theta a Bayesian MLP. Every input array and
every weight/bias array has independent Gaussian priors with an array-specific scale
(LogNormal hyper-prior), except the first weight matrix, whose rows (one per network input)
each have their own scale by default (automatic relevance determination of the inputs,
``input_scales``). ``hidden=()`` is the linear VI(0) model, ``hidden=(50, 50, 50)``
with sigmoid units is VI(3). Item (user) side information is concatenated to V_m (U_n).

Fitting by mean-field SVI: the initial variational means are scaled so that the network is
neither constant nor saturated at the start (:meth:`BayesianNNMF.init_stds`) and the
weights start with a small posterior standard deviation. Even so, with the full KL term
from the first step the ELBO is drawn to a collapsed solution (VI(0) keeps only the
user/item biases, VI(3) predicts the global mean on MovieLens-100K); a KL warm-up over the
first epochs (weight 0 -> 1) avoids it. See ``benchmarks/table1_ml100k.py``.

Why one scale per input: the inputs differ in magnitude by an order (embeddings about 0.3,
bilinear products about 0.05, 0/1 genre flags), and an input whose weights are switched off
is silent only if its weights' prior is tight. Under one shared scale a switched-off input
keeps weights drawn at the shared prior, which inject sampling noise into every hidden unit
(MovieLens-100K, validation carve of split 0: the posterior spread of the first-layer
pre-activations ends at 1.4 times their signal with one scale, 0.5 with one scale per
input of every layer). Over five random 90/10 splits with the same schedule and
initialisation, VI(3)+S reaches test RMSE 0.906 +- 0.009 against 0.915 +- 0.017 with one
scale (the benchmark's earlier run); VI(3) gains nothing (0.908 against 0.907, paired).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from .base import GaussianFactorModel, LatentSpec
from .bayesian_mf import take
from .bnn import ACTIVATIONS, mlp_forward

__all__ = ["BayesianNNMF"]

#: weight-init gain of each activation (inverse of its slope at 0, He's sqrt(2) for ReLU)
_GAINS = {"sigmoid": 4.0, "tanh": 1.0, "relu": math.sqrt(2.0)}
_EMBEDDINGS = ("U", "V", "U_prime", "V_prime")
#: which weight matrices get one prior scale per input (row) instead of one scale
_INPUT_SCALES = ("none", "first", "all")


class BayesianNNMF(GaussianFactorModel):
    """Bayesian NNMF with a Bayesian MLP on ``[U_n, V_m, U'_n . V'_m]``.

    Parameters
    ----------
    n_rows, n_cols : int
        Matrix shape (users x items).
    rank : int
        ``K``, size of the plain embeddings ``U_n``, ``V_m``.
    bilinear_dims : int
        ``D``, number of bilinear features ``<U'_nd, V'_md>``.
    bilinear_rank : int
        ``K'``, size of each ``U'_nd``, ``V'_md`` (the paper's 1: an elementwise product).
    hidden : sequence of int
        Hidden layer widths of ``f_theta``; ``()`` is linear.
    activation : {"sigmoid", "tanh", "relu"}
        Hidden unit non-linearity.
    item_features, user_features : tensor, optional
        Side information ``(n_cols, F)`` / ``(n_rows, G)``, concatenated to ``V_m`` / ``U_n``
        (e.g. the 19 MovieLens genre flags: ``ratings.col_features``).
    global_mean : float, optional
        Fixed offset added to ``f_theta``; the training mean by default.
    init_embedding_std : float, optional
        Standard deviation of the random initial posterior means of ``U, V, U', V'``
        (default 1.0 with hidden layers and side features, 0.5 with hidden layers only,
        0.1 without hidden layers); see :meth:`init_stds`.
    init_weight_scale : float
        Initial posterior standard deviation of the network weights and biases.
    input_scales : {"first", "all", "none"}
        Weight matrices whose rows (inputs) get one prior scale each (a site
        ``scale_W{l}`` of shape ``(n_in, 1)``) instead of one scale for the matrix:
        the first layer only (default), every layer, or none (the original model).
    likelihood : {"gaussian", "discretized"}
        Observation model (see :class:`~bayesmf.models.base.GaussianFactorModel`):
        ``"discretized"`` for integer ratings, a Normal binned to the levels.
    levels : (int, int), optional
        First and last rating level of the discretized likelihood (default: from the data).

    Examples
    --------
    >>> import pyro, torch
    >>> from bayesmf import data, models
    >>> R, _ = data.synthetic_ratings(n_rows=30, n_cols=20, rank=2, density=0.3, seed=0)
    >>> m = models.BayesianNNMF(30, 20, rank=3, bilinear_dims=4, hidden=(8,))
    >>> m.setup(R)
    >>> tr = pyro.poutine.trace(m.model).get_trace(R)
    >>> sorted(k for k in tr.nodes if k.startswith("W"))
    ['W0', 'W1']
    >>> tr.nodes["W0"]["value"].shape  # 2K + D inputs
    torch.Size([10, 8])
    """

    def __init__(
        self,
        n_rows: int,
        n_cols: int,
        rank: int = 10,
        bilinear_dims: int = 60,
        bilinear_rank: int = 1,
        hidden: Sequence[int] = (50, 50, 50),
        activation: str = "sigmoid",
        item_features: torch.Tensor | None = None,
        user_features: torch.Tensor | None = None,
        global_mean: float | None = None,
        init_embedding_std: float | None = None,
        init_weight_scale: float = 0.01,
        input_scales: str = "first",
        likelihood: str = "gaussian",
        levels: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(n_rows, n_cols, global_mean, likelihood=likelihood, levels=levels)
        if init_embedding_std is not None and not init_embedding_std > 0:
            raise ValueError(f"init_embedding_std must be positive, got {init_embedding_std}")
        if not init_weight_scale > 0:
            raise ValueError(f"init_weight_scale must be positive, got {init_weight_scale}")
        self.init_embedding_std = None if init_embedding_std is None else float(init_embedding_std)
        self.init_weight_scale = float(init_weight_scale)
        if input_scales not in _INPUT_SCALES:
            raise ValueError(
                f"input_scales must be one of {_INPUT_SCALES}, got {input_scales!r}"
            )
        self.input_scales = input_scales
        if rank < 0 or bilinear_dims < 0 or rank + bilinear_dims == 0:
            raise ValueError("need rank >= 0, bilinear_dims >= 0 and at least one of them > 0")
        if bilinear_dims and bilinear_rank < 1:
            raise ValueError(f"bilinear_rank must be >= 1, got {bilinear_rank}")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}"
            )
        if any(int(h) < 1 for h in hidden):
            raise ValueError(f"hidden widths must be positive, got {tuple(hidden)}")
        self.rank = int(rank)
        self.bilinear_dims = int(bilinear_dims)
        self.bilinear_rank = int(bilinear_rank)
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        self._act = ACTIVATIONS[activation]
        for name, feats, n in (
            ("item_features", item_features, n_cols),
            ("user_features", user_features, n_rows),
        ):
            if feats is not None:
                feats = torch.as_tensor(feats, dtype=torch.float32)
                if feats.dim() != 2 or feats.shape[0] != n:
                    raise ValueError(f"{name} must have shape ({n}, F), got {tuple(feats.shape)}")
                if not torch.isfinite(feats).all():
                    raise ValueError(f"{name} contain NaN/inf")
            self.register_buffer(name, feats)

    @property
    def n_inputs(self) -> int:
        """Width of the network input ``[U_n, user feats, V_m, item feats, bilinear]``."""
        f = 0 if self.item_features is None else self.item_features.shape[1]
        g = 0 if self.user_features is None else self.user_features.shape[1]
        return 2 * self.rank + self.bilinear_dims + f + g

    def config(self) -> dict[str, Any]:
        return {
            "n_rows": self.n_rows,
            "n_cols": self.n_cols,
            "rank": self.rank,
            "bilinear_dims": self.bilinear_dims,
            "bilinear_rank": self.bilinear_rank,
            "hidden": list(self.hidden),
            "activation": self.activation,
            "item_features": self.item_features,
            "user_features": self.user_features,
            "init_embedding_std": self.init_embedding_std,
            "init_weight_scale": self.init_weight_scale,
            "input_scales": self.input_scales,
            **self.likelihood_config(),
        }

    def layer_sizes(self) -> list[int]:
        return [self.n_inputs, *self.hidden, 1]

    def init_stds(self) -> dict[str, float]:
        """Standard deviations of the random initial variational means, per array.

        Chosen so that the network neither starts as a constant function (which is where
        mean-field VI of a Bayesian MLP collapses to the prior) nor saturates:

        * embeddings ``U, V, U', V'``: ``init_embedding_std`` (0.5 with hidden layers,
          1.0 with hidden layers and side features, whose 0/1 inputs otherwise dominate the
          first pre-activations and the fit settles on them: MovieLens-100K validation
          RMSE 0.94 with 0.5 against 0.92 with 1.0; 0.1 for the linear model, where small
          random factors train best);
        * first layer: ``1 / (sqrt(n_in) * rms(input))`` with hidden layers, so that the
          first pre-activations have unit variance; ``1 / sqrt(n_in)`` for the linear model;
        * hidden-to-hidden layers: ``gain / sqrt(n_in)`` with the activation's gain
          (4 for the sigmoid, whose slope at 0 is 1/4; 1 for tanh; sqrt(2) for ReLU);
        * output layer: ``1 / sqrt(n_in)``; biases start at 0.
        """
        a = self.init_embedding_std
        if a is None:
            side = self.item_features is not None or self.user_features is not None
            a = (1.0 if side else 0.5) if self.hidden else 0.1
        out = {"U": a, "V": a, "U_prime": a, "V_prime": a}
        sizes = self.layer_sizes()
        n_layers = len(sizes) - 1
        for layer, n_in in enumerate(sizes[:-1]):
            if layer == 0 and self.hidden:
                sq = 2 * self.rank * a**2 + self.bilinear_dims * self.bilinear_rank * a**4
                for feats in (self.user_features, self.item_features):
                    if feats is not None:
                        sq += float((feats**2).mean(0).sum())
                rms = math.sqrt(max(sq, 1e-12) / n_in)
                out["W0"] = 1.0 / (math.sqrt(n_in) * rms)
            elif 0 < layer < n_layers - 1:
                out[f"W{layer}"] = _GAINS[self.activation] / math.sqrt(n_in)
            else:
                out[f"W{layer}"] = 1.0 / math.sqrt(n_in)
        return out

    def latent_specs(self) -> list[LatentSpec]:
        """Noise, one prior scale per array, then the arrays.

        The network weights and biases start with a small posterior standard deviation
        (``init_weight_scale``, 0.01) so that the sampled networks are close to the mean
        network while the means find a useful function; the embeddings start at the
        default 0.05.
        """
        K, D, Kp = self.rank, self.bilinear_dims, self.bilinear_rank
        stds = self.init_stds()
        ws = self.init_weight_scale
        specs = [LatentSpec("noise", (), positive=True, init_loc=1.0)]
        arrays: list[LatentSpec] = []
        if K:
            arrays += [
                LatentSpec("U", (self.n_rows, K), dims=("user", "factor"), init_loc=stds["U"]),
                LatentSpec("V", (self.n_cols, K), dims=("item", "factor"), init_loc=stds["V"]),
            ]
        if D:
            arrays += [
                LatentSpec(
                    "U_prime",
                    (self.n_rows, D, Kp),
                    dims=("user", "bilinear", "bfactor"),
                    init_loc=stds["U_prime"],
                ),
                LatentSpec(
                    "V_prime",
                    (self.n_cols, D, Kp),
                    dims=("item", "bilinear", "bfactor"),
                    init_loc=stds["V_prime"],
                ),
            ]
        sizes = self.layer_sizes()
        for layer, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            arrays += [
                LatentSpec(
                    f"W{layer}",
                    (n_in, n_out),
                    dims=(f"in{layer}", f"out{layer}"),
                    init_loc=stds[f"W{layer}"],
                    init_scale=ws,
                ),
                LatentSpec(
                    f"b{layer}", (n_out,), dims=(f"out{layer}",), init_loc=0.0, init_scale=ws
                ),
            ]
        for a in arrays:
            init = 0.5 if a.name in _EMBEDDINGS else max(a.init_loc, 0.1)
            per_input = self.input_scales == "all" or (
                self.input_scales == "first" and a.name == "W0"
            )
            if a.name.startswith("W") and per_input:
                layer = a.name[1:]
                specs.append(LatentSpec(f"scale_{a.name}", (a.shape[0], 1), positive=True,
                                        dims=(f"in{layer}", "one"), init_loc=init))
                continue
            specs.append(LatentSpec(f"scale_{a.name}", (), positive=True, init_loc=init))
        specs += [
            LatentSpec(
                a.name,
                a.shape,
                prior_scale=f"scale_{a.name}",
                dims=a.dims,
                init_loc=a.init_loc,
                init_scale=a.init_scale,
            )
            for a in arrays
        ]
        return specs

    def features(
        self,
        z: dict[str, torch.Tensor],
        rows: torch.Tensor,
        cols: torch.Tensor,
        *,
        feature_rows: torch.Tensor | None = None,
        feature_cols: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Network input for the pairs ``(rows, cols)``, shape ``(*S, n, n_inputs)``.

        ``rows``/``cols`` index the first dimension of the arrays in ``z``;
        ``feature_rows``/``feature_cols`` (default: the same) index the side features. They
        differ when ``z`` holds only the rows/columns of a minibatch
        (:func:`bayesmf.inference.objectives.local_elbo_loss`): ``rows`` then index the
        gathered arrays and ``feature_rows`` are the original row indices.
        """
        feature_rows = rows if feature_rows is None else feature_rows
        feature_cols = cols if feature_cols is None else feature_cols
        parts: list[torch.Tensor] = []
        batch: torch.Size | None = None
        if self.rank:
            u, v = take(z["U"], rows, 2), take(z["V"], cols, 2)
            batch = u.shape[:-1]
            parts += [u, v]
        if self.bilinear_dims:
            up, vp = take(z["U_prime"], rows, 3), take(z["V_prime"], cols, 3)
            bil = (up * vp).sum(-1)
            batch = bil.shape[:-1]
            parts.append(bil)
        assert batch is not None
        if self.user_features is not None:
            parts.append(self.user_features[feature_rows].expand(*batch, -1))
        if self.item_features is not None:
            parts.append(self.item_features[feature_cols].expand(*batch, -1))
        return torch.cat(parts, dim=-1)

    def mean(
        self,
        z: dict[str, torch.Tensor],
        rows: torch.Tensor,
        cols: torch.Tensor,
        *,
        feature_rows: torch.Tensor | None = None,
        feature_cols: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Network output plus the offset; the keywords are :meth:`features`'."""
        x = self.features(z, rows, cols, feature_rows=feature_rows, feature_cols=feature_cols)
        h = mlp_forward(x, z, len(self.hidden) + 1, self._act)
        return h.squeeze(-1) + self.global_mean
