"""Argument checks shared by theory, numerics and training.

Every public function of the toolkit validates its inputs with these helpers, so a bad
argument raises one ``ValueError`` that names the parameter, instead of a traceback deep
inside sympy, numpy or torch, or a silently wrong number.  Pure Python: no numpy, no torch.
``check_covariance`` is the exact (sympy) check of a covariance Sigma: symmetric positive
semi-definite, singular allowed (docs/theory.md section 10); its float64 counterpart, with a
rounding tolerance, is ``numerics.checks.check_sigma``.
"""
from __future__ import annotations

import math
import numbers

import sympy


def check_int(name: str, value, minimum: int = 1) -> int:
    """Return ``value`` as an int when it is an integer >= ``minimum``, else raise ValueError.

    >>> check_int("d", 3)
    3
    >>> check_int("n", 0)
    Traceback (most recent call last):
    ...
    ValueError: n must be an integer >= 1, got 0
    """
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, sympy.Integer)):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def check_positive_finite(name: str, value) -> float:
    """Return ``value`` as a float when it is a finite number > 0, else raise ValueError.

    >>> check_positive_finite("eta", 0.4)
    0.4
    >>> check_positive_finite("eta", float("nan"))
    Traceback (most recent call last):
    ...
    ValueError: eta must be a finite number > 0, got nan
    >>> check_positive_finite("eta", "0.4")
    Traceback (most recent call last):
    ...
    ValueError: eta must be a finite number > 0, got '0.4'
    """
    return _real(name, value, "a finite number > 0", lambda x: x > 0)


def check_finite(name: str, value) -> float:
    """Return ``value`` as a float when it is a finite real number (any sign), else raise.

    >>> check_finite("a0", -0.01)
    -0.01
    """
    return _real(name, value, "a finite real number", lambda x: True)


def _real(name: str, value, what: str, accept) -> float:
    """``value`` as a finite float for which ``accept`` holds, else ValueError "name must be what"."""
    if isinstance(value, (bool, str, bytes)):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {what}, got {value!r}") from None
    if not math.isfinite(x) or not accept(x):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return x


def check_dim(name: str, value):
    """Accept a positive integer or a sympy Symbol (for symbolic dimensions); else raise.

    >>> check_dim("d", sympy.Symbol("d", positive=True, integer=True))
    d
    """
    if isinstance(value, sympy.Symbol):
        return value
    return check_int(name, value, 1)


def check_eta_exact(name: str, value):
    """Accept a step size for exact computation: a sympy expression (Symbol allowed) or a
    finite positive number.  Floats are converted with ``sympy.nsimplify`` only when exactly
    representable as a short rational (0.4 -> 2/5); otherwise kept as Float.

    >>> check_eta_exact("eta", 0.4)
    2/5
    """
    return _exact_number(name, value, check_positive_finite)


def _sympy_matrix(name: str, value) -> sympy.Matrix:
    """``value`` as a sympy Matrix without evaluating strings (sympify would parse them)."""
    def has_text(v) -> bool:
        if isinstance(v, (str, bytes)):
            return True
        return isinstance(v, (list, tuple)) and any(has_text(u) for u in v)

    kind = type(value).__name__
    if hasattr(value, "tolist") and not isinstance(value, sympy.MatrixBase):
        value = value.tolist()                               # numpy arrays: object entries too
    if value is None or isinstance(value, (bool, numbers.Number)) or has_text(value):
        raise ValueError(f"{name} must be a square matrix of real numbers, got {kind}")
    try:
        return sympy.Matrix(value)
    except (TypeError, ValueError, AttributeError, IndexError):
        raise ValueError(f"{name} must be a square matrix of real numbers, got {kind}") from None


def _exact(entry):
    """A Float as the exact rational it stores (its binary value); other entries unchanged."""
    return sympy.Rational(entry) if entry.is_Float else entry


def _psd_rank_rational(rows: list) -> int | None:
    """Rank of a symmetric matrix of Fractions when it is positive semi-definite, else None:
    symmetric Gaussian elimination with a positive diagonal pivot (exact; ``O(d^3)``).  A PSD
    matrix has no negative diagonal entry, a zero diagonal entry only in a zero row, and stays
    PSD under the Schur complement of a positive pivot; so does nothing else."""
    A = [row[:] for row in rows]
    index = list(range(len(A)))
    rank = 0
    while index:
        if any(A[i][i] < 0 for i in index):
            return None
        p = max(index, key=lambda i: A[i][i])
        if A[p][p] == 0:
            return rank if all(A[i][j] == 0 for i in index for j in index) else None
        rank += 1
        index.remove(p)
        for i in index:
            f = A[i][p] / A[p][p]
            if f:
                for j in index:
                    A[i][j] -= f * A[p][j]
    return rank


