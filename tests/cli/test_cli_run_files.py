"""Run files on the command line (issue 22 section 5): a damaged params.pt, summary.json,
manifest.json, metrics.jsonl or checkpoint.pt under ``cotgd evaluate RUN`` or ``cotgd train
--resume RUN`` is one line naming the file and the problem, exit 1 (never a traceback); a
directory that is not a run is exit 2; ``--resume`` without a checkpoint says it starts from
iteration 0; a real Ctrl-C (SIGINT to a subprocess) leaves a manifest that says interrupted.

Kinds of check: file checks on copies of one tiny finished run (in-process
``training.app.cli.main``) and training (one subprocess of a few seconds)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runlog import crash_at
from threads import one_torch_thread  # noqa: F401  (an autouse fixture)
from training.app.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--d", "2", "--n", "5", "--k", "2", "--batch", "32", "--iters", "20", "--eval-every", "10",
        "--eval-samples", "300", "--theory-samples", "1000", "--structure-samples", "64", "--device", "cpu",
        "--checkpoint-every", "5"]
EVALUATE = ["--samples", "200", "--theory-samples", "1000", "--suite", "none", "--device", "cpu"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_copy(finished, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    capsys.readouterr()
    return out


def err_lines(capsys) -> list:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("command", ["evaluate", "resume"])
@pytest.mark.parametrize("name, spoil, problem", [
    ("params.pt", truncate, "truncated, or not a torch file"),
    ("summary.json", lambda p: p.write_text(""), "the file is empty"),
    ("summary.json", truncate, "is not valid JSON"),
    ("manifest.json", truncate, "is not valid JSON"),
    ("metrics.jsonl", lambda p: p.write_text('{"iteration": 0}\n{"iter'), "line 2 is not valid JSON"),
])
def test_a_damaged_run_file_is_one_line_and_exit_1(run_copy, capsys, command, name, spoil, problem):
    """``cotgd evaluate RUN`` and ``cotgd train --resume RUN`` on a run with a damaged file:
    exit 1, exactly one stderr line 'cotgd: error: cannot load <file>: <problem>', no traceback.
    (The checkpoint's damages: test_cli_reliability.test_bad_checkpoint_exits_1_with_one_line.)"""
    spoil(run_copy / name)
    argv = ["evaluate", str(run_copy), *EVALUATE] if command == "evaluate" else ["train", "--resume", str(run_copy)]
    if command == "resume" and name == "metrics.jsonl":
        (run_copy / "checkpoint.pt").unlink()        # else the finished run's checkpoint repairs the metrics
    status = main(argv)
    err = err_lines(capsys)
    assert status == 1, err
    assert len(err) == 1 and "Traceback" not in err[0], err
    assert err[0].startswith(f"cotgd: error: cannot load {run_copy / name}: ") and problem in err[0], err[0]


def test_metrics_torn_in_a_finished_run_are_repaired_from_its_checkpoint(run_copy, capsys):
    """The other side of the metrics case above: with its checkpoint, --resume of a finished run
    rewrites a torn metrics.jsonl from the checkpoint's history (exit 0)."""
    good = (run_copy / "metrics.jsonl").read_text()
    (run_copy / "metrics.jsonl").write_text(good[: len(good) // 2])
    assert main(["train", "--resume", str(run_copy)]) == 0
    assert (run_copy / "metrics.jsonl").read_text() == good


@pytest.mark.parametrize("what", ["missing", "empty directory", "file"])
def test_evaluate_of_something_that_is_not_a_run_is_exit_2(tmp_path, capsys, what):
    target = tmp_path / "target"
    if what == "empty directory":
        target.mkdir()
    elif what == "file":
        target.write_text("x")
    assert main(["evaluate", str(target), *EVALUATE]) == 2
    err = err_lines(capsys)
    assert len(err) == 1 and err[0].startswith("cotgd: error: ") and str(target) in err[0]


def test_resume_without_a_checkpoint_says_so(tmp_path, capsys, monkeypatch):
    """A run stopped before its first checkpoint: --resume prints one warning line, 'no
    checkpoint in DIR: starting from iteration 0 ...', and finishes (exit 0)."""
    out = tmp_path / "run"
    crash_at(monkeypatch, 3)
    assert main(["train", *TINY, "--out", str(out)]) == 130
    monkeypatch.undo()
    capsys.readouterr()
    assert main(["train", "--resume", str(out)]) == 0
    err = err_lines(capsys)
    assert err == [f"cotgd: warning: no checkpoint in {out}: starting from iteration 0 with the config of its "
                   f"manifest.json (the run had reached iteration 3)"]


def test_ctrl_c_leaves_an_interrupted_manifest(tmp_path):
    """Training: SIGINT to a ``cotgd train`` subprocess after its second checkpoint: exit 130,
    the resume line, and a manifest that says interrupted at an iteration past its last
    checkpoint's (not 'running' at iteration 0)."""
    out = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    argv = [sys.executable, "-m", "training.app.cli", "train", "--d", "3", "--n", "8", "--k", "3", "--batch", "64",
            "--iters", "1000000", "--eval-every", "100000", "--checkpoint-every", "50", "--device", "cpu",
            "--out", str(out)]
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if json.loads((out / "manifest.json").read_text()).get("checkpoint_iteration") == 100:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.01)
        assert proc.poll() is None, proc.stderr.read()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == f"cotgd: interrupted; resume it with: cotgd train --resume {out}"
    m = json.loads((out / "manifest.json").read_text())
    assert m["status"] == "interrupted"
    assert m["checkpoint_iteration"] >= 100 and m["checkpoint_iteration"] % 50 == 0
    assert m["iteration"] >= m["checkpoint_iteration"]
