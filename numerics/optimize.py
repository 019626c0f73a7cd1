"""Numerical optima with scipy.optimize (docs/theory.md sections 2 and 5).

* ``nocot_optimum_numeric``: minimise the no-CoT loss over the step (recovering Theorem 3.1's
  ``eta_1 = n / (n + d + 1)``) and over a free diagonal preconditioner (optionally a full
  matrix), which does no better.  The objectives are theory's exact expressions, lambdified.
* ``looped_optimal_eta``: the best single step for k loops (= k GD steps) judged by the final
  evaluation loss; exact polynomial when ``2k <= theory.MAX_EXACT_MOMENT``, else Monte Carlo with
  common random numbers.

Both objectives are convex in the parameters (the loss is an expectation of convex functions of
the step / of a quadratic in the preconditioner), so a local optimum is the global one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import scipy.optimize
import sympy

import theory
from theory.validation import check_int

from .checks import check_seed
from .exact import gd_eval_loss_polynomial, polynomial_value
from .params import _exact_sigma
from .sampling import _check_method, _gram

# The optimal step lies in (0, 2): by Jensen, E tr((I - eta S)^{2k}) / d >= (1 - eta E tr(S)/d)^{2k}
# = (1 - eta)^{2k} >= 1 for eta >= 2, which is the loss at eta = 0 (Sigma = I).
# With a covariance the no-CoT bracket is set in nocot_optimum_numeric.
_ETA_BRACKET = (0.0, 2.0)
_GRID = 41


@dataclass(frozen=True)
class NocotOptimum:
    """``nocot_optimum_numeric``'s result: the numerical optima next to theory's exact values."""

    d: int
    n: int
    eta: float                   # argmin of the isotropic no-CoT loss (scipy.optimize)
    loss: float                  # its loss
    eta_exact: float             # exact isotropic argmin; Sigma = I: theory.nocot_optimal_eta(d, n)
    loss_exact: float            # exact minimum over all matrices: theory.nocot_min_loss(d, n), or
                                 # theory.nocot_min_loss_sigma(n, Sigma) with a covariance
    diagonal: np.ndarray         # argmin over diagonal preconditioners A = diag(p), prediction A S w*
    diagonal_loss: float
    matrix: np.ndarray | None = field(default=None, repr=False)   # argmin over all d x d matrices A
    matrix_loss: float | None = None


@dataclass(frozen=True)
class StepSizeOptimum:
    """``looped_optimal_eta``'s result; behaves as the pair ``(eta, loss)`` (unpacking, indexing,
    ``len``) and carries how it was obtained.

    ``method`` is "exact" (theory.gd_eval_loss, evaluated exactly) or "monte_carlo" (common
    random numbers; ``loss_se`` is the standard error of ``loss``, 0 for "exact")."""

    eta: float
    loss: float
    method: str
    loss_se: float = 0.0

    def __iter__(self):
        return iter((self.eta, self.loss))

    def __getitem__(self, index):
        return (self.eta, self.loss)[index]

    def __len__(self) -> int:
        return 2


def nocot_optimum_numeric(d: int, n: int, *, seed=0, full_matrix: bool = False,
                          sigma=None) -> NocotOptimum:
    """Theorem 3.1 numerically (docs/theory.md section 5): minimise the no-CoT loss

    * over the step: ``theory.nocot_loss(d, n, eta)`` (``Sigma = I``) or
      ``theory.linear_prediction_loss(n, Sigma, eta I)`` with ``scipy.optimize.minimize_scalar``
      (polished by ``brentq`` on its derivative);
    * over ``A = diag(p)`` (prediction ``A S w*``): ``theory.linear_prediction_loss(n, Sigma, A)``
      with ``scipy.optimize.minimize`` (BFGS, exact gradient) from a random start (``seed``);
    * with ``full_matrix=True`` also over every ``d x d`` matrix A (L-BFGS-B on a symbolic
      objective of ``d^2`` unknowns and ``O(d^3)`` terms: by far the costliest option).

    For ``Sigma = I`` (``sigma=None``) the minimisers come out isotropic, ``eta_1 = n / (n + d +
    1)``, and the preconditioners reach the same loss ``theory.nocot_min_loss(d, n)``: a free
    diagonal (or matrix) does no better.  With a covariance ``sigma`` (symmetric positive
    semi-definite, not 0; singular allowed, docs/theory.md section 10; read exactly as in
    ``numerics.nocot_params``) ``eta_exact`` is the exact best isotropic step, ``loss_exact`` the
    minimum over all matrices ``theory.nocot_min_loss_sigma(n, Sigma)``, which the matrix
    optimum reaches (the isotropic one when Sigma is a multiple of an orthogonal projector, I
    included; the diagonal one when Sigma is diagonal).  For singular Sigma the minimiser is unique only on
    ``range(Sigma)``; the loss is.

    >>> r = nocot_optimum_numeric(10, 20)
    >>> abs(r.eta - 20 / 31) < 1e-8, bool(abs(r.diagonal - 20 / 31).max() < 1e-8)
    (True, True)
    """
    d = check_int("d", d)
    n = check_int("n", n)
    rng = check_seed(seed)
    Sigma = _exact_sigma(sigma, d, nonzero=True)
    eta = sympy.Symbol("eta")
    if Sigma is None:
        loss = theory.nocot_loss(d, n, eta)
        eta_exact, loss_exact = theory.nocot_optimal_eta(d, n), theory.nocot_min_loss(d, n)
        bracket = _ETA_BRACKET
    else:
        loss = sympy.expand(theory.linear_prediction_loss(n, Sigma, eta * sympy.eye(d)))
        (eta_exact,) = sympy.solve(sympy.diff(loss, eta), eta)
        loss_exact = theory.nocot_min_loss_sigma(n, Sigma)
        # The quadratic's argmin tr(Sigma) / tr(E S^2) is at most min(d, n) / tr(Sigma), as
        # tr(E S^2) >= tr(Sigma^2) >= tr(Sigma)^2 / d and tr(E S^2) >= tr(Sigma)^2 / n.
        bracket = (0.0, 2.0 * min(d, n) / float(Sigma.trace()))
    isotropic = sympy.lambdify(eta, loss, modules="math")
    slope = sympy.lambdify(eta, sympy.diff(loss, eta), modules="math")
    eta_1 = _polish(slope, _convex_argmin(isotropic, *bracket))

    covariance = sympy.eye(d) if Sigma is None else Sigma
    p = sympy.symbols(f"p0:{d}")
    diagonal_loss = theory.linear_prediction_loss(n, covariance, sympy.diag(*p))
    f = sympy.lambdify([p], diagonal_loss, modules="numpy")
    grad = sympy.lambdify([p], [sympy.diff(diagonal_loss, q) for q in p], modules="numpy")
    diag = scipy.optimize.minimize(f, rng.uniform(0, 1, d), jac=lambda x: np.asarray(grad(x), dtype=float),
                                   method="BFGS", options={"gtol": 1e-13})
    matrix = matrix_loss = None
    if full_matrix:
        a = sympy.Matrix(d, d, lambda i, j: sympy.Symbol(f"a_{i}_{j}"))
        loss = theory.linear_prediction_loss(n, covariance, a)
        entries = list(a)
        g = sympy.lambdify([entries], loss, modules="numpy")
        full = scipy.optimize.minimize(g, rng.uniform(0, 1, d * d), method="L-BFGS-B",
                                       options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 10000})
        matrix, matrix_loss = full.x.reshape(d, d), float(full.fun)
    return NocotOptimum(d=d, n=n, eta=eta_1, loss=float(isotropic(eta_1)),
                        eta_exact=float(eta_exact), loss_exact=float(loss_exact),
                        diagonal=np.asarray(diag.x, dtype=float), diagonal_loss=float(diag.fun),
                        matrix=matrix, matrix_loss=matrix_loss)


def _convex_argmin(f, lo: float, hi: float) -> float:
    """Minimise a convex ``f`` on ``[lo, hi]``: a grid locates the basin, ``minimize_scalar``
    (bounded Brent) refines it between the neighbours of the best grid point."""
    grid = np.linspace(lo, hi, _GRID)
    values = np.array([f(x) for x in grid])
    i = int(np.argmin(np.where(np.isnan(values), np.inf, values)))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, _GRID - 1)]
    result = scipy.optimize.minimize_scalar(f, bounds=(a, b), method="bounded",
                                            options={"xatol": 1e-12 * max(1.0, b)})
    return float(result.x) if result.fun <= values[i] else float(grid[i])


def _int_power(base: np.ndarray, p: int) -> np.ndarray:
    """``base ** p`` for an integer ``p >= 1`` by repeated squaring (multiplications only)."""
    result = None
    while p:
        if p & 1:
            result = base.copy() if result is None else result * base
        p >>= 1
        if p:
            base = base * base
    return result


def _polish(slope, x: float) -> float:
    """Refine a minimiser ``x`` of a smooth convex function by ``brentq`` on its derivative
    ``slope`` in ``x (1 +- 1e-6)``; the function is flat at its minimum, so minimising values alone
    locates ``x`` only to about ``sqrt(machine epsilon)``."""
    lo, hi = x * (1 - 1e-6), x * (1 + 1e-6)
    if slope(lo) < 0 < slope(hi):
        return float(scipy.optimize.brentq(slope, lo, hi, xtol=1e-15))
    return x


def looped_optimal_eta(d: int, n: int, k: int, *, samples: int = 100_000, seed=0,
                       method: str = "auto") -> StepSizeOptimum:
    """The step ``eta`` minimising the in-distribution loss ``(1/2) E ||w_k - w*||^2`` of k GD
    steps (= the looped model with Theorem 3.2's parameters and k loops, or k CoT steps).

    ``method="auto"``: "exact" when ``2k <= theory.MAX_EXACT_MOMENT`` -- the polynomial
    ``theory.gd_eval_loss(d, n, eta, k)``, evaluated exactly, minimised on ``(0, 2)`` with
    ``scipy.optimize.minimize_scalar`` and polished by ``brentq`` on its exact derivative; else
    "monte_carlo": ``samples`` Gram matrices S drawn once (``seed``), their eigenvalues computed
    once, and ``(1/2) mean sum_j (1 - eta lambda_j)^{2k}`` (the loss averaged over w* given S)
    minimised over eta on the same matrices (common random numbers).  Returns a
    ``StepSizeOptimum`` (``eta, loss = ...`` unpacks).

    Read a Monte Carlo optimum with care: for large k the best step is set by rare prompts with a
    large ``lambda_max(S)``, which a finite sample under-represents, so the sample argmin drifts
    to larger eta and its loss is optimistic (at d = 10, n = 20, k = 10 with 5e4 prompts, seeds
    give -0.3 % to +5 % in eta and losses up to 6 ``loss_se`` below the exact one).  The exact method has no
    such bias; the Monte Carlo one needs many samples, and more for larger k.

    >>> eta, loss = looped_optimal_eta(10, 20, 1)     # one step: eta_1 of Theorem 3.1
    >>> round(eta * 31 / 20, 10), round(loss * 31 / 55, 10)
    (1.0, 1.0)
    """
    d = check_int("d", d)
    n = check_int("n", n)
    k = check_int("k", k, 1)
    if method not in ("auto", "exact", "monte_carlo"):
        raise ValueError(f"method must be 'auto', 'exact' or 'monte_carlo', got {method!r}")
    if method == "auto":
        method = "exact" if 2 * k <= theory.MAX_EXACT_MOMENT else "monte_carlo"
    if method == "exact":
        P, a = gd_eval_loss_polynomial(d, n, k)              # ValueError if 2k is too large
        def f(x):
            return polynomial_value(P, a, x)
        derivative = tuple(j * a[j] for j in range(1, len(a)))
        eta = _polish(lambda x: polynomial_value(P, derivative, x), _convex_argmin(f, *_ETA_BRACKET))
        return StepSizeOptimum(eta=eta, loss=f(eta), method="exact")

    samples = check_int("samples", samples, 2)
    rng = check_seed(seed)
    solver = _check_method("auto", d, n)
    lam = np.concatenate([np.linalg.eigvalsh(_gram(d, n, min(16384, samples - start), rng, None, solver))
                          for start in range(0, samples, 16384)])

    def per_prompt(x):
        with np.errstate(over="ignore", invalid="ignore"):
            return 0.5 * np.sum(_int_power((1 - x * lam) ** 2, k), axis=1)

    def f(x):
        return float(np.mean(per_prompt(x)))

    eta = _convex_argmin(f, *_ETA_BRACKET)
    losses = per_prompt(eta)
    return StepSizeOptimum(eta=eta, loss=float(losses.mean()), method="monte_carlo",
                           loss_se=float(losses.std(ddof=1) / np.sqrt(losses.size)))


@dataclass(frozen=True)
class RescaledGDOptimum:
    """The best isotropic looped model (docs/theory.md section 3): ``V31 = a I``, ``W13 = b I``,
    ``W24 = -1`` applied k times to ``Z_0`` estimates ``u (I - (I - c S)^k) w*`` with ``c = -a b``
    (the contraction step) and ``u = 1 / b`` (the rescaling): k GD steps of step c, stretched by u.
    ``params(d)`` gives its (V, W)."""

    c: float
    u: float
    loss: float
    method: str

    def params(self, d: int) -> tuple[np.ndarray, np.ndarray]:
        """``(V, W)`` with ``V31 = -c u I``, ``W13 = I / u``, ``W24 = -1`` (``theory.Layout``)."""
        L = theory.Layout(check_int("d", d))
        V, W = np.zeros((L.D, L.D)), np.zeros((L.D, L.D))
        V[L.w, L.x] = -self.c * self.u * np.eye(d)
        W[L.x, L.w] = np.eye(d) / self.u
        W[L.y, L.one] = -1.0
        return V, W


@lru_cache(maxsize=None)
def _trace_power_polynomial(d: int, n: int, k: int) -> tuple[int, tuple[int, ...]]:
    """``(P, a)`` with ``E tr((I - c S)^k) = sum_j a_j c^j / P`` exactly (Sigma = I): the binomial
    sum of the exact Wishart moments ``theory.wishart_moment`` (docs/theory.md section 9)."""
    coefficients = [sympy.Integer(d)] + [sympy.binomial(k, m) * (-1) ** m * theory.wishart_moment(m, d, n)
                                         for m in range(1, k + 1)]
    P = math.lcm(*(int(sympy.Rational(a).q) for a in coefficients))
    return P, tuple(int(sympy.Rational(a) * P) for a in coefficients)


def _rescaled_traces(d: int, n: int, k: int, c: float) -> tuple[float, float]:
    """``(E tr(I - P), E tr((I - P)^2))`` with ``P = (I - c S)^k`` (Sigma = I), from the exact
    moments; ``E tr P^2 = 2 theory.gd_eval_loss(d, n, c, k)``."""
    P1, a1 = _trace_power_polynomial(d, n, k)
    P2, a2 = gd_eval_loss_polynomial(d, n, k)
    t1 = d - polynomial_value(P1, a1, c)
    return t1, d - 2 * polynomial_value(P1, a1, c) + 2 * polynomial_value(P2, a2, c)


def rescaled_gd_loss_value(d: int, n: int, c: float, u: float, k: int) -> float:
    """The in-distribution loss ``(1/2) E ||u (I - (I - c S)^k) w* - w*||^2`` (Sigma = I) of the
    isotropic looped model (stretched GD, ``RescaledGDOptimum``), from the exact moments:
    ``(1/2) (d - 2 u E tr(I - P) + u^2 E tr((I - P)^2))``.  Needs ``2k <= theory.MAX_EXACT_MOMENT``.

    >>> round(rescaled_gd_loss_value(10, 20, 0.4, 1.0, 10), 12)    # u = 1: GD's 0.26952376850811866
    0.269523768508
    """
    d = check_int("d", d)
    n = check_int("n", n)
    k = check_int("k", k, 1)
    t1, t2 = _rescaled_traces(d, n, k, float(c))
    return 0.5 * (d - 2 * float(u) * t1 + float(u) ** 2 * t2)


def looped_rescaled_optimum(d: int, n: int, k: int) -> RescaledGDOptimum:
    """The isotropic looped model ``(V31, W13) = (a I, b I)``, ``W24 = -1``, with the least
    in-distribution loss after k loops (``RescaledGDOptimum``).  With ``P = (I - c S)^k`` the loss
    ``(1/2) E tr((I - u (I - P))^2)`` is quadratic in u, so ``u* = E tr(I - P) / E tr((I - P)^2)``
    and the loss is ``(1/2) (d - (E tr(I - P))^2 / E tr((I - P)^2))``, minimised over c with the
    exact moments (``E tr P^2 = 2 theory.gd_eval_loss(d, n, c, k)``; ``2k <= theory.MAX_EXACT_MOMENT``).
    u = 1 is the best single GD step (``looped_optimal_eta``), so this loss is at most that one.

    >>> r = looped_rescaled_optimum(10, 20, 1)   # one loop: one step of any size, u c = eta_1
    >>> round(r.c * r.u * 31 / 20, 8), round(r.loss * 31 / 55, 8)
    (1.0, 1.0)
    """
    d = check_int("d", d)
    n = check_int("n", n)
    k = check_int("k", k, 1)

    def loss(c: float) -> float:
        t1, t2 = _rescaled_traces(d, n, k, c)
        return 0.5 * (d - t1 * t1 / t2) if t2 > 0 else 0.5 * d

    c = _convex_argmin(loss, *_ETA_BRACKET)
    t1, t2 = _rescaled_traces(d, n, k, c)
    return RescaledGDOptimum(c=c, u=t1 / t2, loss=loss(c), method="exact")
