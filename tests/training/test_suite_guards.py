"""Guards from the mutation campaign (tests/mutation): the suite's expected losses when a case
scales w* and has label noise at once.

With ``w* ~ N(0, c^2 I)`` and noise of variance ``v``, GD's error after k steps is
``(I - eta S)^k (-w*)`` plus a noise term that does not depend on w*, so the loss is
``c^2 L(noise 0) + (L(noise v) - L(noise 0))``: the w* part scales by c^2, the noise part does
not (docs/theory.md section 16).  The numbers here come from theory.gd_eval_loss written that
way, not from the suite's own rescaling."""
import numpy as np
import pytest
import sympy

import numerics
import theory
from training.suite import Case, evaluate_case, format_table, scale_w_case, suite_model

D, N, K, ETA = 3, 6, 3, 0.3


def decomposed(c, s, sigma=None, k=K):
    """The exact loss of k GD steps with w* ~ N(0, c^2 I) and label noise s, by the
    decomposition of the module docstring."""
    clean = theory.gd_eval_loss(D, N, sympy.Rational(3, 10), k, sigma=sigma)
    noisy = theory.gd_eval_loss(D, N, sympy.Rational(3, 10), k, sigma=sigma, noise_var=sympy.Rational(s) ** 2)
    return float(c * c * clean + (noisy - clean))


@pytest.fixture(scope="module")
def gd_model():
    return suite_model(*numerics.gd_params(D, ETA), mode="cot", n=N, k=K)


@pytest.mark.parametrize("c", [2.0, 0.5])
def test_scaled_w_with_label_noise_expected_loss_is_exact(gd_model, c):
    """Sigma = I: the exact path.  Monte Carlo of the theory's own model agrees within 4 SE."""
    row = evaluate_case(gd_model, scale_w_case(c, noise=1.0), samples=20000, theory_samples=500)
    assert row["expected_method"].startswith("exact theory.gd_eval_loss")
    assert row["expected_loss"] == pytest.approx(decomposed(c, 1), rel=1e-12)
    assert abs(row["mean"] - row["expected_loss"]) < 4 * row["se"]


def test_scaled_w_with_label_noise_on_a_skewed_sigma_monte_carlo_matches_exact(gd_model):
    """A non-isotropic Sigma takes the Monte Carlo path; its estimate lies within 4 SE of the
    exact decomposition, and the one-step (exact) path equals it too."""
    sigma = np.diag([0.5, 1.0, 1.5])
    exact_sigma = sympy.diag(sympy.Rational(1, 2), 1, sympy.Rational(3, 2))
    case = Case("scaled-noisy", sigma, w_scale=2.0, label_noise=1.0)
    row = evaluate_case(gd_model, case, samples=200, theory_samples=40000)
    assert row["expected_method"].startswith("monte_carlo")
    assert abs(row["expected_loss"] - decomposed(2, 1, exact_sigma)) < 4 * row["expected_se"]
    one = suite_model(*numerics.gd_params(D, ETA), mode="cot", n=N, k=1)
    row1 = evaluate_case(one, case, samples=200, theory_samples=200)
    assert row1["expected_loss"] == pytest.approx(decomposed(2, 1, exact_sigma, k=1), rel=1e-12)


@pytest.mark.parametrize("c", [1.0, 2.0])
def test_loss_bound_on_a_singular_sigma_is_theorem_42_on_its_range(gd_model, c):
    """Theorem 4.2's bound, written out on range(Sigma) of rank r: (r/2) max|1 - eta lambda|^{2k}
    over [lambda_min (1 - sqrt(r/n))^2, lambda_max (1 + sqrt(r/n))^2] (positive eigenvalues),
    plus (d - r)/2 for the part of w* outside the range, times c^2 for w* ~ N(0, c^2 I)."""
    U = numerics.random_rotation(D, 3)[:, :2]
    sigma = U @ np.diag([1.2, 0.4]) @ U.T
    row = evaluate_case(gd_model, Case("rank2", (sigma + sigma.T) / 2, w_scale=c), samples=200, theory_samples=200)
    r = 2
    lo, hi = 0.4 * (1 - np.sqrt(r / N)) ** 2, 1.2 * (1 + np.sqrt(r / N)) ** 2
    rate = max(abs(1 - ETA * lo), abs(1 - ETA * hi))
    assert row["rank"] == r
    assert row["loss_bound"] == pytest.approx(c * c * (r / 2 * rate ** (2 * K) + (D - r) / 2), rel=1e-9)
    assert row["spectrum_interval"] == pytest.approx([lo, hi], rel=1e-9)
    assert row["unrecoverable"] == pytest.approx(c * c * (D - r) / 2, rel=1e-12)


