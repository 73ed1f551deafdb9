"""Standardizer and clamp."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from bayesmf.data.containers import Ratings
from bayesmf.data.normalize import Standardizer, clamp
from bayesmf.data.synthetic import synthetic_ratings


@pytest.fixture()
def ratings() -> Ratings:
    R, _ = synthetic_ratings(120, 80, density=0.2, biases=True, scale=(1, 5), seed=2)
    return R


def test_global_round_trip(ratings: Ratings) -> None:
    st = Standardizer().fit(ratings)
    Z = st.transform(ratings)
    assert isinstance(Z, Ratings)
    assert float(Z.values.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(Z.values.std()) == pytest.approx(1.0, abs=1e-5)
    assert torch.allclose(st.inverse(Z.values), ratings.values, atol=1e-5)
    assert float(st.mean) == pytest.approx(float(ratings.values.mean()), abs=1e-5)
    assert float(st.std) == pytest.approx(float(ratings.values.std()), abs=1e-5)
    # same entries, ids and shape; scale mapped to standardised units
    assert torch.equal(Z.rows, ratings.rows) and Z.shape == ratings.shape
    lo, hi = Z.scale
    assert lo == pytest.approx((1 - float(st.mean)) / float(st.std), abs=1e-5)
    assert hi == pytest.approx((5 - float(st.mean)) / float(st.std), abs=1e-5)
    assert ratings.values.min() >= 1  # input untouched


def test_tensors_and_arrays(ratings: Ratings) -> None:
    st = Standardizer().fit(ratings.values.numpy())
    z = st.transform(ratings.values)
    assert isinstance(z, torch.Tensor)
    assert torch.allclose(st.inverse(z), ratings.values, atol=1e-5)
    assert torch.allclose(st.inverse(np.asarray([0.0])), st.mean.reshape(1))
    expected_std = torch.stack([st.std, 2 * st.std])
    assert torch.allclose(st.inverse_std(torch.tensor([1.0, 2.0])), expected_std)


def test_fit_transform_and_repr(ratings: Ratings) -> None:
    st = Standardizer()
    assert "unfitted" in repr(st)
    Z = st.fit_transform(ratings)
    assert float(Z.values.std()) == pytest.approx(1.0, abs=1e-5)
    assert "mean=" in repr(st)


@pytest.mark.parametrize("per", ["row", "col"])
def test_per_row_col_centring(ratings: Ratings, per: str) -> None:
    st = Standardizer(per=per).fit(ratings)
    Z = st.transform(ratings)
    assert Z.scale is None
    idx = Z.rows if per == "row" else Z.cols
    size = Z.n_rows if per == "row" else Z.n_cols
    sums = torch.zeros(size).index_add_(0, idx, Z.values)
    assert torch.allclose(sums, torch.zeros(size), atol=1e-3)  # each row/col centred
    assert float(Z.values.std()) == pytest.approx(1.0, abs=1e-5)
    back = st.inverse(Z.values, rows=ratings.rows, cols=ratings.cols)
    assert torch.allclose(back, ratings.values, atol=1e-5)
    assert st.mean.shape == (size,)
    with pytest.raises(ValueError, match="needs"):
        st.inverse(Z.values)
    with pytest.raises(ValueError, match="needs a Ratings"):
        Standardizer(per=per).fit(ratings.values)


def test_per_row_empty_rows_use_global_mean() -> None:
    R = Ratings([0, 0, 2], [0, 1, 1], [1.0, 3.0, 5.0], shape=(3, 2))
    st = Standardizer(per="row").fit(R)
    assert st.mean.tolist() == pytest.approx([2.0, 3.0, 5.0])


def test_unfitted_and_bad_per() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        Standardizer().transform(torch.ones(3))
    with pytest.raises(ValueError, match="per must be"):
        Standardizer(per="cell")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no values"):
        Standardizer().fit(torch.tensor([]))
    with pytest.raises(ValueError, match="NaN"):
        Standardizer().fit(torch.tensor([1.0, float("nan")]))


def test_constant_values_warn(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="bayesmf.data.normalize"):
        st = Standardizer().fit(torch.full((5,), 3.0))
    assert float(st.std) == 1.0
    assert "zero spread" in caplog.text
    assert st.transform(torch.tensor([3.0, 4.0])).tolist() == [0.0, 1.0]


def test_clamp() -> None:
    v = torch.tensor([-1.0, 2.5, 7.0])
    assert clamp(v, (1, 5)).tolist() == [1.0, 2.5, 5.0]
    assert clamp(v, None) is v
    assert clamp([0.0, 9.0], (1.0, 5.0)).tolist() == [1.0, 5.0]
    with pytest.raises(ValueError, match="low < high"):
        clamp(v, (5, 1))
