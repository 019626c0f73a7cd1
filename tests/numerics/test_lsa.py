"""Tests of numerics.lsa: embedding, the literal LSA forward pass, and the fast CoT / looped rollouts
against the literal ones.  Every check here is numeric (float64) unless its docstring says otherwise."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from numerics import (cot_rollout, cot_rollout_reference, embed, gd_params, iterate_deviation,
                      looped_rollout, looped_rollout_reference, lsa_forward, sample_prompts)
from theory import Layout


def _random_params(d, seed, scale):
    """General (V, W), entries N(0, scale^2 / D): not GD, every block active."""
    D = Layout(d).D
    rng = np.random.default_rng(seed)
    return rng.standard_normal((D, D)) * scale / np.sqrt(D), rng.standard_normal((D, D)) * scale / np.sqrt(D)


def _near_gd_params(X, seed, noise=0.01):
    """Theorem 3.2's (V, W) for the step 0.5 / lambda_max(S) of the prompts X (so GD contracts), plus
    N(0, noise^2) on every entry: every block is active, yet the rollout stays bounded (a general
    nonlinear rollout can overflow, and then there is nothing to compare)."""
    d, n = X.shape[-2:]
    lam = np.linalg.eigvalsh(X @ np.swapaxes(X, -1, -2) / n)[..., -1].max()
    V, W = gd_params(d, 0.5 / lam)
    rng = np.random.default_rng(seed)
    return V + noise * rng.standard_normal(V.shape), W + noise * rng.standard_normal(W.shape)


def test_embed_puts_each_block_in_its_rows():
    """Numeric: Z_0 = [[X, 0], [y^T, 0], [0, w_0], [0, 1]] in theory.Layout order (docs/theory.md section 3)."""
    X, y, _ = sample_prompts(3, 5, 1, seed=0)
    w0 = np.array([0.5, -1.0, 2.0])
    Z = embed(X[0], y[0], w0)
    L = Layout(3)
    assert Z.shape == (L.D, 6)
    np.testing.assert_array_equal(Z[L.x, :5], X[0])
    np.testing.assert_array_equal(Z[L.y, :5], y[0][None, :])
    np.testing.assert_array_equal(Z[L.w, 5], w0)
    np.testing.assert_array_equal(Z[L.one, 5], [1.0])
    assert not Z[L.w, :5].any() and not Z[L.one, :5].any() and not Z[:L.y.stop, 5].any()
    np.testing.assert_array_equal(embed(X[0], y[0])[L.w, 5], np.zeros(3))


def test_lsa_forward_is_the_formula_entrywise():
    """Numeric: f(Z)_{ab} = Z_{ab} + (1/n) sum_{c,e,f,g} V_{ac} Z_{ce} Z_{fe} W_{fg} Z_{gb}, written as an
    einsum independently of lsa_forward's matrix products; batched input equals the loop."""
    rng = np.random.default_rng(1)
    V, W = _random_params(2, 2, 1.0)
    Z = rng.standard_normal((3, 6, 7))
    out = lsa_forward(Z, V, W, n=5)
    expected = Z + np.einsum("ac,sce,sfe,fg,sgb->sab", V, Z, Z, W, Z) / 5
    np.testing.assert_allclose(out, expected, rtol=1e-12, atol=1e-12)
    for s in range(3):
        np.testing.assert_allclose(lsa_forward(Z[s], V, W, 5), out[s], rtol=1e-14, atol=1e-14)


@given(d=st.integers(1, 6), n=st.integers(1, 12), i=st.integers(0, 6), seed=st.integers(0, 2 ** 32 - 1))
def test_gd_params_last_column_is_one_gd_step(d, n, i, seed):
    """Numeric: Theorem 3.2 on a CoT matrix with i arbitrary earlier CoT columns: the last column of
    f(Z_i) is (0, 0, w - eta S (w - w*), 1) for any current w."""
    rng = np.random.default_rng(seed)
    X, y, w_star = (a[0] for a in sample_prompts(d, n, 1, rng))
    L = Layout(d)
    Z = embed(X, y, rng.standard_normal(d))
    earlier = np.zeros((L.D, i))
    earlier[L.w] = rng.standard_normal((d, i))
    earlier[L.one] = 1.0
    Z = np.concatenate([Z[:, :n], earlier, Z[:, n:]], axis=1)
    eta = 0.3
    last = lsa_forward(Z, *gd_params(d, eta), n)[:, -1]
    w = Z[L.w, -1]
    S = X @ X.T / n
    np.testing.assert_allclose(last[L.w], w - eta * S @ (w - w_star), rtol=1e-12, atol=1e-12)
    assert not last[:L.y.stop].any() and last[L.one][0] == 1.0


