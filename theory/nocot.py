"""Theorem 3.1's substance: no one-layer LSA without CoT beats the floor (docs/theory.md section 14).

Without CoT the prediction is the w-block of the last column of ``f(Z_0)``, ``Z_0``'s CoT column
being ``(0, 0, w_0 = 0, 1)``: ``lsa_update`` at ``w_i = 0``, ``H = 0``, ``h = 0``, ``h_0 = 1/n``.
For every ``(V, W)`` it splits into the part odd in ``w*``, ``A S w*`` with
``A = W24 V31 + V32 W14^T``, and a part ``e(S, w*)`` even in ``w*``.  With ``w* ~ N(0, I)``
symmetric and independent of ``S``, the cross term has mean zero, so the loss is
``linear_prediction_loss(n, Sigma, A) + (1/2) E ||e||^2``, and
``linear_prediction_loss(n, Sigma, A) - floor = (1/2) tr((A - Gamma^{-1}) E[S^2] (A - Gamma^{-1})^T)
>= 0``.  ``prove_nocot_floor`` checks every step of this on the library's own objects, with
symbolic entries of ``V`` and ``W``.
"""
from __future__ import annotations

import sympy

from .layout import Layout
from .losses import linear_prediction_loss, nocot_min_loss_sigma, second_moment_S
from .params import invertible_gamma, nocot_gamma, nocot_params
from .proof import _explicit, _parameter_blocks, _read_off_P, _statistics, lsa_update
from .validation import check_covariance, check_dim, check_int

__all__ = ["prove_nocot_floor"]


def _prediction(V, W, values: dict, st: dict) -> sympy.Matrix:
    """The no-CoT prediction of ``(V, W)``: the library's ``lsa_update`` at ``Z_0``."""
    update = lsa_update(V, W)
    renamed = {update.statistics[name]: values[st[name]] for name in st}
    return _explicit(update.w, renamed).applyfunc(sympy.expand)


def _flip(expr, w_star: list):
    return expr.xreplace({x: -x for x in w_star})


