"""``cotgd verify`` as a registry of checks (training/app/verify/): the symbolic, numeric and
statistical sections pass with quick settings; ``only`` selects exactly the matching checks and
trains nothing more than they need; a pattern matching nothing is a one-line error; a check that
raises or measures a wrong value is a failed row; the report wraps long cells and never cuts them;
``--list`` and the exit statuses.  The training checks are exercised on stand-in models (no
training); one end-to-end run of them is marked slow."""
import json
import re
from types import SimpleNamespace

import numpy as np
import pytest

import numerics
import theory
from training import PAPER, resolve_device
from training.app import verify
from training.app.cli import main


@pytest.fixture
def no_training(monkeypatch):
    """Replace the trainer by a recorder that fails: a test using this fixture proves nothing was
    trained (checked when the test ends; the failure alone would become a failed row)."""
    calls = []

    def must_not_train(config):
        calls.append(config.mode)
        raise AssertionError(f"trained a {config.mode} model")

    def must_not_train_models(config, **kwargs):
        calls.append(config.mode)
        raise AssertionError(f"trained {config.mode} models")

    monkeypatch.setattr(verify.registry, "train", must_not_train)
    monkeypatch.setattr(verify.registry, "train_models", must_not_train_models)
    yield calls
    assert calls == [], f"trained {calls}"


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the registry: checks registered in a test vanish afterwards."""
    private = dict(verify.REGISTRY)
    monkeypatch.setattr(verify.registry, "REGISTRY", private)
    monkeypatch.setattr(verify, "REGISTRY", private)
    return private


def _names(report) -> list:
    return [c["name"] for c in report["checks"]]


def _by_kind(kind) -> list:
    return [name for name, e in verify.REGISTRY.items() if e.kind == kind]


# ---------------------------------------------------------------- the registry
def test_registry_names_kinds_and_needs():
    assert len(verify.REGISTRY) == 34
    for name, entry in verify.REGISTRY.items():
        assert entry.name == name and re.fullmatch(r"[a-z0-9]+([.-][a-z0-9]+)*", name), name
        assert name.startswith(entry.kind + ".") and entry.kind in verify.KINDS
        assert entry.description and "\n" not in entry.description
        assert bool(entry.needs) == (entry.kind == "training"), name
    assert [len(_by_kind(k)) for k in verify.KINDS] == [7, 4, 7, 16]
    # Paired comparisons with GD say "same prompts"; comparisons with an independent Monte Carlo say so.
    assert sum(name.endswith("same-prompts") for name in verify.REGISTRY) == 4
    assert "independent Monte Carlo" in verify.REGISTRY["training.cot-loss-vs-gd-independent-mc"].description


@pytest.mark.parametrize("name, kind, needs, problem", [
    ("numeric.x", "exotic", (), "kind"),
    ("symbolic.x", "numeric", (), "name"),
    ("numeric.Bad_Name", "numeric", (), "name"),
    ("training.x", "training", ("gpt",), "unknown models"),
])
def test_check_rejects_bad_registrations(registry, name, kind, needs, problem):
    with pytest.raises(ValueError, match=problem):
        @verify.check(name, kind=kind, needs=needs)
        def f(settings):
            """A check."""


def test_check_rejects_duplicates_and_wrong_parameters(registry):
    with pytest.raises(ValueError, match="twice"):
        @verify.check("symbolic.gd-closed-form", kind="symbolic")
        def f():
            """A check."""
    with pytest.raises(ValueError, match="parameters"):
        @verify.check("training.no-models-argument", kind="training", needs=("cot",))
        def g(settings):
            """A check."""
    with pytest.raises(ValueError, match="description"):
        @verify.check("numeric.undocumented", kind="numeric")
        def h(settings):
            pass


# ---------------------------------------------------------------- the sections pass (quick)
@pytest.mark.parametrize("kind", ["symbolic", "numeric", "statistical"])
def test_section_passes_quick_without_training(kind, no_training):
    report = verify.run_verify(quick=True, device="cpu", only=f"{kind}.*")
    assert _names(report) == _by_kind(kind)
    failed = [(c["name"], c["measured"], c["detail"]) for c in report["checks"] if not c["passed"]]
    assert report["passed"] and not failed, failed
    assert {c["kind"] for c in report["checks"]} == {kind}
    assert report["device"] == "cpu" and report["quick"] is True and report["seed"] == 0
    json.dumps(report)                                   # JSON-ready


def test_registered_function_called_directly_returns_complete_rows():
    rows = verify.gd_closed_form()
    assert [(r.name, r.kind, r.passed) for r in rows] == [("symbolic.gd-closed-form", "symbolic", True)]
    rows = verify.cot_rollout_is_gd(verify.VerifySettings(quick=True, seed=3))
    assert rows[0].name == "numeric.thm32-cot-rollout-is-gd" and rows[0].passed


def test_equivalence_worst_small_grid():
    worst, where = verify.equivalence_worst("cot_vs_gd", grid=[(2, 3, 4), (3, 2, 5)], prompts=2, seed=0)
    assert worst <= verify.EQUIVALENCE_TOL and where[:3] in [(2, 3, 4), (3, 2, 5)]


# ---------------------------------------------------------------- selection
def test_only_selects_exactly_the_matching_checks(no_training):
    report = verify.run_verify(quick=True, device="cpu", only="symbolic.GD-closed-form, symbolic.thm31")
    assert _names(report) == ["symbolic.gd-closed-form", "symbolic.thm31-nocot-optimal-step",
                              "symbolic.thm31-nocot-floor"]
    assert [e.name for e in verify.select_checks("symbolic.thm3?-*")] == [
        "symbolic.thm32-lsa-step-is-gd", "symbolic.thm32-rejects-v31-minus-2eta",
        "symbolic.thm31-nocot-optimal-step", "symbolic.thm31-nocot-floor"]
    assert [e.name for e in verify.select_checks(["*closed-form"])] == [
        "symbolic.gd-closed-form", "numeric.gd-recursion-is-closed-form"]
    # A glob matches the whole name; a substring anywhere.
    assert verify.select_checks("ood") and all("ood" in e.name for e in verify.select_checks("ood"))
    assert len(verify.select_checks(None)) == len(verify.REGISTRY)
    assert verify.models_needed(verify.select_checks("symbolic,numeric,statistical")) == ()
    assert verify.models_needed(verify.select_checks("looped-vs")) == ("looped",)
    assert verify.models_needed(verify.select_checks("training")) == ("cot", "nocot", "looped", "looped_full",
                                                                      "cot_noise")


@pytest.mark.parametrize("only", ["nothing-like-this", "symbolic,nothing", "symbolic.gd*x", " , "])
def test_pattern_matching_nothing_is_a_value_error(only, no_training):
    with pytest.raises(ValueError) as info:
        verify.run_verify(quick=True, device="cpu", only=only)
    assert "\n" not in str(info.value) and "--list" in str(info.value)


def test_cli_pattern_matching_nothing_exits_2_with_one_line(no_training, capsys):
    assert main(["verify", "--quick", "--only", "no-such-check"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("cotgd: error:")
    assert "no-such-check" in captured.err and "--list" in captured.err


def test_bad_seed_is_a_value_error(no_training):
    with pytest.raises(ValueError, match="seed"):
        verify.run_verify(quick=True, device="cpu", seed=-1, only="gd-closed-form")


# ---------------------------------------------------------------- failures are rows
def test_check_that_raises_is_a_failed_row(registry, no_training):
    @verify.check("numeric.test-boom", kind="numeric")
    def boom(settings):
        """Raises."""
        raise RuntimeError("boom at seed %d" % settings.seed)

    report = verify.run_verify(quick=True, device="cpu", seed=5, only="numeric.*")
    assert _names(report) == _by_kind("numeric")         # the others still run
    row = report["checks"][-1]
    assert row["name"] == "numeric.test-boom" and row["passed"] is False
    assert row["measured"] == "error: RuntimeError: boom at seed 5"
    assert report["passed"] is False
    assert sum(c["passed"] for c in report["checks"]) == len(_by_kind("numeric")) - 1


def test_check_with_a_wrong_value_fails(registry, no_training):
    @verify.check("statistical.test-wrong", kind="statistical")
    def wrong(settings):
        """Compares a Monte Carlo estimate with a deliberately wrong exact value."""
        mc = numerics.nocot_loss_mc(3, 5, samples=2_000, seed=settings.seed)
        expected = 2 * float(theory.nocot_min_loss(3, 5))
        return verify.result(mc["mean"], expected, "4 SE", verify.within_se(mc["mean"], expected, mc["se"]))

    report = verify.run_verify(quick=True, device="cpu", only="test-wrong,gd-closed-form")
    assert [c["passed"] for c in report["checks"]] == [True, False] and report["passed"] is False
    assert "FAILURES" in verify.format_report(report).splitlines()[-1]


# ---------------------------------------------------------------- training checks on stand-in models
def _stand_in_models(cot_loss_factor: float = 1.0) -> verify.TrainedModels:
    """Models with the summaries a good training run reports, and the Theorem 3.2 transformer
    (= GD) as the CoT model's parameters."""
    eta, floor = PAPER.eta, float(theory.nocot_min_loss(PAPER.d, PAPER.n))
    V, W = numerics.gd_params(PAPER.d, eta)
    cot = SimpleNamespace(V=V, W=W, summary={
        "final_eval_loss": 0.27 * cot_loss_factor, "theory_eval_loss": 0.27,
        "structure": {"v31_w13": -eta, "w24_v31": eta, "offdiag_energy": 0.01, "functional_deviation": 0.01},
        "eval": {"median": 0.2, "se": 0.001}})
    nocot = SimpleNamespace(summary={"final_eval_loss": floor * 1.01, "eval": {"median": 1.6, "se": 0.01}})
    looped = SimpleNamespace(summary={
        "final_eval_loss": 0.15, "eval": {"median": 0.1}, "theory_same_prompts": {"median": 0.101, "mean": 0.16},
        "structure_step": 0.5, "learned_contraction_step": 0.5, "learned_step": 0.5})
    # The full looped model: a preconditioned GD step with an anisotropic P (no rotation maps it to
    # itself, as the learned model's blocks do not), so no equivariant family explains it.
    P = np.diag(np.linspace(0.1, 0.7, PAPER.d))
    V_full, W_full = numerics.loop_families.family_params("gd", PAPER.d, {"eta": 1.0})
    L = theory.Layout(PAPER.d)
    V_full[L.w, L.x] = -P
    looped_full = SimpleNamespace(V=V_full, W=W_full, config=SimpleNamespace(
        mode="looped", param="full", d=PAPER.d, n=PAPER.n, k=PAPER.k, sigma=None, noise=0.0), summary={
        "eval": {"median": 0.05, "mean_without_diverged": 0.09, "diverged_frac": 0.0},
        "theory_same_prompts": {"median": 0.108, "mean": 0.19}, "rescaled_gd_same_prompts": {"median": 0.09, "mean": 0.17}})
    cot_noise = {k: SimpleNamespace(summary={
        "final_eval_loss": numerics.gd_eval_loss_value(PAPER.d, PAPER.n, eta, k, noise_var=1.0) * cot_loss_factor,
        "theory_eval_loss": numerics.gd_eval_loss_value(PAPER.d, PAPER.n, eta, k, noise_var=1.0),
        "eval": {"median": 0.4, "se": 0.005}}) for k in (5, 10)}
    return verify.TrainedModels(cot=cot, nocot=nocot, looped=looped, looped_full=looped_full, cot_noise=cot_noise)


