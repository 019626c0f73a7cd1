"""Command-line behaviour: bad input gives one line on stderr and exit status 2, never a
traceback (issues 5 and 7).  In-process calls of ``training.app.cli.main`` plus one subprocess
call of the installed ``cotgd`` entry point."""
import json
import os
import subprocess
import sys

import pytest
import torch

from training.app.cli import main

BAD = [
    (["train", "--d", "0"], "--d"),
    (["train", "--n", "-3"], "--n"),
    (["train", "--eta", "nan"], "--eta"),
    (["train", "--eta", "-0.1"], "--eta"),
    (["train", "--eta", "inf"], "--eta"),
    (["train", "--mode", "bogus"], "--mode"),
    (["train", "--param", "dense"], "--param"),
    (["train", "--batch", "0"], "--batch"),
    (["train", "--k", "x"], "--k"),
    (["train", "--device", "tpu"], "--device"),
    (["reproduce", "fig9", "--out", "x"], "figure"),
    (["reproduce", "fig2"], "--out"),
    (["verify", "--device", "quantum"], "--device"),
    (["bogus"], "command"),
    ([], "command"),
]


@pytest.mark.parametrize("argv,needle", BAD)
def test_bad_arguments_exit_2_with_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("cotgd: error:"), err
    assert needle in err or needle.strip("-") in err


def test_missing_resume_dir_exits_2(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nowhere" in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_unavailable_cuda_exits_2(capsys):
    assert main(["train", "--device", "cuda", "--iters", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cuda" in err.lower()


def test_train_small_run_writes_summary(tmp_path, capsys):
    """Training (tiny, seconds): the JSON summary carries the documented keys (docs/architecture.md)."""
    out = tmp_path / "run"
    js = tmp_path / "s.json"
    status = main(["train", "--mode", "cot", "--d", "3", "--n", "8", "--k", "3", "--batch", "64",
                   "--iters", "20", "--eval-every", "10", "--eval-samples", "500",
                   "--out", str(out), "--json", str(js)])
    assert status == 0
    summary = json.loads(js.read_text())
    for key in ("final_eval_loss", "theory_eval_loss", "seconds", "train_seconds", "structure"):
        assert key in summary
    for key in ("v31_w13", "w24_v31", "offdiag_energy", "functional_deviation"):
        assert key in summary["structure"]
    assert summary["train_seconds"] <= summary["seconds"]
    for name in ("metrics.jsonl", "summary.json", "manifest.json"):
        assert (out / name).exists()
    assert "final eval loss" in capsys.readouterr().out


def test_console_script_runs_as_subprocess():
    """The entry point as a user calls it: a bad argument gives status 2 and no traceback."""
    proc = subprocess.run([sys.executable, "-m", "training.app.cli", "train", "--d", "0"],
                          capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)) + "/..")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
