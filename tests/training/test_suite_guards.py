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


# ------------------------------------------------------------------------ refusals, one line each
def test_a_case_needs_a_name_and_reads_its_sigma_as_float64():
    from training.suite import Case
    for bad in ("   ", "", 5):
        with pytest.raises(ValueError, match="^case name must be a non-empty string"):
            Case(bad)
    c = Case("ints", [[2, 0], [0, 1]])
    assert isinstance(c.sigma, np.ndarray) and c.sigma.dtype == np.float64
    np.testing.assert_array_equal(c.sigma, np.diag([2.0, 1.0]))


@pytest.mark.parametrize("arg", ["n", "k"])
def test_suite_model_refuses_sizes_naming_them(arg):
    V, W = numerics.gd_params(D, ETA)
    sizes = dict(dict(n=N, k=K), **{arg: 0})
    with pytest.raises(ValueError, match=f"^{arg} must be an integer >= 1, got 0$"):
        suite_model(V, W, mode="cot", **sizes)


@pytest.mark.parametrize("options, message", [
    (dict(samples=0), "^samples must be an integer >= 1, got 0$"),
    (dict(theory_samples=0), "^theory_samples must be an integer >= 1, got 0$"),
    (dict(seed=-1), "^seed must be an integer >= 0, got -1$"),
    (dict(device="cuda"), "^device 'cuda' is not available"),          # this machine has no GPU
])
def test_evaluate_case_refuses_its_options_naming_them(gd_model, options, message):
    run = dict(dict(samples=8, theory_samples=8), **options)
    with pytest.raises(ValueError, match=message):
        evaluate_case(gd_model, Case("id"), **run)