@pytest.fixture
def small_explain(monkeypatch):
    """The full looped model's explanation on fewer prompts (statistical check; the stand-in's
    floor is far above 0.1)."""
    monkeypatch.setattr(verify.training, "EXPLAIN_SIZES", {"samples": 1500, "fit_on": 600, "rotations": 4})


def test_looped_full_explanation_fails_for_an_equivariant_model(small_explain):
    """GD itself as the full looped model: its symmetry floor is 0, so the check fails."""
    stand_in = _stand_in_models().looped_full
    V, W = numerics.gd_params(PAPER.d, 0.5)
    model = SimpleNamespace(V=V, W=W, config=stand_in.config, summary=stand_in.summary)
    rows = verify.looped_full_no_equivariant_family(verify.VerifySettings(), verify.TrainedModels(looped_full=model))
    floor = float(rows[0].measured.split(";")[0].split()[1])
    assert rows[0].passed is False and floor < 1e-20


def test_training_checks_pass_on_good_models(small_explain):
    settings = verify.VerifySettings(quick=True)
    models = _stand_in_models()
    for name in _by_kind("training"):
        rows = verify.run_check(verify.REGISTRY[name], settings, models)
        assert [r.passed for r in rows] == [True], (name, rows)


def test_training_check_with_a_wrong_measured_value_fails():
    rows = verify.cot_loss_vs_gd(_stand_in_models(cot_loss_factor=1.5))
    assert rows[0].passed is False and rows[0].name == "training.cot-loss-vs-gd-independent-mc"


