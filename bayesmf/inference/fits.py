"""The one result interface of every fit, whatever the engine, and :func:`load`.

Every fitted object (a MAP fit of ALS or SGD, a variational posterior, Gibbs draws, the block
model, deep MF, a meta-trained prior) is a :class:`Fit`, in the manner of scikit-learn's
estimators and of ``pyro.contrib.forecast``'s two forecasters with one call signature:

* ``predict(data, *, clamp=False, num_samples=None, seed=0, statistic="mean")``: the
  prediction at the entries of ``data`` (the posterior predictive mean where a posterior
  exists; ``statistic="median"``: the posterior median of ``E[x | z]`` per entry, a point
  summary that a few extreme draws or one stray mode do not move, see :func:`summarise`);
* ``predict_interval(data, level=0.9, *, num_samples=None, seed=0)``: a central predictive
  interval, or :class:`NoPosteriorError` for a point estimate;
* ``to_inference_data(data=None, ...)``: ArviZ ``InferenceData``;
* ``save(path)``: one safe file (:mod:`~bayesmf.inference.files`) that :func:`load` (also
  ``bayesmf.load``) reads back, recognising its kind.

A subclass sets ``kind`` (the file tag) and implements ``predict``, ``_payload`` and
``_from_payload``; it is registered for :func:`load` by being defined.
"""

from __future__ import annotations

import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from . import files

__all__ = [
    "STATISTICS", "Fit", "NoPosteriorError", "check_statistic", "data_info", "fit_class", "load",
    "plain_settings", "summarise",
]

#: the point summaries ``predict(..., statistic=)`` gives of the draws of ``E[x | z]``
STATISTICS = ("mean", "median")

_REGISTRY: dict[str, type[Fit]] = {}


class NoPosteriorError(TypeError):
    """The fit is a point estimate: it has no posterior to draw intervals or samples from."""


def check_statistic(statistic: str) -> str:
    """``statistic`` if it is one of :data:`STATISTICS`, else a ``ValueError``."""
    if statistic not in STATISTICS:
        raise ValueError(f"statistic must be one of {list(STATISTICS)}, got {statistic!r}")
    return statistic


