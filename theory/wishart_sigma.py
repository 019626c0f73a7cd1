"""Exact Wishart moments for a general covariance (docs/theory.md section 13).

``S = X X^T / n`` with the columns of ``X`` i.i.d. ``N(0, Sigma)``, i.e. ``X = Sigma^{1/2} G`` with
``G`` a ``d x n`` standard Gaussian matrix, so ``n^m tr(S^m) = tr((Sigma W)^m)`` with
``W = G G^T``.  ``n^m E tr(S^m)`` is a polynomial in ``n`` and the power sums
``p_j = tr(Sigma^j)``, homogeneous of weight ``m`` in the ``p_j`` (weight of ``p_j`` is ``j``),
with non-negative integer coefficients that count Wick pairings (genus expansion): a pairing of the
``2m`` Gaussian factors contributes ``n^(#column classes)`` times ``prod tr(Sigma^len)`` over the
cycles its row indices form through the ``Sigma`` factors.

Method: a memoised integration-by-parts (Stein) recursion over products of traces of words
``tr(Sigma^{a_1} W Sigma^{a_2} W ... Sigma^{a_r} W)`` (a word is the tuple ``(a_1, .., a_r)``, up
to rotation and reversal: ``tr(M) = tr(M^T)``).  ``E[G_ab f(G)] = E[df/dG_ab]`` applied to the
first ``W = G G^T`` of a word removes one ``W``:

* the ``G^T`` of the same ``W``: ``n tr(Sigma^{a_1 + a_2} W .. Sigma^{a_r} W)`` (``n p_{a_1}`` for
  ``r = 1``);
* another ``W`` of the same word, between ``A = Sigma^{a_2} W .. Sigma^{a_j}`` and ``B``: the
  twisted word ``tr(A^T W B Sigma^{a_1})`` and the split ``tr(A W) tr(B Sigma^{a_1})``;
* a ``W`` of another trace ``tr(C_1 W C_2)``: the merged ``tr(R Sigma^{a_1} (C_2 C_1 +
  (C_2 C_1)^T) W)``, ``R`` the rest of the first word.

The recursion ends in products of ``p_j`` and powers of ``n``; every state is memoised, so the
``(2m - 1)!!`` pairings are never listed.  Two evaluations share the one transition function
``_transitions``: with polynomial values (the table of ``power_sum_polynomial``, in ``n`` and the
``p_j``, cached per ``m``) and with numbers (a given Sigma, its ``p_j`` exact; ``n`` an integer,
or a symbol through polynomials in ``n`` packed into one integer).  The number of states roughly
doubles with each ``m``; the polynomial evaluation costs more per state than the numeric one,
hence two limits, ``MAX_SIGMA_SYMBOLIC_MOMENT`` and ``MAX_SIGMA_MOMENT``.

Checks (tests/theory/test_wishart_sigma.py): at ``p_j = d`` the polynomial is the identity-
covariance ``Q_m(d, n)`` of the bidiagonal / Wick methods (theory.wishart); ``d = 1`` gives
``lambda^m E chi_n^{2m}``; the coefficients sum to ``(2m - 1)!!``; the leading order in ``d`` is
the free-probability (non-crossing) limit; Monte Carlo for rotated, diagonal and singular Sigma.

Pure sympy and the Python standard library: no numpy, scipy or torch.
"""
from __future__ import annotations

import math
from functools import lru_cache

import sympy

__all__ = ["MAX_SIGMA_MOMENT", "MAX_SIGMA_SYMBOLIC_MOMENT", "power_sum_polynomial"]

#: Largest m for which ``E tr(S^m)`` is available for an explicit numeric Sigma (any n).
MAX_SIGMA_MOMENT = 20

#: Largest m for which ``E tr(S^m)`` is available as a polynomial in the power sums of Sigma
#: (symbolic Sigma: a MatrixSymbol or symbolic entries).
MAX_SIGMA_SYMBOLIC_MOMENT = 16

_FIELD = 6                      # bits per power-sum exponent in a packed monomial key


@lru_cache(maxsize=None)
def _canonical(word: tuple) -> tuple:
    """The least rotation of ``word`` or of its reversal (``tr(M) = tr(M^T)``, cyclic)."""
    best = word
    for seq in (word, word[::-1]):
        for s in range(len(seq)):
            rotated = seq[s:] + seq[:s]
            if rotated < best:
                best = rotated
    return best


def _state(words, rest) -> tuple:
    return tuple(sorted([_canonical(w) for w in words] + list(rest)))


def _transitions(state: tuple):
    """The terms of ``E[prod of the traces in state]`` after integrating out one ``W``.

    Yields ``(next_state, with_n, a)``: the term is ``n^with_n p_a E[prod next_state]`` (``a = 0``:
    no power sum).  The ``W`` integrated out is the first one of a shortest word.
    """
    index = min(range(len(state)), key=lambda i: len(state[i]))
    word = state[index]
    rest = state[:index] + state[index + 1:]
    a1, r = word[0], len(word)
    if r == 1:
        yield rest, 1, a1
    else:
        yield _state([(a1 + word[1],) + word[2:]], rest), 1, 0
    for j in range(2, r + 1):
        A, B = word[1:j], word[j:]
        yield _state([(a1 + word[j - 1],) + word[j - 2:0:-1] + B], rest), 0, 0
        if B:
            yield _state([A, (a1 + B[0],) + B[1:]], rest), 0, 0
        else:
            yield _state([A], rest), 0, a1
    for i, C in enumerate(rest):
        others = rest[:i] + rest[i + 1:]
        for t in range(len(C)):
            X = C[t + 1:] + C[:t + 1]
            for Y in (X, X[::-1]):
                yield _state([word[1:] + (a1 + Y[0],) + Y[1:]], others), 0, 0


