"""``theory.stability_verdict`` (docs/theory.md section 7): exact values against the interval
formula on range(Sigma), the three ways to give Sigma agree, and bad input is one ValueError."""
import fractions

import pytest
import sympy

import theory


def test_exact_values_on_the_range():
    """diag(1, 0), d 2, n 4: r = 1, top (1 + sqrt(1/4))^2 = 9/4, bound 8/9; eta 4/5 stable."""
    v = theory.stability_verdict(sympy.Rational(4, 5), [1, 0], 2, 4)
    assert v == theory.StabilityVerdict(1, (sympy.Rational(1, 4), sympy.Rational(9, 4)), sympy.Rational(9, 4),
                                        sympy.Rational(8, 9), True)
    assert not theory.stability_verdict(sympy.Rational(8, 9), [1, 0], 2, 4).stable       # eta = bound
    identity = theory.stability_verdict(sympy.Rational(4, 5), None, 2, 4)
    assert identity.rank == 2 and identity.top == sympy.expand((1 + sympy.sqrt(sympy.Rational(1, 2))) ** 2)
    assert not identity.stable and identity.bound == theory.stable_eta_bound([1], 2, 4)
    zero = theory.stability_verdict(100, [0, 0, 0], 3, 4)
    assert zero.rank == 0 and zero.bound == sympy.oo and zero.stable


def test_eigenvalues_matrix_and_none_agree():
    Sigma = sympy.Matrix([[2, 1, 0], [1, 2, 0], [0, 0, 0]])          # eigenvalues 3, 1, 0
    by_matrix = theory.stability_verdict(fractions.Fraction(1, 5), Sigma, 3, 8)
    by_values = theory.stability_verdict(0.2, [3, 1, 0], 3, 8)
    by_lists = theory.stability_verdict(0.2, Sigma.tolist(), 3, 8)
    assert by_matrix == by_values == by_lists
    assert by_values.rank == 2 and by_values.interval == theory.spectrum_interval([3, 1], 2, 8)
    assert theory.stability_verdict(0.3, None, 4, 9) == theory.stability_verdict(0.3, sympy.eye(4), 4, 9)


@pytest.mark.parametrize("args, needle", [
    ((0.1, [1, 2], 3, 4), "3 eigenvalues"),
    ((0.1, [[1, 2], [3, 4]], 2, 4), "symmetric"),
    ((0.1, [[1, 0], [0, 1]], 3, 4), "3 x 3"),
    ((0.1, [1, -1], 2, 4), ">= 0"),
    ((0, [1, 1], 2, 4), "eta"),
    ((0.1, [1, 1], 2, 0), "n"),
    ((0.1, "ab", 2, 4), "sigma"),
    ((0.1, [1, sympy.Symbol("c", positive=True)], 2, 4), "numbers"),
])
def test_bad_input_is_one_value_error(args, needle):
    with pytest.raises(ValueError, match=needle) as info:
        theory.stability_verdict(*args)
    assert "\n" not in str(info.value)