def summarise(draws: torch.Tensor, statistic: str = "mean") -> torch.Tensor:
    """Reduce draws ``(S, n)`` of ``E[x | z]`` to one value per entry.

    ``"mean"`` is the posterior predictive mean: what a log predictive density, a calibration
    check or an expected squared error needs. ``"median"`` is the posterior median of
    ``E[x | z]``: a ranking or point summary that a heavy tail of the draws does not pull
    (for a link probability, the median of ``sigmoid(logit)`` is the sigmoid of the
    logit's median). Where the draws come from a mixture of modes that disagree in their
    tails (several SVI restarts, NUTS chains that stay in their modes), the mean ranks a pair
    high when one mode alone says so, the median when most do: on NIPS234 the
    latent-feature model's three-restart mixture ranked validation pairs better by the
    median (AUC 0.956 against 0.950 by the mean, three nested carves of a training split);
    single fits tied (``benchmarks/links.py``, ``--rank-by``).

    Examples
    --------
    >>> import torch
    >>> d = torch.tensor([[0.0, 1.0], [0.1, 1.0], [0.9, 1.0]])
    >>> summarise(d).tolist(), summarise(d, "median").tolist()
    ([0.3333333432674408, 1.0], [0.10000000149011612, 1.0])
    """
    check_statistic(statistic)
    if statistic == "mean":
        return draws.mean(0)
    S = draws.shape[0]
    upper = draws.kthvalue(S // 2 + 1, dim=0).values  # no size limit, unlike torch.quantile
    return upper if S % 2 else (draws.kthvalue(S // 2, dim=0).values + upper) / 2


def plain_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings that can be recorded in a file (plain values, lists and dicts)."""

    def plain(v: Any) -> bool:
        if isinstance(v, (list, tuple)):
            return all(plain(x) for x in v)
        if isinstance(v, dict):
            return all(isinstance(k, str) and plain(x) for k, x in v.items())
        return isinstance(v, (int, float, str, bool, type(None)))

    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in settings.items() if plain(v)}


def data_info(data: Any) -> dict[str, Any]:
    """Shape, name, scale and original ids of training data (for ArviZ coords and saving);
    ids of any type survive :meth:`Fit.save` / :func:`load`."""
    info: dict[str, Any] = {
        "name": getattr(data, "name", type(data).__name__),
        "shape": list(data.shape),
        "n": len(data),
        "scale": None if getattr(data, "scale", None) is None else list(data.scale),
    }
    for key in ("row_ids", "col_ids", "names"):
        ids = getattr(data, key, None)
        if ids is not None:
            info[key] = np.asarray(ids)
    return info


def _encode_info(info: dict[str, Any]) -> dict[str, Any]:
    return {k: files.encode_ids(v) if isinstance(v, np.ndarray) else v for k, v in info.items()}


def _decode_info(info: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in info.items():
        out[k] = files.decode_ids(v) if k in ("row_ids", "col_ids", "names") else v
    return out


def _plain_history(history: Any) -> Any:
    if isinstance(history, dict):
        return {k: _plain_history(v) for k, v in history.items()}
    if isinstance(history, (list, tuple)):
        return [_plain_history(x) for x in history]
    if isinstance(history, torch.Tensor):
        return history.tolist()
    return history


class Fit(ABC):
    """Base class of every fitted object; see the module docstring."""

    #: the tag of saved files of this kind (set by each subclass)
    kind: ClassVar[str] = ""
    #: whether a posterior exists to draw intervals and samples from
    has_posterior: ClassVar[bool] = True
    #: how the fit was made (recorded in ArviZ attributes and reports)
    inference_name: ClassVar[str] = "fit"

    settings: dict[str, Any]
    train_info: dict[str, Any]
    history: dict[str, list[float]]
    fit_seconds: float

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        if cls.kind:
            _REGISTRY[cls.kind] = cls

    # ------------------------------------------------------------ interface
    @abstractmethod
    def predict(
        self, data: Any, *, clamp: bool = False, num_samples: int | None = None, seed: int = 0,
        statistic: str = "mean",
    ) -> torch.Tensor:
        """Prediction at the entries of ``data`` (posterior predictive mean where a posterior
        exists, or with ``statistic="median"`` the posterior median; a point estimate is the
        same for both); ``clamp=True`` clamps to ``data.scale``."""

    def predict_interval(
        self, data: Any, level: float = 0.9, *, num_samples: int | None = None, seed: int = 0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Central ``level`` predictive interval ``(lower, upper)`` at the entries of ``data``."""
        raise NoPosteriorError(
            f"{type(self).__name__} is a point estimate ({self.inference_name}): it has no "
            "posterior, so no predictive interval. Fit a Bayesian model (fit_svi, fit_gibbs) "
            "for intervals."
        )

    def to_inference_data(self, data: Any = None, **kw: Any):
        """ArviZ ``InferenceData`` of the fit (held-out ``data`` optional)."""
        raise NoPosteriorError(
            f"{type(self).__name__} is a point estimate: there are no posterior draws for "
            "ArviZ."
        )

    # --------------------------------------------------------------- saving
    @property
    def train_fingerprint(self) -> dict[str, Any] | None:
        """Fingerprint of the training data (recorded when saving)."""
        return self.train_info.get("fingerprint")

    @abstractmethod
    def _payload(self) -> dict[str, Any]:
        """Everything needed to rebuild the fit, as tensors and plain values."""

    @classmethod
    @abstractmethod
    def _from_payload(
        cls, payload: dict[str, Any], device: str | torch.device | None = None
    ) -> Fit:
        """Rebuild the fit from :meth:`_payload`."""

    def _common_payload(self) -> dict[str, Any]:
        return {
            "train_info": _encode_info(self.train_info),
            "settings": plain_settings(self.settings),
            "history": _plain_history(self.history),
            "fit_seconds": float(self.fit_seconds),
        }

    @staticmethod
    def _common_from(payload: dict[str, Any]) -> dict[str, Any]:
        return {
            "train_info": _decode_info(payload["train_info"]),
            "settings": payload["settings"],
            "history": payload["history"],
            "fit_seconds": payload["fit_seconds"],
        }

    def save(self, path: str | Path) -> Path:
        """Save atomically to ``path``; read it back with :func:`bayesmf.load`."""
        return files.save_file(
            path, self.kind, self._payload(), fingerprint=self.train_fingerprint,
            settings=plain_settings(self.settings),
        )


def fit_class(kind: str) -> type[Fit]:
    """The fit class saved under the tag ``kind`` (a fit's ``kind``)."""
    from .. import inference  # noqa: F401  (registers every fit kind)

    if kind not in _REGISTRY:
        raise KeyError(f"unknown fit kind {kind!r} (known: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[kind]


def load(path: str | Path, device: str | torch.device | None = None) -> Fit:
    """Load any fit saved by ``save``, whatever the engine (also ``bayesmf.load``).

    Raises
    ------
    bayesmf.inference.files.FitFileError
        Naming the file, when it is missing, empty, damaged, foreign or of an unknown kind.
    """
    from .. import inference  # noqa: F401  (registers every fit kind)

    contents = files.load_file(path)
    cls = _REGISTRY.get(contents.kind)
    if cls is None:
        known = ", ".join(sorted(_REGISTRY))
        raise files.FitFileError(
            f"{path}: holds a {contents.kind!r}, which is not a fit (known kinds: {known})"
        )
    return cls._from_payload(contents.payload, device)


def deprecated_kwarg(kw: dict[str, Any], old: str, new: str, where: str) -> Any:
    """Pop an old keyword spelling with a DeprecationWarning (kept for one release)."""
    value = kw.pop(old)
    warnings.warn(f"{where}: '{old}=' is deprecated, use '{new}='", DeprecationWarning,
                  stacklevel=3)
    return value
