"""The researcher's workflow on the command line (issue 15's run-directory items): runs are
never overwritten silently, a finished run resumes to "nothing to do", an interrupted one says
how to resume, a diverged one exits 1 naming it and Theorem 4.2's verdict on its step, the
headline is never a bare inf, and covariances come in from .npy files.  In-process
``training.app.cli.main``; tiny runs, a few seconds in all."""
import json
import os

import numpy as np
import pytest

import training.engine as engine
from runlog import crash_at
from training.app.cli import main

TINY = ["--d", "3", "--n", "8", "--k", "3", "--batch", "64", "--iters", "20", "--eval-every", "10",
        "--eval-samples", "500", "--theory-samples", "2000", "--structure-samples", "64", "--device", "cpu"]


def _err_lines(capsys) -> list:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_out_holding_a_run_is_refused_unless_force(tmp_path, capsys):
    """A second ``train --out`` on a finished run: exit 2, one line naming the run and --force,
    nothing touched; with --force the run is replaced."""
    out = str(tmp_path / "run")
    assert main(["train", *TINY, "--out", out]) == 0
    before = {name: os.path.getmtime(os.path.join(out, name)) for name in os.listdir(out)}
    capsys.readouterr()
    assert main(["train", *TINY, "--iters", "5", "--out", out]) == 2
    err = _err_lines(capsys)
    assert len(err) == 1 and "finished run" in err[0] and "--force" in err[0]
    assert {name: os.path.getmtime(os.path.join(out, name)) for name in os.listdir(out)} == before
    assert main(["train", *TINY, "--iters", "5", "--eval-every", "5", "--out", out, "--force"]) == 0
    assert json.loads(open(os.path.join(out, "summary.json")).read())["iterations"] == 5


def test_resume_of_a_finished_run_says_so_and_recomputes_nothing(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "run")
    assert main(["train", *TINY, "--out", out]) == 0
    first = capsys.readouterr().out
    monkeypatch.setattr(engine.Engine, "run", lambda self: pytest.fail("a finished run was recomputed"))
    assert main(["train", "--resume", out]) == 0
    captured = capsys.readouterr()
    assert "finished" in captured.err and "nothing to do" in captured.err
    assert captured.out == first                       # the same headline, read back


def test_interrupted_run_prints_the_resume_command(tmp_path, capsys, monkeypatch):
    out = str(tmp_path / "run")
    crash_at(monkeypatch, 7)
    assert main(["train", *TINY, "--checkpoint-every", "5", "--out", out]) == 130
    err = _err_lines(capsys)
    assert err == [f"cotgd: interrupted; resume it with: cotgd train --resume {out}"]
    monkeypatch.undo()
    assert main(["train", "--resume", out]) == 0


def test_diverging_model_exits_1_and_headline_is_never_bare_inf(tmp_path, capsys):
    """--lr 10: every evaluation prompt diverges; exit 1 with a message; the headline gives the
    median, the diverged fraction and the mean over non-diverged prompts beside the mean."""
    assert main(["train", *TINY, "--lr", "10", "--out", str(tmp_path / "run")]) == 1
    captured = capsys.readouterr()
    assert "median" in captured.out and "diverged 100.00%" in captured.out
    assert "mean without diverged" in captured.out
    assert "diverges on 100% of the final evaluation's prompts" in captured.err


def test_unstable_step_warns_before_training_and_is_named_when_it_diverges(tmp_path, capsys):
    """--eta past theory.stable_eta_bound: a one-line warning before training; the message of a
    diverged run names the bound."""
    code = main(["train", *TINY, "--eta", "3", "--iters", "300", "--eval-every", "300", "--lr", "0.01",
                 "--out", str(tmp_path / "run")])
    err = _err_lines(capsys)
    assert err[0].startswith("cotgd: warning: eta = 3 is past the stable step 0.7693")
    if code == 1:                                       # diverged (it does at these settings)
        assert "theory.stable_eta_bound" in err[-1]
        assert ("no checkpoint was written" in err[-1]) or ("diverges on" in err[-1])


def test_covariances_from_npy_files(tmp_path, capsys):
    """--sigma FILE.npy (singular) and --ood-sigma NAME=FILE.npy / NAME=c reach the run: its
    summary's config holds them and its OOD evaluations exist."""
    sigma = np.diag([2.0, 1.0, 0.0])
    np.save(tmp_path / "sigma.npy", sigma)
    np.save(tmp_path / "wide.npy", 3.0 * np.eye(3))
    out = tmp_path / "run"
    assert main(["train", *TINY, "--sigma", str(tmp_path / "sigma.npy"), "--ood-sigma",
                 f"wide={tmp_path / 'wide.npy'}", "--ood-sigma", "half=0.5", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["sigma"] == sigma.tolist()
    assert set(summary["eval_ood"]) == {"wide", "half"}
    assert summary["config"]["ood_sigmas"]["half"] == 0.5


@pytest.mark.parametrize("argv, option", [
    (["--sigma", "{missing}"], "--sigma"), (["--ood-sigma", "wide"], "--ood-sigma"),
    (["--ood-sigma", "wide=-1"], "--ood-sigma"), (["--sigma", "{bad}"], "sigma")])
def test_bad_covariance_arguments_exit_2_with_one_line(tmp_path, capsys, argv, option):
    np.save(tmp_path / "bad.npy", np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]))
    argv = [a.replace("{missing}", str(tmp_path / "nope.npy")).replace("{bad}", str(tmp_path / "bad.npy"))
            for a in argv]
    assert main(["train", *TINY, *argv]) == 2
    err = _err_lines(capsys)
    assert len(err) == 1 and option in err[0], err


def test_help_states_every_default(capsys):
    """Every ``train`` option with a default shows it in --help (or explains a None default)."""
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag, default in (("--d N", "10"), ("--eta X", "0.4"), ("--iters N", "750"), ("--device DEVICE", "auto")):
        assert f"{flag}" in text and f"(default: {default})" in text
    assert "default: DEFAULT_LR[param]" in text