def test_run_verify_trains_only_the_models_the_checks_need(monkeypatch):
    trained = []
    stand_in = _stand_in_models(cot_loss_factor=1.5)

    def fake_train(config, **kwargs):
        trained.append((config.mode, config.param, config.seed, config.device))
        return getattr(stand_in, config.mode)

    monkeypatch.setattr(verify.registry, "train", fake_train)
    report = verify.run_verify(quick=True, device="cpu", seed=4, only="cot-loss,*cot-structure-v31*,gd-closed-form")
    assert trained == [("cot", "full", 4, "cpu")]
    assert _names(report) == ["symbolic.gd-closed-form", "training.cot-loss-vs-gd-independent-mc",
                              "training.cot-structure-v31-w13"]
    assert [c["passed"] for c in report["checks"]] == [True, False, True] and report["passed"] is False


def test_a_model_that_fails_to_train_fails_its_checks_only(monkeypatch):
    def diverging(config, **kwargs):
        raise RuntimeError(f"{config.mode} diverged")

    monkeypatch.setattr(verify.registry, "train", diverging)
    report = verify.run_verify(quick=True, device="cpu", only="nocot-at,gd-closed-form")
    assert [c["passed"] for c in report["checks"]] == [True, False]
    assert "nocot model did not train: RuntimeError: nocot diverged" in report["checks"][1]["measured"]


