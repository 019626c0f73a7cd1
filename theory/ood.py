"""Out-of-distribution conditions of Theorem 4.2 (docs/theory.md section 7).

On prompts with ``x ~ N(0, Sigma)`` the trained CoT model runs GD on ``S_Sigma``, whose spectrum
lies near ``[lambda_min(Sigma)(1 - sqrt(d/n))^2, lambda_max(Sigma)(1 + sqrt(d/n))^2]`` with high
probability (Marchenko-Pastur edges scaled by Sigma's extreme eigenvalues).  GD contracts the
error like ``max_j |1 - eta lambda_j|^{2k}`` and diverges on a prompt with ``eta lambda_max >= 2``.

Singular Sigma (a zero among ``sigma_eigenvalues``; docs/theory.md section 10): the null space
of Sigma lies in that of ``S_Sigma``, so the interval starts at 0 and the error there never
contracts (``contraction_factor`` is then at least 1, ``ood_loss_bound`` at least the trivial
``d/2``).  The
learnable part is the same problem restricted to ``range(Sigma)``, of dimension ``r = rank
Sigma``: pass the positive eigenvalues with ``d = r`` for its interval and contraction, and add
the unlearnable ``(d - r)/2`` to the loss bound.
"""
from __future__ import annotations

from typing import NamedTuple

import sympy

from .validation import check_dim, check_eta_exact, check_int, check_nonnegative_exact
from .validation import covariance_and_rank


def _eigenvalues(sigma_eigenvalues) -> list:
    """Eigenvalues of Sigma as exact sympy numbers (``validation.exact_real``: 0.5 -> 1/2): a
    non-empty list of finite reals >= 0 (Sigma positive semi-definite; zeros allowed)."""
    if isinstance(sigma_eigenvalues, (str, bytes)) or not hasattr(sigma_eigenvalues, "__iter__"):
        raise ValueError(f"sigma_eigenvalues must be a list of numbers >= 0, got {sigma_eigenvalues!r}")
    try:
        values = [check_nonnegative_exact("sigma_eigenvalues", v) for v in sigma_eigenvalues]
    except ValueError as error:
        raise ValueError(f"sigma_eigenvalues must be a list of numbers >= 0: {error}") from None
    if not values:
        raise ValueError("sigma_eigenvalues must not be empty")
    return values


def mp_edges(gamma):
    """Marchenko-Pastur support edges ``((1 - sqrt(gamma))^2, (1 + sqrt(gamma))^2)`` for
    ``d/n -> gamma`` and ``Sigma = I``.

    >>> mp_edges(sympy.Rational(1, 4))
    (1/4, 9/4)
    """
    gamma = check_nonnegative_exact("gamma", gamma)
    return (sympy.expand((1 - sympy.sqrt(gamma)) ** 2), sympy.expand((1 + sympy.sqrt(gamma)) ** 2))


def spectrum_interval(sigma_eigenvalues, d: int, n: int):
    """Theorem 4.2's high-probability interval for the spectrum of ``S_Sigma``:
    ``[lambda_min(Sigma)(1 - sqrt(d/n))^2, lambda_max(Sigma)(1 + sqrt(d/n))^2]``.
    ``sigma_eigenvalues``: the eigenvalues of Sigma (at least its extreme ones), numbers >= 0; a
    zero (singular Sigma) puts the lower edge at 0 (module docstring, docs/theory.md section 10).

    >>> spectrum_interval([0, 1], 1, 4)
    (0, 9/4)

    >>> spectrum_interval([1, 1], 1, 4)
    (1/4, 9/4)

    ``d`` and ``n`` may be Symbols (the edges are then expressions in ``sqrt(d/n)``).

    >>> d, n = sympy.symbols("d n", positive=True)
    >>> spectrum_interval([1, 2], d, n)[1]
    4*sqrt(d)/sqrt(n) + 2*d/n + 2
    """
    d = check_dim("d", d)
    n = check_dim("n", n)
    values = _eigenvalues(sigma_eigenvalues)
    lo, hi = mp_edges(sympy.sympify(d) / n)
    return (sympy.Min(*values) * lo, sympy.Max(*values) * hi)


def is_stable(eta, lambda_max) -> bool:
    """GD with step ``eta`` contracts on a prompt iff ``eta lambda_max(S) < 2`` (docs/theory.md
    section 2); at or above 2 the top eigendirection does not shrink.

    >>> is_stable(sympy.Rational(2, 5), 3), is_stable(sympy.Rational(2, 5), 5)
    (True, False)
    """
    eta = check_eta_exact("eta", eta)
    return bool(eta * check_nonnegative_exact("lambda_max", lambda_max) < 2)


def stable_eta_bound(sigma_eigenvalues, d: int, n: int):
    """The largest step that is stable on the predicted spectrum: ``2 / upper edge``; ``oo``
    when every eigenvalue of Sigma is 0 (then ``S = 0`` and GD never moves, for any step).

    >>> stable_eta_bound([1], 1, 4)
    8/9
    >>> stable_eta_bound([0, 0], 2, 4)
    oo
    """
    upper = spectrum_interval(sigma_eigenvalues, d, n)[1]
    return sympy.oo if upper == 0 else 2 / upper