def test_a_case_covariance_that_is_not_symmetric_is_refused_naming_the_case(gd_model):
    bad = np.array([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match="^mine must be symmetric"):
        evaluate_case(gd_model, Case("mine", bad), samples=8, theory_samples=8)


# ------------------------------------------------------------------------------- a case's record
RECORD_KEYS = {
    "name", "kind", "description", "w_scale", "sigma_eigenvalues", "rank", "samples",
    "mean", "se", "median", "q10", "q90", "diverged_frac",
    "gd_median", "gd_q10", "gd_q90", "gd_mean", "gd_diverged_frac",
    "nocot_median", "nocot_q10", "nocot_q90", "nocot_mean", "nocot_expected", "nocot_sigma_median",
    "step", "gd_steps", "spectrum_interval", "spectrum_top", "eta_top", "predicted_stable", "stable_step_bound",
    "spectrum_top_ambient", "loss_bound", "unstable_frac", "expected_loss", "expected_se", "expected_method",
    "unrecoverable", "limit_loss", "reports"}
STATS = ("median", "q10", "q90", "mean", "diverged_frac")


def test_a_cases_record_keys_and_the_gd_reference_on_the_same_prompts(gd_model):
    """The model is Theorem 3.2's GD transformer with step ETA: GD with its learned step on the
    same prompts gives the very same losses, statistic by statistic; ``reports`` holds the four
    full reports (model, gd, nocot, nocot_sigma) the flat fields come from."""
    case = Case("mine", np.diag([2.0, 1.0, 0.5]), w_scale=2.0, label_noise=0.5, description="my words", kind="kind")
    row = evaluate_case(gd_model, case, samples=64, theory_samples=64, seed=1)
    assert set(row) == RECORD_KEYS
    assert (row["name"], row["kind"], row["description"], row["w_scale"], row["samples"]) == (
        "mine", "kind", "my words", 2.0, 64)
    assert (row["step"], row["gd_steps"], row["rank"], row["sigma_eigenvalues"]) == (ETA, K, 3, [2.0, 1.0, 0.5])
    assert {s: row["gd_" + s] for s in STATS} == {s: row[s] for s in STATS}
    assert 0 < row["q10"] < row["median"] < row["q90"] and row["diverged_frac"] == 0.0
    reports = row["reports"]
    assert set(reports) == {"model", "gd", "nocot", "nocot_sigma"}
    for name, prefix in (("model", ""), ("gd", "gd_"), ("nocot", "nocot_")):
        assert reports[name]["samples"] == 64
        assert {s: reports[name][s] for s in ("median", "q10", "q90", "mean")} == {
            s: row[prefix + s] for s in ("median", "q10", "q90", "mean")}
    assert reports["model"]["se"] == row["se"] and reports["gd"]["diverged_frac"] == row["gd_diverged_frac"]
    assert reports["nocot_sigma"]["median"] == row["nocot_sigma_median"] and reports["nocot_sigma"]["samples"] == 64
    assert reports["nocot_sigma"]["median"] != reports["nocot"]["median"]     # the case's own optimum, not I's


def test_a_nocot_models_record_is_theorem_31s_optimum_on_the_same_prompts():
    """A no-CoT model at Theorem 3.1's optimum for Sigma = I: its losses are the nocot_* fields,
    its GD reference is one step of eta_1 = n/(n + d + 1), and on Sigma = I the case's own
    optimum is the same model; nocot_expected is theory.linear_prediction_loss of it."""
    model = suite_model(*numerics.nocot_params(D, N), mode="nocot", n=N, k=K)
    assert (model.step, model.gd_steps, model.mode) == (pytest.approx(N / (N + D + 1), rel=1e-12), 1, "nocot")
    row = evaluate_case(model, Case("id"), samples=64, theory_samples=64)
    assert {s: row["nocot_" + s] for s in ("median", "q10", "q90", "mean")} == {
        s: row[s] for s in ("median", "q10", "q90", "mean")}
    assert row["nocot_sigma_median"] == row["median"]
    eta1 = sympy.Rational(N, N + D + 1)
    exact = float(theory.linear_prediction_loss(N, sympy.eye(D), eta1 * sympy.eye(D)))
    assert row["nocot_expected"] == pytest.approx(exact, rel=1e-12)
    assert row["expected_loss"] == pytest.approx(exact, rel=1e-12)        # one GD step of eta_1 is that model
    assert row["expected_method"] == "exact theory.gd_eval_loss" and row["expected_se"] == 0.0


# ------------------------------------------------------------------------- the expected GD loss
R = sympy.Rational(3, 10)


@pytest.mark.parametrize("case, sigma, noise_var, method", [
    (Case("id"), None, 0, "exact theory.gd_eval_loss"),
    (Case("id-noisy", label_noise=1.0), None, 1, "exact theory.gd_eval_loss"),
    (Case("scale-x=2", 4 * np.eye(D)), 4 * sympy.eye(D), 0,
     "exact theory.gd_eval_loss at step eta s, Sigma = s I (s = 4)"),
    (Case("scale-x=2 noisy", 4 * np.eye(D), label_noise=1.0), 4 * sympy.eye(D), 1,
     "exact theory.gd_eval_loss at step eta s, Sigma = s I (s = 4)"),
    (Case("scale-x=0.5 noisy", 0.25 * np.eye(D), label_noise=0.5), sympy.eye(D) / 4, sympy.Rational(1, 4),
     "exact theory.gd_eval_loss at step eta s, Sigma = s I (s = 0.25)"),
])
def test_expected_loss_on_sigma_s_i_is_theorys_exact_value(case, sigma, noise_var, method):
    """Sigma = s I, with and without label noise: theory.gd_eval_loss at Sigma itself (not the
    suite's rescaling to step eta s and noise v / s), and how it was obtained."""
    from training.suite import expected_gd_loss
    exact_sigma = None if sigma is None else sympy.Matrix(sigma)
    out = expected_gd_loss(ETA, K, case, D, N, exact_sigma, theory_samples=10, seed=0)
    want = float(theory.gd_eval_loss(D, N, R, K, sigma=sigma, noise_var=noise_var))
    assert out == {"expected_loss": pytest.approx(want, rel=1e-12), "expected_se": 0.0, "expected_method": method}


def test_expected_loss_in_one_dimension_on_sigma_2():
    """d = 1: Sigma = [[2]] is 2 I, the exact path at step 2 eta."""
    from training.suite import expected_gd_loss
    out = expected_gd_loss(ETA, K, Case("two", [[2.0]]), 1, N, sympy.Matrix([[2]]), theory_samples=10, seed=0)
    assert out == {"expected_loss": pytest.approx(float(theory.gd_eval_loss(1, N, R, K, sigma=sympy.Matrix([[2]]))),
                                                  rel=1e-12),
                   "expected_se": 0.0, "expected_method": "exact theory.gd_eval_loss at step eta s, Sigma = s I (s = 2)"}


def test_expected_loss_exact_up_to_k_12_then_monte_carlo():
    """k <= evaluate.EXACT_THEORY_MAX_K = 12 is exact on Sigma = I; k = 13 is Monte Carlo."""
    from training.evaluate import EXACT_THEORY_MAX_K
    from training.suite import expected_gd_loss
    assert EXACT_THEORY_MAX_K == 12
    d, n = 2, 4
    at = expected_gd_loss(0.3, 12, Case("id"), d, n, None, theory_samples=10, seed=0)
    assert at == {"expected_loss": numerics.gd_eval_loss_value(d, n, 0.3, 12), "expected_se": 0.0,
                  "expected_method": "exact theory.gd_eval_loss"}
    past = expected_gd_loss(0.3, 13, Case("id"), d, n, None, theory_samples=200, seed=0)
    assert past["expected_method"] == "monte_carlo numerics.eval_loss_mc (200 prompts)"
    assert 0 < past["expected_loss"] < d / 2 and 0 < past["expected_se"] < past["expected_loss"]


def test_a_sigma_with_equal_diagonal_but_correlations_is_not_isotropic(gd_model):
    """[[1, 1/2, 0], [1/2, 1, 0], [0, 0, 1]] has eigenvalues 3/2, 1/2, 1: Monte Carlo, within
    4 SE of the exact loss at its spectrum (w* ~ N(0, I) is rotation invariant)."""
    sigma = np.array([[1.0, 0.5, 0.0], [0.5, 1.0, 0.0], [0.0, 0.0, 1.0]])
    row = evaluate_case(gd_model, Case("corr", sigma), samples=16, theory_samples=20000)
    assert row["expected_method"] == "monte_carlo numerics.eval_loss_mc (20000 prompts)"
    exact = float(theory.gd_eval_loss(D, N, R, K, sigma=sympy.diag(sympy.Rational(3, 2), sympy.Rational(1, 2), 1)))
    assert abs(row["expected_loss"] - exact) < 4 * row["expected_se"]


def test_the_monte_carlo_expected_loss_and_its_se_scale_with_w_scale_squared():
    from training.suite import expected_gd_loss
    sigma = np.diag([2.0, 1.0, 0.5])
    exact = sympy.diag(2, 1, sympy.Rational(1, 2))
    one = expected_gd_loss(ETA, K, Case("a", sigma), D, N, exact, theory_samples=500, seed=4)
    three = expected_gd_loss(ETA, K, Case("a", sigma, w_scale=3.0), D, N, exact, theory_samples=500, seed=4)
    assert one["expected_method"] == three["expected_method"] == "monte_carlo numerics.eval_loss_mc (500 prompts)"
    assert three["expected_loss"] == pytest.approx(9 * one["expected_loss"], rel=1e-12)
    assert three["expected_se"] == pytest.approx(9 * one["expected_se"], rel=1e-12)
    assert 0 < one["expected_se"] < one["expected_loss"]


def test_the_one_step_expected_loss_record():
    from training.suite import expected_gd_loss
    exact = sympy.diag(2, 1, sympy.Rational(1, 2))
    out = expected_gd_loss(ETA, 1, Case("a", np.diag([2.0, 1.0, 0.5])), D, N, exact, theory_samples=10, seed=0)
    want = float(theory.linear_prediction_loss(N, exact, R * sympy.eye(D)))
    assert out == {"expected_loss": pytest.approx(want, rel=1e-12), "expected_se": 0.0,
                   "expected_method": "exact theory.linear_prediction_loss"}
    with pytest.raises(ValueError, match="^step must be a finite real number, got nan$"):
        expected_gd_loss(float("nan"), 1, Case("a", np.diag([2.0, 1.0, 0.5])), D, N, exact, theory_samples=10, seed=0)


def test_infinite_expected_losses_are_none():
    """A Monte Carlo mean that overflows (every prompt diverges) and an exact value that
    overflows once scaled by w_scale^2 are reported as None, saying why."""
    from training.suite import expected_gd_loss
    exact = sympy.diag(2, 1, sympy.Rational(1, 2))
    mc = expected_gd_loss(1e200, 2, Case("a", np.diag([2.0, 1.0, 0.5])), D, N, exact, theory_samples=10, seed=0)
    assert mc == {"expected_loss": None, "expected_se": None,
                  "expected_method": "monte_carlo numerics.eval_loss_mc (10 prompts): infinite (100.0% of prompts diverge)"}
    big = numerics.gd_eval_loss_value(D, N, 1e75, 2)
    assert 1e300 < big < 1e308                                                  # finite, but not times 1e10
    ex = expected_gd_loss(1e75, 2, Case("id", w_scale=1e5), D, N, None, theory_samples=10, seed=0)
    assert ex == {"expected_loss": None, "expected_se": 0.0, "expected_method": "exact theory.gd_eval_loss"}


def test_sigma_zero_gd_never_moves_and_theorem_42_on_rank_0():
    """Sigma = 0 (x = 0): GD stays at w_0 = 0, loss c^2 d/2; Theorem 4.2 has nothing to bound
    (stable at any step, interval [0, 0]), the bound is d/2."""
    from training.evaluate import sigma_spectrum
    from training.suite import expected_gd_loss, theorem_42
    spectrum = sigma_spectrum(np.zeros((D, D)), D)
    out = expected_gd_loss(ETA, K, Case("zero", np.zeros((D, D)), w_scale=2.0), D, N, spectrum.exact,
                           theory_samples=10, seed=0)
    assert out == {"expected_loss": 2.0 ** 2 * D / 2, "expected_se": 0.0,
                   "expected_method": "exact: Sigma = 0, GD never moves"}
    assert theorem_42(ETA, spectrum, D, N, K) == {
        "spectrum_interval": [0.0, 0.0], "spectrum_top": 0.0, "eta_top": 0.0, "predicted_stable": True,
        "stable_step_bound": float("inf"), "spectrum_top_ambient": 0.0, "loss_bound": D / 2}


@pytest.mark.parametrize("lam", [0.8, 2.0])
def test_theorem_42_on_a_rank_one_sigma(lam):
    """Rank 1: the interval is [lam (1 - sqrt(1/n))^2, lam (1 + sqrt(1/n))^2], the bound
    (1/2) max|1 - eta lambda|^{2k} over it plus (d - 1)/2, the ambient top lam (1 + sqrt(d/n))^2."""
    from training.evaluate import sigma_spectrum
    from training.suite import theorem_42
    u = numerics.random_rotation(D, 5)[:, :1]
    spectrum = sigma_spectrum(lam * (u @ u.T), D)
    assert spectrum.rank == 1
    lo, hi = lam * (1 - np.sqrt(1 / N)) ** 2, lam * (1 + np.sqrt(1 / N)) ** 2
    out = theorem_42(ETA, spectrum, D, N, K)
    rate = max(abs(1 - ETA * lo), abs(1 - ETA * hi))
    assert out["spectrum_interval"] == pytest.approx([lo, hi], rel=1e-9)
    assert out["loss_bound"] == pytest.approx(rate ** (2 * K) / 2 + (D - 1) / 2, rel=1e-9)
    assert out["spectrum_top_ambient"] == pytest.approx(lam * (1 + np.sqrt(D / N)) ** 2, rel=1e-9)
    assert out["predicted_stable"] is bool(ETA * hi < 2) and out["eta_top"] == pytest.approx(ETA * hi, rel=1e-12)


def test_the_unstable_fraction_counts_step_times_lambda_max_equal_to_2():
    """A prompt with step * lambda_max(S) = 2 exactly does not contract (|1 - 2| = 1): unstable."""
    from training.data import derived_seed
    from training.suite import unstable_fraction
    S = numerics.sample_gram(D, N, 1, seed=derived_seed(0, "suite-spectrum"))
    top = float(np.linalg.eigvalsh(S)[0, -1])
    step = 2 / top
    while step * top < 2:
        step = np.nextafter(step, np.inf)
    while step * top > 2:
        step = np.nextafter(step, 0)
    assert step * top == 2.0
    assert unstable_fraction(step, Case("id"), D, N, samples=1, seed=0) == 1.0
    assert unstable_fraction(np.nextafter(step, 0), Case("id"), D, N, samples=1, seed=0) == 0.0


# ------------------------------------------------------------------------------- the limit loss
def test_the_limit_loss_with_label_noise_and_where_theory_has_none():
    """limit_loss = c^2 theory.gd_limit_loss(noise v / c^2) = the noiseless (d - min(n, r))/2
    c^2 plus the noise part; None where theory has no closed form (noise, n < rank - 1, unequal
    eigenvalues)."""
    model = suite_model(*numerics.gd_params(D, ETA), mode="cot", n=N, k=K)
    row = evaluate_case(model, Case("noisy", w_scale=2.0, label_noise=1.0), samples=8, theory_samples=8)
    assert row["limit_loss"] == pytest.approx(4 * float(theory.gd_limit_loss(D, N, noise_var=sympy.Rational(1, 4))))
    assert row["limit_loss"] == pytest.approx(1 * D / (2 * (N - D - 1)), rel=1e-12)      # s^2 d / (2 (n - d - 1))
    few = suite_model(*numerics.gd_params(4, ETA), mode="cot", n=2, k=2)
    row = evaluate_case(few, Case("aniso", np.diag([4.0, 3.0, 2.0, 1.0]), label_noise=1.0), samples=8, theory_samples=8)
    assert row["limit_loss"] is None


@pytest.mark.parametrize("trained", [dict(sigma=np.diag([2.0, 1.0, 0.5])), dict(noise=0.5)])
def test_the_no_cot_optimum_for_the_cases_sigma_is_the_same_for_none_and_the_identity(trained):
    """``nocot_sigma_median`` is Theorem 3.1's noise-free optimum for the case's Sigma (module
    docstring), whatever the model was trained on: ``Case(sigma=None)`` (identity) and
    ``Case(sigma=I)`` give the same number (found by the mutation campaign: the model's own
    training optimum stood in for it)."""
    m = suite_model(*numerics.gd_params(D, ETA), mode="cot", n=N, k=K, **trained)
    none = evaluate_case(m, Case(name="id-none", kind="test", description="x ~ N(0, I)"), samples=400)
    eye = evaluate_case(m, Case(name="id-eye", kind="test", description="x ~ N(0, I)", sigma=np.eye(D)),
                        samples=400)
    assert none["nocot_sigma_median"] == pytest.approx(eye["nocot_sigma_median"], rel=1e-12)
    assert none["nocot_median"] != pytest.approx(none["nocot_sigma_median"], rel=1e-6)


def test_a_zero_covariance_of_your_own_is_refused_naming_it(tmp_path):
    """x = 0 carries nothing to evaluate; the refusal names the case (the file's stem for
    ``--sigma``) instead of failing later inside Theorem 3.1's optimum."""
    from training.suite import covariance_case, load_covariance
    with pytest.raises(ValueError, match=r"^flat: Sigma = 0"):
        covariance_case("flat", np.zeros((D, D)), D)
    np.save(tmp_path / "nothing.npy", np.zeros((D, D)))
    with pytest.raises(ValueError, match=r"^nothing: Sigma = 0"):
        load_covariance(tmp_path / "nothing.npy", D)
    assert covariance_case("rank1", np.diag([1.0, 0.0, 0.0]), D).sigma is not None