def test_quick_training_configs():
    settings = verify.VerifySettings(quick=True, seed=2, device="cpu", out="/tmp/v")
    looped = verify.train_config(settings, "looped")
    assert (looped.mode, looped.param, looped.iters, looped.batch, looped.seed) == ("looped", "sparse", 300, 200, 2)
    assert looped.out == "/tmp/v/looped-sparse"
    cot = verify.train_config(verify.VerifySettings(), "cot")
    assert (cot.d, cot.n, cot.k, cot.eta, cot.iters, cot.batch, cot.out) == (
        PAPER.d, PAPER.n, PAPER.k, PAPER.eta, PAPER.iters, PAPER.batch, None)


# ---------------------------------------------------------------- the report text
def test_format_report_wraps_and_never_truncates():
    long_name = "numeric." + "-".join(f"part{i:03d}" for i in range(18))
    long_name = long_name[:150]
    assert len(long_name) == 150
    long_tolerance = "within " + " ".join(f"tol{i}" for i in range(20))
    report = {"passed": False, "quick": True, "device": "cpu", "seconds": 1.25, "checks": [
        {"name": long_name, "kind": "numeric", "measured": 1.0, "expected": 2.0, "tolerance": long_tolerance,
         "passed": False, "detail": "x"},
        {"name": "symbolic.short", "kind": "symbolic", "measured": True, "expected": True, "tolerance": "exact",
         "passed": True, "detail": ""}]}
    text = verify.format_report(report)
    lines = text.splitlines()
    assert lines[0].split() == ["check", "kind", "measured", "expected", "tolerance", "result", "detail"]
    widths = [len(dashes) for dashes in lines[1].split("  ")]
    starts = np.cumsum([0] + [w + 2 for w in widths])
    rows = lines[2:-1]
    first_row = [ln for ln in rows if not ln.startswith("symbolic.short")]
    column = lambda i: [ln[starts[i]:starts[i] + widths[i]].strip() for ln in first_row]
    assert "".join(column(0)) == long_name                     # whole, across lines
    assert " ".join(c for c in column(4) if c) == long_tolerance
    assert len(first_row) > 1 and max(len(ln) for ln in lines[:-1]) <= sum(widths) + 2 * (len(widths) - 1)
    assert "FAIL" in first_row[0] and any(ln.startswith("symbolic.short") and "PASS" in ln for ln in rows)
    assert lines[-1] == "1/2 checks passed in 1.2 s (quick, device cpu): FAILURES"


