"""A sweep through SLURM jobs (dask-jobqueue's ``SLURMCluster``) on a real one-node SLURM (issue 25,
item 2): ``.ci/slurm.sh start DIR`` installs Debian's slurm-wlm and munge, writes a one-node
slurm.conf and starts munged, slurmctld and slurmd; ``.ci/run`` does so before the tests and
exports ``SLURM_CONF`` and ``COTGD_SLURM_DIR``.  Where the daemons could not start the test skips
with the reason; where they ran, the terminal summary prints the SLURM version, the job ids and
the table.

Kind: training (4 tiny cells in 2 SLURM jobs of one worker each, against ``cotgd sweep run
--workers 2``, bitwise); ``squeue`` is empty afterwards.
"""
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest
from cluster_helpers import (
    GRID,
    ROOT,
    child_env,
    cotgd,
    readme_block,
    readme_commands,
    report,
    wait_until,
)

from training.sweep import RUN_COLUMNS, load_results


def slurm_or_skip() -> str:
    """The SLURM version, or a skip saying why there is no SLURM here."""
    where = os.environ.get("COTGD_SLURM_DIR")
    reason = None
    if where and os.path.exists(os.path.join(where, "unavailable")):
        with open(os.path.join(where, "unavailable"), encoding="utf-8") as f:
            reason = f"the SLURM daemons did not start: {f.read().strip()}"
    elif not os.environ.get("SLURM_CONF") or not shutil.which("sinfo"):
        reason = "no SLURM here: run .ci/slurm.sh start DIR and set SLURM_CONF=DIR/slurm.conf (.ci/run does)"
    else:
        state = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, timeout=30, check=False)
        if state.returncode != 0 or not state.stdout.strip():
            reason = f"sinfo failed: {state.stderr.strip() or 'no node'}"
    if reason:
        report(f"SLURM test skipped: {reason}")
        pytest.skip(reason)
    return subprocess.run(["sinfo", "-V"], capture_output=True, text=True, timeout=30, check=False).stdout.strip()


def readme_slurm_command(tmp_path, grid) -> list:
    """README.md's SLURM command for this machine: the grid, DIR under the test's directory, 2 jobs
    instead of 16, this Python's environment in the prologue, the scheduler and the workers on
    loopback (``--interface lo``: this machine talks to itself on loopback only)."""
    block = readme_block("Running on a cluster", "On SLURM, dask-jobqueue")
    command = [c for c in readme_commands(block) if c[:3] == ["cotgd", "sweep", "slurm"]]
    assert len(command) == 1, block
    mapping = {"examples/sweeps/phase.toml": str(grid), "16": "2",
               "source ~/venvs/cotgd/bin/activate": f"source {sys.prefix}/bin/activate"}
    argv = [mapping.get(t, t.replace("/shared", str(tmp_path / "shared"))) for t in command[0]]
    return [sys.executable, "-m", "training.app.cli"] + argv[1:] + ["--interface", "lo"]


def queue() -> list:
    out = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], capture_output=True, text=True, timeout=30, check=False)
    return [line for line in out.stdout.splitlines() if line.strip()]


def test_a_sweep_through_slurm_jobs_gives_the_local_table(tmp_path):
    """Training: README.md's ``cotgd sweep slurm ...`` (``readme_slurm_command``)
    runs the 4 cells in SLURM jobs: the table equals ``--workers 2``'s bitwise but for
    the execution columns, each row names its SLURM job, and no job is left in the queue."""
    pytest.importorskip("dask_jobqueue")
    version = slurm_or_skip()
    grid = tmp_path / "slurm.toml"
    grid.write_text(GRID)
    assert not queue(), f"jobs queued before the test: {queue()}"
    run = subprocess.run(readme_slurm_command(tmp_path, grid), cwd=ROOT, env=child_env(), capture_output=True,
                         text=True, timeout=300, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    local = cotgd("sweep", "run", grid, "--out", tmp_path / "local", "--workers", "2")
    assert local.returncode == 0, local.stderr
    a, b = load_results(tmp_path / "local"), load_results(tmp_path / "shared" / "sweeps" / "phase")
    keep = [c for c in a.columns if c not in RUN_COLUMNS]
    pd.testing.assert_frame_equal(a[keep], b[keep], check_exact=True)
    jobs = sorted(set(b["job_id"]))
    assert b["job_id"].notna().all() and all(j.isdigit() for j in jobs)
    wait_until(lambda: not queue(), 30, step=0.5, what="an empty squeue")
    report(f"SLURM: {version}; sweep in jobs {', '.join(jobs)}; squeue empty afterwards; {run.stdout.strip()}")
    for row in b.itertuples():
        report(f"  {row.cell}  job {row.job_id}  host {row.host}  final_eval_loss {row.final_eval_loss:.6g}  "
               f"theory {row.theory_eval_loss:.6g}")


def test_bad_slurm_options_are_one_line_exit_2(tmp_path):
    """Argument check: a --slurm-option without '=' is one line, exit status 2 (no job submitted)."""
    grid = tmp_path / "slurm.toml"
    grid.write_text(GRID)
    for head in (["-m", "training.app.cli", "sweep", "slurm"], ["-m", "training.app.sweep_slurm"]):
        run = subprocess.run([sys.executable, *head, str(grid), "--out", str(tmp_path / "s"),
                              "--jobs", "1", "--slurm-option", "partition"],
                             cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=120, check=False)
        assert run.returncode == 2 and run.stderr.strip().count("\n") == 0, (head, run.stderr)
        assert "--slurm-option expects KEY=VALUE" in run.stderr
        bad = subprocess.run([sys.executable, *head, str(grid), "--out", str(tmp_path / "s"), "--jobs", "0"],
                             cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=120, check=False)
        assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--jobs" in bad.stderr, bad.stderr
