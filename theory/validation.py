"""Argument checks shared by theory, numerics and training.

Every public function of the toolkit validates its inputs with these helpers, so a bad
argument raises one ``ValueError`` that names the parameter, instead of a traceback deep
inside sympy, numpy or torch, or a silently wrong number.  Pure Python: no numpy, no torch.
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
    if isinstance(value, (bool, str, bytes)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}") from None
    if not math.isfinite(x) or x <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return x


def check_finite(name: str, value) -> float:
    """Return ``value`` as a float when it is a finite real number (any sign), else raise.

    >>> check_finite("a0", -0.01)
    -0.01
    """
    if isinstance(value, (bool, str, bytes)):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a finite real number, got {value!r}") from None
    if not math.isfinite(x):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
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
    if isinstance(value, sympy.Basic) and not value.is_number:
        return value
    check_positive_finite(name, value)
    if isinstance(value, float):
        return sympy.nsimplify(value, rational=True)
    return sympy.sympify(value)
