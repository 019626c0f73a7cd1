"""The OOD suite (training.suite; docs/theory.md sections 7 and 10) against independent numbers.

The "trained model" of most tests is Theorem 3.2's transformer ``numerics.gd_params(d, eta)``:
its learned step is eta exactly, and on the same prompts its losses are GD's.  The prompts of a
case are drawn again here from ``evaluate.eval_generator(seed)`` and GD, Theorem 3.1's no-CoT
predictions and their medians are computed in numpy, outside the suite's code.  Exact values
come from theory (sympy), Theorem 4.2's verdicts from the interval formula written out."""
import json
import math

import numpy as np
import pytest
import sympy
import torch

import numerics
import theory
from training import TrainConfig, load_run, train
from training.data import derived_seed, sample_prompts, sigma_root
from training.evaluate import eval_generator, eval_losses
from training.suite import (SUITES, W_SCALES, X_SCALES, Case, covariance_case, evaluate_case, evaluate_run,
                            evaluate_suite, format_table, half_subspace_case, load_covariance, model_from_run,
                            noisy_case, scale_w_case, scale_x_case, skewed_case, standard_suite,
                            suite_model)

D, N, K, ETA = 3, 6, 3, 0.3
SAMPLES = 2000          # one chunk of eval_losses: the prompts below are the suite's


@pytest.fixture(scope="module")
def gd_model():
    return suite_model(*numerics.gd_params(D, ETA), mode="cot", n=N, k=K)


def case_prompts(case: Case, d: int, n: int, samples: int = SAMPLES, seed: int = 0):
    """The case's prompts drawn again, as numpy: ``S`` (B, d, d) and the (scaled) ``w*`` (B, d)."""
    p = sample_prompts(samples, d, n, generator=eval_generator(seed, torch.device("cpu")),
                       sigma_sqrt=sigma_root(case.sigma, d), dtype=torch.float64)
    X = p.X.numpy()
    return X @ X.transpose(0, 2, 1) / n, case.w_scale * p.w_star.numpy()


def gd_losses(S, w, eta, k):
    e = -w
    for _ in range(k):
        e = e - eta * np.einsum("bij,bj->bi", S, e)
    return 0.5 * np.einsum("bi,bi->b", e, e)


def linear_losses(S, w, A):
    e = np.einsum("ij,bjk,bk->bi", A, S, w) - w
    return 0.5 * np.einsum("bi,bi->b", e, e)


def close(a, b, rel=1e-9):
    return a == b or abs(a - b) <= rel * max(abs(a), abs(b))


