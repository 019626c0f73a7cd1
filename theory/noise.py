"""Label noise: the exact noisy k-step GD loss, its proof and the best CoT length
(docs/theory.md section 16).

With ``y_i = <w*, x_i> + eps_i``, ``eps_i ~ N(0, s^2)``, GD on the prompt runs on
``X y / n = S w* + X eps / n`` and its error after k steps is

    w_k - w* = -(I - eta S)^k w* + g_k(S) X eps / n,      g_k(s) = (1 - (1 - eta s)^k) / s,

so ``theory.gd_eval_loss(..., noise_var=s^2)`` adds ``(s^2 / 2n) E tr(g_k(S)^2 S)`` to the
noiseless loss: the loss against ``w*`` first falls with k, then rises as GD fits the noise.
"""
from __future__ import annotations

import warnings
from typing import NamedTuple

import sympy

from .gd import gd_noise_factor, gd_step
from .losses import gd_eval_loss
from .validation import check_eta_exact, check_int, check_noise_var
from .wishart import trace_moment


class _BestCotLengthPair(NamedTuple):
    k_star: int
    loss: sympy.Expr


class BestCotLength(_BestCotLengthPair):
    """``best_cot_length``'s result (docs/theory.md section 16): the exact argmin ``k_star``, its
    exact ``loss`` and ``at_edge``, True when ``k_star`` is the end ``k_max`` of the range searched
    and the loss still falls there (``loss(k_max) < loss(k_max - 1)``): the best length over all
    k may then be larger.

    It unpacks, indexes and compares as the pair ``(k_star, loss)`` (``k, loss =
    best_cot_length(...)`` keeps working); ``at_edge`` is an attribute beside the pair, not a
    third item.

    >>> r = BestCotLength(3, sympy.Rational(1, 2), at_edge=True)
    >>> r
    BestCotLength(k_star=3, loss=1/2, at_edge=True)
    >>> k, loss = r
    >>> (k, loss) == r, r.at_edge
    (True, True)
    """

    at_edge: bool

    def __new__(cls, k_star: int, loss: sympy.Expr, at_edge: bool = False):
        self = super().__new__(cls, k_star, loss)
        self.at_edge = bool(at_edge)
        return self

    def __repr__(self) -> str:
        return f"BestCotLength(k_star={self.k_star!r}, loss={self.loss!r}, at_edge={self.at_edge!r})"

    def __getnewargs__(self):                     # copy and pickle keep at_edge
        return (self.k_star, self.loss, self.at_edge)

    @classmethod
    def _make(cls, iterable):
        return cls(*iterable)

    def _replace(self, **changes):
        at_edge = changes.pop("at_edge", self.at_edge)
        k_star, loss = _BestCotLengthPair(*self)._replace(**changes)
        return type(self)(k_star, loss, at_edge)

    def _asdict(self) -> dict:
        return {"k_star": self.k_star, "loss": self.loss, "at_edge": self.at_edge}


