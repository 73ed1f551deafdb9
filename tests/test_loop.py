"""The one training loop: one meaning for the schedule, patience, best state, divergence,
checkpoints and progress, whatever the engine."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from bayesmf.inference import files
from bayesmf.inference.loop import show_progress, train


class Quadratic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([3.0, -2.0]))


def _step(m: Quadratic):
    def step(epoch: int, s: int) -> torch.Tensor:
        loss = (m.w**2).sum()
        loss.backward()
        return loss.detach()

    return step


def test_learning_rate_decays_from_lr_to_final_lr():
    m = Quadratic()
    res = train(_step(m), {"m": m}, epochs=4, steps_per_epoch=2, lr=0.1, final_lr=0.01,
                progress=False)
    lrs = res.history["lr"]
    assert lrs[0] == pytest.approx(0.1)
    ratios = [b / a for a, b in zip(lrs, lrs[1:], strict=False)]
    assert ratios == pytest.approx([10**-0.25] * 3)
    # the default final rate is a tenth, in every engine
    m2 = Quadratic()
    res2 = train(_step(m2), {"m": m2}, epochs=5, steps_per_epoch=1, lr=0.2, progress=False)
    assert res2.history["lr"][-1] * 10 ** (-1 / 5) == pytest.approx(0.02)


def test_patience_counts_evaluations_and_best_state_is_kept():
    m = Quadratic()
    scores = iter([5.0, 1.0, 2.0, 3.0, 4.0, 0.5, 0.1])
    seen = []

    def evaluate() -> float:
        seen.append(m.w.detach().clone())
        return next(scores)

    res = train(_step(m), {"m": m}, epochs=20, steps_per_epoch=1, lr=0.01, evaluate=evaluate,
                eval_every=2, patience=3, progress=False)
    # evaluations after epochs 1, 3, 5, 7, 9: best at the 2nd, then 3 worse ones -> stop
    assert res.stopped_early and res.epochs_run == 10 and res.best_epoch == 3
    assert torch.equal(m.w.detach(), seen[1])  # the best evaluation's state is restored


def test_best_state_only_after_select_after():
    m = Quadratic()
    scores = iter([0.1, 5.0, 4.0])
    res = train(_step(m), {"m": m}, epochs=3, steps_per_epoch=1, lr=0.01,
                evaluate=lambda: next(scores), select_after=1, progress=False)
    assert res.best_epoch == 2  # epoch 0 (e.g. still in a KL warm-up) never counts


def test_divergence_names_epoch_step_and_checkpoint(tmp_path):
    m = Quadratic()

    def step(epoch: int, s: int) -> torch.Tensor:
        loss = (m.w**2).sum() * (float("nan") if (epoch, s) == (2, 1) else 1.0)
        loss.backward()
        return loss.detach()

    ck = tmp_path / "ck.pt"
    msg = r"epoch 2, step 1; last good checkpoint: .*ck\.pt"
    with pytest.raises(FloatingPointError, match=msg):
        train(step, {"m": m}, epochs=5, steps_per_epoch=3, lr=0.01, checkpoint=ck,
              checkpoint_every=1, progress=False, engine="test")


def test_nan_parameter_is_caught_even_when_the_loss_is_finite():
    m = Quadratic()

    def step(epoch: int, s: int) -> torch.Tensor:
        loss = (m.w**2).sum()
        loss.backward()
        if epoch == 1:
            m.w.grad.fill_(float("inf"))
        return loss.detach()

    with pytest.raises(FloatingPointError, match="NaN/inf parameters at epoch 1"):
        train(step, {"m": m}, epochs=3, steps_per_epoch=1, lr=0.01, progress=False)


def test_resume_equals_uninterrupted_and_refuses_other_settings(tmp_path):
    def run(**kw):
        m = Quadratic()
        gen = torch.Generator().manual_seed(0)

        def step(epoch: int, s: int) -> torch.Tensor:
            noise = torch.randn(2, generator=gen)
            loss = ((m.w - noise) ** 2).sum()
            loss.backward()
            return loss.detach()

        res = train(step, {"m": m}, epochs=6, steps_per_epoch=2, lr=0.05, generators=[gen],
                    settings={"lr": 0.05}, fingerprint={"kind": "x", "sha256": "a"},
                    progress=False, **kw)
        return m, res

    straight, _ = run()
    ck = tmp_path / "ck.pt"
    _, part = run(checkpoint=ck, checkpoint_every=1, stop_after=2)
    assert not part.finished and part.epochs_run == 2
    resumed, res = run(checkpoint=ck, checkpoint_every=1)
    assert res.finished and res.epochs_run == 6
    assert torch.equal(resumed.w, straight.w)
    with pytest.raises(files.ResumeMismatch, match="settings differ: lr"):
        m = Quadratic()
        train(_step(m), {"m": m}, epochs=6, steps_per_epoch=2, lr=0.05, checkpoint=ck,
              settings={"lr": 0.01}, fingerprint={"kind": "x", "sha256": "a"}, progress=False)
    with pytest.raises(files.ResumeMismatch, match="training data differ"):
        m = Quadratic()
        train(_step(m), {"m": m}, epochs=6, steps_per_epoch=2, lr=0.05, checkpoint=ck,
              settings={"lr": 0.05}, fingerprint={"kind": "x", "sha256": "b"}, progress=False)
    # resume=False starts afresh (and overwrites)
    m = Quadratic()
    fresh = train(_step(m), {"m": m}, epochs=1, steps_per_epoch=1, lr=0.05, checkpoint=ck,
                  resume=False, progress=False)
    assert fresh.epochs_run == 1


def test_progress_is_quiet_when_not_a_terminal(capsys):
    assert show_progress(None) is False  # pytest's stderr is not a terminal
    assert show_progress(True) is True
    m = Quadratic()
    train(_step(m), {"m": m}, epochs=2, steps_per_epoch=1, lr=0.1)
    assert capsys.readouterr().err == ""


def test_import_bayesmf_is_light():
    """``import bayesmf`` loads neither torch, ArviZ, matplotlib nor xarray."""
    code = ("import sys, bayesmf; heavy = [m for m in ('torch', 'arviz', 'matplotlib', "
            "'xarray', 'pyro', 'scipy') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    code = ("import sys; from bayesmf import data, diagnostics; diagnostics.rmse([1], [1]); "
            "print([m for m in ('arviz', 'matplotlib', 'xarray') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_loss_history_is_the_mean_step_loss():
    m = Quadratic()
    res = train(_step(m), {"m": m}, epochs=1, steps_per_epoch=1, lr=1e-9, progress=False)
    assert res.history["loss"][0] == pytest.approx(13.0)
    assert math.isinf(res.best_score) and res.best_epoch is None
