"""Argument checks shared by theory, numerics and training.

Every public function of the toolkit validates its inputs with these helpers, so a bad
argument raises one ``ValueError`` that names the parameter, instead of a traceback deep
inside sympy, numpy or torch, or a silently wrong number.  Pure Python: no numpy, no torch.
``check_covariance`` is the exact (sympy) check of a covariance Sigma: symmetric positive
semi-definite, singular allowed (docs/theory.md section 10); its float64 counterpart, with a
rounding tolerance, is ``numerics.checks.check_sigma``.
"""
from __future__ import annotations

import decimal
import math
import numbers
import sys

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
    """A step size for exact computation: a number > 0 read by the rule of ``exact_real`` (0.4 ->
    2/5, ``np.float32(0.4)`` -> 2/5), or a symbolic expression that is not provably <= 0.

    >>> check_eta_exact("eta", 0.4)
    2/5
    >>> check_eta_exact("eta", -1)
    Traceback (most recent call last):
    ...
    ValueError: eta must be a finite real number > 0, got -1
    """
    return _exact_with_sign(name, value, "a finite real number > 0", lambda x: x.is_positive)


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
    M = exact_matrix(name, value)
    if d is not None and M.shape != (d, d):
        raise ValueError(f"{name} must be {d} x {d}, got {M.rows} x {M.cols}")
    if M.rows != M.cols or M.rows == 0:
        raise ValueError(f"{name} must be a square matrix of size >= 1, got {M.rows} x {M.cols}")
    for i in range(M.rows):
        for j in range(i):
            difference = M[i, j] - M[j, i]
            if difference != 0 and (difference.is_Number or sympy.simplify(difference) != 0):
                raise ValueError(f"{name} must be symmetric, got {name}[{i}, {j}] = {M[i, j]} "
                                 f"!= {name}[{j}, {i}] = {M[j, i]}")
    if all(entry.is_Rational for entry in M):
        from fractions import Fraction
        rank = _psd_rank_rational([[Fraction(int(M[i, j].p), int(M[i, j].q))
                                    for j in range(M.cols)] for i in range(M.rows)])
    else:
        rank = _psd_rank_symbolic(M)
    if rank == "undecided":
        raise ValueError(f"{name} must be positive semi-definite; the signs of its entries do not "
                         f"decide it (give numbers or sign assumptions)")
    if rank is None:
        if all(entry.is_number for entry in M):
            raise ValueError(f"{name} must be positive semi-definite, smallest eigenvalue "
                             f"{_smallest_eigenvalue(M)}")
        raise ValueError(f"{name} must be positive semi-definite")
    return M, rank


