"""Run directories in tests (tests/training/test_reliability.py, tests/training/test_train.py,
tests/training/test_engine.py and tests/cli/test_cli_reliability.py): a crash at a given
iteration, the metrics rows, and any run record made comparable across runs by dropping
wall-clock fields and the directory's path."""
import json
import os

#: Fields that hold wall-clock times: they differ between identical runs.
TIMING = ("seconds", "train_seconds", "ms_per_iteration")


def stripped(obj) -> str:
    """``obj`` without wall-clock fields and without the run directory's path (``config.out``),
    as canonical JSON text (NaN-safe comparison)."""
    def strip(x):
        if isinstance(x, dict):
            return {k: strip(v) for k, v in x.items() if k not in TIMING and k != "out"}
        if isinstance(x, list):
            return [strip(v) for v in x]
        return x
    return json.dumps(strip(obj), sort_keys=True)


def metrics_rows(run_dir) -> list:
    """The rows of ``run_dir/metrics.jsonl``, in order."""
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def crash_at(monkeypatch, iteration: int) -> None:
    """Make ``Engine.step`` raise KeyboardInterrupt when the run reaches ``iteration`` (a crash);
    ``monkeypatch.undo()`` ends it."""
    from training.engine import Engine
    step = Engine.step

    def crashing_step(self):
        if self.iteration == iteration:
            raise KeyboardInterrupt
        step(self)

    monkeypatch.setattr(Engine, "step", crashing_step)
