"""The Bayesian latent-feature (eigen + distance) network model and Network.observed_pairs."""

from __future__ import annotations

import itertools
import math

import pyro
import pytest
import torch

import bayesmf
from bayesmf import inference
from bayesmf.data import Network, Pairs, holdout_pairs, synthetic_network
from bayesmf.diagnostics import auc
from bayesmf.inference.guides import MeanFieldGuide
from bayesmf.models.base import BernoulliFactorModel
from bayesmf.models.latent_network import LatentFeatureNetwork


# ------------------------------------------------------------------ observed pairs
def test_observed_pairs_are_all_pairs_minus_unobserved_with_edge_labels() -> None:
    edges = [[0, 1], [1, 3], [2, 4], [0, 4]]
    unobserved = [[0, 2], [3, 4], [1, 2]]
    net = Network(5, edges, unobserved=unobserved)
    p = net.observed_pairs()
    want = [
        (i, j) for i, j in itertools.combinations(range(5), 2) if [i, j] not in unobserved
    ]
    assert list(zip(p.i.tolist(), p.j.tolist(), strict=True)) == want
    assert p.labels.tolist() == [float([i, j] in edges) for i, j in want]
    assert isinstance(p, Pairs) and p.n_nodes == 5 and len(p) == net.n_pairs
    full = Network(5, edges).observed_pairs()
    assert len(full) == 10 and int(full.labels.sum()) == 4


def test_observed_pairs_agree_with_pairs_on_a_split() -> None:
    net, _ = synthetic_network(40, n_blocks=2, p_in=0.4, p_out=0.05, seed=1)
    train, test = holdout_pairs(net, 0.2, seed=0)
    a, b = train.observed_pairs(), train.pairs()
    assert torch.equal(a.i, b.i) and torch.equal(a.j, b.j) and torch.equal(a.labels, b.labels)
    assert len(a) + len(test) == 40 * 39 // 2
    assert int(a.labels.sum()) == train.n_edges


