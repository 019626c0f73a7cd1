"""``cotgd evaluate`` judges a run against its own training distribution (training.suite module
docstring; docs/theory.md sections 7 and 10):

* the in-distribution row and the scale-x / scale-w / noisy cases use the run's training Sigma
  (scale-x: ``c^2 Sigma_train``) and its label noise; checked against ``evaluate_params`` on the
  same prompts and against the run's own final evaluation;
* on a singular training Sigma the learned step and the structure metrics are read on
  ``range(Sigma)`` (``U^T W24 V31 U``, ``U^T V31 W13 U``): exact on a constructed model that is
  GD on the range and arbitrary on the null space, and equal to an independent numpy
  projection on a trained run."""
import numpy as np
import pytest
import numerics
from theory import Layout
from training import TrainConfig, evaluate_params, load_run, train
from training.data import derived_seed
from training.structure import structure_metrics
from training.suite import (evaluate_run, evaluate_suite, format_table, model_from_run, scale_x_case,
                            standard_suite, suite_model)

TINY = dict(n=6, k=2, batch=64, eval_every=60, eval_samples=300, theory_samples=300, structure_samples=64,
            progress=False, device="cpu")
SAMPLES = 300                  # = eval_samples: the suite's prompts are the run's final evaluation's
DIAG = np.diag([1.0, 2.0, 3.0])
Q3 = numerics.random_rotation(3, 8)[:, :2]
RANK2 = (Q3 * [2.0, 1.0]) @ Q3.T


def range_basis(sigma: np.ndarray, r: int) -> np.ndarray:
    lam, Q = np.linalg.eigh(sigma)
    return Q[:, np.argsort(lam)[::-1][:r]]


def offdiag(P: np.ndarray) -> float:
    return float(((P - np.diag(np.diag(P))) ** 2).sum() / (P ** 2).sum())


@pytest.fixture(scope="module")
def noisy_diag_run(tmp_path_factory):
    path = tmp_path_factory.mktemp("diag") / "run"
    train(TrainConfig(**TINY, d=3, eta=0.1, iters=60, sigma=DIAG.tolist(), noise=0.5, out=str(path)))
    return str(path)


def test_in_distribution_row_and_scaled_cases_use_the_training_sigma_and_noise(noisy_diag_run):
    result = evaluate_run(noisy_diag_run, samples=SAMPLES, theory_samples=SAMPLES)
    model = model_from_run(noisy_diag_run)
    assert np.array_equal(model.sigma, DIAG) and model.noise == 0.5
    V, W = model.V, model.W
    kw = dict(d=3, n=6, k=2, samples=SAMPLES, seed=0)
    ref = result["in_distribution"]
    assert ref["sigma_eigenvalues"] == [3.0, 2.0, 1.0] and ref["rank"] == 3
    own = evaluate_params(V, W, sigma=DIAG, noise=0.5, **kw)
    assert (ref["mean"], ref["median"], ref["q90"]) == (own["mean"], own["median"], own["q90"])
    paper = evaluate_params(V, W, noise=0.5, **kw)                     # Sigma = I: what it used to be
    assert ref["median"] != paper["median"]
    final = load_run(noisy_diag_run).summary["eval"]                  # the run's own final evaluation
    assert ref["median"] == pytest.approx(final["median"], rel=1e-9)
    mc = numerics.eval_loss_mc(3, 6, model.step, 2, samples=SAMPLES, seed=derived_seed(0, "suite-theory"),
                               sigma=DIAG, noise_var=0.25)
    assert ref["expected_loss"] == pytest.approx(mc["mean"], rel=1e-12)
    cases = {c["name"]: c for c in result["cases"]}
    for c in (0.5, 2):
        row = cases[f"scale-x={c:g}"]
        assert row["sigma_eigenvalues"] == pytest.approx([3 * c * c, 2 * c * c, c * c], rel=1e-15)
        assert row["median"] == evaluate_params(V, W, sigma=c * c * DIAG, noise=0.5, **kw)["median"]
    for name in ("scale-w=2", "noisy"):
        assert cases[name]["sigma_eigenvalues"] == [3.0, 2.0, 1.0]
    assert cases["noisy"]["median"] == evaluate_params(V, W, sigma=DIAG, noise=1.0, **kw)["median"]
    assert result["model"]["sigma"] == DIAG.tolist() and result["model"]["noise"] == 0.5
    assert "Sigma_train, label noise s = 0.5" in format_table(result)
    assert [c.name for c in standard_suite(3, sigma=DIAG, noise=0.5)] == [c.name for c in standard_suite(3)]


def gd_on_the_range(d: int, eta: float, sigma: np.ndarray, r: int, junk: float = 0.9):
    """Theorem 3.2's parameters with V31 and W13 changed on the null space of Sigma only: the
    same function on prompts from Sigma, but the mean diagonal over all d directions moves."""
    V, W = numerics.gd_params(d, eta)
    L = Layout(d)
    N = range_basis(sigma, d)[:, r:]                                   # null space of Sigma
    rng = np.random.default_rng(1)
    V[L.w, L.x] += junk * eta * N @ N.T + 0.3 * rng.standard_normal((d, d - r)) @ N.T     # reads only N
    W[L.x, L.w] += N @ rng.standard_normal((d - r, d - r)) @ N.T
    return V, W


