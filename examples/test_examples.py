"""The example scripts run (small settings, one torch thread) and say what they promise:
examples/train_and_evaluate_ood.py and examples/compare_with_theory.py.

    python -m pytest examples/test_examples.py
"""
import importlib.util
import math
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


from threads import one_torch_thread  # noqa: F401,E402  (an autouse fixture: tests/threads.py)


def test_train_and_evaluate_ood(tmp_path):
    suite = load("train_and_evaluate_ood").main(str(tmp_path))
    assert (tmp_path / "ood_cases.png").is_file() and (tmp_path / "run" / "params.pt").is_file()
    names = [c["name"] for c in suite["cases"]]
    assert names[-2:] == ["spiked", "rank-1"] and "skewed" in names
    cases = {c["name"]: c for c in suite["cases"]}
    assert cases["rank-1"]["unrecoverable"] == 1.5                # (d - 1)/2 at d = 4
    assert cases["scale-x=0.5"]["predicted_stable"] and not cases["scale-x=3"]["predicted_stable"]
    ind = suite["in_distribution"]                                # the trained model is GD-like
    assert abs(ind["median"] - ind["gd_median"]) < 0.2 * ind["gd_median"]


def test_compare_with_theory(tmp_path):
    result = load("compare_with_theory").main(str(tmp_path))
    assert (tmp_path / "compare_with_theory.png").is_file()
    assert result["c_star"] == pytest.approx(2 / (0.4 * (1 + math.sqrt(0.5)) ** 2))
    for c, median, gd_median, mean, exact, unstable, stable in result["scales"]:
        assert median == gd_median                        # Theorem 3.2's transformer is GD, prompt by prompt
        assert stable == (c < result["c_star"])
    for r, mean, se, floor, limit in result["ranks"][1:]:      # rank 1 sits at the stability boundary
        assert limit == floor                             # n = 8 >= r: GD's limit is the unrecoverable part
        assert floor - 4 * se <= mean < floor + 0.5       # never below it; k = 4 steps get close