# ------------------------------------------------------------------ the model
def _draws(model: LatentFeatureNetwork, s: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = MeanFieldGuide(model, init_scale=0.3, seed=seed)
    return g.sample_latents(s, torch.Generator().manual_seed(seed))


def test_is_a_bernoulli_factor_model_with_named_sites() -> None:
    m = LatentFeatureNetwork(12, rank=3)
    assert isinstance(m, BernoulliFactorModel)
    specs = {s.name: s for s in m.latent_specs()}
    assert specs["U"].shape == (12, 3) and specs["U"].dims == ("node", "factor")
    assert specs["lam"].shape == (3,) and not specs["lam"].positive  # a real diagonal
    assert specs["b"].shape == (12,) and specs["scale_lam"].shape == (3,)  # ARD
    assert {"rho", "alpha", "scale_rho"} <= set(specs)
    plain = {s.name for s in LatentFeatureNetwork(12, rank=3, distance=False, biases=False,
                                                  ard=False).latent_specs()}
    assert plain == {"U", "lam", "scale_lam"}
    deep = {s.name for s in LatentFeatureNetwork(12, rank=3, hidden=(4,)).latent_specs()}
    assert {"W0", "b0", "W1", "b1", "scale_W0"} <= deep
    assert LatentFeatureNetwork(12, rank=3, hidden=(4,)).layer_sizes() == [6, 4, 1]


def test_config_rebuilds_the_same_model() -> None:
    m = LatentFeatureNetwork(9, rank=4, hidden=(5,), activation="relu", eigen=False, ard=False)
    again = LatentFeatureNetwork(**m.config())
    assert again.config() == m.config()
    assert [s for s in again.latent_specs()] == [s for s in m.latent_specs()]


def test_mean_is_the_formula_and_symmetric() -> None:
    m = LatentFeatureNetwork(8, rank=3, global_mean=-1.5)
    z = _draws(m, s=2)
    rows, cols = torch.tensor([0, 1, 2, 5]), torch.tensor([3, 7, 4, 6])
    eta = m.mean(z, rows, cols)
    assert eta.shape == (2, 4)
    for s in range(2):
        for k, (i, j) in enumerate(zip(rows.tolist(), cols.tolist(), strict=True)):
            U, lam, rho, b = z["U"][s], z["lam"][s], z["rho"][s], z["b"][s]
            want = (
                -1.5 + b[i] + b[j] + (lam * U[i] * U[j]).sum() + z["alpha"][s]
                - (rho**2 * (U[i] - U[j]) ** 2).sum()
            )
            assert eta[s, k].item() == pytest.approx(want.item(), abs=1e-5)
    torch.testing.assert_close(m.mean(z, cols, rows), eta)
    deep = LatentFeatureNetwork(8, rank=3, hidden=(4, 4))
    zd = _draws(deep, s=2)
    torch.testing.assert_close(deep.mean(zd, cols, rows), deep.mean(zd, rows, cols))


def test_mean_vectorises_over_sample_dims() -> None:
    m = LatentFeatureNetwork(10, rank=2, hidden=(3,))
    z = _draws(m, s=4)
    rows, cols = torch.tensor([0, 2, 4]), torch.tensor([1, 9, 5])
    stacked = torch.stack(
        [m.mean({k: v[s] for k, v in z.items()}, rows, cols) for s in range(4)]
    )
    torch.testing.assert_close(m.mean(z, rows, cols), stacked)
    p = m.expected(z, rows, cols)
    assert ((p > 0) & (p < 1)).all()  # probabilities, never clamped


def test_setup_sets_the_logit_of_the_density_and_traces_bernoulli_pairs() -> None:
    net, _ = synthetic_network(20, n_blocks=2, p_in=0.5, p_out=0.05, seed=0)
    pairs = net.observed_pairs()
    m = LatentFeatureNetwork(20, rank=2)
    m.setup(pairs)
    dens = float(pairs.labels.mean())
    assert m.global_mean.item() == pytest.approx(math.log(dens / (1 - dens)), abs=1e-5)
    tr = pyro.poutine.trace(m.model).get_trace(pairs)
    assert isinstance(tr.nodes["obs"]["fn"], pyro.distributions.Bernoulli)
    assert tr.nodes["obs"]["value"].shape == (len(pairs),)
    with pytest.raises(ValueError, match="shape"):
        LatentFeatureNetwork(21, rank=2).setup(pairs)


def test_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="rank"):
        LatentFeatureNetwork(5, rank=0)
    with pytest.raises(ValueError, match="activation"):
        LatentFeatureNetwork(5, activation="swish")
    with pytest.raises(ValueError, match="at least one"):
        LatentFeatureNetwork(5, eigen=False, distance=False)
    with pytest.raises(ValueError, match="hidden"):
        LatentFeatureNetwork(5, hidden=(0,))


def test_svi_fit_predicts_held_out_links_of_a_block_network() -> None:
    net, truth = synthetic_network(40, n_blocks=2, p_in=0.6, p_out=0.03, seed=2)
    train, test = holdout_pairs(net, 0.2, seed=0)
    m = LatentFeatureNetwork(40, rank=2)
    fit = inference.fit_svi(
        m, train.observed_pairs(), epochs=120, batch_size=None, lr=0.1, final_lr=0.05,
        seed=0, progress=False,
    )
    p = fit.predict(test, num_samples=100)
    z = fit.sample(100, seed=0)
    oracle = auc(test.labels, (truth.z[test.i] == truth.z[test.j]).float())  # 0.892
    assert auc(test.labels, p) > oracle - 0.03
    torch.testing.assert_close(p, m.expected(z, test.rows, test.cols).mean(0), atol=0.05, rtol=0)
    # the prediction is the posterior mean of the probability, not of the logit
    p_plugin = torch.sigmoid(m.mean(z, test.rows, test.cols).mean(0))
    assert not torch.allclose(p, p_plugin)


# ------------------------------------------------------------------ pair covariates
def _cn_features(net: Network) -> torch.Tensor:
    """log1p(common neighbours) of every pair of ``net`` (the covariate before scaling)."""
    A = net.adjacency.double()
    return torch.log1p(A @ A).fill_diagonal_(0.0)