CASES = [scale_x_case(D, 0.5), scale_x_case(D, 2), skewed_case(D), half_subspace_case(D), scale_w_case(2),
         scale_w_case(0.5)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_medians_against_gd_and_nocot_on_the_same_prompts(gd_model, case):
    """Theorem 3.2's transformer: its median is GD's (learned step eta); the no-CoT columns are
    eta_1 S w* (Theorem 3.1, in distribution) and Gamma^{-1} S w* (optimal for Sigma)."""
    out = evaluate_case(gd_model, case, samples=SAMPLES, theory_samples=2000)
    S, w = case_prompts(case, D, N)
    gd = gd_losses(S, w, ETA, K)
    assert out["step"] == pytest.approx(ETA, rel=1e-15) and out["gd_steps"] == K
    assert close(out["median"], float(np.median(gd))) and close(out["gd_median"], float(np.median(gd)))
    assert close(out["q10"], float(np.quantile(gd, 0.1))) and close(out["q90"], float(np.quantile(gd, 0.9)))
    assert close(out["mean"], float(gd.mean())) or math.isinf(out["mean"])
    eta_1 = N / (N + D + 1)
    nocot = linear_losses(S, w, eta_1 * np.eye(D))
    assert close(out["nocot_median"], float(np.median(nocot)))
    sigma = np.eye(D) if case.sigma is None else case.sigma
    gamma = (1 + 1 / N) * sigma + np.trace(sigma) / N * np.eye(D)
    assert close(out["nocot_sigma_median"], float(np.median(linear_losses(S, w, np.linalg.inv(gamma)))), 1e-7)
    exact_nocot = theory.linear_prediction_loss(N, numerics.exact_covariance(sigma, D),
                                                theory.nocot_optimal_eta(D, N) * sympy.eye(D))
    assert out["nocot_expected"] == pytest.approx(case.w_scale ** 2 * float(exact_nocot), rel=1e-12)


@pytest.mark.parametrize("c", X_SCALES)
def test_scale_x_expected_loss_is_exact_gd_at_eta_c_squared(gd_model, c):
    """S -> c^2 S: GD with step eta on Sigma = c^2 I is GD with step eta c^2 on Sigma = I."""
    out = evaluate_case(gd_model, scale_x_case(D, c), samples=500, theory_samples=500)
    exact = theory.gd_eval_loss(D, N, sympy.Rational(ETA * (c * c)), K)
    assert out["expected_method"].startswith("exact theory.gd_eval_loss")
    assert out["expected_loss"] == pytest.approx(float(exact), rel=1e-12)
    if c < 1:        # stable: the scaling identity checked by Monte Carlo on the covariance itself
        mc = numerics.eval_loss_mc(D, N, ETA, K, samples=40_000, seed=1, sigma=c * c * np.eye(D))
        assert abs(mc["mean"] - out["expected_loss"]) < 4 * mc["se"]


def test_scale_w_expected_is_c_squared_and_monte_carlo_elsewhere(gd_model):
    out = evaluate_case(gd_model, scale_w_case(2), samples=500, theory_samples=500)
    assert out["expected_loss"] == pytest.approx(4 * float(theory.gd_eval_loss(D, N, sympy.Rational(ETA), K)),
                                                 rel=1e-12)
    skewed = evaluate_case(gd_model, skewed_case(D), samples=500, theory_samples=3000)
    assert skewed["expected_method"].startswith("monte_carlo")
    mc = numerics.eval_loss_mc(D, N, ETA, K, samples=3000, seed=derived_seed(0, "suite-theory"),
                               sigma=skewed_case(D).sigma)
    assert skewed["expected_loss"] == (mc["mean"] if math.isfinite(mc["mean"]) else None)


def test_theorem_42_verdict_flips_at_the_predicted_boundary(gd_model):
    """Sigma = c^2 I: stable iff eta c^2 (1 + sqrt(d/n))^2 < 2 (docs/theory.md section 7)."""
    top = (1 + math.sqrt(D / N)) ** 2
    c_star = math.sqrt(2 / (ETA * top))
    below = evaluate_case(gd_model, scale_x_case(D, 0.97 * c_star), samples=300, theory_samples=300)
    above = evaluate_case(gd_model, scale_x_case(D, 1.03 * c_star), samples=300, theory_samples=300)
    assert below["predicted_stable"] and not above["predicted_stable"]
    assert below["spectrum_top"] == pytest.approx((0.97 * c_star) ** 2 * top, rel=1e-12)
    assert below["eta_top"] == pytest.approx(ETA * below["spectrum_top"], rel=1e-12)
    assert theory.is_stable(sympy.Rational(ETA), sympy.Rational(below["spectrum_top"]))
    assert not theory.is_stable(sympy.Rational(ETA), sympy.Rational(above["spectrum_top"]))
    far = evaluate_case(gd_model, scale_x_case(D, 3), samples=2000, theory_samples=300)
    near = evaluate_case(gd_model, scale_x_case(D, 0.333), samples=2000, theory_samples=300)
    assert far["unstable_frac"] > 0.95 and near["unstable_frac"] == 0.0
    S = numerics.sample_gram(D, N, 2000, seed=derived_seed(0, "suite-spectrum"),
                             sigma=9 * np.eye(D))
    assert far["unstable_frac"] == float(np.mean(ETA * np.linalg.eigvalsh(S)[:, -1] >= 2))


def test_singular_sigma_unrecoverable_part_and_interval_on_its_range():
    """half_subspace, d = 4: rank 2, eigenvalue 2; (d - r)/2 = 1 is never learned; the interval is
    the one of dimension r (docs/theory.md section 10); large k at a stable step ends at it."""
    d, n, eta, k = 4, 20, 0.3, 40
    model = suite_model(*numerics.gd_params(d, eta), mode="cot", n=n, k=k)
    out = evaluate_case(model, half_subspace_case(d), samples=4000, theory_samples=500)
    assert out["rank"] == 2 and out["unrecoverable"] == 1.0 and out["limit_loss"] == 1.0
    assert out["spectrum_top"] == pytest.approx(2 * (1 + math.sqrt(2 / n)) ** 2, rel=1e-12)
    assert out["spectrum_interval"][0] == pytest.approx(2 * (1 - math.sqrt(2 / n)) ** 2, rel=1e-12)
    assert out["predicted_stable"]
    assert abs(out["mean"] - out["unrecoverable"]) < 4 * out["se"] + 1e-6
    assert out["loss_bound"] >= out["unrecoverable"]


def test_singular_with_fewer_examples_than_rank_and_scaled_w():
    d, n = 6, 2                                             # rank 3 > n: (d - min(n, r))/2 = 2
    model = suite_model(*numerics.gd_params(d, 0.2), mode="cot", n=n, k=2)
    Q = numerics.random_rotation(d, 7)[:, :3]
    out = evaluate_case(model, Case("sub3", Q @ Q.T, w_scale=2.0), samples=300, theory_samples=300)
    assert out["rank"] == 3
    assert out["unrecoverable"] == pytest.approx(4 * 1.5) and out["limit_loss"] == pytest.approx(4 * 2.0)


def test_scaled_sampling_is_honest():
    """w* -> c w* is sampled: with c = 1 the draws and losses are eval_losses' bitwise; for any
    parameters the loss at c equals c^2 times the loss of the conjugated parameters
    V' = D^-1 V D, W' = D W D (D = diag(1_x, c, c 1_w, 1)) on the unscaled prompts, an exact
    identity of the LSA; and a random model is not linear in w* (not c^2 times its loss)."""
    d, n, k, c = 3, 5, 3, 2.0
    rng = np.random.default_rng(3)
    V = torch.as_tensor(0.3 * rng.standard_normal((1, 2 * d + 2, 2 * d + 2)))
    W = torch.as_tensor(0.3 * rng.standard_normal((1, 2 * d + 2, 2 * d + 2)))
    gen = lambda: eval_generator(5, torch.device("cpu"))      # noqa: E731
    base, norms = eval_losses("cot", V, W, n=n, k=k, samples=300, generator=gen())
    same, same_norms = eval_losses("cot", V, W, n=n, k=k, samples=300, generator=gen(), w_scale=1.0)
    assert np.array_equal(base, same) and np.array_equal(norms, same_norms)
    scale = torch.ones(2 * d + 2, dtype=torch.float64)
    scale[d:2 * d + 1] = c
    Dm, Dinv = torch.diag(scale), torch.diag(1 / scale)
    conj, _ = eval_losses("cot", Dinv @ V @ Dm, Dm @ W @ Dm, n=n, k=k, samples=300, generator=gen())
    scaled, scaled_norms = eval_losses("cot", V, W, n=n, k=k, samples=300, generator=gen(), w_scale=c)
    assert np.allclose(scaled, c * c * conj, rtol=1e-9, atol=0)
    assert np.allclose(scaled_norms, c * c * norms, rtol=1e-12)
    assert not np.allclose(scaled, c * c * base, rtol=1e-3)


def test_cases_and_their_validation(tmp_path):
    names = [c.name for c in standard_suite(10)]
    assert names == (["skewed", "half_subspace"] + [f"scale-x={c:g}" for c in X_SCALES]
                     + [f"scale-w={c:g}" for c in W_SCALES] + ["noisy"])
    assert names[2:6] == ["scale-x=0.333", "scale-x=0.5", "scale-x=2", "scale-x=3"]
    sk = skewed_case(10)
    lam = np.linalg.eigvalsh(sk.sigma)[::-1]
    assert np.trace(sk.sigma) == pytest.approx(10) and lam[0] / lam[-1] == pytest.approx(100, rel=1e-9)
    assert np.allclose(sk.sigma, skewed_case(10).sigma, rtol=0, atol=0)          # reproducible
    hs = half_subspace_case(10)
    assert np.trace(hs.sigma) == pytest.approx(10) and np.linalg.matrix_rank(hs.sigma, tol=1e-9) == 5
    assert np.array_equal(scale_x_case(4, 3).sigma, 9.0 * np.eye(4))
    assert set(SUITES) == {"standard", "none"}
    with pytest.raises(ValueError, match="label_noise"):
        Case("x", label_noise=-1.0)
    with pytest.raises(ValueError, match="mine"):
        covariance_case("mine", [[1.0, 2.0], [0.0, 1.0]], 2)
    with pytest.raises(ValueError, match="w_scale"):
        Case("x", w_scale=0)
    model = suite_model(*numerics.gd_params(2, 0.3), mode="cot", n=4, k=1)
    with pytest.raises(ValueError, match="unique"):
        evaluate_suite(model, [scale_w_case(2), scale_w_case(2)], samples=10)
    path = tmp_path / "wide.npy"
    np.save(path, np.diag([3.0, 0.5]))
    case = load_covariance(path, 2)
    assert case.name == "wide" and np.array_equal(case.sigma, np.diag([3.0, 0.5]))
    np.save(path, np.eye(3))
    with pytest.raises(ValueError, match="wide must be 2 x 2"):
        load_covariance(path, 2)
    with pytest.raises(ValueError, match="learned step"):
        suite_model(np.zeros((6, 6)), np.zeros((6, 6)), mode="cot", n=4, k=1)


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory):
    out = {}
    for mode in ("cot", "nocot"):
        path = tmp_path_factory.mktemp(mode) / "run"
        train(TrainConfig(mode=mode, d=3, n=6, k=2, batch=32, iters=5, eval_every=5, eval_samples=200,
                          theory_samples=500, structure_samples=64, progress=False, device="cpu", out=str(path)))
        out[mode] = str(path)
    return out


