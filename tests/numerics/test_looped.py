"""The best isotropic looped model (numerics.looped_rescaled_optimum): its parameters compute
stretched GD, its exact loss agrees with Monte Carlo, and it is at least as good as the best
single GD step.  Numeric (float64) and statistical (within 4 standard errors) checks."""
import numpy as np
import pytest

import numerics


@pytest.mark.parametrize("d, n, k", [(3, 8, 3), (4, 6, 5), (2, 9, 1)])
def test_params_compute_stretched_gd(d, n, k):
    """Numeric: the looped rollout of ``params(d)`` ends at ``u (I - (I - c S)^k) w*``."""
    r = numerics.looped_rescaled_optimum(d, n, k)
    V, W = r.params(d)
    X, y, w_star = numerics.sample_prompts(d, n, 6, seed=k)
    for b in range(6):
        S = X[b] @ X[b].T / n
        expected = r.u * (np.eye(d) - np.linalg.matrix_power(np.eye(d) - r.c * S, k)) @ w_star[b]
        np.testing.assert_allclose(numerics.looped_rollout(X[b], y[b], V, W, k)[-1], expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("d, n, k", [(3, 8, 3), (5, 12, 4)])
def test_exact_loss_matches_monte_carlo_and_beats_one_step(d, n, k):
    """Statistical: the exact loss is the Monte Carlo mean of the model's loss within 4 SE; it is
    at most the best single GD step's loss (u = 1 is one of the candidates)."""
    r = numerics.looped_rescaled_optimum(d, n, k)
    V, W = r.params(d)
    mc = numerics.eval_loss_mc_params(V, W, d, n, k, samples=200_000, seed=7, mode="looped")
    assert abs(mc["mean"] - r.loss) <= 4 * mc["se"], (mc["mean"], mc["se"], r.loss)
    assert r.loss <= numerics.looped_optimal_eta(d, n, k).loss + 1e-12
    assert r.method == "exact"
