"""The loop's optimisers: torch's Adam steps without torch.optim's compiler import."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from bayesmf.inference.optim import Adam, LazyAdam


def _params(seed: int) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(7, 3, generator=gen)),
            torch.nn.Parameter(torch.randn(4, generator=gen))]


def _run(params: list[torch.nn.Parameter], opt, steps: int, gamma: float = 0.9) -> None:
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        sum(((p - 1.0) ** 3).sum() for p in params).backward()
        opt.step()
        for g in opt.param_groups:
            g["lr"] = g["lr"] * gamma


@pytest.mark.parametrize("fused", [True, False])
def test_adam_takes_torchs_steps_and_shares_its_state_dict(fused):
    """Same parameters as torch.optim.Adam over decaying-lr steps, fused or multi-tensor;
    a state saved by either continues in the other exactly."""
    ours, theirs = _params(0), _params(0)
    a = Adam(ours, lr=0.05, fused=fused)
    b = torch.optim.Adam(theirs, lr=0.05, fused=fused, foreach=None if fused else True)
    _run(ours, a, 15)
    _run(theirs, b, 15)
    for p, q in zip(ours, theirs, strict=True):
        assert torch.equal(p, q)
    a2, b2 = Adam(theirs, lr=1.0, fused=fused), torch.optim.Adam(ours, lr=1.0, fused=fused)
    a2.load_state_dict(b.state_dict())  # theirs continue under ours, ours under theirs
    b2.load_state_dict(a.state_dict())
    assert a2.param_groups[0]["lr"] == pytest.approx(0.05 * 0.9**15)
    assert float(a2.state[theirs[0]]["step"]) == 15
    _run(theirs, a2, 5)
    _run(ours, b2, 5)
    for p, q in zip(ours, theirs, strict=True):
        assert torch.equal(p, q)


def test_optimisers_refuse_what_they_cannot_step():
    p = torch.nn.Parameter(torch.zeros(4, 2))
    with pytest.raises(ValueError, match="empty"):
        Adam([], lr=0.1)
    with pytest.raises(ValueError, match="Adam settings"):
        Adam([p], lr=-1.0)
    with pytest.raises(ValueError, match="more than one group"):
        Adam([{"params": [p]}, {"params": [p]}])
    p.grad = torch.zeros(4, 2).to_sparse()
    with pytest.raises(RuntimeError, match="LazyAdam"):
        Adam([p]).step()
    other = torch.nn.Parameter(torch.zeros(1))
    with pytest.raises(ValueError, match="other parameter groups"):
        Adam([p, other]).load_state_dict(Adam([p]).state_dict())


def test_lazy_adam_state_round_trips_with_integer_step_records():
    """LazyAdam's per-row step record stays an integer tensor through state_dict."""
    from bayesmf.inference.guides import gather_rows

    p = torch.nn.Parameter(torch.zeros(5, 2))
    opt = LazyAdam([p], lr=0.1, dense_fraction=1.0)
    gather_rows(p, torch.tensor([1, 3])).sum().backward()
    opt.step()
    q = torch.nn.Parameter(p.detach().clone())
    opt2 = LazyAdam([q], lr=0.1, dense_fraction=1.0)
    opt2.load_state_dict(opt.state_dict())
    assert opt2.state[q]["last_step"].dtype == torch.long
    for o, w in ((opt, p), (opt2, q)):
        o.zero_grad()
        gather_rows(w, torch.tensor([0, 3])).sum().backward()
        o.step()
    assert torch.equal(p, q)


def test_a_fit_does_not_import_torchs_compiler():
    """torch.optim.Optimizer's first call imports torch._dynamo (1.5 CPU s on the test
    machine, a third of a default fit); the loop's optimisers do not."""
    code = (
        "import sys\n"
        "from bayesmf import data, inference, models\n"
        "R, _ = data.synthetic_ratings(n_rows=20, n_cols=15, rank=2, density=0.5, seed=0)\n"
        "inference.fit_svi(models.BayesianMF(20, 15, rank=2), R, epochs=2, progress=False)\n"
        "inference.fit_svi(models.BayesianMF(20, 15, rank=2), R, epochs=2, batch_size=50,\n"
        "                  collapse_rows=False, progress=False)\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout + out.stderr
