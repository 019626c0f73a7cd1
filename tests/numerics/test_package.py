"""Package-level tests of numerics: docstring examples, import hygiene, parameters read from theory,
the public hypothesis strategies, and a throughput benchmark (slow, prints only).  Each test docstring
says its kind (numeric float64 against exact sympy, or structural)."""
import doctest
import importlib
import subprocess
import sys
import time

import numpy as np
import pytest
import sympy
from hypothesis import given
from hypothesis import strategies as st

import numerics
import theory
from numerics import eval_loss_mc, gd_params, nocot_params
from numerics.strategies import gd_problems, problem_sizes, prompts, spd_covariances, stable_etas

MODULES = ["checks", "params", "lsa", "gd", "sampling", "montecarlo", "equivalence", "exact",
           "marchenko_pastur", "optimize", "strategies", "rotations", "dynamics"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    """Numeric: every docstring example in numerics/ runs and prints the value shown."""
    module = importlib.import_module(f"numerics.{name}")
    result = doctest.testmod(module)
    assert result.failed == 0


def test_import_numerics_pulls_in_neither_torch_nor_hypothesis():
    """Structural: numerics is numpy + scipy; hypothesis comes only with numerics.strategies."""
    code = ("import sys, numerics; print(sorted(m for m in ('torch', 'hypothesis') if m in sys.modules)); "
            "import numerics.strategies; print('hypothesis' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "True"]


def test_every_public_name_is_exported_and_documented():
    """Structural: __all__ lists importable, documented objects."""
    for name in numerics.__all__:
        obj = getattr(numerics, name)
        assert isinstance(obj, (int, float)) or (obj.__doc__ and obj.__doc__.strip()), name


@pytest.mark.parametrize("d", [1, 2, 5, 12])
@pytest.mark.parametrize("eta", [0.4, 1 / 3, 1e-3])
def test_gd_params_equal_theory_entrywise(d, eta):
    """Numeric vs symbolic: gd_params(d, eta) equals theory.gd_transformer_params(d, eta) entry by
    entry (exact rational eta, rounded once), float64 and D x D."""
    V, W = gd_params(d, eta)
    Vs, Ws = theory.gd_transformer_params(d, sympy.Rational(eta))
    assert V.dtype == W.dtype == np.float64 and V.shape == W.shape == (2 * d + 2, 2 * d + 2)
    np.testing.assert_array_equal(V, np.array(Vs.tolist(), dtype=float))
    np.testing.assert_array_equal(W, np.array(Ws.tolist(), dtype=float))


def test_nocot_params_equal_theory():
    """Numeric vs symbolic: nocot_params reads theory.nocot_params, for Sigma = I and a given Sigma."""
    V, W = nocot_params(4, 7)
    Vs, Ws = theory.nocot_params(4, 7)
    np.testing.assert_array_equal(V, np.array(Vs.tolist(), dtype=float))
    np.testing.assert_array_equal(W, np.array(Ws.tolist(), dtype=float))
    Sigma = np.array([[2.0, 0.5], [0.5, 1.0]])
    V, _ = nocot_params(2, 3, Sigma)
    L = theory.Layout(2)
    Gamma = (1 + 1 / 3) * Sigma + np.trace(Sigma) / 3 * np.eye(2)
    np.testing.assert_allclose(V[L.w, L.x], -np.linalg.inv(Gamma), rtol=1e-14)


@given(problem_sizes(max_d=5, max_n=7, max_k=3), st.data())
def test_strategies_draw_valid_objects(sizes, data):
    """Numeric: strategies give float64 prompts with y = X^T w*, SPD Sigma within the condition bound,
    and steps inside the stable range of the prompt."""
    d, n, k = sizes
    assert 1 <= d <= 5 and 1 <= n <= 7 and 0 <= k <= 3
    sigma = data.draw(spd_covariances(d, max_condition=50.0))
    eig = np.linalg.eigvalsh(sigma)
    assert np.allclose(sigma, sigma.T) and eig[0] > 0 and eig[-1] / eig[0] <= 50.0 * (1 + 1e-9)
    X, y, w_star = data.draw(prompts(d, n, sigma))
    assert X.shape == (d, n) and y.shape == (n,) and w_star.shape == (d,) and X.dtype == np.float64
    np.testing.assert_allclose(y, X.T @ w_star, rtol=1e-12, atol=1e-12)
    lam = float(np.linalg.eigvalsh(X @ X.T / n)[-1])
    eta = data.draw(stable_etas(lam, margin=0.1))
    assert 0.2 <= eta * lam * (1 + 1e-12) and eta * lam <= 1.8 * (1 + 1e-12)


@given(gd_problems(max_d=4, max_n=6, max_k=5))
def test_gd_problems_are_coherent(p):
    """Numeric: a drawn GDProblem has a stable step for its own prompt."""
    lam = np.linalg.eigvalsh(p.X @ p.X.T / p.X.shape[1])[-1]
    assert p.eta * lam < 2 and p.k <= 5 and (p.sigma is None or p.sigma.shape == (p.X.shape[0],) * 2)


def test_strategies_reject_bad_arguments():
    with pytest.raises(ValueError, match="^lambda_max"):
        stable_etas(0.0)
    with pytest.raises(ValueError, match="^max_condition"):
        spd_covariances(3, max_condition=0.5)
    with pytest.raises(ValueError, match="^sigma"):
        prompts(2, 3, np.eye(3))


@pytest.mark.slow
def test_benchmark_monte_carlo_throughput(slow_scale):
    """Benchmark (prints only, no timed assertion): prompts per second of eval_loss_mc at the paper's
    d = 10, n = 20, eta = 0.4, k = 10; 1e6 prompts at full scale, 2e5 reduced."""
    samples = 1_000_000 if slow_scale == "full" else 200_000
    start = time.perf_counter()
    r = eval_loss_mc(10, 20, 0.4, 10, samples=samples, seed=0)
    seconds = time.perf_counter() - start
    print(f"\neval_loss_mc d=10 n=20 k=10: {samples} prompts in {seconds:.2f} s "
          f"= {samples / seconds:,.0f} prompts/s; {r}")
    assert r["samples"] == samples