def _case(name, **changes):
    c = {"name": name, "median": 0.1234567, "q10": 0.01, "q90": float("inf"), "mean": None, "diverged_frac": 0.0123,
         "gd_median": 1234.5678, "nocot_median": 2.0, "eta_top": 1.23456, "predicted_stable": True,
         "unstable_frac": None, "expected_loss": 0.5, "expected_method": "monte_carlo numerics.eval_loss_mc (5 prompts)",
         "unrecoverable": 0.0}
    return dict(c, **changes)


def test_the_table_a_user_reads():
    """format_table, exactly: numbers to 4 significant digits (inf, - for None), percentages to
    one decimal, Theorem 4.2's verdict, how the expected loss was obtained, the legend."""
    model = {"label": "lbl", "mode": "cot", "d": 3, "n": 6, "k": 4, "eta": 0.3, "learned_step": 0.29876,
             "step_source": "given", "target_step": 0.3, "gd_steps": 4, "noise": 0.5, "sigma": [[1.0]]}
    result = {"run": "runs/x", "model": model, "samples": 100, "seed": 2, "theory_samples": 5,
              "in_distribution": _case("in_distribution", expected_method="exact theory.gd_eval_loss",
                                       unstable_frac=0.5),
              "cases": [_case("skewed", predicted_stable=False, expected_method=None, expected_loss=None,
                              unrecoverable=1.5, mean=3.0),
                        _case("scale-x=2", median=12345678.9, diverged_frac=1.0)]}
    assert format_table(result).splitlines() == [
        "runs/x: mode cot, d 3, n 6, k 4, trained eta 0.3; learned step 0.2988 (given), theory's 0.3; 100 prompts per case, seed 2",
        'case                  median   q10  q90  mean   div%  GD med  noCoT med  eta*top    Thm4.2  unst%  E[GD]  how  unrecov',
        '----------------------------------------------------------------------------------------------------------------------',
        '(in distribution)     0.1235  0.01  inf     -    1.2    1235          2     1.23    stable   50.0    0.5   ex        0',
        'skewed                0.1235  0.01  inf     3    1.2    1235          2     1.23  UNSTABLE      -      -    -      1.5',
        'scale-x=2          1.235e+07  0.01  inf     -  100.0    1235          2     1.23    stable      -    0.5   MC        0',
        '',
        "median q10 q90 mean div%: the model's loss (1/2)||w_hat - w*||^2 over prompts, % diverged; GD med: 4-step GD with the model's step 0.2988; noCoT med: Theorem 3.1's optimum (eta_1 S w*); same prompts in a row.",
        "eta*top: step x top of Theorem 4.2's predicted spectrum of S (on range(Sigma) when singular); Thm4.2: stable iff < 2; unst%: sampled prompts with step x lambda_max(S) >= 2.",
        "E[GD]: expected loss of 4-step GD with the model's step 0.2988 (how: ex = exact theory, MC = Monte Carlo, 5 prompts); unrecov: (d - rank Sigma)/2 x scale-w^2, never learned.",
        'Trained on its own distribution (Sigma_train, label noise s = 0.5): the in-distribution row, scale-x (Sigma = c^2 Sigma_train), scale-w and noisy use it.',
    ]
    plain = dict(result, run=None, in_distribution=None, cases=result["cases"][:1],
                 model=dict(model, eta=None, target_step=None, gd_steps=1, noise=0.0, sigma=None, label=""))
    assert format_table(plain).splitlines() == [
        'model: mode cot, d 3, n 6, k 4; learned step 0.2988 (given); 100 prompts per case, seed 2',
        'case    median   q10  q90  mean  div%  GD med  noCoT med  eta*top    Thm4.2  unst%  E[GD]  how  unrecov',
        '-------------------------------------------------------------------------------------------------------',
        'skewed  0.1235  0.01  inf     3   1.2    1235          2     1.23  UNSTABLE      -      -    -      1.5',
        '',
        "median q10 q90 mean div%: the model's loss (1/2)||w_hat - w*||^2 over prompts, % diverged; GD med: 1-step GD with the model's step 0.2988; noCoT med: Theorem 3.1's optimum (eta_1 S w*); same prompts in a row.",
        "eta*top: step x top of Theorem 4.2's predicted spectrum of S (on range(Sigma) when singular); Thm4.2: stable iff < 2; unst%: sampled prompts with step x lambda_max(S) >= 2 (one step cannot blow up: UNSTABLE means the step overshoots).",
        "E[GD]: expected loss of 1-step GD with the model's step 0.2988 (how: ex = exact theory, MC = Monte Carlo, 5 prompts); unrecov: (d - rank Sigma)/2 x scale-w^2, never learned.",
    ]
    assert format_table(dict(plain, model=dict(plain["model"], label="mine"))).splitlines()[0] == 'mine: mode cot, d 3, n 6, k 4; learned step 0.2988 (given); 100 prompts per case, seed 2'
    assert format_table(dict(plain, model=dict(plain["model"], noise=0.25))).splitlines()[-1] == 'Trained on its own distribution (Sigma_train, label noise s = 0.25): the in-distribution row, scale-x (Sigma = c^2 Sigma_train), scale-w and noisy use it.'


