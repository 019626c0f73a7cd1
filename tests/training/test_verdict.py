"""The verdict on a trained model (training/verdict.py, issue 22 section 4): the zero predictor's
exact loss is d/2 for any covariance and label noise (the loss is measured against w*); the rule
(more than half diverged, or more than 5% worse than predicting 0 after at least 50 iterations)
at its boundaries; and a run that fails it is recorded "failed" in its summary and manifests
(one and many models) and read back as failed by ``resume``.

Kinds of check: exact (the zero predictor against theory), statistical (the evaluation of the
zero model: within 4 standard errors of d/2), argument-free unit checks of ``judge`` on made-up
reports, and training (tiny CPU runs, seconds).  The command line's side is
tests/cli/test_cli_verdict.py; the sweep's is tests/training/test_sweep.py."""
import json
import math

import numpy as np
import pytest
import sympy
import torch

import theory
from training import TrainConfig, evaluate_params, resume, train, train_models
from training.verdict import MAX_DIVERGED_FRAC, MIN_JUDGED_ITERS, ZERO_MARGIN, judge, summary_verdict, zero_predictor_loss

import training.engine as engine

#: Tiny runs of d 3 whose final model is good at lr 0.1 and fails at lr 1 (no divergence) after
#: 60 iterations, and diverges at lr 10.
SMALL = dict(d=3, n=8, k=3, batch=64, iters=60, eval_every=30, eval_samples=2000, theory_samples=2000,
             structure_samples=64, device="cpu", progress=False)


# ---------------------------------------------------------------------------- the zero predictor
@pytest.mark.parametrize("d, n, sigma, noise", [(3, 8, None, 0.0), (4, 3, np.diag([4.0, 1.0, 0.25, 0.0]), 0.0),
                                               (2, 6, 3.0 * np.eye(2), 1.5)])
def test_zero_predictor_loss_is_d_over_2_for_any_sigma_and_noise(d, n, sigma, noise):
    """Exact and statistical: the evaluation measures (1/2) ||w_hat - w*||^2 against w* ~ N(0, I_d),
    so the zero model's loss is d/2, not tr(Sigma)/2 (here 1.5 d and 3.5 for the other two
    Sigmas): zero_predictor_loss is theory.gd_eval_loss at k = 0 (w_0 = 0) with the run's Sigma
    and noise, and the sampled loss of the all-zero LSA (it never moves w off 0) agrees with it."""
    config = TrainConfig(d=d, n=n, sigma=None if sigma is None else sigma.tolist(), noise=noise)
    exact = theory.gd_eval_loss(d, n, sympy.Rational(2, 5), 0, noise_var=sympy.nsimplify(noise ** 2),
                                sigma=None if sigma is None else sympy.Matrix(sigma.tolist()).applyfunc(sympy.nsimplify))
    assert zero_predictor_loss(config) == float(exact) == d / 2
    zero = torch.zeros(2 * d + 2, 2 * d + 2, dtype=torch.float64)
    report = evaluate_params(zero, zero, d=d, n=n, k=3, samples=20000, seed=1, sigma=config.sigma, noise=noise)
    assert abs(report["mean"] - d / 2) < 4 * report["se"]
    if sigma is not None:
        assert abs(report["mean"] - np.trace(sigma) / 2) > 10 * report["se"]


# ---------------------------------------------------------------------------- the rule
def report(mean: float, diverged: float = 0.0) -> dict:
    return {"mean_without_diverged": mean, "diverged_frac": diverged, "mean": mean}


def test_judge_at_the_boundaries_of_the_rule():
    """The rule: failed above 5% over d/2 (not at it), from MIN_JUDGED_ITERS iterations on;
    failed when more than half the prompts diverge (not at half), at any length."""
    c = TrainConfig(d=4, n=8, iters=200)
    zero = 2.0
    at = (1 + ZERO_MARGIN) * zero
    assert judge(c, report(at), iterations=200)["status"] == "finished"
    assert judge(c, report(math.nextafter(at, 9.0)), iterations=200)["status"] == "failed"
    assert judge(c, report(10 * zero), iterations=MIN_JUDGED_ITERS - 1)["status"] == "finished"
    assert judge(c, report(10 * zero), iterations=MIN_JUDGED_ITERS - 1)["judged_loss"] is False
    assert judge(c, report(10 * zero), iterations=MIN_JUDGED_ITERS)["status"] == "failed"
    assert judge(c, report(0.1, MAX_DIVERGED_FRAC), iterations=200)["status"] == "finished"
    assert judge(c, report(0.1, 0.51), iterations=3)["status"] == "failed"
    assert judge(c, report(float("nan"), 1.0), iterations=200)["status"] == "failed"
    ok = judge(c, report(0.5), iterations=200)
    assert ok["message"] is None and ok["failures"] == [] and ok["zero_loss"] == zero


