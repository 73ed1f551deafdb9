"""What every fitted posterior of a Gaussian factor model can do, whatever fitted it.

:class:`PosteriorFit` turns draws of the latent arrays (from a variational ``q``, from a
Markov chain, ...) into predictions: the posterior predictive mean, predictive draws and
central intervals, the pointwise log-likelihood and the ArviZ conversion. A subclass
supplies ``model``, ``train_info``, ``settings`` and :meth:`_draw`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import torch

from ..data.containers import Ratings
from ..models.base import GaussianFactorModel

__all__ = ["PosteriorFit"]


def _plain(v: Any) -> bool:
    return isinstance(v, (int, float, str, bool, type(None), list, tuple))


class PosteriorFit(ABC):
    """Base class of fitted posteriors (:class:`~bayesmf.inference.VariationalFit`,
    :class:`~bayesmf.inference.SampleFit`)."""

    model: GaussianFactorModel
    train_info: dict[str, Any]
    settings: dict[str, Any]
    #: how the posterior was approximated (recorded in the ArviZ attributes)
    inference_name: str = "posterior"

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """Everything needed to rebuild the fit, as tensors and plain Python values."""

    def _common_state(self) -> dict[str, Any]:
        """The part of :meth:`state` every fit shares: the model and the fit's records."""
        return {
            "model_class": type(self.model).__name__,
            "model_config": self.model.config(),
            "global_mean": float(self.model.global_mean),
            "history": getattr(self, "history", {}),
            "train_info": self.train_info,
            "settings": {k: v for k, v in self.settings.items() if _plain(v)},
            "fit_seconds": getattr(self, "fit_seconds", 0.0),
        }

    @staticmethod
    def _rebuild_model(state: dict[str, Any]) -> GaussianFactorModel:
        """The model of a saved :meth:`state` (its class from the library's registry)."""
        from .. import models

        registry = {"BayesianMF": models.BayesianMF, "BayesianNNMF": models.BayesianNNMF}
        return registry[state["model_class"]](
            **state["model_config"], global_mean=state["global_mean"]
        )

    def save(self, path: str | Path) -> Path:
        """Save to ``path`` (a ``torch.save`` file loadable with ``weights_only=True``;
        read it back with :func:`bayesmf.inference.load`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(self.state(), path)
        return path

    @abstractmethod
    def _draw(self, num_samples: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """``num_samples`` draws of every latent site, each with a leading sample dim."""

    def sample(self, num_samples: int = 200, seed: int | None = None) -> dict[str, torch.Tensor]:
        """Draws of every latent array and hyper-parameter."""
        gen = torch.Generator(device=self.model.global_mean.device)
        gen.manual_seed(0 if seed is None else seed)
        return self._draw(num_samples, gen)

    def _chunks(self, num_samples: int, n: int) -> list[int]:
        per_draw = max(1, n * max(getattr(self.model, "n_inputs", 1), 1) * 4)
        size = max(1, min(num_samples, int(5e7 // per_draw)))
        return [min(size, num_samples - s) for s in range(0, num_samples, size)]

    def _check(self, data: Ratings) -> Ratings:
        self.model.check_data(data)
        return data.to(self.model.global_mean.device)

    @torch.no_grad()
    def predictive_mean_draws(
        self, data: Ratings, num_samples: int = 100, seed: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draws of the mean ``f(z)`` at the entries of ``data`` and of the noise scale:
        shapes ``(S, n)`` and ``(S,)``."""
        data = self._check(data)
        gen = torch.Generator(device=data.device).manual_seed(seed)
        means, noises = [], []
        for s in self._chunks(num_samples, len(data)):
            z = self._draw(s, gen)
            means.append(self.model.mean(z, data.rows, data.cols))
            noises.append(z[self.model.noise_site])
        return torch.cat(means), torch.cat(noises)

    @torch.no_grad()
    def predict(
        self, data: Ratings, num_samples: int = 100, clamp: bool = False, seed: int = 0
    ) -> torch.Tensor:
        """Posterior predictive mean at the entries of ``data`` (Monte Carlo over ``q``).

        With ``clamp=True`` the mean is clamped to ``data.scale``.
        """
        mu, _ = self.predictive_mean_draws(data, num_samples, seed)
        pred = mu.mean(0)
        return data.clamp(pred) if clamp else pred

    @torch.no_grad()
    def predictive_samples(
        self, data: Ratings, num_samples: int = 500, seed: int = 0
    ) -> torch.Tensor:
        """Draws ``x ~ p(x | z) q(z)`` at the entries of ``data``, shape ``(S, n)``."""
        mu, noise = self.predictive_mean_draws(data, num_samples, seed)
        gen = torch.Generator(device=mu.device).manual_seed(seed + 1)
        return mu + noise[:, None] * torch.randn(mu.shape, generator=gen, device=mu.device)

    @torch.no_grad()
    def predict_interval(
        self, data: Ratings, level: float = 0.9, num_samples: int = 500, seed: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Central ``level`` posterior predictive interval ``(lower, upper)`` per entry."""
        if not 0.0 < level < 1.0:
            raise ValueError(f"level must be in (0, 1), got {level}")
        x = self.predictive_samples(data, num_samples, seed)
        q = torch.tensor([(1 - level) / 2, (1 + level) / 2], device=x.device, dtype=x.dtype)
        lo, hi = torch.quantile(x, q, dim=0)
        return lo, hi

    @torch.no_grad()
    def log_likelihood(self, data: Ratings, num_samples: int = 200, seed: int = 0) -> torch.Tensor:
        """Pointwise ``log p(x_i | z_s)`` for draws ``z_s ~ q``, shape ``(S, n)``."""
        data = self._check(data)
        gen = torch.Generator(device=data.device).manual_seed(seed)
        out = []
        for s in self._chunks(num_samples, len(data)):
            z = self._draw(s, gen)
            out.append(self.model.log_likelihood(z, data.rows, data.cols, data.values))
        return torch.cat(out)

    def to_inference_data(
        self, test: Ratings | None = None, num_samples: int | None = None, **kw: Any
    ):
        """ArviZ ``InferenceData`` of this fit (:func:`bayesmf.diagnostics.to_inference_data`)."""
        from ..diagnostics.arviz import to_inference_data

        return to_inference_data(self, test=test, num_samples=num_samples, **kw)