def check_covariance(name: str, value, d=None) -> sympy.Matrix:
    """Return a covariance ``Sigma`` (of ``x ~ N(0, Sigma)``) as a sympy Matrix when it is a
    ``d x d`` (any square size for ``d=None``) symmetric positive **semi**-definite matrix of finite
    real entries, singular allowed (x confined to ``range(Sigma)``, docs/theory.md section 10);
    else raise one ValueError naming ``name``.

    The check is exact: entries are read by ``exact_real`` (floats as the shortest decimal that
    round-trips in their own type: ``1.0`` -> 1, ``np.float32(0.3)`` -> 3/10), the returned
    matrix holds those exact values, and PSD is decided by symmetric elimination in rational
    arithmetic (``O(d^3)``), so a float matrix that is PSD only up to rounding (``Q diag(1, 0) Q^T`` computed in floats) can be refused:
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


def check_nonnegative_finite(name: str, value) -> float:
    """Return ``value`` as a float when it is a finite number >= 0, else raise ValueError (label
    noise's variance or standard deviation, docs/theory.md section 16).

    >>> check_nonnegative_finite("noise", 0)
    0.0
    """
    return _real(name, value, "a finite number >= 0", lambda x: x >= 0)


def check_noise_var(name: str, value, *, std: bool = False):
    """A label-noise variance ``s^2`` for exact computation (docs/theory.md section 16): a number
    >= 0 read by the rule of ``exact_real`` (0.25 -> 1/4), or a symbolic expression that is not
    provably negative.  ``std=True``: ``value`` is the standard deviation ``s`` (a number >= 0)
    and its exact square is returned (0.5 -> 1/4).  The one validator of label noise.

    >>> check_noise_var("noise_var", 0.25), check_noise_var("noise", 0.5, std=True)
    (1/4, 1/4)
    >>> check_noise_var("noise_var", -1)
    Traceback (most recent call last):
    ...
    ValueError: noise_var must be a finite real number >= 0, got -1
    """
    value = check_nonnegative_exact(name, value)
    return value ** 2 if std else value


def check_nonnegative_exact(name: str, value):
    """A number >= 0 read by the rule of ``exact_real`` (e.g. an eigenvalue of Sigma, ``gamma =
    d/n``), or a symbolic expression that is not provably negative.

    >>> check_nonnegative_exact("gamma", 0.25)
    1/4
    """
    return _exact_with_sign(name, value, "a finite real number >= 0", lambda x: x.is_nonnegative)


# ---------------------------------------------------------------------------------------------
# The one rule for numbers entering theory (docs/theory.md section 17)


def exact_real(name: str, value):
    """The exact sympy value of a real number entering ``theory``, by one rule: a float of any
    type (Python ``float``, numpy floating of any width, ``sympy.Float`` of any precision) becomes
    the rational of the **shortest decimal that round-trips in its own type** (``np.float32(0.4)``
    -> 2/5, ``0.400000001`` -> 400000001/10^9, ``0.1 * 3`` -> 30000000000000004/10^17: nothing is
    snapped to a nearby "nice" rational); integers of any type (numpy included), ``Fraction`` and
    ``Decimal`` are exact already.  A sympy expression keeps its symbols, its Float atoms read by
    the same rule.  Strings, bools, complex numbers, NaN and infinities are refused with one
    ValueError naming ``name`` (docs/theory.md section 17).

    >>> import fractions
    >>> exact_real("eta", 0.4), exact_real("eta", 0.400000001), exact_real("eta", fractions.Fraction(1, 3))
    (2/5, 400000001/1000000000, 1/3)
    >>> exact_real("eta", sympy.Float("0.1", 50) * sympy.Symbol("c"))
    c/10
    >>> exact_real("eta", "0.4")
    Traceback (most recent call last):
    ...
    ValueError: eta must be a finite real number, got '0.4'
    """
    bad = ValueError(f"{name} must be a finite real number, got {value!r}")
    if isinstance(value, (bool, str, bytes, complex)) or value is None:
        raise bad
    numpy = sys.modules.get("numpy")
    if numpy is not None and type(value).__module__ != "numpy" and hasattr(value, "__array__") \
            and not isinstance(value, sympy.Basic):
        value = numpy.asarray(value)                        # e.g. a torch scalar: read in its dtype
    if type(value).__module__ == "numpy":
        if getattr(value, "ndim", 0) != 0:
            raise ValueError(f"{name} must be a real number, got an array of shape {value.shape}")
        value = value[()]                                   # a 0-d array as its scalar
        dtype_kind = getattr(getattr(value, "dtype", None), "kind", None)
        if dtype_kind == "f":
            text = str(value)                               # numpy prints the shortest round trip
            if text in ("nan", "inf", "-inf"):
                raise bad
            return sympy.Rational(text)
        if dtype_kind in ("i", "u"):
            return sympy.Integer(int(value))
        if dtype_kind is not None:                          # complex, bool, strings, objects, ...
            raise bad
    if isinstance(value, float):
        if not math.isfinite(value):
            raise bad
        return sympy.Rational(repr(float(value)))
    if isinstance(value, numbers.Integral):
        return sympy.Integer(int(value))
    if isinstance(value, numbers.Rational):
        return sympy.Rational(int(value.numerator), int(value.denominator))
    if isinstance(value, decimal.Decimal):
        if not value.is_finite():
            raise bad
        return sympy.Rational(str(value))
    if not isinstance(value, sympy.Basic):
        try:
            value = sympy.sympify(value, strict=True)       # e.g. an mpmath number; never a string
        except (sympy.SympifyError, TypeError, ValueError):
            raise bad from None
    if not isinstance(value, sympy.Expr) or isinstance(value, sympy.MatrixBase):
        raise bad
    if value.is_Float:
        value = _shortest_rational(value)
    elif value.has(sympy.Float):
        value = value.xreplace({f: _shortest_rational(f) for f in value.atoms(sympy.Float)})
    if value.is_number and (value is sympy.nan or value.is_extended_real is False or value.is_finite is False):
        raise bad
    if value.is_number and value.is_extended_real is None:
        raise bad                                           # e.g. an undecidable complex number
    return value


def _shortest_rational(f: sympy.Float) -> sympy.Rational:
    """The rational of the shortest decimal that rounds back to ``f`` at ``f``'s precision."""
    from mpmath import libmp

    mpf, prec = f._mpf_, f._prec
    if mpf in (libmp.fnan, libmp.finf, libmp.fninf):
        raise ValueError(f"not a finite number: {f}")
    for digits in range(1, int(prec * 0.30103) + 3):
        text = libmp.to_str(mpf, digits)
        if libmp.from_str(text, prec, libmp.round_nearest) == mpf:
            return sympy.Rational(text)
    return sympy.Rational(*libmp.to_rational(mpf))          # not reached: the exact binary value


def _exact_with_sign(name: str, value, what: str, sign):
    """``exact_real`` of ``value``, refused (``name must be what``) unless ``sign(value)`` is True,
    or, for a symbolic expression, not False (undecided signs are the caller's assumption)."""
    try:
        x = exact_real(name, value)
    except ValueError:
        raise ValueError(f"{name} must be {what}, got {value!r}") from None
    verdict = sign(x)
    if verdict is False or (x.is_number and verdict is not True):
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return x


def exact_matrix(name: str, value) -> sympy.Matrix:
    """A matrix entering ``theory`` (Sigma, P, V, W) as a sympy Matrix, every entry read by
    ``exact_real``: a sympy Matrix, a numpy array (entries in their own type: float32 stays
    float32 until read) or nested lists.  Strings, complex, NaN, inf refused naming ``name``.

    >>> import numpy as np
    >>> exact_matrix("Sigma", np.array([[1, 0.4], [0.4, 3]], dtype=np.float32))
    Matrix([
    [  1, 2/5],
    [2/5,   3]])
    """
    kind = type(value).__name__
    numpy = sys.modules.get("numpy")            # loaded whenever a user holds an array of any kind
    if numpy is not None and type(value).__module__ != "numpy" and hasattr(value, "__array__") \
            and not isinstance(value, sympy.MatrixBase):
        value = numpy.asarray(value)            # e.g. a torch tensor: its entries keep their dtype
    if isinstance(value, sympy.MatrixBase):
        rows = value.tolist()
    elif type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 2:
        rows = [[value[i, j] for j in range(value.shape[1])] for i in range(value.shape[0])]
    elif isinstance(value, (list, tuple)) and all(isinstance(r, (list, tuple)) for r in value):
        rows = [list(r) for r in value]
    elif isinstance(value, (list, tuple)) or (type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 1):
        rows = [[v] for v in value]                          # a column, as sympy.Matrix reads it
    else:
        raise ValueError(f"{name} must be a square matrix of real numbers, got {kind}")
    if rows and len({len(r) for r in rows}) != 1:
        raise ValueError(f"{name} must be a matrix of real numbers with rows of equal length, got {kind}")
    exact = []
    for i, row in enumerate(rows):
        exact_row = []
        for j, v in enumerate(row):
            try:
                exact_row.append(exact_real(f"{name}[{i}, {j}]", v))
            except ValueError:
                raise ValueError(f"{name} must be a matrix of real numbers (finite real entries), got "
                                 f"{name}[{i}, {j}] = {v!r}") from None
        exact.append(exact_row)
    return sympy.Matrix(exact) if exact else sympy.zeros(0, 0)


def exact_operand(name: str, value):
    """A scalar or matrix operand of the GD algebra (``theory.gd``) by the number rule: a sympy
    matrix expression of symbolic shape (``MatrixSymbol``, ``Identity``, ...) as it is, an explicit
    sympy Matrix with its Float entries read by ``exact_real`` (unchanged when it has none), a
    numpy array or nested list by ``exact_matrix`` (a 1-d one as a column), anything else by
    ``exact_real``.

    >>> exact_operand("eta", 0.5), exact_operand("S", [[0.5]])
    (1/2, Matrix([[1/2]]))
    """
    if isinstance(value, sympy.MatrixBase):
        return value.applyfunc(lambda e: exact_real(name, e)) if value.has(sympy.Float) else value
    if isinstance(value, sympy.MatrixExpr):
        return value
    if isinstance(value, (list, tuple)) or (type(value).__module__ == "numpy" and getattr(value, "ndim", 0) >= 1):
        return exact_matrix(name, value)
    return exact_real(name, value)