def test_learned_step_and_structure_are_read_on_the_range():
    d, n, k, eta, r = 5, 20, 10, 0.2, 3
    Q = numerics.random_rotation(d, 3)[:, :r]
    sigma = (Q * [2.0, 1.5, 1.0]) @ Q.T
    V, W = gd_on_the_range(d, eta, sigma, r)
    model = suite_model(V, W, mode="cot", n=n, k=k, sigma=sigma)
    assert model.step == pytest.approx(eta, rel=1e-12) and model.step_source.endswith("on range(Sigma)")
    diluted = suite_model(V, W, mode="cot", n=n, k=k).step              # the mean over all d directions
    assert diluted == pytest.approx(-np.mean(np.diag(V[Layout(d).w, Layout(d).x])), rel=1e-12)   # W24 = -1
    assert abs(diluted - eta) > 0.02
    s = structure_metrics(V, W, n=n, eta=eta, k=k, samples=512, sigma=sigma)
    assert s["w24_v31"] == pytest.approx(eta, rel=1e-12) and s["v31_w13"] == pytest.approx(-eta, rel=1e-12)
    assert s["offdiag_energy"] < 1e-24 and s["functional_deviation"] < 1e-9      # GD on the data's range
    assert structure_metrics(V, W, n=n, eta=eta, k=k, samples=64)["offdiag_energy"] > 0.01
    result = evaluate_suite(model, [scale_x_case(d, 3, sigma=sigma)], samples=2000, theory_samples=500)
    ref, scaled = result["in_distribution"], result["cases"][0]
    assert ref["rank"] == r and ref["median"] == pytest.approx(ref["gd_median"], rel=1e-9)
    assert ref["predicted_stable"] and ref["unrecoverable"] == (d - r) / 2
    top = 9 * 2.0 * (1 + np.sqrt(r / n)) ** 2                          # Sigma = 9 Sigma_train on its range
    assert scaled["spectrum_top"] == pytest.approx(top, rel=1e-12) and not scaled["predicted_stable"]
    assert scaled["unstable_frac"] > 0.9 and scaled["diverged_frac"] > 0.5


def test_trained_run_on_a_singular_sigma_reports_the_step_on_the_range(tmp_path):
    path = tmp_path / "run"
    run = train(TrainConfig(**TINY, d=3, eta=0.2, iters=60, sigma=RANK2.tolist(), out=str(path)))
    V, W = run.V.double().numpy(), run.W.double().numpy()
    L, U = Layout(3), range_basis(RANK2, 2)
    V31, W13, W24 = V[L.w, L.x], W[L.x, L.w], float(W[L.y, L.one][0, 0])
    step = W24 * float(np.mean(np.diag(U.T @ V31 @ U)))
    assert step != pytest.approx(W24 * float(np.mean(np.diag(V31))), rel=1e-3)
    assert model_from_run(str(path)).step == pytest.approx(step, rel=1e-9)
    assert run.summary["learned_step"] == pytest.approx(step, rel=1e-9)
    assert run.summary["structure"]["v31_w13"] == pytest.approx(float(np.mean(np.diag(U.T @ V31 @ W13 @ U))),
                                                                 rel=1e-9)
    assert run.summary["structure"]["offdiag_energy"] == pytest.approx(offdiag(U.T @ V31 @ W13 @ U), rel=1e-9)
    result = evaluate_run(str(path), suite="none", sigmas=[("same", RANK2)], samples=100, theory_samples=100)
    assert result["model"]["learned_step"] == pytest.approx(step, rel=1e-9)
    assert "W24 V31 on range(Sigma)" in format_table(result)
    assert result["in_distribution"]["rank"] == 2


def test_nocot_reference_is_the_optimum_for_the_training_distribution():
    """Exact + numeric: for a model trained on Sigma_train with label noise s, the noCoT columns
    are Theorem 3.1's optimum for that distribution, Gamma^{-1} X y / n with Gamma =
    theory.nocot_gamma(d, n, Sigma_train, noise_var=s^2): its exact mean on the in-distribution
    case is the minimum theory.nocot_min_loss_sigma, and the optimum for Sigma = I (what the
    column used to show) does worse there."""
    import sympy
    import theory
    d, n, s = 3, 6, 0.5
    V, W = numerics.nocot_params(d, n, DIAG, noise_var=s * s)
    model = suite_model(V, W, mode="nocot", n=n, k=1, noise=s, sigma=DIAG)
    ref = evaluate_suite(model, standard_suite(d, sigma=DIAG, noise=s)[:1], samples=2000, theory_samples=300)
    row = ref["in_distribution"] if "in_distribution" in ref else ref["cases"][0]
    exact_min = theory.nocot_min_loss_sigma(n, sympy.diag(1, 2, 3), noise_var=sympy.Rational(1, 4))
    assert row["nocot_expected"] == pytest.approx(float(exact_min), rel=1e-12)
    assert row["nocot_median"] == pytest.approx(row["median"], rel=1e-12)     # the model is that optimum
    identity_optimum = theory.linear_prediction_loss(n, sympy.diag(1, 2, 3), theory.nocot_optimal_eta(d, n) * sympy.eye(d),
                                                     noise_var=sympy.Rational(1, 4))
    assert float(identity_optimum) > float(exact_min) * 1.01
