"""One CPU thread per fit by default, the caller's setting restored (bayesmf.inference.threads)."""

from __future__ import annotations

import pytest
import torch

from bayesmf import inference
from bayesmf.inference import threads

ENGINES = ["als", "fit_deep_mf", "fit_gibbs", "fit_meta_posterior", "fit_nuts", "fit_sbm",
           "fit_svi", "maml_train", "meta_train", "sgd_mf"]


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)
    inference.set_num_threads(1)


def test_fit_threads_runs_on_one_thread_and_restores_the_callers(two_threads):
    with threads.fit_threads() as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with pytest.raises(RuntimeError), threads.fit_threads():
        raise RuntimeError("a failing fit")
    assert torch.get_num_threads() == 2  # restored on the way out of an exception too


def test_set_num_threads_changes_what_fits_use(two_threads):
    inference.set_num_threads(None)  # torch's own setting, untouched
    with threads.fit_threads() as n:
        assert n == 2 == torch.get_num_threads()
    inference.set_num_threads(3)
    assert inference.get_num_threads() == 3
    with threads.fit_threads():
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == 2
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            inference.set_num_threads(bad)


def test_every_engine_runs_inside_fit_threads(two_threads):
    seen = []

    @threads.uses_fit_threads
    def engine() -> None:
        seen.append(torch.get_num_threads())

    engine()
    assert seen == [1] and torch.get_num_threads() == 2
    for name in ENGINES:  # the public engines carry the same decorator
        fn = getattr(inference, name)
        assert fn.__code__ is threads.uses_fit_threads(len).__code__, name
        assert fn.__wrapped__.__name__ == name


def test_an_engine_leaves_the_callers_setting_in_place(two_threads):
    from bayesmf import data

    R, _ = data.synthetic_ratings(n_rows=20, n_cols=15, rank=2, density=0.4, seed=0)
    inference.als(R, rank=2, epochs=2)
    assert torch.get_num_threads() == 2


@pytest.mark.parametrize(("value", "expected"), [(None, 1), ("", 1), ("4", 4), ("torch", None),
                                                 (" Torch ", None)])
def test_environment_variable(value, expected):
    assert threads._from_env(value) == expected


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_environment_variable_rejects_nonsense(value):
    with pytest.raises(ValueError, match="BAYESMF_NUM_THREADS"):
        threads._from_env(value)