def test_the_standard_suite_of_a_seed_and_its_cases_records():
    """standard_suite(d, seed): skewed from seed, half_subspace from seed + 1, no label noise but
    in the noisy case; a covariance of one's own is a 'custom' case 'user covariance'."""
    from training.suite import (
        covariance_case,
        half_subspace_case,
        skewed_case,
        standard_suite,
    )
    cases = {c.name: c for c in standard_suite(3, 7)}
    np.testing.assert_array_equal(cases["skewed"].sigma, skewed_case(3, 7).sigma)
    np.testing.assert_array_equal(cases["half_subspace"].sigma, half_subspace_case(3, 8).sigma)
    assert not np.allclose(skewed_case(3, 7).sigma, skewed_case(3, 8).sigma)
    assert {n: c.label_noise for n, c in cases.items() if c.label_noise} == {"noisy": 1.0}
    own = covariance_case("mine", np.eye(3), 3)
    assert (own.kind, own.description, own.label_noise, own.w_scale) == ("custom", "user covariance", 0.0, 1.0)
    with pytest.raises(ValueError, match="^d must be an integer"):
        covariance_case("mine", np.eye(3), 0)


def test_covariance_files_npy_without_pickles_and_text_of_any_size(tmp_path):
    from training.suite import load_covariance
    np.savetxt(tmp_path / "one.txt", [[2.5]])
    one = load_covariance(tmp_path / "one.txt", 1)
    assert one.name == "one" and one.sigma.shape == (1, 1) and one.sigma[0, 0] == 2.5
    np.savetxt(tmp_path / "two.txt", np.diag([2.0, 0.5]))
    np.testing.assert_array_equal(load_covariance(tmp_path / "two.txt", 2, name="wide").sigma, np.diag([2.0, 0.5]))
    np.save(tmp_path / "obj.npy", np.array([np.eye(2), "x"], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="obj.npy"):
        load_covariance(tmp_path / "obj.npy", 2)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from training import TrainConfig, train
    path = tmp_path_factory.mktemp("cot") / "run"
    train(TrainConfig(mode="cot", d=3, n=6, k=2, batch=32, iters=5, eval_every=5, eval_samples=200,
                      theory_samples=300, structure_samples=64, progress=False, device="cpu", out=str(path)))
    return str(path)


def test_evaluate_run_records_run_suite_seed_step_and_pairs(tiny_run):
    from training.suite import evaluate_run
    mat = np.diag([2.0, 1.0, 0.5])
    out = evaluate_run(tiny_run, suite="none", sigmas=[("pair", mat)], samples=200, theory_samples=200, seed=3,
                       step=0.25, reference=False)
    assert (out["run"], out["suite"], out["seed"]) == (tiny_run, "none", 3)
    assert out["model"]["learned_step"] == 0.25 and out["model"]["step_source"] == "given"
    (case,) = out["cases"]
    assert case["name"] == "pair" and case["sigma_eigenvalues"] == [2.0, 1.0, 0.5] and case["step"] == 0.25
    seed0 = evaluate_run(tiny_run, suite="none", sigmas=[("pair", mat)], samples=200, theory_samples=200,
                         step=0.25, reference=False)
    assert seed0["cases"][0]["median"] != case["median"]          # another seed, other prompts


def test_the_reference_and_scale_w_cases_records():
    from training.suite import in_distribution_case
    ref = in_distribution_case()
    assert (ref.name, ref.kind, ref.label_noise, ref.sigma) == ("in_distribution", "reference", 0.0, None)
    assert ref.description == "Sigma = I, w* ~ N(0, I): the training distribution"
    own = in_distribution_case(0.5, np.eye(2))
    assert own.label_noise == 0.5 and np.array_equal(own.sigma, np.eye(2))
    assert own.description == "Sigma = Sigma_train, w* ~ N(0, I), label noise s = 0.5: the training distribution"
    w = scale_w_case(2, sigma=np.eye(2), noise=0.5)
    assert (w.name, w.kind, w.w_scale, w.label_noise) == ("scale-w=2", "scale-w", 2, 0.5)
    assert np.array_equal(w.sigma, np.eye(2))
    assert w.description == "w* multiplied by 2: w* ~ N(0, 4 I), Sigma = Sigma_train, label noise s = 0.5"
    with pytest.raises(ValueError, match="^c must be"):
        scale_w_case(0.0)


def test_a_runs_model_and_the_suites_record_of_it(tiny_run, tmp_path):
    import os
    import shutil

    from training import load_run
    from training.suite import evaluate_suite, model_from_run
    run = load_run(tiny_run)
    m = model_from_run(tiny_run, step=0.2)
    assert (m.step, m.step_source, m.eta, m.label, m.noise, m.mode) == (0.2, "given", run.config.eta, tiny_run, 0.0, "cot")
    assert m.target_step == run.summary["structure_step"]
    out = evaluate_suite(m, [scale_w_case(2)], samples=100, theory_samples=100)
    assert out["seed"] == 0 and out["suite_seed"] == 2025
    assert {k: out["model"][k] for k in ("label", "eta", "learned_step", "gd_steps")} == {
        "label": tiny_run, "eta": run.config.eta, "learned_step": 0.2, "gd_steps": run.config.k}
    with pytest.raises(ValueError, match="^threads must be"):
        evaluate_suite(m, [scale_w_case(2)], samples=10, theory_samples=10, threads=0)
    bare = tmp_path / "bare"
    shutil.copytree(tiny_run, bare)
    os.remove(bare / "summary.json")
    assert model_from_run(str(bare), step=0.2).target_step is None
    os.remove(bare / "params.pt")
    with pytest.raises(ValueError, match="has no params.pt"):
        model_from_run(str(bare))


def test_the_default_cases_are_the_models_own_distribution():
    """cases=None: standard_suite of the model's d, training Sigma and label noise."""
    from training.suite import evaluate_suite, standard_suite
    sigma = np.diag([2.0, 1.0, 0.5])
    m = suite_model(*numerics.gd_params(D, ETA), mode="cot", n=N, k=K, sigma=sigma, noise=0.5)
    out = evaluate_suite(m, samples=20, theory_samples=20, reference=False)
    want = standard_suite(D, sigma=sigma, noise=0.5)
    assert [c["name"] for c in out["cases"]] == [c.name for c in want]
    got = {c["name"]: c for c in out["cases"]}
    assert got["scale-x=2"]["sigma_eigenvalues"] == pytest.approx([8.0, 4.0, 2.0])
    assert got["scale-w=2"]["sigma_eigenvalues"] == pytest.approx([2.0, 1.0, 0.5])
    assert out["model"]["noise"] == 0.5 and out["model"]["sigma"] == sigma.tolist()
    noisy_w = evaluate_case(m, scale_w_case(2, sigma=sigma, noise=0.5), samples=20, theory_samples=20)
    assert got["scale-w=2"]["mean"] == noisy_w["mean"]                # the run's label noise too
    assert got["scale-w=2"]["expected_loss"] == noisy_w["expected_loss"]


def test_the_tables_note_on_a_model_trained_on_its_own_covariance_without_noise():
    model = {"label": "", "mode": "cot", "d": 3, "n": 6, "k": 4, "eta": None, "learned_step": 0.3,
             "step_source": "given", "target_step": None, "gd_steps": 4, "noise": 0.0, "sigma": [[1.0]]}
    result = {"run": None, "model": model, "samples": 10, "seed": 0, "theory_samples": 5, "in_distribution": None,
              "cases": [_case("skewed")]}
    assert format_table(result).splitlines()[-1] == (
        "Trained on its own distribution (Sigma_train): the in-distribution row, scale-x (Sigma = c^2 Sigma_train), "
        "scale-w and noisy use it.")


def test_the_out_of_distribution_cases_records():
    """Each case as `cotgd evaluate` reports it: name, kind, description, label noise, and its Sigma."""
    from training.suite import half_subspace_case, noisy_case, scale_x_case, skewed_case
    records = [(c.name, c.kind, c.description, c.label_noise) for c in (
        skewed_case(3), half_subspace_case(3), scale_x_case(3, 2),
        scale_x_case(2, 0.5, sigma=np.diag([2.0, 1.0]), noise=0.5), noisy_case(), noisy_case(0.5, sigma=np.eye(2)))]
    assert records == [
        ("skewed", "skewed", "eigenvalues ~ 1/i^2 (top 2.2), trace d, random eigenbasis (seed 2025)", 0.0),
        ("half_subspace", "half_subspace", "x in a random 1-dimensional subspace, trace d (seed 2026)", 0.0),
        ("scale-x=2", "scale-x", "x multiplied by 2: Sigma = 4 I", 0.0),
        ("scale-x=0.5", "scale-x", "x multiplied by 0.5: Sigma = 0.25 Sigma_train, label noise s = 0.5", 0.5),
        ("noisy", "noisy", "labels y = <w*, x> + eps, eps ~ N(0, 1), Sigma = I", 1.0),
        ("noisy", "noisy", "labels y = <w*, x> + eps, eps ~ N(0, 0.25), Sigma = Sigma_train", 0.5)]
    lam = 1.0 / np.arange(1, 4) ** 2
    lam *= 3 / lam.sum()
    sk = skewed_case(3)
    np.testing.assert_allclose(np.linalg.eigvalsh(sk.sigma)[::-1], lam, rtol=1e-12)
    top = numerics.random_rotation(3, 2025)[:, 0]
    np.testing.assert_allclose(sk.sigma @ top, lam[0] * top, atol=1e-12)      # the top eigenvalue along Q's first column
    assert np.linalg.matrix_rank(half_subspace_case(3).sigma, tol=1e-9) == 1
    assert np.linalg.matrix_rank(half_subspace_case(2).sigma, tol=1e-9) == 1
    np.testing.assert_array_equal(scale_x_case(2, 0.5, sigma=np.diag([2.0, 1.0])).sigma, np.diag([0.5, 0.25]))
    for make, args, name in ((skewed_case, (0,), "d"), (half_subspace_case, (0,), "d"), (scale_x_case, (3, 0), "c"),
                             (scale_x_case, (0, 2), "d"), (noisy_case, (-1.0,), "s")):
        with pytest.raises(ValueError, match=f"^{name} must be"):
            make(*args)


def test_a_suite_model_without_a_label_and_read_from_float32():
    m = suite_model(*(a.astype(np.float32) for a in numerics.gd_params(D, ETA)), mode="cot", n=N, k=K,
                    sigma=np.diag([2.0, 1.0, 0.0]).astype(np.float32))
    assert m.label == "" and m.d == D and m.sigma.dtype == np.float64
    assert m.step == pytest.approx(ETA, rel=1e-6)


def test_where_a_suite_models_step_comes_from():
    V, W = numerics.gd_params(D, ETA)
    assert suite_model(V, W, mode="cot", n=N, k=K).step_source == "mean diagonal of W24 V31"
    singular = suite_model(V, W, mode="cot", n=N, k=K, sigma=np.diag([2.0, 1.0, 0.0]))
    assert singular.step_source == "mean diagonal of W24 V31 on range(Sigma)"
    with pytest.raises(ValueError, match="^step must be"):
        suite_model(V, W, mode="cot", n=N, k=K, step=0.0)


def test_scale_x_reads_a_float32_training_covariance_in_float64():
    from training.suite import scale_x_case
    sigma32 = np.diag([2.0, 1.0, 0.3]).astype(np.float32)
    np.testing.assert_array_equal(scale_x_case(3, 0.333, sigma=sigma32).sigma,
                                  0.333 * 0.333 * sigma32.astype(np.float64))
