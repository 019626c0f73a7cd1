"""``cotgd sweep run --dask-scheduler`` on a real Dask cluster of separate processes (issue 25):
``dask scheduler`` on loopback at a free port with a scheduler file, two ``dask worker`` processes
(``--nthreads 1``, each in its own working directory), started as a user starts them on several
hosts (``training.sweep.DaskProcesses``) and stopped by their process ids in a finalizer.

* the table equals ``--workers 2``'s bitwise (same cells, same numbers; the execution columns aside);
* a worker process SIGKILLed mid-cell: its cell is run again on the other worker and resumes from
  its checkpoint; the finished cells are not recomputed, nothing is lost;
* the scheduler killed mid-sweep: the driver says so in one line, exit 1; a rerun against a new
  cluster finishes without recomputing the done cells;
* nothing listening at the address, a worker that cannot import cotgd, a worker of another cotgd
  version: one line each naming the problem (exit 2, 1, 1), within a bounded time.

Kind: training (tiny CPU cells, one torch thread per worker).  Every subprocess is bounded by a
timeout; the whole module takes about a minute on a 2-core machine.
"""
import json
import os
import signal
import socket
import time

import pandas as pd
import pytest
from cluster_helpers import GRID, cotgd, report, start_cotgd, wait_until, worker_python

from training import TrainConfig, train
from training.sweep import RUN_COLUMNS, DaskProcesses, load_results, parse_grid

#: Eight tiny cells (d x mode x seed), a fraction of a second of training each.
TABLE_GRID = GRID.replace('name = "slurm"', 'name = "cluster"').replace('[grid]\n', '[grid]\nseed = [0, 1]\n')
#: Two short cells and a long one (checkpointed every 100 iterations) to kill things in.
LONG = {"seed": 7, "eval_every": 500, "checkpoint_every": 100}


def kill_grid(name: str, long_iters: int) -> str:
    return f"""
name = "{name}"
[grid]
seed = [0, 1]
[fixed]
d = 3
n = 6
k = 3
iters = 40
batch = 128
eval_every = 20
eval_samples = 500
theory_samples = 2000
structure_samples = 64
device = "cpu"
[[cells]]
seed = {LONG['seed']}
iters = {long_iters}
eval_every = {LONG['eval_every']}
checkpoint_every = {LONG['checkpoint_every']}
"""