def best_cot_length(d, n, eta, k_max: int, noise_var=0, *, sigma=None) -> BestCotLength:
    """The number of CoT (GD) steps ``k`` in ``0 .. k_max`` with the smallest exact mean loss
    ``gd_eval_loss(d, n, eta, k, sigma=sigma, noise_var=noise_var)`` and that loss, as exact
    rationals (the smallest such k on a tie; docs/theory.md section 16).

    The mean over all prompts: at large k it is carried by rare prompts with
    ``eta lambda_max(S) >= 2`` (docs/theory.md section 2), which bounds ``k_star`` even without
    noise; with noise the fit of the noise bounds it earlier.  Needs ``2 k_max <=
    MAX_EXACT_MOMENT`` (60; 20 with a numeric Sigma).

    The search stops at ``k_max``: when the argmin is ``k_max`` itself and the loss still falls
    there (``loss(k_max) < loss(k_max - 1)``; never for ``k_max = 0``), the result has ``at_edge``
    True and a UserWarning says so (the best length may lie beyond ``k_max``).

    >>> [best_cot_length(2, 4, sympy.Rational(1, 4), 12, noise_var=v).k_star for v in (0, 1, 4)]
    [9, 8, 2]
    >>> best_cot_length(2, 4, sympy.Rational(1, 4), 12, noise_var=1).at_edge
    False
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
    at_edge = bool(k_star == k_max >= 1 and losses[k_max] < losses[k_max - 1])
    if at_edge:
        warnings.warn(f"best_cot_length: the loss still falls at k_max = {k_max}, the end of the "
                      f"range searched, so the best chain-of-thought length may be larger than "
                      f"{k_max}; call it again with a larger k_max.", UserWarning, stacklevel=2)
    return BestCotLength(k_star, losses[k_star], at_edge)


#: ``prove_noisy_gd_loss`` checks ``gd_eval_loss(..., noise_var=)`` and ``gd_noise_factor`` at every
#: ``k = 0 .. NOISE_PROOF_MAX_K`` (docs/theory.md section 16).
NOISE_PROOF_MAX_K = 6

#: ``(d, n)`` at which ``prove_noisy_gd_loss`` checks ``gd_eval_loss`` with ``Sigma = I`` (``sigma=None``):
#: ``n > d``, ``n = d``, ``n < d``, small ``d`` and ``d >= 4``.
NOISE_PROOF_SIZES = ((1, 2), (2, 3), (3, 2), (3, 3), (4, 2), (4, 7), (6, 3))

#: Largest k of the symbolic-``(d, n)`` check of ``prove_noisy_gd_loss``.
NOISE_PROOF_SYMBOLIC_SIZE_MAX_K = 3


def _noise_proof_sigmas() -> list:
    """The numeric covariances of ``prove_noisy_gd_loss``, each with the ``n`` it is checked at
    (one ``n < d``, one ``n > d``): diagonal singular (d = 4), non-diagonal (d = 2), non-diagonal
    singular (d = 3), non-diagonal (d = 4); docs/theory.md sections 10, 13 and 16."""
    return [(sympy.diag(1, 2, 0, 3), (2, 5)),
            (sympy.Matrix([[2, 1], [1, 1]]), (1, 3)),
            (sympy.Matrix([[2, 1, 0], [1, 2, 0], [0, 0, 0]]), (2, 4)),
            (sympy.Matrix([[2, 1, 0, 0], [1, 2, 1, 0], [0, 1, 2, 0], [0, 0, 0, 1]]), (3, 6))]


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
    3. ``gd_noise_factor(eta, k, s) s = (1 - (1 - eta s)^k)^2`` for every ``k = 0 ..
       NOISE_PROOF_MAX_K`` (6);
    4. ``gd_eval_loss(d, n, eta, k, sigma=, noise_var=v)`` is ``(1/2) E tr((I - eta S)^{2k} +
       (v / n) q_k(S))`` (``trace_moment``), symbolic ``eta`` and ``v``, at every ``k = 0 ..
       NOISE_PROOF_MAX_K``: for ``Sigma = I`` at each ``(d, n)`` of ``NOISE_PROOF_SIZES`` (``n > d``,
       ``n = d``, ``n < d``, ``d`` up to 6) and at symbolic ``d, n`` (``k <= 3``); for each numeric
       Sigma of ``_noise_proof_sigmas`` (diagonal and non-diagonal, singular and not, d = 2, 3,
       4) at one ``n < d`` and one ``n > d``; and with a numeric ``noise_var`` (3/2, and 0: the
       noiseless loss) at every k, one ``(d, n)`` with ``n < d`` and one Sigma.

    False when any step fails or a library function raises TypeError or ValueError.  Steps 3 and
    4 evaluate at the integer k listed (``gd_eval_loss`` and ``gd_noise_factor`` take an integer k
    only); steps 1 and 2 hold for every k.

    >>> prove_noisy_gd_loss()
    True
    """
    return all(_noisy_gd_loss_checks().values())


