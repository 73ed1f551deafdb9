"""Converters from pandas, scipy and dense arrays to Ratings."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse

from bayesmf.data import Ratings, from_dataframe, from_dense, from_scipy


def _df() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "uid": ["carol", "alice", "bob", "alice", "carol"],
            "mid": [30, 10, 10, 20, 20],
            "stars": [4.0, 5.0, 3.0, 1.0, 2.0],
        },
        index=[100, 101, 102, 103, 104],
    )


# --------------------------------------------------------------------------- from_dataframe


def test_from_dataframe_maps_ids_in_sorted_order() -> None:
    df = _df()
    R = from_dataframe(df, "uid", "mid", "stars", scale=(1, 5), name="toy")
    assert isinstance(R, Ratings)
    assert R.shape == (3, 3) and len(R) == len(df)  # nothing dropped
    assert R.row_ids.tolist() == ["alice", "bob", "carol"]
    assert R.col_ids.tolist() == [10, 20, 30]
    assert R.scale == (1.0, 5.0) and R.name == "toy"
    back = R.to_dataframe().sort_values(["user", "item"]).reset_index(drop=True)
    expected = (
        df.rename(columns={"uid": "user", "mid": "item", "stars": "rating"})
        .sort_values(["user", "item"])
        .reset_index(drop=True)
    )
    pd.testing.assert_frame_equal(back, expected, check_dtype=False)


def test_duplicates_error_lists_pairs_and_rows() -> None:
    df = pd.concat([_df(), pd.DataFrame({"uid": ["bob"], "mid": [10], "stars": [5.0]},
                                        index=[200])])
    with pytest.raises(ValueError) as err:
        from_dataframe(df, "uid", "mid", "stars")
    msg = str(err.value)
    assert "('bob', 10)" in msg and "[102, 200]" in msg
    assert "duplicates='mean'" in msg


def test_duplicates_mean(caplog: pytest.LogCaptureFixture) -> None:
    df = pd.DataFrame({"user": [1, 1, 1, 2], "item": [7, 7, 8, 7], "rating": [1.0, 4.0, 2.0, 5.0]})
    with caplog.at_level(logging.INFO, logger="bayesmf.data.converters"):
        R = from_dataframe(df, duplicates="mean")
    assert "averaged 1 duplicated" in caplog.text
    assert len(R) == 3
    D = R.to_dense()
    assert D[0].tolist() == [2.5, 2.0] and D[1, 0].item() == 5.0 and torch.isnan(D[1, 1])


def test_duplicates_bad_mode() -> None:
    with pytest.raises(ValueError, match="duplicates must be 'error' or 'mean'"):
        from_dataframe(_df(), "uid", "mid", "stars", duplicates="first")


@pytest.mark.parametrize("bad", [np.nan, np.inf, "five"])
def test_non_finite_ratings_name_rows(bad: object) -> None:
    df = _df().astype({"stars": object})
    df.loc[103, "stars"] = bad
    with pytest.raises(ValueError, match=r"rows \[103\]"):
        from_dataframe(df, "uid", "mid", "stars")


def test_missing_columns_and_empty() -> None:
    with pytest.raises(ValueError, match=r"columns \['user', 'rating'\] not found"):
        from_dataframe(_df(), item="mid")
    with pytest.raises(ValueError, match="empty"):
        from_dataframe(pd.DataFrame({"user": [], "item": [], "rating": []}))
    with pytest.raises(TypeError):
        from_dataframe(np.zeros((3, 3)))  # type: ignore[arg-type]


def test_missing_ids_name_rows() -> None:
    df = _df()
    df.loc[102, "uid"] = None
    with pytest.raises(ValueError, match=r"'uid' has missing ids at rows \[102\]"):
        from_dataframe(df, "uid", "mid", "stars")


def test_features_aligned_by_id() -> None:
    item_feats = pd.DataFrame(
        {"f": [3.0, 1.0, 2.0, 9.0], "g": [0.0, 1.0, 0.0, 1.0]}, index=[30, 10, 20, 99]
    )
    user_feats = pd.DataFrame({"age": [30.0, 20.0, 40.0]}, index=["bob", "alice", "carol"])
    R = from_dataframe(
        _df(), "uid", "mid", "stars", item_features=item_feats, user_features=user_feats
    )
    assert R.col_features is not None and R.row_features is not None
    assert R.col_features[:, 0].tolist() == [1.0, 2.0, 3.0]
    assert R.row_features[:, 0].tolist() == [20.0, 30.0, 40.0]
    assert R.col_feature_names == ("f", "g") and R.row_feature_names == ("age",)


def test_features_missing_id_is_named() -> None:
    item_feats = pd.DataFrame({"f": [1.0, 2.0]}, index=[10, 20])
    with pytest.raises(ValueError, match=r"col_features has no row for ids \[30\]"):
        from_dataframe(_df(), "uid", "mid", "stars", item_features=item_feats)
    bad = pd.DataFrame({"f": ["a", "b", "c"]}, index=[10, 20, 30])
    with pytest.raises(ValueError, match="not numeric"):
        from_dataframe(_df(), "uid", "mid", "stars", item_features=bad)
    nan = pd.DataFrame({"f": [1.0, np.nan, 3.0]}, index=[10, 20, 30])
    with pytest.raises(ValueError, match=r"NaN/inf for ids \[20\]"):
        from_dataframe(_df(), "uid", "mid", "stars", item_features=nan)


def test_given_id_maps() -> None:
    R = from_dataframe(
        _df(), "uid", "mid", "stars", user_ids=["alice", "bob", "carol", "dave"],
        item_ids=[10, 20, 30, 40],
    )
    assert R.shape == (4, 4)
    with pytest.raises(ValueError, match=r"item ids \[30\] are not in the given item_ids"):
        from_dataframe(_df(), "uid", "mid", "stars", item_ids=[10, 20])


# --------------------------------------------------------------------------- from_scipy


def test_from_scipy_keeps_explicit_zeros() -> None:
    M = sparse.csr_matrix(([0.0, 2.0, 3.0], ([0, 1, 2], [1, 0, 2])), shape=(3, 4))
    R = from_scipy(M, scale=(0, 5), row_ids=["a", "b", "c"])
    assert len(R) == 3 and R.shape == (3, 4)
    assert R.to_dense()[0, 1].item() == 0.0
    assert R.row_ids.tolist() == ["a", "b", "c"]
    np.testing.assert_array_equal(R.to_scipy().toarray(), M.toarray())


def test_from_scipy_sums_coo_duplicates(caplog: pytest.LogCaptureFixture) -> None:
    M = sparse.coo_matrix(([1.0, 2.0, 4.0], ([0, 0, 1], [0, 0, 1])), shape=(2, 2))
    with caplog.at_level(logging.INFO, logger="bayesmf.data.converters"):
        R = from_scipy(M)
    assert "summed 1 duplicated" in caplog.text
    assert len(R) == 2 and R.to_dense()[0, 0].item() == 3.0


def test_from_scipy_errors() -> None:
    M = sparse.csr_matrix(([1.0, np.nan], ([0, 1], [1, 0])), shape=(2, 2))
    with pytest.raises(ValueError, match=r"NaN/inf at \(row, col\) \[\[1, 0\]\]"):
        from_scipy(M)
    with pytest.raises(ValueError, match="stores no entries"):
        from_scipy(sparse.csr_matrix((2, 2)))
    with pytest.raises(TypeError):
        from_scipy(np.eye(2))


def test_from_scipy_features() -> None:
    M = sparse.csr_matrix(np.array([[1.0, 0.0], [0.0, 2.0]]))
    feats = pd.DataFrame({"x": [5.0, 6.0]}, index=["q", "p"])
    R = from_scipy(M, col_ids=["p", "q"], col_features=feats)
    assert R.col_features is not None and R.col_features[:, 0].tolist() == [6.0, 5.0]
    with pytest.raises(ValueError, match="row_ids has 3 entries for 2 indices"):
        from_scipy(M, row_ids=[1, 2, 3])


# --------------------------------------------------------------------------- from_dense


def test_from_dense_default_mask() -> None:
    X = np.array([[1.0, np.nan, 3.0], [np.nan, np.inf, 0.0]])
    R = from_dense(X, scale=(0, 5))
    assert len(R) == 3
    assert R.rows.tolist() == [0, 0, 1] and R.cols.tolist() == [0, 2, 2]
    assert R.values.tolist() == [1.0, 3.0, 0.0]
    R2 = from_dense(torch.tensor(X))
    assert torch.equal(R2.values, R.values)


def test_from_dense_explicit_mask() -> None:
    X = np.array([[1.0, 2.0], [np.nan, 4.0]])
    mask = np.array([[True, False], [False, True]])
    R = from_dense(X, mask)
    assert R.values.tolist() == [1.0, 4.0]
    with pytest.raises(ValueError, match=r"mask is True, at \(row, col\) \[\[1, 0\]\]"):
        from_dense(X, np.ones((2, 2), dtype=bool))
    with pytest.raises(ValueError, match="mask has shape"):
        from_dense(X, np.ones((3, 2), dtype=bool))
    with pytest.raises(ValueError, match="boolean"):
        from_dense(X, np.full((2, 2), 2))
    assert len(from_dense(X, np.array([[1, 0], [0, 1]]))) == 2


def test_from_dense_errors() -> None:
    with pytest.raises(ValueError, match="two-dimensional"):
        from_dense(np.ones(3))
    with pytest.raises(ValueError, match="no observed entries"):
        from_dense(np.full((2, 2), np.nan))