def _evaluate(ms, leaf, combine) -> list:
    """``[E tr((Sigma W)^m) for m in ms]`` by the memoised recursion (one memo for all ``ms``:
    their states overlap): ``leaf`` is the value of the empty product, ``combine(acc, value,
    with_n, a)`` adds ``n^with_n p_a value`` to ``acc`` (None at first)."""
    memo: dict = {}

    def value(state):
        if not state:
            return leaf
        known = memo.get(state)
        if known is not None:
            return known
        acc = None
        for following, with_n, a in _transitions(state):
            acc = combine(acc, value(following), with_n, a)
        memo[state] = acc
        return acc

    return [value(((1,) * m,)) for m in ms]


def _pairings(m: int) -> int:
    return math.prod(range(1, 2 * m, 2))


@lru_cache(maxsize=None)
def _power_sum_table(m: int) -> dict:
    """``{(e, partition): c}`` with ``E tr((Sigma W)^m) = sum c n^e prod_{j in partition} p_j``."""
    if m == 0:
        return {(0, (0,)): 1}
    bits = _pairings(m).bit_length() + 1     # every coefficient counts pairings: <= (2m - 1)!!

    def combine(acc, value, with_n, a):
        acc = {} if acc is None else acc
        shift = (1 << (_FIELD * (a - 1))) if a else 0
        for key, packed in value.items():
            key += shift
            acc[key] = acc.get(key, 0) + (packed << bits if with_n else packed)
        return acc

    (packed,) = _evaluate([m], {0: 1}, combine)
    mask = (1 << bits) - 1
    table = {}
    for key, poly in packed.items():
        partition = []
        for a in range(1, m + 1):
            partition += [a] * ((key >> (_FIELD * (a - 1))) & ((1 << _FIELD) - 1))
        e = 0
        while poly:
            if poly & mask:
                table[(e, tuple(sorted(partition, reverse=True)))] = poly & mask
            poly >>= bits
            e += 1
    return table


def power_sum_polynomial(m: int, n, p) -> sympy.Expr:
    """``n^m E tr(S^m) = E tr((Sigma W)^m)`` as a polynomial in ``n`` and the power sums
    ``p(j) = tr(Sigma^j)`` (docs/theory.md section 13); ``p`` is a callable ``j -> expression``.
    ``m = 0`` gives ``p(0)`` (``= d``).  Needs ``m <= MAX_SIGMA_SYMBOLIC_MOMENT``.

    >>> p = sympy.IndexedBase("p")
    >>> power_sum_polynomial(2, sympy.Symbol("n"), lambda j: p[j])
    n**2*p[2] + n*p[1]**2 + n*p[2]
    """
    table = _power_sum_table(m)
    powers = {}

    def power(j):
        if j not in powers:
            powers[j] = p(j)
        return powers[j]

    return sympy.Add(*[c * n ** e * sympy.Mul(*[power(j) for j in part])
                       for (e, part), c in sorted(table.items())])


def numeric_moments(ms, n, p: list) -> list:
    """``[E tr((Sigma W)^m) for m in ms]`` for numeric power sums ``p[j] = tr(Sigma^j)``,
    non-negative integers (scale a rational Sigma to an integer one first: the moment is
    homogeneous of degree m), ``j = 0 .. max(ms)``.  One memo serves all orders.

    ``n`` an int: the values, ints.  ``n`` None: for each m the coefficients ``[c_0, .., c_{m+1}]``
    of the polynomial in ``n`` (evaluated with polynomials in ``n`` packed into single integers).

    >>> numeric_moments([0, 1, 2], 3, [2, 2, 2])     # Sigma = I_2, n = 3: d, d n, d n (n + d + 1)
    [2, 6, 36]
    >>> numeric_moments([2], None, [2, 2, 2])        # 2 n^2 + 6 n
    [[0, 6, 2, 0]]
    """
    ms = list(ms)
    positive = [m for m in ms if m > 0]
    if n is not None:
        def combine(acc, value, with_n, a):
            term = value * (n if with_n else 1) * (p[a] if a else 1)
            return term if acc is None else acc + term
        values = dict(zip(positive, _evaluate(positive, 1, combine)))
        return [values[m] if m else p[0] for m in ms]
    top = max(positive, default=0)
    bits = (_pairings(top) * max(1, p[1] if top else 1) ** top).bit_length() + 1  # p_mu <= p_1^m
    shift = 1 << bits

    def combine_packed(acc, value, with_n, a):
        term = value * (shift if with_n else 1) * (p[a] if a else 1)
        return term if acc is None else acc + term

    values = dict(zip(positive, _evaluate(positive, 1, combine_packed)))
    out = []
    for m in ms:
        if m == 0:
            out.append([p[0]])
            continue
        packed, mask, coefficients = values[m], shift - 1, []
        for _ in range(m + 2):
            coefficients.append(packed & mask)
            packed >>= bits
        if packed:
            raise ArithmeticError("packed polynomial overflow")     # excluded by the bound
        out.append(coefficients)
    return out
