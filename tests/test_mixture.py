"""SVI restarts as one posterior: the equal-weight mixture of the fits of several seeds."""

from __future__ import annotations

import pytest
import torch

from bayesmf import data, inference, load, models
from bayesmf.inference import MixtureFit

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def fits():
    R, _ = data.synthetic_ratings(n_rows=30, n_cols=20, rank=2, density=0.4, noise=0.3, seed=0)
    train, test = data.random_split(R, 0.2, seed=0)
    opts = {"epochs": 20, "batch_size": None, "lr": 0.05, "progress": False}
    mix = inference.fit_svi(models.BayesianMF(30, 20, rank=2), train, restarts=3, seed=5, **opts)
    singles = [inference.fit_svi(models.BayesianMF(30, 20, rank=2), train, seed=5 + r, **opts)
               for r in range(3)]
    return mix, singles, train, test


def test_restarts_are_the_seeds_fits_in_equal_shares(fits):
    mix, singles, _, test = fits
    assert isinstance(mix, MixtureFit) and mix.num_chains == 3
    assert mix.settings["restarts"] == 3 and mix.shares(10) == [4, 3, 3]
    for comp, single in zip(mix.components, singles, strict=True):  # seed, seed + 1, ...
        for k, v in single.guide.state_dict().items():
            assert torch.equal(v, comp.guide.state_dict()[k]), k
    # draws: 300 from each component in turn, from one generator
    z = mix.sample(900, seed=0)
    gen = torch.Generator().manual_seed(0)
    for r, single in enumerate(singles):
        torch.testing.assert_close(z["U"][300 * r : 300 * (r + 1)],
                                   single.guide.sample_latents(300, generator=gen)["U"])
    # so the predictive mean averages the components' predictive means
    got = mix.predict(test, num_samples=900)
    each = torch.stack([s.model.expected({k: v[300 * r : 300 * (r + 1)] for k, v in z.items()},
                                         test.rows, test.cols).mean(0)
                        for r, s in enumerate(singles)])
    torch.testing.assert_close(got, each.mean(0))
    assert float((each[0] - each[1]).abs().max()) > 1e-3  # the restarts do differ
    lo, hi = mix.predict_interval(test, 0.9)
    assert bool((lo < got).all() and (got < hi).all())


def test_mixture_saves_loads_and_gives_arviz_chains(fits, tmp_path):
    mix, _, train, test = fits
    path = mix.save(tmp_path / "mix.pt")
    back = load(path)
    assert isinstance(back, MixtureFit) and back.num_chains == 3
    torch.testing.assert_close(back.predict(test), mix.predict(test))
    idata = mix.to_inference_data(test, train=train, num_samples=60)
    assert idata.posterior.sizes["chain"] == 3 and idata.posterior.sizes["draw"] == 20
    assert "q, not the posterior" in idata.posterior.attrs["loo_note"]


def test_restarts_are_checked(fits):
    _, _, train, _ = fits
    m = models.BayesianMF(30, 20, rank=2)
    with pytest.raises(ValueError, match="positive integer"):
        inference.fit_svi(m, train, restarts=0)
    with pytest.raises(ValueError, match="checkpoint"):
        inference.fit_svi(m, train, restarts=2, checkpoint="x.ckpt")
    with pytest.raises(ValueError, match="same model"):
        other = inference.fit_svi(models.BayesianMF(30, 20, rank=3), train, epochs=2,
                                  batch_size=None, progress=False)
        MixtureFit([fits[1][0], other])


def test_plot_elbo_draws_one_trace_per_restart(fits):
    from bayesmf.diagnostics import plot_elbo

    fig = plot_elbo(fits[0])
    labels = [ln.get_label() for ln in fig.axes[0].get_lines()]
    assert labels == [f"ELBO per rating, restart {r}" for r in range(3)]
    assert len(plot_elbo(fits[1][0]).axes[0].get_lines()) == 1


def test_restarts_in_worker_processes_equal_the_restarts_in_this_one(fits):
    _, _, train, test = fits
    opts = {"epochs": 8, "batch_size": None, "lr": 0.05, "progress": False, "restarts": 2}
    side = inference.fit_svi(models.BayesianMF(30, 20, rank=2), train, parallel=True, **opts)
    here = inference.fit_svi(models.BayesianMF(30, 20, rank=2), train, parallel=False, **opts)
    assert side.settings["parallel"] is True and here.settings["parallel"] is False
    for a, b in zip(side.components, here.components, strict=True):
        assert a.settings["seed"] == b.settings["seed"]
        for k, v in b.guide.state_dict().items():
            assert torch.equal(v, a.guide.state_dict()[k]), k
        assert a.history["elbo"] == b.history["elbo"]
    torch.testing.assert_close(side.predict(test), here.predict(test))
    # the collapsed guide (users integrated out) crosses from the workers too
    assert side.components[0].inference_name == "SVI collapsed rows"


def test_restarts_in_processes_count_on_a_progress_bar(fits, capsys):
    _, _, train, _ = fits
    inference.fit_svi(models.BayesianMF(30, 20, rank=2), train, epochs=3, batch_size=None,
                      restarts=2, parallel=True, progress=True)
    err = capsys.readouterr().err
    assert "SVI restarts (2 processes)" in err and "2/2" in err


def test_mixture_of_models_with_side_features_compares_them_by_value(fits, tmp_path):
    """Fits from worker processes (or a saved file) hold copies of the model: equal side
    features are the same model, other features are not."""
    _, _, train, test = fits
    feats = torch.eye(20)[:, :4]
    opts = {"epochs": 2, "batch_size": None, "progress": False}
    nnmf = dict(rank=2, bilinear_dims=2, hidden=(4,))
    mix = inference.fit_svi(models.BayesianNNMF(30, 20, item_features=feats, **nnmf), train,
                            restarts=2, parallel=True, **opts)
    back = load(mix.save(tmp_path / "mix.pt"))
    torch.testing.assert_close(back.predict(test), mix.predict(test))
    other = inference.fit_svi(models.BayesianNNMF(30, 20, item_features=feats.flip(0), **nnmf),
                              train, restarts=1, **opts)
    with pytest.raises(ValueError, match="same model"):
        MixtureFit([mix.components[0], other])
