"""Training and evaluation on a covariance Sigma != I, singular ones included (docs/theory.md
sections 7 and 10): the engine's batches are drawn from Sigma (checked against numerics'
square root on the same normals), its in- and out-of-distribution evaluations are the ones
``evaluate_params`` gives on those covariances (values, not keys), and its theory value is
numerics' Monte Carlo on Sigma.  Training and exact checks, a few seconds."""
import numpy as np
import pytest
import torch

import numerics
from training import TrainConfig, evaluate_params, train
from training.data import derived_seed, seeded_generator
from training.engine import Engine

TINY = dict(d=3, n=6, k=2, eta=0.15, batch=64, iters=12, eval_every=6, eval_samples=400, theory_samples=2000,
            structure_samples=100, device="cpu", progress=False, dtype="float64")
Q = numerics.random_rotation(3, seed=5)
SIGMAS = {"diag(3, 0.3, 1)": np.diag([3.0, 0.3, 1.0]),
          "rank 2, rotated": Q @ np.diag([2.0, 0.5, 0.0]) @ Q.T,
          "rank 1": np.outer([1.0, 2.0, -1.0], [1.0, 2.0, -1.0]) / 3}


@pytest.mark.parametrize("name", list(SIGMAS))
def test_first_batch_is_drawn_from_sigma(name):
    """Exact (float64): the first batch's S is ``root G G^T root / n`` for the normals G of the
    run's data stream and numerics' ``covariance_root`` of Sigma; statistically, the mean of S
    over the batch is Sigma (within 5 standard errors per entry), and for a singular Sigma the
    data statistic has no component outside range(Sigma)."""
    sigma = SIGMAS[name]
    config = TrainConfig(**{**TINY, "batch": 4000}, sigma=sigma.tolist())
    engine = Engine([config])
    batch = engine.streams[0].draw()[config.eta]
    g = seeded_generator(0, "data")
    G = torch.randn((4000, 3, 6), generator=g, dtype=torch.float64)
    X = torch.as_tensor(numerics.covariance_root(sigma, 3)) @ G
    S = X @ X.transpose(-1, -2) / 6
    torch.testing.assert_close(batch.stat[:, :3, :3], S, rtol=1e-12, atol=1e-12)
    mean, se = S.mean(0).numpy(), S.std(0).numpy() / np.sqrt(4000)
    assert np.all(np.abs(mean - sigma) <= 5 * se + 1e-12), (mean, sigma)
    evals, evecs = np.linalg.eigh(sigma)
    null = evecs[:, evals < 1e-9]
    if null.size:
        stat = batch.stat[:, :3, :3].numpy()
        assert np.abs(null.T @ stat @ null).max() < 1e-12


@pytest.mark.parametrize("name", list(SIGMAS))
def test_run_on_sigma_evaluates_and_predicts_on_sigma(name):
    """Exact (float64): a run trained on Sigma (singular ones too) reports as its evaluation the
    losses ``evaluate_params`` gives on Sigma, as its OOD evaluation the losses on the OOD
    covariance, and as theory numerics' Monte Carlo of GD on Sigma; each differs from the
    identity's."""
    sigma = SIGMAS[name]
    r = train(TrainConfig(**TINY, sigma=sigma.tolist(), ood_sigmas={"wide": 2.0, "flat": np.diag([1.0, 1.0, 0.0]).tolist()}))
    c = r.config
    kw = dict(d=c.d, n=c.n, k=c.k, samples=c.eval_samples, seed=c.seed)
    on_sigma = evaluate_params(r.V, r.W, sigma=sigma, **kw)
    on_identity = evaluate_params(r.V, r.W, **kw)
    assert r.summary["eval"]["mean"] == pytest.approx(on_sigma["mean"], rel=1e-12)
    assert r.summary["eval"]["q90"] == pytest.approx(on_sigma["q90"], rel=1e-12)
    assert r.summary["eval"]["mean"] != pytest.approx(on_identity["mean"], rel=1e-6)
    for ood, cov in (("wide", 2.0 * np.eye(3)), ("flat", np.diag([1.0, 1.0, 0.0]))):
        expected = evaluate_params(r.V, r.W, sigma=cov, **kw)
        assert r.summary["eval_ood"][ood]["mean"] == pytest.approx(expected["mean"], rel=1e-12)
        assert r.history[0]["eval_ood"][ood]["median"] > 0
    mc = numerics.eval_loss_mc(c.d, c.n, c.eta, c.k, samples=c.theory_samples, seed=derived_seed(0, "theory"),
                               sigma=sigma)
    assert r.summary["theory_eval_loss"] == pytest.approx(mc["mean"], rel=1e-12)
    same = r.summary["theory_same_prompts"]
    gd = evaluate_params(*numerics.gd_params(c.d, c.eta), sigma=sigma, **kw)
    assert same["mean"] == pytest.approx(gd["mean"], rel=1e-12)