def test_pair_covariates_use_training_links_only_and_are_stored() -> None:
    net, _ = synthetic_network(40, n_blocks=2, p_in=0.5, p_out=0.05, seed=3)
    train, test = holdout_pairs(net, 0.2, seed=0)
    pairs = train.observed_pairs()
    m = LatentFeatureNetwork(40, rank=2, pair_features=["common_neighbours", "adamic_adar"])
    with pytest.raises(RuntimeError, match="setup"):
        m.pair_covariates(test.rows, test.cols)
    m.setup(pairs)
    x_test = m.pair_covariates(test.rows, test.cols)
    x_train = m.pair_covariates(pairs.rows, pairs.cols)
    assert x_test.shape == (len(test), 2)
    # the common-neighbour column is log1p(A_train^2) scaled by its sd over training pairs
    F = _cn_features(train)
    sd = F[pairs.i, pairs.j].std(unbiased=False)
    torch.testing.assert_close(x_test[:, 0].double(), F[test.i, test.j] / sd, atol=1e-5, rtol=0)
    torch.testing.assert_close(x_train[:, 0].double().std(unbiased=False),
                               torch.tensor(1.0, dtype=torch.float64), atol=1e-5, rtol=0)
    # ... and not those of the full network, whose held-out links would leak into it
    leaked = _cn_features(net)[test.i, test.j] / sd
    assert (leaked - x_test[:, 0].double()).abs().max() > 0.1
    # symmetric, zero without common neighbours, and independent of held-out labels
    torch.testing.assert_close(m.pair_covariates(test.cols, test.rows), x_test)
    assert bool((x_test[F[test.i, test.j] == 0] == 0).all())
    flipped = Pairs(test.i, test.j, 1 - test.labels, 40)
    torch.testing.assert_close(m.pair_covariates(flipped.rows, flipped.cols), x_test)
    # stored with the model: a model rebuilt from config + implicit state looks them up
    again = LatentFeatureNetwork(**m.config())
    again.set_implicit_state(m.implicit_state())
    torch.testing.assert_close(again.pair_covariates(test.rows, test.cols), x_test)
    assert LatentFeatureNetwork(40, rank=2).implicit_state() == {}


def test_pair_covariates_enter_the_logit_with_coefficient_beta() -> None:
    net, _ = synthetic_network(30, n_blocks=2, p_in=0.5, p_out=0.05, seed=4)
    pairs = net.observed_pairs()
    m = LatentFeatureNetwork(30, rank=2, pair_features="adamic_adar", global_mean=-1.0)
    m.setup(pairs)
    assert {s.name: s for s in m.latent_specs()}["beta"].dims == ("pair_feature",)
    z = _draws(m, s=2)
    x = m.pair_covariates(pairs.rows, pairs.cols)[:, 0]
    assert x.abs().max() > 0
    base = m.mean({**z, "beta": torch.zeros(2, 1)}, pairs.rows, pairs.cols)
    z["beta"] = torch.tensor([[0.0], [1.5]])
    eta = m.mean(z, pairs.rows, pairs.cols)
    torch.testing.assert_close(eta[0], base[0])
    torch.testing.assert_close(eta[1] - base[1], 1.5 * x)
    plain = LatentFeatureNetwork(30, rank=2, global_mean=-1.0)
    torch.testing.assert_close(plain.mean({k: v for k, v in z.items() if k != "beta"},
                                          pairs.rows, pairs.cols), base)
    with pytest.raises(ValueError, match="pair_features"):
        LatentFeatureNetwork(30, pair_features="katz")


def test_fit_with_pair_covariates_saves_and_reloads(tmp_path) -> None:
    net, _ = synthetic_network(30, n_blocks=2, p_in=0.5, p_out=0.05, seed=5)
    train, test = holdout_pairs(net, 0.2, seed=1)
    m = LatentFeatureNetwork(30, rank=2, pair_features=("adamic_adar",))
    fit = inference.fit_svi(m, train.observed_pairs(), epochs=30, batch_size=None, lr=0.05,
                            seed=0, progress=False)
    p = fit.predict(test, num_samples=20)
    back = bayesmf.load(fit.save(tmp_path / "lfn.pt"))
    torch.testing.assert_close(back.model.pair_covariates(test.rows, test.cols),
                               m.pair_covariates(test.rows, test.cols))
    torch.testing.assert_close(back.predict(test, num_samples=20), p)