def contraction_factor(eta, sigma_eigenvalues, d: int, n: int, k: int):
    """Theorem 4.2: ``max_j |1 - eta lambda_j|^{2k}`` over the predicted spectrum interval; the
    squared error ``||w_k - w*||^2`` is at most this times ``||w*||^2``.  Above 1 the bound
    says nothing (unstable or, for n < d, a zero eigenvalue); with a zero eigenvalue of Sigma it
    is at least 1 (module docstring: the bound on ``range(Sigma)``).

    >>> contraction_factor(sympy.Rational(1, 2), [1], 1, 4, 1)
    49/64
    """
    eta = check_eta_exact("eta", eta)
    k = check_int("k", k, 0)
    lo, hi = spectrum_interval(sigma_eigenvalues, d, n)
    rate = sympy.Max(sympy.Abs(1 - eta * lo), sympy.Abs(1 - eta * hi))
    return sympy.simplify(rate ** (2 * k))


def ood_loss_bound(eta, sigma_eigenvalues, d: int, n: int, k: int):
    """The evaluation-loss bound ``(d/2) contraction_factor`` (``E ||w*||^2 = d``), holding on
    the high-probability event that the spectrum lies in ``spectrum_interval``.

    >>> ood_loss_bound(sympy.Rational(1, 2), [1], 1, 4, 1)
    49/128
    """
    return sympy.sympify(check_dim("d", d)) / 2 * contraction_factor(eta, sigma_eigenvalues, d, n, k)


class StabilityVerdict(NamedTuple):
    """``stability_verdict``'s result, exact: ``rank`` r of Sigma; ``interval`` ``(lo, hi)``, the
    predicted spectrum of ``S_Sigma`` on ``range(Sigma)``; ``top`` = hi; ``bound`` = ``2 / top``,
    the largest stable step (``oo`` when ``r = 0``); ``stable``: ``eta < bound``."""

    rank: int
    interval: tuple
    top: sympy.Expr
    bound: sympy.Expr
    stable: bool


def stability_verdict(eta, sigma, d: int, n: int) -> StabilityVerdict:
    """Theorem 4.2's stability rule, the one verdict every command and figure states
    (docs/theory.md section 7): GD with step ``eta`` on prompts ``x ~ N(0, Sigma)`` with ``n``
    examples is stable iff ``eta * top < 2``, ``top = lambda_max(Sigma) (1 + sqrt(r/n))^2`` with
    ``r = rank(Sigma)``, not the ambient ``d``: x lies in ``range(Sigma)``, so the nonzero
    spectrum of ``S_Sigma`` is that of an r-dimensional problem with n samples (docs/theory.md
    sections 7 and 10).  The interval and bound are ``spectrum_interval`` and
    ``stable_eta_bound`` of Sigma's positive eigenvalues at dimension r.

    ``sigma``: None (``Sigma = I_d``), the d eigenvalues of Sigma (numbers >= 0; r is the number
    of nonzero ones, so give exact zeros), or Sigma itself as a d x d matrix (exact entries,
    ``validation.covariance_and_rank``; its rank is exact and its eigenvalues are sympy's).

    >>> v = stability_verdict(sympy.Rational(4, 5), [1, 0], 2, 4)     # Sigma = diag(1, 0)
    >>> v.rank, v.top, v.bound, v.stable
    (1, 9/4, 8/9, True)
    >>> stability_verdict(sympy.Rational(4, 5), None, 2, 4).stable     # Sigma = I: top 2.91
    False
    >>> stability_verdict(1, [[1, 1], [1, 1]], 2, 4).interval          # rank 1, eigenvalue 2
    (1/2, 9/2)
    """
    eta = check_eta_exact("eta", eta)
    d = check_int("d", d, 1)
    n = check_int("n", n, 1)
    if sigma is None:
        values = [sympy.Integer(1)] * d
    elif isinstance(sigma, sympy.MatrixBase) or (
            not isinstance(sigma, (str, bytes)) and hasattr(sigma, "__iter__")
            and any(hasattr(row, "__iter__") and not isinstance(row, (str, bytes)) for row in sigma)):
        Sigma, rank = covariance_and_rank("sigma", sigma, d)
        if Sigma.is_diagonal():
            values = list(Sigma.diagonal())
        else:
            values = [v for v, m in Sigma.eigenvals().items() for _ in range(m)]
    else:
        values = _eigenvalues(sigma)
        if len(values) != d:
            raise ValueError(f"sigma must be None, a {d} x {d} matrix or its {d} eigenvalues, got {len(values)} "
                             f"eigenvalues")
    undecided = [v for v in values if not v.is_number]
    if undecided:
        raise ValueError(f"sigma's eigenvalues must be numbers for a verdict, got {undecided[0]}")
    positive = [v for v in values if not v.is_zero]
    rank = len(positive)
    if rank == 0:                          # S = 0: GD never moves, whatever the step
        return StabilityVerdict(0, (sympy.Integer(0), sympy.Integer(0)), sympy.Integer(0), sympy.oo, True)
    interval = spectrum_interval(positive, rank, n)
    return StabilityVerdict(rank, interval, interval[1], stable_eta_bound(positive, rank, n),
                            is_stable(eta, interval[1]))
