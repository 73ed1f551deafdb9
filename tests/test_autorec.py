"""AutoRec networks (bayesmf.models.AutoRec): masking, batch independence, fitting."""

from __future__ import annotations

import pytest
import torch

from bayesmf.models import AutoRec


def _low_rank(batch: int, n: int, m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, n, 2, generator=g)
    v = torch.randn(batch, m, 2, generator=g)
    X = u @ v.transpose(1, 2)
    mask = torch.rand(batch, n, m, generator=g) < 0.6
    return X, mask


def _fit(net: AutoRec, X: torch.Tensor, mask: torch.Tensor, steps: int = 300,
         lr: float = 1e-2) -> None:
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        net.objective(X, mask).sum().backward()
        opt.step()


def test_shapes_config_and_bad_arguments() -> None:
    torch.manual_seed(0)
    net = AutoRec(7, 5, by="user", hidden=(4, 3), batch=2, weight_decay=0.5)
    assert [tuple(w.shape) for w in net.weights] == [(2, 5, 4), (2, 4, 3), (2, 3, 5)]
    assert net.weight_decay.tolist() == [0.5, 0.5]
    assert net.config()["by"] == "user" and net.config()["hidden"] == [4, 3]
    assert net(torch.zeros(2, 7, 5)).shape == (2, 7, 5)
    with pytest.raises(ValueError, match="shape"):
        net(torch.zeros(3, 7, 5))
    with pytest.raises(ValueError, match="by"):
        AutoRec(3, 3, by="row")
    with pytest.raises(ValueError, match="weight_decay"):
        AutoRec(3, 3, batch=2, weight_decay=[0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="weight_decay"):
        AutoRec(3, 3, weight_decay=-1.0)
    with pytest.raises(ValueError, match="hidden"):
        AutoRec(3, 3, hidden=())


def test_unobserved_entries_are_ignored() -> None:
    torch.manual_seed(0)
    X, mask = _low_rank(3, 8, 6, seed=1)
    net = AutoRec(8, 6, by="item", batch=3, weight_decay=0.1)
    noisy = X + 100.0 * (~mask) * torch.randn(X.shape)
    assert torch.allclose(net.predict(X, mask), net.predict(noisy, mask))
    assert torch.allclose(net.objective(X, mask), net.objective(noisy, mask))
    # an observed entry does matter
    bumped = X.clone()
    i = mask.nonzero()[0]
    bumped[tuple(i)] += 1.0
    assert not torch.allclose(net.objective(X, mask), net.objective(bumped, mask))


def test_item_autorec_is_user_autorec_of_the_transpose() -> None:
    torch.manual_seed(0)
    X, mask = _low_rank(2, 8, 6, seed=2)
    item = AutoRec(8, 6, by="item", batch=2)
    user = AutoRec(6, 8, by="user", batch=2)
    user.load_state_dict(item.state_dict())
    a = item.predict(X, mask)
    b = user.predict(X.transpose(1, 2), mask.transpose(1, 2)).transpose(1, 2)
    assert torch.allclose(a, b, atol=1e-6)


def test_networks_of_a_batch_are_independent() -> None:
    torch.manual_seed(0)
    X, mask = _low_rank(3, 8, 6, seed=3)
    net = AutoRec(8, 6, by="user", batch=3, weight_decay=[0.0, 1.0, 10.0])
    net.objective(X, mask).sum().backward()
    g0 = [w.grad[0].clone() for w in net.weights]
    net.zero_grad()
    X2 = X.clone()
    X2[1:] = torch.randn_like(X2[1:])  # other matrices change, matrix 0 does not
    net.objective(X2, mask).sum().backward()
    assert all(torch.equal(a, w.grad[0]) for a, w in zip(g0, net.weights, strict=True))
    assert not torch.equal(g0[0], torch.zeros_like(g0[0]))
    # the penalty of each network uses its own lambda
    sq = sum(w.detach().pow(2).sum((1, 2)) for w in net.weights)
    assert torch.allclose(net.penalty(), 0.5 * torch.tensor([0.0, 1.0, 10.0]) * sq)


@pytest.mark.parametrize("by", ["item", "user"])
def test_fitting_predicts_hidden_entries_of_low_rank_matrices(by: str) -> None:
    torch.manual_seed(0)
    X, mask = _low_rank(4, 20, 20, seed=4)
    g = torch.Generator().manual_seed(5)
    train = mask & (torch.rand(mask.shape, generator=g) < 0.8)
    test = mask & ~train
    net = AutoRec(20, 20, by=by, batch=4, weight_decay=0.01)
    with torch.no_grad():
        before = float(((net.predict(X, train) - X)[test] ** 2).mean())
    _fit(net, X, train)
    pred = net.predict(X, train).detach()
    mse = float(((pred - X)[test] ** 2).mean())
    train_mse = float(((pred - X)[train] ** 2).mean())
    # the per-matrix observed mean as the baseline
    mu = (X * train).sum((1, 2)) / train.sum((1, 2))
    mean_mse = float(((mu[:, None, None] - X)[test] ** 2).mean())
    assert train_mse < 0.1 * mean_mse
    assert mse < 0.8 * mean_mse
    assert mse < 0.5 * before


def test_larger_weight_decay_shrinks_the_weights() -> None:
    torch.manual_seed(0)
    X, mask = _low_rank(1, 10, 10, seed=6)
    Xr, mr = X.expand(3, 10, 10).clone(), mask.expand(3, 10, 10).clone()
    net = AutoRec(10, 10, batch=3, weight_decay=[0.0, 1.0, 100.0])
    with torch.no_grad():  # identical starting weights
        for w in (*net.weights, *net.biases):
            w[1:] = w[0]
    _fit(net, Xr, mr, steps=200)
    sq = sum(w.detach().pow(2).sum((1, 2)) for w in net.weights)
    assert float(sq[0]) > float(sq[1]) > float(sq[2])
