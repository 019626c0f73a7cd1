"""One verdict for Theorem 4.2's stability rule (docs/theory.md section 7): ``cotgd train``'s
warning (``evaluate.step_stability``), ``cotgd evaluate``'s verdict (``suite.theorem_42`` and a
suite case's ``predicted_stable``), the ood figure's boundary (``figures.scale_boundary``) and the
sweep plot's (``sweep_plot.boundary_scales``) agree with each other and with the rule written out
here: stable iff ``eta lambda_max(Sigma) (1 + sqrt(r/n))^2 < 2``, ``r = rank Sigma``.

Covariances: singular (diag(1, 0) in d = 2; a rotated rank-3 Sigma in d = 5) and non-singular
(I, diag(1, .., 5)).  Steps: 3% on either side of the rank bound and, for the singular ones,
between the rank bound and the (wrong) ambient-d bound, where the two rules disagree."""
import math

import numpy as np
import pytest

import numerics
from training import TrainConfig
from training.evaluate import sigma_spectrum, step_stability
from training.app.figures import scale_boundary
from training.suite import covariance_case, evaluate_case, suite_model, theorem_42
from training.app.sweep_plot import boundary_scales

Q5 = numerics.random_rotation(5, 4)[:, :3]
SIGMAS = {                      # name: (Sigma, n, lambda_max, rank)
    "diag(1, 0), d 2": (np.diag([1.0, 0.0]), 4, 1.0, 1),
    "rank 3 in d 5": ((Q5 * [2.0, 1.5, 1.0]) @ Q5.T, 20, 2.0, 3),
    "I, d 3": (np.eye(3), 6, 1.0, 3),
    "diag(1..5)": (np.diag([1.0, 2.0, 3.0, 4.0, 5.0]), 20, 5.0, 5),
}


def written_out(lam_max: float, r: int, d: int, n: int) -> tuple[float, float]:
    """The rule's bound on range(Sigma) (rank r) and the ambient-d formula's, as written."""
    return 2 / (lam_max * (1 + math.sqrt(r / n)) ** 2), 2 / (lam_max * (1 + math.sqrt(d / n)) ** 2)


def steps(name: str) -> list[tuple[float, bool]]:
    sigma, n, lam_max, r = SIGMAS[name]
    d = sigma.shape[0]
    bound, ambient = written_out(lam_max, r, d, n)
    out = [(0.97 * bound, True), (1.03 * bound, False)]
    if r < d:
        out.append(((bound + ambient) / 2, True))          # stable on the range, "unstable" with d
    return out


@pytest.mark.parametrize("name", list(SIGMAS))
def test_train_evaluate_figure_and_sweep_plot_agree(name):
    sigma, n, lam_max, r = SIGMAS[name]
    d = sigma.shape[0]
    bound, _ = written_out(lam_max, r, d, n)
    spectrum = sigma_spectrum(sigma, d)
    assert spectrum.rank == r
    for eta, stable in steps(name):
        train = step_stability(TrainConfig(d=d, n=n, k=2, eta=eta, sigma=sigma.tolist()))
        assert train["stable"] is stable and train["rank"] == r
        assert train["bound"] == pytest.approx(bound, rel=1e-12)
        suite = theorem_42(eta, spectrum, d, n, 2)
        assert suite["predicted_stable"] is stable
        assert suite["stable_step_bound"] == pytest.approx(bound, rel=1e-12)
        assert (suite["eta_top"] < 2) is stable
        assert (scale_boundary(eta, d, n, sigma) > 1) is stable
        assert bool(boundary_scales([eta], d, n, sigma)[0] > 1) is stable
    eta, stable = steps(name)[-1]
    model = suite_model(*numerics.gd_params(d, eta), mode="cot", n=n, k=2, step=eta)
    case = evaluate_case(model, covariance_case(name, sigma, d), samples=64, theory_samples=64)
    assert case["predicted_stable"] is stable and case["rank"] == r


def test_the_reproducer_of_issue_22():
    """Sigma = diag(1, 0), d 2, n 4, eta 0.8: train said unstable (bound 0.686, the ambient d),
    evaluate stable (0.889, the rank): now both say stable with 8/9; Sigma = I says unstable."""
    config = TrainConfig(d=2, n=4, k=2, eta=0.8, sigma=[[1.0, 0.0], [0.0, 0.0]])
    assert step_stability(config) == {"bound": pytest.approx(8 / 9, rel=1e-15), "stable": True, "top": 2.25,
                                      "rank": 1, "rule": step_stability(config)["rule"]}
    assert "range(Sigma)" in step_stability(config)["rule"]
    identity = step_stability(TrainConfig(d=2, n=4, k=2, eta=0.8))
    assert not identity["stable"] and identity["bound"] == pytest.approx(2 / (1 + math.sqrt(0.5)) ** 2, rel=1e-12)
    assert theorem_42(0.8, sigma_spectrum(np.diag([1.0, 0.0]), 2), 2, 4, 2)["predicted_stable"]


def test_boundaries_scale_with_sigma_and_step():
    """c Sigma is stable iff c < c*: c* = bound(Sigma) / eta, the figure's and the sweep plot's."""
    bound = written_out(1.0, 10, 10, 20)[0]
    assert scale_boundary(0.4, 10, 20) == pytest.approx(bound / 0.4, rel=1e-12)
    assert scale_boundary(0.4, 10, 20) == pytest.approx(1.716, abs=5e-4)          # docs/theory.md section 7
    etas = np.array([0.1, 0.4, 1.3])
    assert np.allclose(boundary_scales(etas, 10, 20), bound / etas, rtol=1e-12)
    assert scale_boundary(0.4, 2, 4, np.zeros((2, 2))) == math.inf               # S = 0: never unstable
    with pytest.raises(ValueError, match="semi-definite"):
        scale_boundary(0.4, 2, 4, -np.eye(2))