def _noisy_gd_loss_checks() -> dict:
    """``prove_noisy_gd_loss``'s steps by name (``recursion``, ``factor``, ``identity_sizes``,
    ``symbolic_sizes``, ``sigma``, ``numeric_noise``), each True or False; the tests read which
    step a wrong library fails."""
    eta, s, v = (sympy.Dummy(x) for x in ("eta", "s", "v"))
    factors = {}                                 # q_k, computed once per k for the reference sums

    def q(k):
        if k not in factors:
            factors[k] = gd_noise_factor(eta, k, s)
        return factors[k]

    steps = {
        "recursion": lambda: _noise_recursion(eta, s, v),
        "factor": lambda: all(
            sympy.expand(q(k) * s - (1 - (1 - eta * s) ** k) ** 2) == 0
            for k in range(NOISE_PROOF_MAX_K + 1)),
        "identity_sizes": lambda: all(
            _loss_matches(d, n, eta, k, v, s, q(k)) for d, n in NOISE_PROOF_SIZES
            for k in range(NOISE_PROOF_MAX_K + 1)),
        "symbolic_sizes": lambda: all(
            _loss_matches(d, n, eta, k, v, s, q(k))
            for d, n in [sympy.symbols("d n", cls=sympy.Dummy, positive=True, integer=True)]
            for k in range(NOISE_PROOF_SYMBOLIC_SIZE_MAX_K + 1)),
        "sigma": lambda: all(
            _loss_matches(sigma.shape[0], n, eta, k, v, s, q(k), sigma=sigma)
            for sigma, ns in _noise_proof_sigmas() for n in ns
            for k in range(NOISE_PROOF_MAX_K + 1)),
        "numeric_noise": lambda: all(
            _loss_matches(d, n, eta, k, value, s, q(k), sigma=sigma)
            for d, n, sigma in ((4, 2, None), (3, 4, _noise_proof_sigmas()[2][0]))
            for value in (sympy.Rational(3, 2), sympy.Integer(0))
            for k in range(NOISE_PROOF_MAX_K + 1)),
    }
    checks = {}
    for name, step in steps.items():
        try:
            checks[name] = bool(step())
        except (TypeError, ValueError):
            checks[name] = False
    return checks


def _loss_matches(d, n, eta, k, v, s, q_k, *, sigma=None) -> bool:
    """Whether the library's ``gd_eval_loss(d, n, eta, k, sigma=, noise_var=v)`` is
    ``(1/2) trace_moment((1 - eta s)^{2k} + (v / n) q_k(s))`` (docs/theory.md section 16), ``q_k``
    the library's ``gd_noise_factor(eta, k, s)``."""
    loss = gd_eval_loss(d, n, eta, k, sigma=sigma, noise_var=v)
    integrand = (1 - eta * s) ** (2 * k) + v / sympy.sympify(n) * q_k
    return sympy.expand(loss - trace_moment(integrand, s, d, n, sigma=sigma) / 2) == 0


def _noise_recursion(eta, s, v) -> bool:
    """Steps 1 and 2 of ``prove_noisy_gd_loss``: the closed form of the noisy GD error by
    induction per eigenvalue, and its mean on a generic symmetric 2 x 2 ``S``."""
    b, w_star = sympy.Dummy("b"), sympy.Dummy("w_star")
    i = sympy.Dummy("i", integer=True, nonnegative=True)

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
    for j in range(1, 4):
        w = gd_step(w, S, W, eta, Xeps=B)
        error = (w - W).expand()
        F, G = error.jacobian(W), error.jacobian(B)
        if (error - F * W - G * B).expand() != sympy.zeros(2, 1):
            return False                                         # not linear in (w*, b)
        F_ok = (F + (I2 - eta * S) ** j).expand().is_zero_matrix
        G_ok = (G * S - (I2 - (I2 - eta * S) ** j)).expand().is_zero_matrix
        expected = ((I2 - eta * S) ** (2 * j)).trace() + v * _matrix_polynomial(gd_noise_factor(eta, j, s), s, S).trace()
        mean = (F.T * F).trace() + v * (G.T * G * S).trace()
        if not (F_ok and G_ok and sympy.expand(mean - expected) == 0):
            return False
    return bool(induction and base)


def _matrix_polynomial(p, s, S: sympy.Matrix) -> sympy.Matrix:
    """``p(S)`` for a polynomial ``p`` in ``s`` and a square sympy Matrix ``S``."""
    out = sympy.zeros(*S.shape)
    for (m,), coeff in sympy.Poly(p, s).terms():
        out += coeff * S ** m
    return out