def test_failure_message_is_one_line_naming_what_and_why():
    """The message names the measured loss, the zero predictor's, and the causes: an lr above the
    default, Theorem 4.2's verdict on eta (past the bound for eta 3 at d 3, n 8: 0.7693), and
    whether the theory's model on the same prompts does better."""
    high_lr = judge(TrainConfig(d=10, n=20, lr=10.0), report(7.55), iterations=200,
                    same_prompts={"mean_without_diverged": 0.27, "diverged_frac": 0.0})
    message = high_lr["message"]
    assert "\n" not in message and message.startswith("training failed: ")
    assert "7.55" in message and "51% above 5" in message and "predicting w = 0" in message
    assert "lr = 10 is 10000x the default 0.001" in message
    assert "within Theorem 4.2's stable step 0.6863" in message and "so not the cause" in message
    assert "the theory's model reaches 0.27 on the same prompts" in message
    unstable = judge(TrainConfig(d=3, n=8, eta=3.0), report(50.0, 0.9), iterations=300,
                     same_prompts={"mean_without_diverged": 40.0, "diverged_frac": 0.9})["message"]
    assert "diverges on 90% of the final evaluation's prompts" in unstable
    assert "eta = 3 is past Theorem 4.2's stable step 0.7693" in unstable and "theory.stable_eta_bound" in unstable
    assert "the setting, not the optimiser" in unstable
    assert "lr =" not in unstable                         # the default lr is no cause of divergence
    slow = judge(TrainConfig(d=3, n=8, iters=80), report(2.0), iterations=80)["message"]
    assert "too little training (lr = 0.001, default 0.001, for 80 iterations" in slow
    nocot = judge(TrainConfig(d=3, n=8, mode="nocot"), report(1.0, 0.6), iterations=80)["message"]
    assert nocot.endswith("why: no cause found in the config (lr = 0.001 is its default)")
    looped = judge(TrainConfig(d=3, n=8, mode="looped", eta=3.0), report(9.0), iterations=300)["message"]
    assert "eta" not in looped.split("why: ")[1]             # eta is CoT's step; a looped run learns its own


# ---------------------------------------------------------------------------- recorded
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A good run (lr 0.1), one that fails by its loss (lr 1) and one that diverges (lr 10)."""
    root = tmp_path_factory.mktemp("verdict")
    torch.set_num_threads(1)
    return {lr: (root / f"lr{lr:g}", train(TrainConfig(**SMALL, lr=lr, out=str(root / f"lr{lr:g}"))))
            for lr in (0.1, 1.0, 10.0)}


def test_runs_record_their_verdict_in_summary_and_manifest(runs):
    """Training: the good run is 'finished', the other two 'failed', in the returned summary, in
    summary.json and in manifest.json (at their last iteration and checkpoint); the failed runs'
    summaries still hold the full evaluation."""
    for lr, status in ((0.1, "finished"), (1.0, "failed"), (10.0, "failed")):
        out, result = runs[lr]
        s = result.summary
        assert s["status"] == status and s["verdict"]["status"] == status
        assert json.loads((out / "summary.json").read_text())["status"] == status
        m = json.loads((out / "manifest.json").read_text())
        assert (m["status"], m["iteration"], m["checkpoint_iteration"]) == (status, 60, 60)
    good, slow, wild = (runs[lr][1].summary for lr in (0.1, 1.0, 10.0))
    assert good["eval"]["mean_without_diverged"] < zero_predictor_loss(runs[0.1][1].config)
    assert slow["eval"]["diverged_frac"] <= 0.5 and slow["eval"]["mean_without_diverged"] > 1.05 * 1.5
    assert "above 1.5, the exact loss of predicting w = 0" in slow["verdict"]["message"]
    assert wild["eval"]["diverged_frac"] > 0.5 and "diverges on" in wild["verdict"]["message"]


def test_resume_of_a_failed_run_reads_it_back(runs, tmp_path, monkeypatch):
    """Training: a failed run has ended: resume reads it back as failed, training nothing."""
    import shutil
    out, result = runs[1.0]
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    monkeypatch.setattr(engine.Engine, "run", lambda self: pytest.fail("a failed run was recomputed"))
    again = resume(str(copy))
    assert again.summary["status"] == "failed" and torch.equal(again.V, result.V)


def test_summary_verdict_judges_a_summary_written_before_runs_had_one(runs):
    """An old summary (no status): the verdict is computed from its evaluation, config and
    iterations, and is the one recorded today."""
    for lr in (0.1, 1.0):
        s = dict(runs[lr][1].summary)
        recorded = s.pop("verdict")
        s.pop("status")
        assert summary_verdict(s) == recorded


def test_many_model_run_records_each_models_verdict(tmp_path):
    """Training: in a run of two models (seeds 0 and 1) at lr 1 both fail; each model's manifest
    and summary say so, and the top manifest is 'failed'."""
    out = tmp_path / "many"
    results = train_models(TrainConfig(**SMALL, lr=1.0, out=str(out)), seeds=[0, 1])
    assert [r.summary["status"] for r in results] == ["failed", "failed"]
    assert json.loads((out / "manifest.json").read_text())["status"] == "failed"
    for name in json.loads((out / "manifest.json").read_text())["models"]:
        model = out / "models" / name
        assert json.loads((model / "manifest.json").read_text())["status"] == "failed"
        assert json.loads((model / "summary.json").read_text())["status"] == "failed"