def test_evaluate_run_json_shape_and_table(tiny_runs, tmp_path):
    np.save(tmp_path / "mine.npy", np.diag([2.0, 1.0, 0.0]))
    result = evaluate_run(tiny_runs["cot"], sigmas=[str(tmp_path / "mine.npy"), ("twice", 2 * np.eye(3))],
                          samples=300, theory_samples=300)
    text = json.dumps(result)
    back = json.loads(text)
    names = [c["name"] for c in back["cases"]]
    assert names == [c.name for c in standard_suite(3)] + ["mine", "twice"]
    run = load_run(tiny_runs["cot"])
    assert back["model"]["learned_step"] == pytest.approx(run.summary["learned_step"], rel=1e-6)
    assert back["model"]["target_step"] == run.config.eta and back["model"]["mode"] == "cot"
    keys = {"name", "mean", "median", "q10", "q90", "diverged_frac", "gd_median", "nocot_median",
            "predicted_stable", "unstable_frac", "expected_loss", "expected_method", "unrecoverable",
            "spectrum_top", "eta_top", "rank", "limit_loss"}
    for case in back["cases"] + [back["in_distribution"]]:
        assert keys <= set(case), keys - set(case)
    mine = back["cases"][names.index("mine")]
    assert mine["rank"] == 2 and mine["unrecoverable"] == 0.5
    table = format_table(result)
    for case in result["cases"]:
        assert case["name"] in table and f"{case['median']:.4g}" in table
    assert len({len(line) for line in table.splitlines()[1:3 + len(result["cases"]) + 1]}) == 1  # aligned
    only = evaluate_run(tiny_runs["cot"], suite="none", sigmas=[("twice", 2 * np.eye(3))], samples=50,
                        theory_samples=50, reference=False)
    assert [c["name"] for c in only["cases"]] == ["twice"] and only["in_distribution"] is None
    with pytest.raises(ValueError, match="no cases"):
        evaluate_run(tiny_runs["cot"], suite="none", samples=50)


