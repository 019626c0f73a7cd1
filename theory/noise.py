"""Label noise: the exact noisy k-step GD loss, its proof and the best CoT length
(docs/theory.md section 16).

With ``y_i = <w*, x_i> + eps_i``, ``eps_i ~ N(0, s^2)``, GD on the prompt runs on
``X y / n = S w* + X eps / n`` and its error after k steps is

    w_k - w* = -(I - eta S)^k w* + g_k(S) X eps / n,      g_k(s) = (1 - (1 - eta s)^k) / s,

so ``theory.gd_eval_loss(..., noise_var=s^2)`` adds ``(s^2 / 2n) E tr(g_k(S)^2 S)`` to the
noiseless loss: the loss against ``w*`` first falls with k, then rises as GD fits the noise.
"""
from __future__ import annotations

from typing import NamedTuple

import sympy

from .gd import gd_noise_factor, gd_step
from .losses import gd_eval_loss
from .validation import check_eta_exact, check_int, check_noise_var
from .wishart import trace_moment


class BestCotLength(NamedTuple):
    """``best_cot_length``'s result: the exact argmin ``k_star`` and its exact ``loss``."""

    k_star: int
    loss: sympy.Expr


def best_cot_length(d, n, eta, k_max: int, noise_var=0, *, sigma=None) -> BestCotLength:
    """The number of CoT (GD) steps ``k`` in ``0 .. k_max`` with the smallest exact mean loss
    ``gd_eval_loss(d, n, eta, k, sigma=sigma, noise_var=noise_var)`` and that loss, as exact
    rationals (the smallest such k on a tie; docs/theory.md section 16).

    The mean over all prompts: at large k it is carried by rare prompts with
    ``eta lambda_max(S) >= 2`` (docs/theory.md section 2), which bounds ``k_star`` even without
    noise; with noise the fit of the noise bounds it earlier.  Needs ``2 k_max <=
    MAX_EXACT_MOMENT`` (60; 20 with a numeric Sigma).

    >>> [best_cot_length(2, 4, sympy.Rational(1, 4), 12, noise_var=v).k_star for v in (0, 1, 4)]
    [9, 8, 2]
    """
    k_max = check_int("k_max", k_max, 0)
    eta = check_eta_exact("eta", eta)
    noise_var = check_noise_var("noise_var", noise_var)
    # Largest k first: its checks (sizes, sigma, the moment limit) fail before any work is done.
    losses = [gd_eval_loss(d, n, eta, k, sigma=sigma, noise_var=noise_var) for k in range(k_max, -1, -1)][::-1]
    if not all(loss.is_number for loss in losses):
        raise ValueError("best_cot_length needs numbers: d, n, eta, noise_var and sigma must not "
                         "be symbolic")
    k_star = min(range(k_max + 1), key=lambda k: (losses[k], k))
    return BestCotLength(k_star, losses[k_star])


def prove_noisy_gd_loss() -> bool:
    """The noisy k-step GD loss (docs/theory.md section 16), proved for the library's own
    ``gd_step`` (with its ``Xeps`` term), ``gd_noise_factor`` and ``gd_eval_loss``:

    1. closed form, by induction on a symbolic ``i`` per eigenvalue ``s`` of ``S`` (every term
       is a function of ``S`` applied to ``w*`` or to ``b = X eps / n``): ``gd_step`` maps
       ``-(1 - eta s)^i w* + g_i(s) b`` to the same form at ``i + 1``, with ``g_i(s) =
       (1 - (1 - eta s)^i) / s``; and on a generic symmetric 2 x 2 ``S`` the first three iterates
       of ``gd_step`` have error ``-(I - eta S)^i w* + G_i b`` with ``G_i S = I - (I - eta S)^i``;
    2. the expectation over ``w* ~ N(0, I)`` and ``eps ~ N(0, s^2 I_n)`` given ``X`` (Isserlis:
       ``E[w* w*^T] = I``, ``E[b b^T] = s^2 S / n``, ``E[w* b^T] = 0``) of ``||w_i - w*||^2`` on that
       2 x 2 ``S`` equals ``tr((I - eta S)^{2i} + (s^2 / n) q_i(S))``, ``q_i = gd_noise_factor``;
    3. ``gd_eval_loss(d, n, eta, k, noise_var=v)`` is half of ``trace_moment`` of that polynomial
       (symbolic ``eta`` and ``v``; d, n in {(2, 3), (3, 2)}, k in {0, 1, 3}).

    False when any step fails.

    >>> prove_noisy_gd_loss()
    True
    """
    eta, s, v, b = (sympy.Dummy(x) for x in ("eta", "s", "v", "b"))
    i = sympy.Dummy("i", integer=True, nonnegative=True)
    w_star = sympy.Dummy("w_star")

    def closed(j):
        return -(1 - eta * s) ** j * w_star + (1 - (1 - eta * s) ** j) / s * b

    one = sympy.Matrix([[s]])
    stepped = gd_step(sympy.Matrix([[closed(i) + w_star]]), one, sympy.Matrix([[w_star]]), eta,
                      Xeps=sympy.Matrix([[b]]))[0, 0] - w_star
    induction = sympy.simplify(sympy.expand(sympy.expand_power_exp(stepped - closed(i + 1)))) == 0
    base = sympy.simplify(closed(0) + w_star) == 0

    a, c, e = (sympy.Dummy(x) for x in "ace")
    S = sympy.Matrix([[a, c], [c, e]])
    W = sympy.Matrix(sympy.symbols("u:2", cls=sympy.Dummy))
    B = sympy.Matrix(sympy.symbols("b:2", cls=sympy.Dummy))
    I2 = sympy.eye(2)
    w = sympy.zeros(2, 1)
    matches = True
    for j in range(1, 4):
        w = gd_step(w, S, W, eta, Xeps=B)
        error = (w - W).expand()
        F, G = error.jacobian(W), error.jacobian(B)
        if (error - F * W - G * B).expand() != sympy.zeros(2, 1):
            matches = False                                      # not linear in (w*, b)
            break
        F_ok = (F + (I2 - eta * S) ** j).expand().is_zero_matrix
        G_ok = (G * S - (I2 - (I2 - eta * S) ** j)).expand().is_zero_matrix
        expected = ((I2 - eta * S) ** (2 * j)).trace() + v * _matrix_polynomial(gd_noise_factor(eta, j, s), s, S).trace()
        mean = (F.T * F).trace() + v * (G.T * G * S).trace()
        matches = matches and F_ok and G_ok and sympy.expand(mean - expected) == 0
    library = all(
        sympy.expand(gd_eval_loss(d, n, eta, k, noise_var=v)
                     - trace_moment((1 - eta * s) ** (2 * k) + v / n * gd_noise_factor(eta, k, s), s, d, n) / 2) == 0
        for d, n in ((2, 3), (3, 2)) for k in (0, 1, 3))
    factor = all(sympy.expand(gd_noise_factor(eta, k, s) * s - (1 - (1 - eta * s) ** k) ** 2) == 0
                 for k in (0, 1, 2, 5))
    return bool(induction and base and matches and library and factor)


def _matrix_polynomial(p, s, S: sympy.Matrix) -> sympy.Matrix:
    """``p(S)`` for a polynomial ``p`` in ``s`` and a square sympy Matrix ``S``."""
    out = sympy.zeros(*S.shape)
    for (m,), coeff in sympy.Poly(p, s).terms():
        out += coeff * S ** m
    return out
