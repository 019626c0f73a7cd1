"""Guards from the mutation campaign (tests/mutation): the failed-run rule with its documented
numbers written out (training/verdict.py, README): a run fails when more than half of its
final evaluation's prompts diverge, or, after at least 50 iterations, when its mean loss is more
than 5% above d/2, the loss of predicting w = 0.  (test_verdict.py states the rule through the
module's constants; these pin the constants to what the documentation promises.)"""
import pytest

from training import TrainConfig
from training.verdict import judge


def report(mean, diverged=0.0):
    return {"mean_without_diverged": mean, "diverged_frac": diverged, "mean": mean}


@pytest.mark.parametrize("mean, iterations, diverged, status", [
    (1.04 * 2.0, 200, 0.0, "finished"),
    (1.06 * 2.0, 200, 0.0, "failed"),
    (1.06 * 2.0, 50, 0.0, "failed"),
    (1.06 * 2.0, 49, 0.0, "finished"),          # too short to be judged by its loss
    (0.1, 200, 0.5, "finished"),
    (0.1, 3, 0.5001, "failed"),
    (float("inf"), 200, 0.0, "failed"),
])
def test_the_documented_rule(mean, iterations, diverged, status):
    out = judge(TrainConfig(d=4, n=8, iters=200), report(mean, diverged), iterations=iterations)
    assert out["status"] == status and out["zero_loss"] == 2.0
    assert (out["message"] is None) == (status == "finished")


# -- the causes a failed run names (training/verdict.py, _causes) ---------------------------------

def failed(config, *, mean=10.0, diverged=0.0, iterations=200, same_prompts=None):
    out = judge(config, report(mean, diverged), iterations=iterations, same_prompts=same_prompts)
    assert out["status"] == "failed", out
    return out


def test_a_failed_verdict_has_its_documented_keys_and_one_line_message():
    out = failed(TrainConfig(d=4, n=8, iters=200, mode="cot", k=3, eta=0.2))
    assert set(out) == {"status", "judged_loss", "zero_loss", "failures", "causes", "message"}
    assert out["judged_loss"] is True and out["zero_loss"] == 2.0 and len(out["failures"]) == 1
    # the causes joined by "; " after "why: "
    assert out["message"] == ("training failed: " + out["failures"][0] + "; why: " + "; ".join(out["causes"]))
    assert len(out["causes"]) >= 2 and "; ".join(out["causes"]) in out["message"]
    assert "\n" not in out["message"]


def test_a_finished_verdict_names_no_cause():
    out = judge(TrainConfig(d=4, n=8, iters=200), report(1.0), iterations=200)
    assert out == {"status": "finished", "judged_loss": True, "zero_loss": 2.0, "failures": [], "causes": [],
                   "message": None}


@pytest.mark.parametrize("mean, words", [(1.06 * 2.0, "is 6% above 2"), (1.5 * 2.0, "is 50% above 2"),
                                         (float("inf"), "is not below 2"), (float("nan"), "is not below 2")])
def test_the_loss_failure_says_how_far_above_the_zero_predictor(mean, words):
    assert words in failed(TrainConfig(d=4, n=8, iters=200), mean=mean)["failures"][0]


@pytest.mark.parametrize("factor, shown", [(3.5, "3.5x"), (2, "2x"), (10, "10x"), (25, "25x"), (150, "150x")])
def test_the_learning_rate_cause_shows_its_ratio_to_the_default(factor, shown):
    from training.config import resolved_lr
    base = TrainConfig(d=4, n=8, iters=200)
    config = TrainConfig(d=4, n=8, iters=200, lr=factor * resolved_lr(base))
    causes = failed(config)["causes"]
    assert any(f"is {shown} the default" in c for c in causes), causes


