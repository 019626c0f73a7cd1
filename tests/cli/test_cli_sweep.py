"""``cotgd sweep`` on the command line (issue 13): a driver killed with SIGKILL mid-sweep and rerun
ends with the table of an uninterrupted run (bitwise for these seeded CPU cells) and leaves no
worker behind; bad grids, engines and directories are one stderr line with exit status 2;
``cotgd sweep plot`` writes its PNGs and says which panels the table cannot give.

Kinds of check: training (subprocesses via ``python -m training.app.cli``, one torch thread per
worker) and argument checks (in-process ``training.app.cli.main``).  The library's side is
tests/training/test_sweep.py.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from training.app.cli import main
from training.sweep import RUN_COLUMNS, load_results

ROOT = Path(__file__).resolve().parents[2]
#: Six cells of about a second of training each, checkpointed every 50 iterations.
GRID = """
name = "killme"
[grid]
n = [4, 8, 12]
mode = ["cot", "nocot"]
[fixed]
d = 3
k = 3
iters = 600
batch = 128
eval_every = 300
checkpoint_every = 50
eval_samples = 1000
theory_samples = 4000
structure_samples = 64
device = "cpu"
"""


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"
    return env


def cotgd(*args, timeout=600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training.app.cli", *map(str, args)], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=timeout)


def results_rows(out: Path) -> int:
    try:
        return len(pd.read_csv(out / "results.csv"))
    except (OSError, ValueError, pd.errors.EmptyDataError):
        return 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:                                   # a zombie is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def assert_one_error_line(err: str) -> None:
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("cotgd: error:"), err


@pytest.fixture(scope="module")
def grid_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("grid") / "killme.toml"
    path.write_text(GRID)
    return path


@pytest.fixture(scope="module")
def reference(grid_file, tmp_path_factory) -> Path:
    """The uninterrupted sweep (a subprocess on 2 local workers)."""
    out = tmp_path_factory.mktemp("reference") / "sweep"
    done = cotgd("sweep", "run", grid_file, "--out", out, "--workers", 2)
    assert done.returncode == 0, done.stderr
    assert "6 cells (6 done, 0 failed, 0 diverged); 6 run now, 0 reused" in done.stdout
    return out


@pytest.mark.parametrize("engine", [
    ("--workers", "2"),
    pytest.param(("--dask-local", "2"), marks=pytest.mark.slow),
])
def test_driver_killed_mid_sweep_and_rerun_gives_the_uninterrupted_table(grid_file, reference, tmp_path, engine):
    """Training: SIGKILL the driver (local workers, or a Dask LocalCluster it started) once the
    first row is in results.csv; its workers exit; the rerun (on local workers) reuses the
    finished cells, resumes the others and ends with the reference's table (every column but
    worker, seconds, attempts), bitwise."""
    out = tmp_path / "sweep"
    proc = subprocess.Popen([sys.executable, "-m", "training.app.cli", "sweep", "run", str(grid_file), "--out", str(out),
                             *engine], cwd=ROOT, env=child_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        end = time.monotonic() + 300
        while results_rows(out) < 1 and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.05)
        assert proc.poll() is None, f"the sweep ended before it could be killed: {proc.communicate()}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    killed_rows = results_rows(out)
    assert 1 <= killed_rows < 6
    workers = {json.loads(p.read_text())["pid"] for p in (out / "cells").glob("*/worker.json")}
    end = time.monotonic() + 10
    while any(alive(pid) for pid in workers) and time.monotonic() < end:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers), "a worker outlived its killed driver"
    again = cotgd("sweep", "run", grid_file, "--out", out, "--workers", 2)
    assert again.returncode == 0, again.stderr
    reused = int(again.stdout.split(" reused")[0].split()[-1])
    assert killed_rows <= reused < 6, again.stdout        # cells finished after the last row are reused too
    mine, theirs = load_results(out), load_results(reference)
    keep = [c for c in theirs.columns if c not in RUN_COLUMNS]
    pd.testing.assert_frame_equal(mine[keep], theirs[keep], check_exact=True)
    assert json.loads((out / "sweep.json").read_text())["status"] == "finished"


def test_sweep_plot_writes_the_panels_the_table_allows(reference, tmp_path):
    """Argument checks and figures: plot writes the phase diagram and trained / theory PNGs and
    says on stderr that the OOD panel needs two etas and two covariance scales; a directory
    without a table is exit status 2."""
    done = cotgd("sweep", "plot", reference, "--out", tmp_path / "figs")
    assert done.returncode == 0, done.stderr
    paths = done.stdout.split()
    assert [Path(p).name for p in paths] == ["phase_diagram.png", "trained_vs_theory.png"]
    assert all(Path(p).stat().st_size > 10_000 for p in paths)
    assert "ood_stability.png skipped" in done.stderr and "eta" in done.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    bad = cotgd("sweep", "plot", empty)
    assert bad.returncode == 2
    assert_one_error_line(bad.stderr)


@pytest.mark.parametrize("text, names", [
    ("[grid]\nn = 4\n", "[grid] n: expected a list"),
    ("[fixed]\nk = [1, 2]\n", "[fixed] k: expected a single value"),
    ("[grid]\nwidth = [1]\n", "[grid] width: unknown field"),
    ("[grid]\nbatch = [0]\n", "batch must be an integer >= 1"),
])
def test_bad_grid_is_exit_2_with_one_line(tmp_path, capsys, text, names):
    """Argument checks: a bad grid is one stderr line naming the field, exit status 2."""
    grid = tmp_path / "g.toml"
    grid.write_text(text)
    assert main(["sweep", "run", str(grid), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert_one_error_line(err)
    assert names in err
    assert not (tmp_path / "out").exists()


def test_bad_engines_and_directories_are_exit_2(tmp_path, capsys, grid_file, reference):
    """Argument checks: two engines at once, a missing grid file, an --out holding a different
    sweep or something else: one stderr line, exit status 2."""
    cases = [
        ["sweep", "run", str(grid_file), "--out", str(tmp_path / "a"), "--workers", "2", "--dask-local", "2"],
        ["sweep", "run", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "b")],
        ["sweep", "run", str(grid_file), "--out", str(tmp_path / "c"), "--workers", "0"],
        ["sweep"],
    ]
    other = tmp_path / "other.toml"
    other.write_text(GRID.replace('name = "killme"', 'name = "other"'))
    cases.append(["sweep", "run", str(other), "--out", str(reference)])
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "data.csv").write_text("x\n")
    cases.append(["sweep", "run", str(grid_file), "--out", str(busy)])
    for argv in cases:
        assert main(argv) == 2, argv
        assert_one_error_line(capsys.readouterr().err)
    assert json.loads((reference / "sweep.json").read_text())["name"] == "killme"