def test_nocot_run_is_compared_with_one_gd_step(tiny_runs):
    model = model_from_run(tiny_runs["nocot"])
    assert model.mode == "nocot" and model.gd_steps == 1
    out = evaluate_case(model, scale_x_case(3, 2), samples=300, theory_samples=300)
    assert out["expected_method"].startswith("exact theory.gd_eval_loss")
    assert out["expected_loss"] == pytest.approx(float(theory.gd_eval_loss(3, 6, sympy.Rational(model.step * 4), 1)),
                                                 rel=1e-12)
    skew = evaluate_case(model, skewed_case(3), samples=300, theory_samples=300)
    exact = theory.linear_prediction_loss(6, numerics.exact_covariance(skewed_case(3).sigma, 3),
                                          sympy.Rational(model.step) * sympy.eye(3))
    assert skew["expected_method"] == "exact theory.linear_prediction_loss"
    assert skew["expected_loss"] == pytest.approx(float(exact), rel=1e-12)


def test_looped_model_is_compared_with_k_gd_steps():
    """Theorem 3.2's parameters looped k times are k-step GD too (docs/theory.md section 4)."""
    model = suite_model(*numerics.gd_params(D, ETA), mode="looped", n=N, k=K)
    case = skewed_case(D)
    out = evaluate_case(model, case, samples=SAMPLES, theory_samples=500)
    S, w = case_prompts(case, D, N)
    assert out["gd_steps"] == K and close(out["median"], float(np.median(gd_losses(S, w, ETA, K))))


