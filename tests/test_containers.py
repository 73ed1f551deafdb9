"""Validation and transforms of the Ratings / Network / Pairs containers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bayesmf.data import Network, Pairs, Ratings


def small() -> Ratings:
    return Ratings(
        [0, 1, 1, 2],
        [2, 0, 1, 1],
        [4.0, 3.0, 5.0, 1.0],
        shape=(3, 3),
        row_ids=["a", "b", "c"],
        col_ids=[10, 20, 30],
        scale=(1, 5),
    )


def test_ratings_basic_views():
    R = small()
    assert (R.n_rows, R.n_cols, len(R)) == (3, 3, 4)
    X = R.to_dense()
    assert X[1, 1] == 5.0 and torch.isnan(X[0, 0])
    assert R.mask().sum() == 4
    assert R.row_counts().tolist() == [1, 2, 1]
    assert R.col_counts().tolist() == [1, 2, 1]
    assert R.to_scipy().toarray()[2, 1] == 1.0
    df = R.to_dataframe()
    assert df["user"].tolist() == ["a", "b", "b", "c"] and df["item"].tolist() == [30, 10, 20, 20]
    assert R.row_index(["c", "a"]).tolist() == [2, 0]
    with pytest.raises(KeyError, match="zz"):
        R.row_index(["zz"])
    T = R.transpose()
    assert T.shape == (3, 3) and T.to_dense()[2, 0] == 4.0 and list(T.row_ids) == [10, 20, 30]
    assert R.clamp(torch.tensor([0.0, 7.0])).tolist() == [1.0, 5.0]


def test_subset_keeps_shape_and_ids():
    R = small()
    S = R.subset([3, 0])
    assert S.shape == R.shape and list(S.row_ids) == ["a", "b", "c"]
    assert S.values.tolist() == [1.0, 4.0]
    S2 = R.subset(torch.tensor([True, False, True, False]))
    assert S2.values.tolist() == [4.0, 5.0]
    with pytest.raises(ValueError, match="repeats"):
        R.subset([0, 0])
    with pytest.raises(ValueError, match="empty"):
        R.subset(torch.zeros(4, dtype=torch.bool))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"values": [1.0, float("nan"), 2.0]}, "NaN/inf at positions \\[1\\]"),
        ({"values": [1.0, float("inf"), 2.0]}, "NaN/inf"),
        ({"rows": [0, -1, 1]}, "row indices out of range .* positions \\[1\\]"),
        ({"cols": [0, 1, 5]}, "column indices out of range .* positions \\[2\\]"),
        (
            {"rows": [0, 0, 1], "cols": [1, 1, 0]},
            "duplicate \\(row, col\\) pairs: \\[\\[0, 1\\]\\]",
        ),
        ({"rows": [], "cols": [], "values": []}, "empty"),
        ({"values": [1.0, 2.0]}, "same length"),
        ({"row_ids": ["x", "x"]}, "row_ids are not unique"),
        ({"row_ids": ["x"]}, "row_ids/col_ids have 1/2 entries"),
        ({"rows": [0.5, 1, 1]}, "integer"),
        ({"scale": (5, 1)}, "low < high"),
        ({"row_features": np.ones((3, 2))}, "row_features must have shape"),
        ({"col_features": np.array([[1.0], [np.nan]])}, "col_features contain NaN"),
    ],
)
def test_ratings_bad_input(kwargs, message):
    base = {"rows": [0, 1, 1], "cols": [1, 0, 1], "values": [1.0, 2.0, 3.0], "shape": (2, 2)}
    base.update(kwargs)
    with pytest.raises(ValueError, match=message):
        Ratings(**base)


def test_with_values_checks():
    R = small()
    assert R.with_values(R.values * 2).values.tolist() == [8.0, 6.0, 10.0, 2.0]
    with pytest.raises(ValueError, match="NaN"):
        R.with_values(torch.tensor([1.0, float("nan"), 1.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        R.with_values(torch.ones(3))


def test_features_from_dataframe_keep_names():
    import pandas as pd

    f = pd.DataFrame({"drama": [1, 0, 1], "comedy": [0, 1, 0]})
    R = Ratings([0, 1], [0, 2], [1.0, 2.0], shape=(2, 3), col_features=f)
    assert R.col_feature_names == ("drama", "comedy")
    assert R.col_features.shape == (3, 2) and R.col_features.dtype == torch.float32


def test_network_from_adjacency_and_pairs():
    A = np.array([[0, 1, 1, 0], [1, 0, 0, 0], [1, 0, 0, 1], [0, 0, 1, 0]])
    net = Network.from_adjacency(A, names=["w", "x", "y", "z"])
    assert net.n_edges == 3 and net.n_pairs == 6
    assert torch.equal(net.adjacency, torch.as_tensor(A, dtype=torch.float32))
    assert net.degrees().tolist() == [2, 1, 2, 1]
    p = net.pairs()
    assert len(p) == 6 and int(p.labels.sum()) == 3
    assert torch.all(p.i < p.j)
    R = net.to_ratings()
    assert len(R) == 12 and torch.equal(
        R.to_dense(fill=0.0), torch.as_tensor(A, dtype=torch.float32)
    )
    G = net.to_networkx()
    assert set(G.edges()) == {("w", "x"), ("w", "y"), ("y", "z")}


def test_network_unobserved_pairs_are_excluded():
    net = Network(4, [[0, 1]], unobserved=[[2, 3], [0, 2]])
    assert net.n_pairs == 4
    p = net.pairs()
    keys = set(zip(p.i.tolist(), p.j.tolist(), strict=True))
    assert (2, 3) not in keys and (0, 2) not in keys and (0, 1) in keys
    M = net.observed_mask()
    assert not M[3, 2] and not M[0, 0] and M[1, 3]
    with pytest.raises(ValueError, match="both edges and unobserved"):
        Network(4, [[0, 1]], unobserved=[[0, 1]])


@pytest.mark.parametrize(
    ("A", "message"),
    [
        (np.zeros((2, 3)), "square"),
        (np.array([[0, 1], [0, 0]]), "not symmetric at pairs \\[\\[0, 1\\]\\]"),
        (np.array([[1, 0], [0, 0]]), "self-loops .* nodes \\[0\\]"),
        (np.array([[0, 2], [2, 0]]), "binary"),
        (np.array([[0, np.nan], [np.nan, 0]]), "NaN"),
    ],
)
def test_network_bad_adjacency(A, message):
    with pytest.raises(ValueError, match=message):
        Network.from_adjacency(A)


def test_network_bad_edges():
    with pytest.raises(ValueError, match="self-loops"):
        Network(3, [[1, 1]])
    with pytest.raises(ValueError, match="i < j"):
        Network(3, [[2, 1]])
    with pytest.raises(ValueError, match="duplicate"):
        Network(3, [[0, 1], [0, 1]])
    with pytest.raises(ValueError, match="out of range"):
        Network(3, [[0, 3]])


def test_pairs_validation():
    with pytest.raises(ValueError, match="i < j"):
        Pairs([1], [0], [1], n_nodes=3)
    with pytest.raises(ValueError, match="0/1"):
        Pairs([0], [1], [0.5], n_nodes=3)


def test_replacing_features_renames_columns():
    R = Ratings(
        [0, 1],
        [0, 1],
        [1.0, 2.0],
        shape=(2, 2),
        row_features=np.ones((2, 2)),
        row_feature_names=("age", "height"),
    )
    assert R.row_feature_names == ("age", "height")
    R3 = R.replace(row_features=np.ones((2, 3)))
    assert R3.row_feature_names == ("f0", "f1", "f2")
    assert R.subset([0]).row_feature_names == ("age", "height")


def test_replace_validates_again():
    R = small().subset([0, 1])
    with pytest.raises(ValueError, match="duplicate"):
        R.replace(rows=[0, 0], cols=[2, 2])


def test_mixed_type_ids_are_a_value_error():
    with pytest.raises(ValueError, match="mix types"):
        Ratings([0, 1], [0, 0], [1.0, 2.0], shape=(2, 1), row_ids=np.array([1, "a"], dtype=object))


def test_feature_dataframe_with_id_index_is_aligned_by_id():
    import pandas as pd

    f = pd.DataFrame({"drama": [1.0, 0.0, 5.0]}, index=[30, 10, 20])
    R = Ratings([0], [0], [1.0], shape=(1, 3), col_ids=[10, 20, 30], col_features=f)
    assert R.col_features[:, 0].tolist() == [0.0, 5.0, 1.0]
    with pytest.raises(ValueError, match="no row for ids \\[40\\]"):
        Ratings([0], [0], [1.0], shape=(1, 3), col_ids=[10, 20, 40], col_features=f)


def test_network_to_ratings_keeps_name():
    net = Network.from_adjacency(np.array([[0, 1], [1, 0]]), name="tiny")
    assert net.to_ratings().name == "tiny"
