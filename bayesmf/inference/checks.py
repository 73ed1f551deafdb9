"""Argument checks shared by the engines (one wording for every engine's errors)."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

__all__ = ["check_positive", "check_rank", "check_int"]


def check_positive(name: str, value: Any) -> float:
    """``value`` as a float, or ValueError unless it is a finite number > 0."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not value > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def check_int(name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int, or ValueError unless it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_rank(rank: Any) -> int:
    """The number of latent factors, an integer >= 1."""
    return check_int("rank", rank)
