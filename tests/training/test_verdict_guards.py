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
