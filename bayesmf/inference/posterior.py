"""What every fitted posterior of a factor model can do, whatever fitted it.

:class:`PosteriorFit` turns draws of the latent arrays (from a variational ``q``, from Markov
chains, ...) into predictions: the posterior predictive mean, predictive draws and central
intervals, the pointwise log-likelihood and the ArviZ conversion. A subclass supplies
``model`` and :meth:`_draw`.

Every draw is counted once: the draws of one call are taken together (in order, without
repetition, for a finite set of kept draws) and only the computation over the data is chunked.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch

from ..models.base import BernoulliFactorModel, FactorModel
from .fits import Fit, check_statistic, summarise

__all__ = ["PosteriorFit", "rebuild_model"]


def rebuild_model(name: str, config: dict[str, Any], global_mean: float) -> FactorModel:
    """A factor model of the library from its class name and :meth:`config`."""
    from .. import models

    cls = getattr(models, name, None)
    if not (isinstance(cls, type) and issubclass(cls, FactorModel)):
        raise ValueError(f"unknown model class {name!r}")
    return cls(**config, global_mean=global_mean)


class PosteriorFit(Fit):
    """Base class of fitted posteriors of factor models (:class:`VariationalFit`,
    :class:`SampleFit`)."""

    model: FactorModel
    #: draws used by :meth:`predict` when ``num_samples`` is not given
    default_num_samples: int = 100

    @abstractmethod
    def _draw(self, num_samples: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``num_samples`` draws of every latent site, each with a leading sample dim (a
        finite set of kept draws may return fewer: all of them, once)."""

    def _draw_for(self, data: Any, num_samples: int, generator: torch.Generator
                  ) -> dict[str, torch.Tensor]:
        """Draws used for predictions at the entries of ``data``: :meth:`_draw`'s, unless a
        fit can skip what ``data`` does not touch (with the same values where it does)."""
        return self._draw(num_samples, generator)

    def sample(self, num_samples: int = 200, seed: int = 0) -> dict[str, torch.Tensor]:
        """Draws of every latent array and hyper-parameter."""
        gen = torch.Generator(device=self.model.device).manual_seed(seed)
        return self._draw(num_samples, gen)

    def _model_payload(self) -> dict[str, Any]:
        state = getattr(self.model, "implicit_state", None)  # data-derived buffers, if any
        return {
            "model_class": type(self.model).__name__,
            "model_config": self.model.config(),
            "global_mean": float(self.model.global_mean),
            "implicit_state": {k: v.detach().cpu() for k, v in state().items()}
            if callable(state) else {},
        }

    @staticmethod
    def _model_from(payload: dict[str, Any]) -> FactorModel:
        model = rebuild_model(payload["model_class"], payload["model_config"],
                              payload["global_mean"])
        if payload.get("implicit_state"):
            model.set_implicit_state(payload["implicit_state"])
        return model

    # ----------------------------------------------------------- predictions
    def _check(self, data: Any) -> Any:
        self.model.check_data(data)
        return data.to(self.model.device)

    def _map_draws(self, data: Any, num_samples: int | None, seed: int, fn) -> torch.Tensor:
        """``fn(z_chunk, data)`` over the draws of one call, chunked over samples."""
        data = self._check(data)
        gen = torch.Generator(device=self.model.device).manual_seed(seed)
        z = self._draw_for(data, num_samples or self.default_num_samples, gen)
        S = next(iter(z.values())).shape[0]
        per_draw = max(1, len(data) * max(getattr(self.model, "n_inputs", 1), 1) * 4)
        size = max(1, min(S, int(5e7 // per_draw)))
        out = [fn({k: v[s : s + size] for k, v in z.items()}, data) for s in range(0, S, size)]
        return torch.cat(out)

    @torch.no_grad()
    def expected_draws(self, data: Any, num_samples: int | None = None, seed: int = 0):
        """Draws of ``E[x | z]`` at the entries of ``data``, shape ``(S, n)``."""
        return self._map_draws(
            data, num_samples, seed, lambda z, d: self.model.expected(z, d.rows, d.cols)
        )

    @torch.no_grad()
    def predict(
        self, data: Any, *, clamp: bool = False, num_samples: int | None = None, seed: int = 0,
        statistic: str = "mean",
    ) -> torch.Tensor:
        """Posterior predictive mean at the entries of ``data`` (link probabilities for the
        pairs of a network); ``statistic="median"``: the posterior median of ``E[x | z]``
        instead (:func:`~bayesmf.inference.fits.summarise`); ``clamp=True`` clamps to
        ``data.scale``."""
        check_statistic(statistic)
        pred = summarise(self.expected_draws(data, num_samples, seed), statistic)
        return data.clamp(pred) if clamp else pred

    @torch.no_grad()
    def predictive_samples(
        self, data: Any, num_samples: int | None = 500, seed: int = 0
    ) -> torch.Tensor:
        """Draws ``x ~ p(x | z) p(z | data)`` at the entries of ``data``, shape ``(S, n)``.

        From a finite set of kept draws (Markov chains) fewer than ``num_samples``, every draw
        of ``z`` gets the same number of observation draws, so each counts equally."""
        gen = torch.Generator(device=self.model.device).manual_seed(seed + 1)
        wanted = num_samples or self.default_num_samples

        def draw(z: dict[str, torch.Tensor], d: Any) -> torch.Tensor:
            S = next(iter(z.values())).shape[0]
            reps = max(1, -(-wanted // self._available(wanted))) if S else 1
            z = {k: v.repeat_interleave(reps, 0) for k, v in z.items()} if reps > 1 else z
            return self.model.predictive_draws(z, d.rows, d.cols, generator=gen)

        return self._map_draws(data, num_samples, seed, draw)

    def _available(self, wanted: int) -> int:
        """How many distinct draws of ``z`` a call asking for ``wanted`` gets."""
        return wanted

    @torch.no_grad()
    def predict_interval(
        self, data: Any, level: float = 0.9, *, num_samples: int | None = 500, seed: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Central ``level`` posterior predictive interval ``(lower, upper)`` per entry (for a
        Bernoulli model: the interval of the link probability)."""
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level}")
        if isinstance(self.model, BernoulliFactorModel):
            x = self.expected_draws(data, num_samples, seed)
        else:
            x = self.predictive_samples(data, num_samples, seed)
        q = torch.tensor([(1 - level) / 2, (1 + level) / 2], device=x.device, dtype=x.dtype)
        if getattr(self.model, "discrete", False):  # integer levels: integer ends
            lo = torch.quantile(x, q[0], dim=0, interpolation="lower")
            hi = torch.quantile(x, q[1], dim=0, interpolation="higher")
            return lo, hi
        lo, hi = torch.quantile(x, q, dim=0)
        return lo, hi

    @torch.no_grad()
    def log_likelihood(
        self, data: Any, num_samples: int | None = 200, seed: int = 0
    ) -> torch.Tensor:
        """Pointwise ``log p(x_i | z_s)`` for posterior draws ``z_s``, shape ``(S, n)``."""
        return self._map_draws(
            data, num_samples, seed,
            lambda z, d: self.model.log_likelihood(z, d.rows, d.cols, d.values),
        )

    def to_inference_data(self, data: Any = None, **kw: Any):
        """ArviZ ``InferenceData`` of this fit (:func:`bayesmf.diagnostics.to_inference_data`):
        ``log_likelihood`` of the training data (for ``az.loo``) and, with held-out ``data``,
        its posterior predictive and log predictive density."""
        from ..diagnostics.arviz import to_inference_data

        return to_inference_data(self, data, **kw)