def test_trained_on_sigma_approaches_gd_on_sigma():
    """Training: the sparse model trained on a singular, anisotropic Sigma reaches k-step GD's
    loss on Sigma (the theory's model on the same prompts) within 10% by median, and its
    structure measured on Sigma is GD's step."""
    sigma = SIGMAS["rank 2, rotated"]
    r = train(TrainConfig(**{**TINY, "iters": 400, "eval_every": 400, "batch": 200, "eval_samples": 2000},
                          param="sparse", sigma=sigma.tolist()))
    same = r.summary["theory_same_prompts"]
    assert abs(r.summary["eval"]["median"] - same["median"]) <= 0.1 * same["median"], (r.summary["eval"], same)
    assert r.summary["structure"]["functional_deviation"] < 0.1


@pytest.mark.parametrize("sigma, message", [
    ([[1.0, 2.0], [0.0, 1.0]], "sigma"), (np.diag([1.0, -0.5, 1.0]).tolist(), "semi-definite"),
    (np.eye(2).tolist(), "3 x 3"), ([[float("nan")] * 3] * 3, "sigma"), ("eye", "sigma")])
def test_bad_covariances_are_refused_naming_the_parameter(sigma, message):
    """Bad input: a non-symmetric, indefinite, wrong-size, non-finite or non-numeric Sigma is one
    ValueError naming the parameter, for the training covariance and for an OOD one."""
    with pytest.raises(ValueError, match=message):
        TrainConfig(**TINY, sigma=sigma).validate()
    with pytest.raises(ValueError, match=r"ood_sigmas\['bad'\]"):
        TrainConfig(**TINY, ood_sigmas={"bad": sigma}).validate()


@pytest.mark.parametrize("name", ["rank 2, rotated", "rank 1"])
def test_nocot_run_on_singular_sigma_has_the_exact_floor(name):
    """Exact: a no-CoT run on a singular Sigma reports Theorem 3.1's floor for that Sigma
    (``theory.nocot_min_loss_sigma`` of the exact covariance) and evaluates Theorem 3.1's
    parameters for it on the same prompts."""
    import theory
    sigma = SIGMAS[name]
    r = train(TrainConfig(**TINY, mode="nocot", sigma=sigma.tolist()))
    floor = float(theory.nocot_min_loss_sigma(TINY["n"], numerics.exact_covariance(sigma, 3)))
    assert r.summary["theory_eval_loss"] == pytest.approx(floor, rel=1e-12)
    V, W = numerics.nocot_params(3, TINY["n"], sigma)
    expected = evaluate_params(V, W, d=3, n=TINY["n"], k=TINY["k"], samples=TINY["eval_samples"], seed=0,
                               sigma=sigma, mode="nocot")
    assert r.summary["theory_same_prompts"]["mean"] == pytest.approx(expected["mean"], rel=1e-12)