def prove_nocot_floor(d: int, n=None, Sigma=None) -> bool:
    """Theorem 3.1 over all no-CoT parameters (docs/theory.md section 14): for ``(V, W)`` with
    independent symbolic entries, the population loss ``(1/2) E ||pred - w*||^2`` of the no-CoT
    prediction is at least ``nocot_min_loss_sigma(n, Sigma)``, with equality at Theorem 3.1's
    ``nocot_params(d, n, Sigma)``.

    Checked exactly, on the library's objects (``lsa_update`` for the prediction,
    ``linear_prediction_loss``, ``second_moment_S``, ``nocot_gamma``, ``nocot_min_loss_sigma``,
    ``nocot_params``), with private symbols for the statistics ``S`` (symmetric), ``w*``:

    1. the odd part of the prediction in ``w*`` is ``A S w*``, ``A = W24 V31 + V32 W14^T``;
    2. the even part of ``(1/2) ||pred - w*||^2`` is ``(1/2) ||A S w* - w*||^2 + (1/2) ||e||^2``
       (``e`` the even part of the prediction), so its mean is at least that of the first term
       (the odd part has mean zero: ``w*`` is symmetric and independent of ``S``);
    3. ``E (1/2) ||A S w* - w*||^2`` is ``linear_prediction_loss(n, Sigma, A)`` (mean over ``w*``
       exactly, then ``E S = Sigma``, ``E S^2 = second_moment_S``), for a generic ``A``;
    4. ``linear_prediction_loss(n, Sigma, A) - floor = (1/2) tr((A - Gamma^{-1}) E[S^2] (A -
       Gamma^{-1})^T)``, ``>= 0`` as ``E[S^2] = E[S S^T]`` is positive semi-definite;
    5. ``nocot_params`` has even part 0 and ``A = Gamma^{-1}``: its loss is the floor.

    ``d``: a small integer (the entries of ``V``, ``W`` are ``2 (2d + 2)^2`` symbols; ``d <= 3``
    is quick).  ``n``: an int or a Symbol (None: a private positive symbol).  ``Sigma``: a non-zero
    symmetric PSD ``d x d`` matrix (None: ``I_d``).  Returns True when every step holds.

    >>> prove_nocot_floor(2)
    True
    >>> prove_nocot_floor(2, 5, sympy.diag(1, 3))
    True
    """
    d = check_int("d", d)
    n = sympy.Dummy("n", positive=True, integer=True) if n is None else check_dim("n", n)
    Sigma = sympy.eye(d) if Sigma is None else check_covariance("Sigma", Sigma, d)
    inverse = invertible_gamma(nocot_gamma(d, n, Sigma)).inv()
    layout = Layout(d)
    V = sympy.Matrix(layout.D, layout.D, lambda i, j: sympy.Dummy(f"v{i}_{j}"))
    W = sympy.Matrix(layout.D, layout.D, lambda i, j: sympy.Dummy(f"u{i}_{j}"))
    st = _statistics(d)
    entries = {(i, j): sympy.Dummy(f"s{i}{j}") for i in range(d) for j in range(i, d)}
    S = sympy.Matrix(d, d, lambda i, j: entries[(min(i, j), max(i, j))])      # symmetric
    w_star = sympy.Matrix(d, 1, lambda i, _: sympy.Dummy(f"x{i}"))
    values = {st["S"]: S, st["w_star"]: w_star, st["w_i"]: sympy.zeros(d, 1),
              st["H"]: sympy.zeros(d, d), st["h"]: sympy.zeros(d, 1),
              st["h_0"]: sympy.Matrix([[1 / sympy.sympify(n)]])}
    xs = list(w_star)

    pred = _prediction(V, W, values, st)
    _, Vb = _parameter_blocks("V", V)
    _, Wb = _parameter_blocks("W", W)
    A = sympy.Matrix(_read_off_P(Vb, Wb, d))
    odd = ((pred - _flip(pred, xs)) / 2).applyfunc(sympy.expand)
    even = ((pred + _flip(pred, xs)) / 2).applyfunc(sympy.expand)
    step1 = (odd - A * S * w_star).applyfunc(sympy.expand).is_zero_matrix

    def half_square(v):
        return sympy.expand((v.T * v)[0, 0] / 2)

    loss = half_square(pred - w_star)
    loss_even = sympy.expand((loss + _flip(loss, xs)) / 2)
    step2 = sympy.expand(loss_even - half_square(A * S * w_star - w_star) - half_square(even)) == 0

    # 3: a generic A; the mean over w* ~ N(0, I) of a quadratic form is its trace, then E S = Sigma
    # and E S^2 = second_moment_S (the expression is linear in S and in S^2).
    G = sympy.Matrix(d, d, lambda i, j: sympy.Dummy(f"a{i}{j}"))
    q = sympy.expand(half_square(G * S * w_star - w_star))
    mean_w = sympy.expand(sum(q.coeff(x, 2) for x in xs) + q.subs({x: 0 for x in xs}))
    traced = sympy.expand(((G.T * G * S * S).trace() - 2 * (G * S).trace() + d) / 2)
    step3a = sympy.expand(mean_w - traced) == 0
    M2 = second_moment_S(n, Sigma)
    mean_S = ((G.T * G * M2).trace() - 2 * (G * Sigma).trace() + d) / 2
    step3 = step3a and sympy.cancel(mean_S - linear_prediction_loss(n, Sigma, G)) == 0

    # 4: the excess over the floor is the quadratic form of E[S^2] in A - Gamma^{-1}.
    delta = G - inverse
    excess = linear_prediction_loss(n, Sigma, G) - nocot_min_loss_sigma(n, Sigma)
    step4 = sympy.cancel(excess - (delta * M2 * delta.T).trace() / 2) == 0

    # 5: Theorem 3.1's parameters: no even part, A = Gamma^{-1}.
    V1, W1 = nocot_params(d, n, Sigma)
    pred1 = _prediction(V1, W1, values, st)
    _, Vb1 = _parameter_blocks("V", V1)
    _, Wb1 = _parameter_blocks("W", W1)
    A1 = sympy.Matrix(_read_off_P(Vb1, Wb1, d))
    step5 = ((pred1 - A1 * S * w_star).applyfunc(sympy.cancel).is_zero_matrix
             and (A1 - inverse).applyfunc(sympy.cancel).is_zero_matrix)
    return bool(step1 and step2 and step3 and step4 and step5)