@given(d=st.integers(1, 6), n=st.integers(1, 15), k=st.integers(0, 15), seed=st.integers(0, 2 ** 32 - 1))
def test_fast_cot_rollout_equals_literal(d, n, k, seed):
    """Numeric: the G = Z Z^T / n rollout equals lsa_forward on the growing Z, for (V, W) with every
    block non-zero and a non-zero w_0, to 1e-10 relative."""
    X, y, _ = sample_prompts(d, n, 2, seed)
    V, W = _near_gd_params(X, seed)
    w0 = np.random.default_rng(seed).standard_normal(d)
    fast, literal = cot_rollout(X, y, V, W, k, w0), cot_rollout_reference(X, y, V, W, k, w0)
    assert fast.shape == (2, k + 1, d)
    assert iterate_deviation(fast, literal)[1] <= 1e-10


@given(d=st.integers(1, 6), n=st.integers(1, 15), k=st.integers(0, 15), seed=st.integers(0, 2 ** 32 - 1))
def test_fast_looped_rollout_equals_literal(d, n, k, seed):
    """Numeric: the looped rollout through G <- M G M^T equals Z <- lsa_forward(Z) k times, for (V, W)
    with every block non-zero, to 1e-10 relative."""
    X, y, _ = sample_prompts(d, n, 2, seed)
    V, W = _near_gd_params(X, seed)
    fast, literal = looped_rollout(X, y, V, W, k), looped_rollout_reference(X, y, V, W, k)
    assert iterate_deviation(fast, literal)[1] <= 1e-10


def test_fast_rollout_detects_a_wrong_model():
    """Numeric, non-vacuous: the fast-vs-literal comparison fails when the two use different V."""
    X, y, _ = sample_prompts(3, 6, 1, seed=3)
    V, W = _random_params(3, 4, 0.5)
    assert iterate_deviation(cot_rollout(X, y, V, W, 5), cot_rollout_reference(X, y, V * 1.001, W, 5))[1] > 1e-7


def test_k_zero_returns_w0_alone():
    """Numeric: k = 0 gives the (1, d) array [w_0] for both rollouts, fast and literal."""
    X, y, _ = sample_prompts(4, 3, 1, seed=5)
    w0 = np.arange(4.0)
    V, W = gd_params(4, 0.2)
    for rollout in (cot_rollout, cot_rollout_reference, looped_rollout, looped_rollout_reference):
        out = rollout(X[0], y[0], V, W, 0, w0)
        assert out.shape == (1, 4)
        np.testing.assert_array_equal(out[0], w0)


def test_rollouts_batch_over_leading_axes():
    """Numeric: a (2, 3) batch of prompts gives the same iterates as one prompt at a time."""
    X, y, _ = sample_prompts(3, 4, 6, seed=6)
    X, y = X.reshape(2, 3, 3, 4), y.reshape(2, 3, 4)
    V, W = _random_params(3, 7, 0.5)
    out = cot_rollout(X, y, V, W, 4)
    assert out.shape == (2, 3, 5, 3)
    for a in range(2):
        for b in range(3):
            np.testing.assert_allclose(out[a, b], cot_rollout(X[a, b], y[a, b], V, W, 4), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("call, name", [
    (lambda: embed(np.zeros((2, 3)), np.zeros(4)), "y"),
    (lambda: embed(np.zeros(3), np.zeros(3)), "X"),
    (lambda: embed(np.zeros((2, 3)), np.zeros(3), np.zeros(3)), "w0"),
    (lambda: embed([[np.nan]], [1.0]), "X"),
    (lambda: lsa_forward(np.zeros((5, 3)), np.zeros((5, 5)), np.zeros((5, 5)), 2), "Z"),
    (lambda: lsa_forward(np.zeros((4, 3)), np.zeros((6, 6)), np.zeros((4, 4)), 2), "V"),
    (lambda: lsa_forward(np.zeros((4, 3)), np.zeros((4, 4)), np.zeros((4, 4)), 0), "n"),
    (lambda: cot_rollout(np.ones((1, 2)), np.ones(2), *gd_params(1, 0.1), k=-1), "k"),
    (lambda: looped_rollout(np.ones((1, 2)), np.ones(2), np.eye(4), np.eye(3), k=1), "W"),
])
def test_bad_input_names_the_parameter(call, name):
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        call()