def _psd_rank_symbolic(M: sympy.Matrix) -> int | None | str:
    """As ``_psd_rank_rational`` with sympy arithmetic (irrational or symbolic entries): the rank,
    None when not PSD, "undecided" when a sign cannot be decided."""
    A = M.as_mutable()
    index = list(range(A.rows))
    rank = 0
    while index:
        if any(A[i, i].is_negative for i in index):
            return None
        p = next((i for i in index if A[i, i].is_positive), None)
        if p is None:
            if all(A[i, i].is_zero for i in index):
                zero = [A[i, j].is_zero for i in index for j in index]
                return rank if all(zero) else (None if False in zero else "undecided")
            return "undecided"
        rank += 1
        index.remove(p)
        for i in index:
            f = A[i, p] / A[p, p]
            for j in index:
                A[i, j] = sympy.simplify(A[i, j] - f * A[p, j])
    return rank


def _smallest_eigenvalue(M: sympy.Matrix) -> str:
    """The smallest eigenvalue of a numeric symmetric matrix, to 6 digits (for messages)."""
    import mpmath

    with mpmath.workdps(30):
        A = mpmath.matrix([[mpmath.mpf(str(M[i, j].evalf(30))) for j in range(M.cols)]
                           for i in range(M.rows)])
        return mpmath.nstr(min(mpmath.eigsy(A, eigvals_only=True)), 6)


def covariance_and_rank(name: str, value, d=None) -> tuple:
    """``(Sigma, rank)``: ``check_covariance``'s matrix and its exact rank ``r`` (the number of
    positive pivots of the elimination; ``x ~ N(0, Sigma)`` lies in an r-dimensional subspace).

    >>> covariance_and_rank("Sigma", [[1, 1], [1, 1]])[1]
    1
    """
    if isinstance(d, sympy.Symbol):
        raise ValueError(f"{name} needs an integer d, got the symbol {d}")
    M = _sympy_matrix(name, value)
    if d is not None and M.shape != (d, d):
        raise ValueError(f"{name} must be {d} x {d}, got {M.rows} x {M.cols}")
    if M.rows != M.cols or M.rows == 0:
        raise ValueError(f"{name} must be a square matrix of size >= 1, got {M.rows} x {M.cols}")
    for entry in M:
        if entry.is_extended_real is False or entry.is_finite is False or entry is sympy.nan:
            raise ValueError(f"{name} must contain only finite real numbers, got {entry}")
    for i in range(M.rows):
        for j in range(i):
            difference = M[i, j] - M[j, i]
            if difference != 0 and (difference.is_Number or sympy.simplify(difference) != 0):
                raise ValueError(f"{name} must be symmetric, got {name}[{i}, {j}] = {M[i, j]} "
                                 f"!= {name}[{j}, {i}] = {M[j, i]}")
    exact = M.applyfunc(_exact)
    if all(entry.is_Rational for entry in exact):
        from fractions import Fraction
        rank = _psd_rank_rational([[Fraction(int(exact[i, j].p), int(exact[i, j].q))
                                    for j in range(M.cols)] for i in range(M.rows)])
    else:
        rank = _psd_rank_symbolic(exact)
    if rank == "undecided":
        raise ValueError(f"{name} must be positive semi-definite; the signs of its entries do not "
                         f"decide it (give numbers or sign assumptions)")
    if rank is None:
        if all(entry.is_number for entry in M):
            raise ValueError(f"{name} must be positive semi-definite, smallest eigenvalue "
                             f"{_smallest_eigenvalue(exact)}")
        raise ValueError(f"{name} must be positive semi-definite")
    return M, rank