def test_singular_verdict_uses_the_range_and_reports_the_ambient_top():
    """half_subspace at the paper's d = 10, n = 20 with step 0.4: on range(Sigma) (r = 5,
    eigenvalue 2) the top is 2 (1 + sqrt(5/20))^2 = 4.5, eta top = 1.8: stable; the formula with
    the ambient d gives 2 (1 + sqrt(1/2))^2 = 5.83 (eta top 2.33).  The sampled spectra side with
    the range: few prompts reach step lambda_max(S) >= 2."""
    model = suite_model(*numerics.gd_params(10, 0.4), mode="cot", n=20, k=1)
    out = evaluate_case(model, half_subspace_case(10), samples=3000, theory_samples=300)
    assert out["spectrum_top"] == pytest.approx(4.5, rel=1e-12) and out["predicted_stable"]
    assert out["spectrum_top_ambient"] == pytest.approx(2 * (1 + math.sqrt(0.5)) ** 2, rel=1e-12)
    assert out["unstable_frac"] < 0.1 and out["rank"] == 5 and out["unrecoverable"] == 2.5


@pytest.mark.parametrize("mode, k", [("cot", 3), ("nocot", 1)])
def test_noisy_case_matches_the_exact_noisy_loss(mode, k):
    """Statistical: the theory's own model (GD with step 0.3, or Theorem 3.1's noiseless optimum
    for nocot) on the ``noisy`` case: its Monte Carlo mean lies within 4 SE of the exact noisy loss
    (docs/theory.md section 16), the expected loss is that exact value, and the model equals GD
    on the same noisy prompts."""
    d, n, eta = 3, 8, 0.3
    case = noisy_case(1.5)
    if mode == "cot":
        model = suite_model(*numerics.gd_params(d, eta), mode="cot", n=n, k=k)
        exact = numerics.gd_eval_loss_value(d, n, eta, k, noise_var=2.25)
    else:
        model = suite_model(*numerics.nocot_params(d, n), mode="nocot", n=n, k=1)
        exact = float(theory.linear_prediction_loss(n, sympy.eye(d), theory.nocot_optimal_eta(d, n) * sympy.eye(d),
                                                    noise_var=sympy.Rational(9, 4)))
        assert evaluate_case(model, case, samples=200)["nocot_expected"] == pytest.approx(exact, rel=1e-12)
    row = evaluate_case(model, case, samples=20000, theory_samples=1000)
    assert abs(row["mean"] - exact) < 4 * row["se"]
    assert row["median"] == pytest.approx(row["gd_median"], rel=1e-9)
    if mode == "cot":
        assert row["expected_loss"] == pytest.approx(exact, rel=1e-12) and row["expected_method"].startswith("exact")
    noiseless = evaluate_case(model, Case("clean"), samples=20000, theory_samples=1000)
    assert row["mean"] > noiseless["mean"] + 4 * row["se"]            # the noise costs something
