"""MAML of the EML baseline (Iwata, 2021, Table 1): inner loop, adaptation, meta-training."""

from __future__ import annotations

import pytest
import torch

from bayesmf import data, inference, models
from bayesmf.data import Ratings

pytestmark = pytest.mark.usefixtures("one_thread")


def _low_rank_task(N: int = 12, M: int = 10, seed: int = 0, density: float = 0.6
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, 2, generator=g) @ torch.randn(2, M, generator=g)
    X = 1.5 + X + 0.1 * torch.randn(N, M, generator=g)  # an offset to learn
    B = (torch.rand(N, M, generator=g) < density).float()
    return (X * B)[None], B[None]


def _maml(**kw) -> inference.MAML:
    torch.manual_seed(0)
    net = models.ExchangeableMatrixNet(channels=8, layers=2, dropout=0.0)
    opts = dict(inner_steps=5, inner_lr=0.05)
    opts.update(kw)
    return inference.MAML(net, **opts).eval()


def test_inner_loop_reduces_the_training_loss():
    maml = _maml()
    X, B = _low_rank_task()
    params, losses = maml.adapt(X, B)
    assert losses.shape == (6, 1) and all(v.shape[0] == 1 for v in params.values())
    # the same inner objective (split of the first step) before and after the 5 steps
    inp = maml._splits(B)[0, 0]
    buffers = dict(maml.net.named_buffers())
    before = maml._inner_loss(dict(maml.net.named_parameters()), buffers, X[0], inp, B[0] - inp)
    after = maml._inner_loss({k: v[0] for k, v in params.items()}, buffers, X[0], inp,
                             B[0] - inp)
    before, after = before.detach(), after.detach()
    assert float(after) < 0.8 * float(before), (float(before), float(after))
    losses = losses.detach()
    assert float(losses[-1, 0]) < float(losses[-2, 0])  # the last step on its own split
    # the initialisation itself is not changed by adaptation
    p0 = dict(maml.net.named_parameters())
    assert all(not torch.equal(params[k][0], p0[k]) for k in p0)


def test_adapted_predictions_depend_on_the_tasks_observed_entries():
    maml = _maml()
    X, B = _low_rank_task(seed=1)
    X2, B2 = _low_rank_task(seed=2)
    both = maml.predict(torch.cat([X, X2]), torch.cat([B, B2]))
    assert both.shape == (2, 12, 10)
    with torch.no_grad():
        plain = maml.net.predict(X, B)
    assert not torch.allclose(maml.predict(X, B), plain, atol=1e-4)  # adaptation acts
    # changing one observed value changes the adapted predictions elsewhere
    n, m = B[0].nonzero()[0]
    Xc = X.clone()
    Xc[0, n, m] += 3.0
    diff = (maml.predict(Xc, B) - maml.predict(X, B)).abs().detach()
    diff[0, n, m] = 0
    assert float(diff.max()) > 1e-3
    # unobserved values are never read
    torch.testing.assert_close(maml.predict(X + 10 * (1 - B), B), maml.predict(X, B))
    # deterministic in eval mode
    torch.testing.assert_close(maml.predict(X, B), maml.predict(X, B))


def test_meta_gradient_reaches_the_initialisation_and_training_runs(tmp_path):
    for first_order in (False, True):
        maml = _maml(first_order=first_order).train()
        X, B = _low_rank_task(seed=3)
        pred = maml.predict(X, B)
        ((pred - X) ** 2).mean().backward()
        grads = [p.grad for p in maml.net.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert sum(float(g.abs().sum()) for g in grads) > 0
    g = torch.Generator().manual_seed(0)
    U, V = torch.randn(80, 2, generator=g), torch.randn(60, 2, generator=g)
    r, c = (torch.rand(80, 60, generator=g) < 0.5).nonzero(as_tuple=True)
    R = Ratings(r, c, (U @ V.T)[r, c], shape=(80, 60))
    s = data.EpisodeSampler(R, 10, 10, 0.5, batch_size=4, seed=0)
    torch.manual_seed(0)
    maml, res = inference.maml_train(
        models.ExchangeableMatrixNet(channels=8, layers=2, dropout=0.0), s, s, steps=40,
        lr=3e-3, inner_lr=0.05, val_episodes=8, eval_every=20, checkpoint=tmp_path / "c.pt",
        progress=False)
    assert res.finished and res.steps == 40 and len(res.evaluations) == 2
    assert res.best_val < 1.5 and res.model is maml
    # save -> inference.load rebuilds the wrapper and its network: identical predictions
    ep = s.fixed(4, seed=3)[0]
    back = inference.load(res.save(tmp_path / "maml.pt"))
    assert isinstance(back.model, inference.MAML) and back.model.config() == maml.config()
    assert torch.equal(back.predict(ep), res.predict(ep))