# ---------------------------------------------------------------- command line
def test_cli_list_prints_every_check_and_trains_nothing(no_training, capsys):
    assert main(["verify", "--list"]) == 0
    out = capsys.readouterr().out
    for name, entry in verify.REGISTRY.items():
        assert re.search(rf"^{re.escape(name)}\s+{entry.kind}\s", out, re.M), name
    assert main(["verify", "--list", "--only", "symbolic*"]) == 0
    out = capsys.readouterr().out
    assert "symbolic.gd-closed-form" in out and "numeric." not in out


def test_cli_help_shows_defaults(capsys):
    with pytest.raises(SystemExit) as info:
        main(["verify", "--help"])
    assert info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for option in ("--quick", "--device", "--out", "--json", "--seed", "--only", "--list"):
        assert option in out
    assert "(default: auto)" in out and "(default: 0)" in out and "fnmatch" in out and "substring" in out


def test_cli_exit_0_on_pass_writes_json(no_training, tmp_path, capsys):
    js, out = tmp_path / "report.json", tmp_path / "out"
    assert main(["verify", "--quick", "--only", "symbolic*", "--json", str(js), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.rstrip().splitlines()[-1].endswith("ALL PASS")
    report = json.loads(js.read_text())
    assert set(report) == {"passed", "quick", "device", "seed", "seconds", "checks", "skipped", "model_seconds"}
    assert report["skipped"] == [] and report["model_seconds"] == {}
    assert report["device"] == str(resolve_device("auto")) and report["passed"] is True
    assert set(report["checks"][0]) == {"name", "kind", "measured", "expected", "tolerance", "passed", "detail"}
    assert json.loads((out / "verify.json").read_text())["checks"] == report["checks"]


def test_cli_exit_1_on_failure(registry, no_training, capsys):
    @verify.check("symbolic.test-false", kind="symbolic")
    def false():
        """Always fails."""
        return verify.result(1, 2, "exact", False)

    assert main(["verify", "--quick", "--device", "cpu", "--only", "test-false"]) == 1
    last = capsys.readouterr().out.rstrip().splitlines()[-1]
    assert re.fullmatch(r"0/1 checks passed in \d+\.\d s \(quick, device cpu\): FAILURES", last), last


# ---------------------------------------------------------------- end to end (slow)
@pytest.mark.slow
def test_training_checks_end_to_end(slow_scale, tmp_path, capsys):
    """Trains the models (minutes): every training check passes.  Reduced form: the CoT checks."""
    only = "training" if slow_scale == "full" else "training.cot-loss*,training.cot-structure*"
    status = main(["verify", "--quick", "--device", "cpu", "--only", only, "--json", str(tmp_path / "r.json")])
    report = json.loads((tmp_path / "r.json").read_text())
    failed = [(c["name"], c["measured"], c["detail"]) for c in report["checks"] if not c["passed"]]
    assert status == 0 and not failed, failed


def test_full_looped_check_fails_on_each_target():
    """The full looped model's check fails when any of its three targets is missed."""
    good = _stand_in_models().looped_full.summary
    for key, value in (("median", 0.2), ("mean_without_diverged", 0.3), ("diverged_frac", 0.01)):
        summary = dict(good, eval=dict(good["eval"], **{key: value}))
        rows = verify.looped_full_vs_best_gd_step(verify.TrainedModels(looped_full=SimpleNamespace(summary=summary)))
        assert rows[0].passed is False, key


# ---------------------------------------------------------------- full-run-only checks, scheduling, progress
def test_quick_skips_the_full_looped_check_and_says_so(no_training, capsys):
    entry = verify.REGISTRY["training.looped-full-vs-best-gd-step-same-prompts"]
    assert entry.full_only and sorted(e.name for e in verify.REGISTRY.values() if e.full_only) == [
        "training.looped-full-no-equivariant-family", entry.name]
    report = verify.run_verify(quick=True, device="cpu", only="looped-full-vs,gd-closed-form")
    assert _names(report) == ["symbolic.gd-closed-form"] and report["passed"]
    assert report["skipped"] == [{"name": entry.name, "kind": "training", "reason": verify.FULL_ONLY_REASON}]
    text = verify.format_report(report)
    assert re.search(rf"^{re.escape(entry.name)}\s+training\s+-\s+-\s+-\s+SKIP\s+full run only", text, re.M)
    assert text.splitlines()[-1] == (f"1/1 checks passed in {report['seconds']:.1f} s (quick, device cpu), 1 skipped "
                                     "(full run only: cotgd verify without --quick): ALL PASS")
    assert "(full run only)" in verify.format_check_list("looped-full")
    assert main(["verify", "--quick", "--device", "cpu", "--only", "looped-full-vs"]) == 0
    assert "SKIP" in capsys.readouterr().out


def test_full_run_trains_the_full_looped_model(monkeypatch):
    stand_in = _stand_in_models()
    trained = []

    def fake_train(config, **kwargs):
        trained.append((config.mode, config.param, config.iters, config.batch))
        return stand_in.looped_full

    monkeypatch.setattr(verify.registry, "train", fake_train)
    report = verify.run_verify(quick=False, device="cpu", only="looped-full-vs", progress=False)
    assert trained == [("looped", "full", PAPER.iters, PAPER.batch)]
    assert _names(report) == ["training.looped-full-vs-best-gd-step-same-prompts"] and report["passed"]
    assert report["skipped"] == [] and set(report["model_seconds"]) == {"looped_full"}


def test_models_train_side_by_side_and_checks_run_as_they_finish(monkeypatch, registry):
    """Two models train at the same time (each waits at a barrier for the other), and the check
    that needs only the first runs before the second has finished (the second waits for it)."""
    import threading
    stand_in = _stand_in_models()
    both_training = threading.Barrier(2, timeout=60)
    cot_checked = threading.Event()
    seen = []

    def fake_train(config, **kwargs):
        both_training.wait()
        if config.mode == "nocot":
            seen.append(cot_checked.wait(timeout=60))
        return getattr(stand_in, config.mode)

    @verify.check("training.test-cot-only", kind="training", needs=("cot",))
    def cot_only(models):
        """Needs the CoT model alone."""
        cot_checked.set()
        return verify.result(1, 1, "exact", True)

    monkeypatch.setattr(verify.registry, "train", fake_train)
    monkeypatch.setattr(verify.registry, "training_workers", lambda models: min(2, models))
    report = verify.run_verify(quick=True, device="cpu", only="test-cot-only,nocot-at", progress=False)
    assert seen == [True] and report["passed"], report
    assert _names(report) == ["training.nocot-at-thm31-floor-exact", "training.test-cot-only"]   # registry order


def test_progress_prints_a_line_per_check_as_it_finishes(registry, no_training):
    import io
    stream = io.StringIO()
    before = []

    @verify.check("symbolic.test-looks-back", kind="symbolic")
    def looks_back():
        """Records what the progress stream held when it ran."""
        before.append(stream.getvalue())
        return verify.result(1, 1, "exact", True)

    report = verify.run_verify(quick=True, device="cpu", only="wishart,test-looks-back", progress=stream)
    assert "PASS symbolic.wishart-third-moment" in before[0]           # printed before the next check ran
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and re.match(r"\[1/2 +\d+\.\d s\] PASS symbolic.wishart-third-moment \(\d+\.\d\d s\)$",
                                        lines[0])
    assert lines[1].startswith("[2/2") and "PASS symbolic.test-looks-back" in lines[1] and report["passed"]


def test_parallel_training_is_bitwise_the_sequential_training(monkeypatch):
    """Models trained side by side on worker threads end bitwise where each ends trained alone
    (tiny configurations of two modes; seconds)."""
    import torch
    tiny = dict(d=3, n=8, k=3, iters=30, batch=64)
    monkeypatch.setitem(verify.MODEL_SPECS, "cot", {"mode": "cot", "param": "full", **tiny})
    monkeypatch.setitem(verify.MODEL_SPECS, "nocot", {"mode": "nocot", "param": "full", **tiny})
    settings = verify.VerifySettings(quick=True, seed=1, device="cpu")
    monkeypatch.setattr(verify.registry, "training_workers", lambda models: 2)
    together = verify.train_models_for_verify(settings, ("cot", "nocot"))
    alone = {name: verify.registry.train(verify.train_config(settings, name)) for name in ("cot", "nocot")}
    for name, result in alone.items():
        mine = getattr(together, name)
        assert torch.equal(mine.V, result.V) and torch.equal(mine.W, result.W), name
        assert mine.summary["final_eval_loss"] == result.summary["final_eval_loss"]
    assert set(together.seconds) == {"cot", "nocot"} and not together.errors