def test_half_diverged_with_a_bad_loss_is_a_loss_failure_that_may_be_too_little_training():
    """Exactly half diverged is not the divergence failure (more than half is), so with a bad loss
    and the default lr the named cause is too little training."""
    out = failed(TrainConfig(d=4, n=8, iters=200), mean=10.0, diverged=0.5)
    assert "mean loss" in out["failures"][0]
    assert any(c.startswith("too little training") for c in out["causes"]), out["causes"]
    out = failed(TrainConfig(d=4, n=8, iters=200), mean=1.0, diverged=0.51)
    assert not any(c.startswith("too little training") for c in out["causes"]), out["causes"]


def test_a_report_without_a_diverged_share_counts_none_diverged():
    config = TrainConfig(d=4, n=8, iters=200)
    assert judge(config, {"mean_without_diverged": 1.0}, iterations=200)["status"] == "finished"
    assert judge(config, {"mean_without_diverged": 9.0}, iterations=200)["status"] == "failed"


OPTIMISER = "the optimiser did not find it"
SETTING = "the setting, not the optimiser"


@pytest.mark.parametrize("theirs, theirs_diverged, cause", [
    (1.0, 0.0, OPTIMISER),                  # the theory's model well below d/2 = 2
    (2.0, 0.0, OPTIMISER),                  # at d/2: not worse than the zero predictor
    (1.05 * 2.0, 0.0, OPTIMISER),           # exactly 5% above: within the margin
    (1.06 * 2.0, 0.0, SETTING),
    (3.0, 0.0, SETTING),                    # 50% above
    (1.0, 0.5, OPTIMISER),                  # half diverged: not more than half
    (1.0, 0.51, SETTING),
    (1.0, 0.9, SETTING),
    (float("inf"), 0.0, SETTING),
    (1.0, None, OPTIMISER),                 # no diverged share recorded: none diverged
])
def test_the_theory_model_on_the_same_prompts_tells_optimiser_from_setting(theirs, theirs_diverged, cause):
    same = {"mean_without_diverged": theirs}
    if theirs_diverged is not None:
        same["diverged_frac"] = theirs_diverged
    causes = failed(TrainConfig(d=4, n=8, iters=200), same_prompts=same)["causes"]
    assert sum(cause in c for c in causes) == 1, causes
    assert not any((SETTING if cause == OPTIMISER else OPTIMISER) in c for c in causes), causes


# -- a summary's verdict (summary_verdict) --------------------------------------------------------

def test_a_recorded_verdict_is_the_verdict_and_an_old_summary_is_judged_again():
    from training.verdict import summary_verdict
    config = TrainConfig(d=4, n=8, iters=200)
    recorded = {"status": "failed", "judged_loss": True, "zero_loss": 2.0, "failures": ["recorded"],
                "causes": ["recorded"], "message": "training failed: recorded; why: recorded"}
    summary = {"status": "failed", "verdict": recorded, "config": config.to_dict(), "eval": report(1.0), "iterations": 200}
    assert summary_verdict(summary) is recorded
    assert summary_verdict(dict(summary, status="finished")) is recorded
    # a status that is no ended one (or none, a summary written before verdicts): judged from its eval
    for status in ("running", None):
        again = summary_verdict(dict(summary, status=status))
        assert again["status"] == "finished" and again["failures"] == []
    old = {k: v for k, v in summary.items() if k not in ("status", "verdict")}
    assert summary_verdict(dict(old, eval=report(9.0)))["status"] == "failed"
    # the iterations the summary records, not the config's, decide whether the loss is judged
    assert summary_verdict(dict(old, eval=report(9.0), iterations=30))["status"] == "finished"
    assert summary_verdict(dict(old, eval=report(9.0), iterations=None))["status"] == "failed"


def test_a_summary_with_a_bad_config_is_a_one_line_error_naming_summary_json():
    from training.errors import RunFileError
    from training.verdict import summary_verdict
    with pytest.raises(RunFileError, match=r"summary\.json"):
        summary_verdict({"config": {"d": -1}, "eval": report(1.0)})