def execution_free(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[[c for c in frame.columns if c not in RUN_COLUMNS]]


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{text}"
    return lines[0]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two workers (under nannies, as ``dask worker`` starts them by default)."""
    processes = DaskProcesses(tmp_path_factory.mktemp("dask-cluster"), workers=2)
    try:
        yield processes.start()
    finally:
        processes.stop()


@pytest.fixture
def own_cluster(tmp_path):
    """Clusters a test starts itself (``make(workers)``), all stopped at its end."""
    started = []

    def make(workers: int = 2, name: str = "c") -> DaskProcesses:
        processes = DaskProcesses(tmp_path / f"{name}{len(started)}", workers=workers)
        started.append(processes)
        return processes.start()
    yield make
    for processes in started:
        processes.stop()


def cell_dirs(out, grid_text: str) -> list:
    import tomllib
    return [out / "cells" / c.name for c in parse_grid(tomllib.loads(grid_text)).expand()]


def test_external_cluster_gives_the_local_table_bitwise(cluster, tmp_path):
    """Training: the eight cells on the Dask cluster and on ``--workers 2``: the same table, bitwise
    but for the execution columns; the rows name their Dask worker and host; two seeds, two rows
    of different numbers."""
    grid = tmp_path / "cluster.toml"
    grid.write_text(TABLE_GRID)
    local = cotgd("sweep", "run", grid, "--out", tmp_path / "local", "--workers", "2")
    assert local.returncode == 0, local.stderr
    t0 = time.perf_counter()
    dask = cotgd("sweep", "run", grid, "--out", tmp_path / "dask", "--dask-scheduler", cluster.address)
    assert dask.returncode == 0, dask.stderr
    report(f"dask cluster {cluster.address} (pids {cluster.pids}): 8 cells in {time.perf_counter() - t0:.1f} s")
    a, b = load_results(tmp_path / "local"), load_results(tmp_path / "dask")
    assert len(a) == 8 and (a["status"] == "done").all()
    pd.testing.assert_frame_equal(execution_free(a), execution_free(b), check_exact=True)
    assert b["worker"].str.startswith("tcp://127.0.0.1:").all() and b["worker"].nunique() == 2
    assert (b["host"] == socket.gethostname()).all() and b["job_id"].isna().all()
    seeds = a.set_index(["d", "mode", "seed"])["final_eval_loss"]
    assert all(seeds[(d, m, 0)] != seeds[(d, m, 1)] for d in (2, 3) for m in ("cot", "nocot"))


def test_worker_killed_mid_cell_resumes_on_the_other_worker(cluster, tmp_path):
    """Training: SIGKILL of the worker process running the long cell, after its first checkpoint
    and once the short cells are done: the scheduler hands the cell to the other worker, which
    resumes it from the checkpoint; its numbers are an uninterrupted run's (bitwise), the short
    cells were not run again (their records untouched), every row is done."""
    grid = tmp_path / "kill.toml"
    grid.write_text(kill_grid("killworker", 1500))
    out = tmp_path / "s"
    short_a, short_b, long_dir = cell_dirs(out, kill_grid("killworker", 1500))
    sweep = start_cotgd("sweep", "run", grid, "--out", out, "--dask-scheduler", cluster.address,
                        log=tmp_path / "sweep.log")
    try:
        wait_until(lambda: all((d / "cell.json").exists() for d in (short_a, short_b))
                   and (long_dir / "checkpoint.pt").exists() and (long_dir / "worker.json").exists(), 120,
                   what="the short cells and the long cell's first checkpoint")
        killed = json.loads((long_dir / "worker.json").read_text())
        before = {d: (d / "cell.json").stat().st_mtime_ns for d in (short_a, short_b)}
        os.kill(killed["pid"], signal.SIGKILL)
        assert sweep.wait(180) == 0, (tmp_path / "sweep.log").read_text()
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait(10)
    record = json.loads((long_dir / "cell.json").read_text())
    runs = record["runs"]
    assert [r["name"] for r in runs][:1] == [killed["name"]] and len(runs) == 2
    assert runs[1]["name"] != killed["name"] and runs[1]["worker"] != killed["worker"]
    assert record["resumed_from"] is not None and record["resumed_from"] >= LONG["checkpoint_every"]
    assert {d: (d / "cell.json").stat().st_mtime_ns for d in (short_a, short_b)} == before
    table = load_results(out)
    assert (table["status"] == "done").all() and len(table) == 3
    fixed = dict(d=3, n=6, k=3, batch=128, eval_samples=500, theory_samples=2000, structure_samples=64,
                 device="cpu", iters=1500, **LONG)
    s = train(TrainConfig(**fixed, progress=False)).summary
    assert table.iloc[2]["final_eval_loss"] == s["final_eval_loss"]
    report(f"worker {killed['worker']} (pid {killed['pid']}) SIGKILLed at the long cell's checkpoint: resumed "
           f"from iteration {record['resumed_from']} on {runs[1]['worker']}; short cells untouched")
    cluster.wait_for_workers(2)                 # the nanny restarted the killed worker


def test_scheduler_killed_mid_sweep_is_one_line_and_a_rerun_finishes(own_cluster, tmp_path):
    """Training: the scheduler SIGKILLed while the long cell trains (then its workers stopped): the
    driver exits 1 with one line saying it lost the scheduler; against a freshly started cluster the same command
    finishes, reusing the two done cells (untouched) and resuming the long one."""
    first = own_cluster(2)
    grid = tmp_path / "kill.toml"
    grid.write_text(kill_grid("killscheduler", 4000))
    out = tmp_path / "s"
    short_a, short_b, long_dir = cell_dirs(out, kill_grid("killscheduler", 4000))
    log = tmp_path / "sweep.log"
    sweep = start_cotgd("sweep", "run", grid, "--out", out, "--dask-scheduler", first.address, log=log)
    try:
        wait_until(lambda: all((d / "cell.json").exists() for d in (short_a, short_b))
                   and (long_dir / "checkpoint.pt").exists(), 120, what="the short cells and a checkpoint")
        before = {d: (d / "cell.json").stat().st_mtime_ns for d in (short_a, short_b)}
        t0 = time.monotonic()
        first.kill("scheduler")
        first.stop()                            # its workers too: a new cluster takes over
        status = sweep.wait(60)
        seconds = time.monotonic() - t0
    finally:
        if sweep.poll() is None:
            sweep.kill()
            sweep.wait(10)
    line = one_line(log.read_text())
    assert status == 1 and line.startswith("cotgd: error: lost the Dask scheduler at " + first.address), line
    assert not (long_dir / "cell.json").exists()
    second = own_cluster(2)
    again = cotgd("sweep", "run", grid, "--out", out, "--dask-scheduler", second.address, timeout=240)
    assert again.returncode == 0, again.stderr
    assert "1 run now, 2 reused" in again.stdout
    assert {d: (d / "cell.json").stat().st_mtime_ns for d in (short_a, short_b)} == before
    record = json.loads((long_dir / "cell.json").read_text())
    assert record["resumed_from"] is not None and record["resumed_from"] >= LONG["checkpoint_every"]
    assert (load_results(out)["status"] == "done").all()
    report(f"scheduler SIGKILLed mid-sweep: exit {status} after {seconds:.1f} s, '{line}'; rerun on a new "
           f"cluster: 2 cells reused, the long one resumed from iteration {record['resumed_from']}")


def test_nothing_listening_is_one_line_exit_2_within_the_connect_timeout(tmp_path):
    """Argument check: an address where no scheduler listens: one line, exit 2, in bounded time."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]                 # free once closed
    grid = tmp_path / "cluster.toml"
    grid.write_text(TABLE_GRID)
    t0 = time.monotonic()
    result = cotgd("sweep", "run", grid, "--out", tmp_path / "s", "--dask-scheduler", f"tcp://127.0.0.1:{port}",
                   timeout=90)
    seconds = time.monotonic() - t0
    line = one_line(result.stderr)
    assert result.returncode == 2 and f"cannot reach the Dask scheduler at 'tcp://127.0.0.1:{port}'" in line, line
    assert seconds < 40
    report(f"nothing listening: exit 2 after {seconds:.1f} s, '{line[:150]}'")


@pytest.mark.parametrize("case", ["no-cotgd", "other-version"])
def test_a_worker_without_cotgd_or_of_another_version_is_one_line_exit_1(own_cluster, tmp_path, case):
    """Argument check: a worker whose Python cannot import cotgd, or runs cotgd 0.0.9: the driver
    checks the workers when it connects and refuses in one line naming the worker and the
    problem, exit 1, and no cell runs."""
    cluster = own_cluster(0)
    python = worker_python(tmp_path / "venv", cotgd_version=None if case == "no-cotgd" else "0.0.9")
    cluster.add_worker("odd-worker", python=python)
    cluster.wait_for_workers(1)
    grid = tmp_path / "cluster.toml"
    grid.write_text(TABLE_GRID)
    t0 = time.monotonic()
    result = cotgd("sweep", "run", grid, "--out", tmp_path / "s", "--dask-scheduler", cluster.address, timeout=120)
    seconds = time.monotonic() - t0
    line = one_line(result.stderr)
    assert result.returncode == 1, result.stderr
    assert "Dask worker tcp://127.0.0.1:" in line
    if case == "no-cotgd":
        assert "cannot import cotgd" in line and "No module named 'training'" in line, line
    else:
        assert "version mismatch" in line and "cotgd 0.0.9 (driver 0.1.0)" in line, line
    assert not list((tmp_path / "s" / "cells").glob("*/cell.json"))
    report(f"{case}: exit 1 after {seconds:.1f} s, '{line[:200]}'")


def test_the_stop_leaves_no_process(tmp_path):
    """The processes of a cluster are gone after ``stop`` (by their ids), the worker processes
    under the nannies included."""
    import psutil
    processes = DaskProcesses(tmp_path / "c", workers=1).start()
    pids = [p for name in processes.processes for p in (processes.worker_processes(name) if name != "scheduler"
                                                        else [processes.pids[name]])]
    assert len(pids) >= 3
    processes.stop()
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive
