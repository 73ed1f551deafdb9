"""Metrics: AUC against a brute-force pair count (ties = 1/2), errors, coverage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bayesmf.diagnostics import auc, coverage, mae, mse, rmse


def brute_force_auc(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_pair_count_with_ties(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random(300) < 0.3).astype(float)
    s = np.round(rng.random(300) + 0.3 * y, 1)  # rounding makes many ties
    assert auc(y, s) == pytest.approx(brute_force_auc(y, s), abs=1e-12)
    assert auc(torch.tensor(y), torch.tensor(s)) == pytest.approx(auc(y, s))


def test_auc_extremes_and_errors():
    assert auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert auc([0, 1, 0, 1], [0.5] * 4) == 0.5
    with pytest.raises(ValueError, match="both positive and negative"):
        auc([1, 1], [0.1, 0.2])
    with pytest.raises(ValueError, match="0/1"):
        auc([0, 2], [0.1, 0.2])


def test_errors_and_coverage():
    y, p = np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.5, 2.0, 2.0, 5.0])
    assert mse(y, p) == pytest.approx((0.25 + 0 + 1 + 1) / 4)
    assert rmse(y, p) == pytest.approx(np.sqrt(mse(y, p)))
    assert mae(y, p) == pytest.approx(2.5 / 4)
    assert coverage(y, y - 0.5, y + 0.5) == 1.0
    assert coverage(y, p - 0.6, p + 0.6) == 0.5
    with pytest.raises(ValueError, match="shapes differ"):
        rmse([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        mae([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="lower bounds exceed"):
        coverage([1.0], [2.0], [0.0])
    with pytest.raises(ValueError, match="empty"):
        rmse([], [])
