"""Evaluation (training/evaluate.py): the autoregressive rollout with the running statistic
against numerics' reference rollout (numeric float64), GD reproduced at the theory's parameters
(numeric), and loss statistics against numerics' Monte Carlo (statistical, within 4 SE)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import numerics
import theory
from training.data import sample_prompts
from training.evaluate import evaluate_params
from training.kernels import cot_rollout, final_estimate


@given(d=st.integers(1, 4), n=st.integers(1, 7), k=st.integers(0, 6), seed=st.integers(0, 2**31))
def test_rollout_equals_numerics_reference(d, n, k, seed):
    """Numeric float64: rollout (running D x D statistic) = numerics.cot_rollout_reference (which
    rebuilds Z column by column), for random V, W."""
    g = torch.Generator().manual_seed(seed)
    D = 2 * d + 2
    p = sample_prompts(2, d, n, generator=g, dtype=torch.float64)
    V = 0.4 * torch.randn(2, D, D, generator=g, dtype=torch.float64)
    W = 0.4 * torch.randn(2, D, D, generator=g, dtype=torch.float64)
    out = cot_rollout(V, W, p.data_statistic, k, n)
    assert out.shape == (2, 2, k + 1, d)
    for m in range(2):
        for b in range(2):
            ref = numerics.cot_rollout_reference(p.X[b].numpy(), p.y[b].numpy(), V[m].numpy(), W[m].numpy(), k)
            scale = 1 + np.abs(ref).max()
            np.testing.assert_allclose(out[m, b].numpy(), ref, rtol=1e-9, atol=1e-9 * scale)


@pytest.mark.parametrize("d, n, k, eta", [(3, 2, 8, 0.2), (4, 9, 12, 0.3), (10, 20, 10, 0.4)])
def test_rollout_at_theory_point_is_gd(d, n, k, eta):
    """Numeric float64: with Theorem 3.2's parameters (numerics.gd_params) the generated iterates
    are k-step GD (numerics.gd_iterates), also for n < d."""
    g = torch.Generator().manual_seed(1)
    p = sample_prompts(20, d, n, generator=g, dtype=torch.float64)
    V, W = (torch.as_tensor(a).unsqueeze(0) for a in numerics.gd_params(d, eta))
    out = cot_rollout(V, W, p.data_statistic, k, n)[0]
    for b in range(20):
        ref = numerics.gd_iterates(p.X[b].numpy(), p.y[b].numpy(), eta, k)
        np.testing.assert_allclose(out[b].numpy(), ref, rtol=1e-10, atol=1e-12)
    looped = final_estimate("looped", V, W, p.data_statistic, k, n)[0]
    np.testing.assert_allclose(looped.numpy(), out[:, -1].numpy(), rtol=1e-9, atol=1e-12)


def test_eval_loss_at_theory_point_matches_numerics_mc():
    """Statistical: evaluate_params(gd_params) vs numerics.eval_loss_mc (independent prompts),
    means within 4 combined SE; median close; same report keys as numerics."""
    d, n, k, eta = 5, 10, 4, 0.4
    V, W = numerics.gd_params(d, eta)
    ours = evaluate_params(V, W, d=d, n=n, k=k, samples=20000, seed=3)
    ref = numerics.eval_loss_mc(d, n, eta, k, samples=20000, seed=3)
    assert set(ours) == set(ref)
    assert abs(ours["mean"] - ref["mean"]) <= 4 * math.hypot(ours["se"], ref["se"])
    assert abs(ours["median"] - ref["median"]) / ref["median"] < 0.05
    assert ours["diverged_frac"] == 0.0


def test_nocot_eval_at_theorem_3_1_is_the_floor():
    """Statistical: one pass with Theorem 3.1's parameters gives d(d+1)/(2(n+d+1)) within 4 SE."""
    d, n = 4, 7
    V, W = numerics.nocot_params(d, n)
    r = evaluate_params(V, W, d=d, n=n, k=5, samples=40000, seed=0, mode="nocot")
    floor = float(theory.nocot_min_loss(d, n))
    assert abs(r["mean"] - floor) <= 4 * r["se"]


def test_divergence_is_counted_out_of_distribution():
    """Statistical: GD parameters on prompts with eta lambda_max(S) far above 2 diverge; the
    report says so (numerics' rule) instead of averaging."""
    d, n, k, eta = 3, 6, 30, 0.4
    V, W = numerics.gd_params(d, eta)
    r = evaluate_params(V, W, d=d, n=n, k=k, samples=2000, seed=0, sigma=(6.0 * np.eye(d)).tolist())
    assert r["diverged_frac"] > 0.5 and r["median"] > 1e6


def test_shapes_and_errors():
    V, W = numerics.gd_params(2, 0.3)
    many = evaluate_params(np.stack([V, 2 * V]), np.stack([W, W]), d=2, n=4, k=3, samples=100, seed=0)
    assert isinstance(many, list) and len(many) == 2 and many[0]["mean"] < many[1]["mean"]
    assert evaluate_params(V, W, d=2, n=4, k=3, samples=100, seed=0)["samples"] == 100
    with pytest.raises(ValueError, match="mode"):
        evaluate_params(V, W, d=2, n=4, k=3, samples=10, seed=0, mode="loop")
    with pytest.raises(ValueError, match="V must be"):
        evaluate_params(V, W, d=3, n=4, k=3, samples=10, seed=0)
    with pytest.raises(ValueError, match="V and W"):
        evaluate_params(V[:5], W, d=2, n=4, k=3, samples=10, seed=0)
    with pytest.raises(ValueError, match="samples"):
        evaluate_params(V, W, d=2, n=4, k=3, samples=0, seed=0)