def check_covariance(name: str, value, d=None) -> sympy.Matrix:
    """Return a covariance ``Sigma`` (of ``x ~ N(0, Sigma)``) as a sympy Matrix when it is a
    ``d x d`` (any square size for ``d=None``) symmetric positive **semi**-definite matrix of finite
    real entries, singular allowed (x confined to ``range(Sigma)``, docs/theory.md section 10);
    else raise one ValueError naming ``name``.

    The check is exact: ``Float`` entries are judged by the binary value they store, and PSD is
    decided by symmetric elimination in rational arithmetic (``O(d^3)``), so a float matrix
    that is PSD only up to rounding (``Q diag(1, 0) Q^T`` computed in floats) can be refused:
    give exact entries, or convert floats with ``numerics.exact_covariance`` (which validates
    them with ``numerics.checks.check_sigma``, a rounding tolerance).
    Symbolic entries are accepted when their sign assumptions decide the question.

    >>> check_covariance("Sigma", [[1, 1], [1, 1]])          # singular: x_1 = x_2
    Matrix([
    [1, 1],
    [1, 1]])
    >>> check_covariance("Sigma", [[1, 2], [2, 1]])
    Traceback (most recent call last):
    ...
    ValueError: Sigma must be positive semi-definite, smallest eigenvalue -1.0
    """
    return covariance_and_rank(name, value, d)[0]


def covariance_or_symbol(name: str, value, d=None):
    """A covariance for the functions whose formula holds for a symbolic Sigma: a ``MatrixSymbol``
    (or another non-explicit square matrix expression, assumed symmetric PSD; its size may be
    symbolic) is returned as it is, anything else goes through ``check_covariance``.

    >>> covariance_or_symbol("Sigma", sympy.MatrixSymbol("Sigma", 3, 3))
    Sigma
    """
    if isinstance(value, sympy.MatrixExpr) and not isinstance(value, sympy.MatrixBase):
        rows, cols = value.shape
        if sympy.simplify(rows - cols) != 0:
            raise ValueError(f"{name} must be square, got {rows} x {cols}")
        if d is not None and sympy.simplify(rows - d) != 0:
            raise ValueError(f"{name} must be {d} x {d}, got {rows} x {cols}")
        return value
    return check_covariance(name, value, d)


def exact_number(value):
    """The one rule for floats in exact proofs: a Python or sympy float becomes
    ``sympy.nsimplify(value, rational=True)`` (the short rational it prints as, 0.4 -> 2/5), the
    same rule as ``check_eta_exact``; everything else is sympified unchanged.  Proofs apply it to
    both sides (parameters and step), so a float construction is judged like its exact one.

    >>> exact_number(0.4), exact_number(0.1 * 3), exact_number(sympy.Symbol("c"))
    (2/5, 3/10, c)
    """
    if isinstance(value, bool) or isinstance(value, (str, bytes)):
        raise ValueError(f"expected a number or a sympy expression, got {value!r}")
    if isinstance(value, float) or (isinstance(value, sympy.Basic) and value.is_Float):
        if not math.isfinite(float(value)):
            raise ValueError(f"expected a finite number, got {value!r}")
        return sympy.nsimplify(float(value), rational=True)
    value = sympy.sympify(value)
    if isinstance(value, sympy.Basic) and value.has(sympy.Float):
        value = value.xreplace({f: sympy.nsimplify(float(f), rational=True) for f in value.atoms(sympy.Float)})
    return value


def check_nonnegative_finite(name: str, value) -> float:
    """Return ``value`` as a float when it is a finite number >= 0, else raise ValueError (label
    noise's variance or standard deviation, docs/theory.md section 16).

    >>> check_nonnegative_finite("noise", 0)
    0.0
    """
    return _real(name, value, "a finite number >= 0", lambda x: x >= 0)


def check_noise_var(name: str, value):
    """Accept a label-noise variance ``s^2`` for exact computation (docs/theory.md section 16): a
    sympy expression (a Symbol allowed) or a finite number >= 0, floats converted as in
    ``check_eta_exact`` (0.25 -> 1/4).

    >>> check_noise_var("noise_var", 0.25)
    1/4
    >>> check_noise_var("noise_var", -1)
    Traceback (most recent call last):
    ...
    ValueError: noise_var must be a finite number >= 0, got -1
    """
    return _exact_number(name, value, check_nonnegative_finite)


def _exact_number(name: str, value, check):
    """A symbolic ``value`` as it is; a number checked by ``check(name, value)``, floats made
    rational with ``sympy.nsimplify``."""
    if isinstance(value, sympy.Basic) and not value.is_number:
        return value
    check(name, value)
    if isinstance(value, float):
        return sympy.nsimplify(value, rational=True)
    return sympy.sympify(value)
