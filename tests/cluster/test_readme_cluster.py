"""README.md's "Running on a cluster", run as written: its Dask configuration is the workers' (and
``WORKER_DASK_CONFIG``), its three commands (``dask scheduler``, ``dask worker`` on each host,
``cotgd sweep run --dask-scheduler``) start a cluster and run a sweep on it.  Only what names this
machine changes: the paths under /shared and /tmp go to the test's directory, login1 and port
8786 become 127.0.0.1 and a free port (the scheduler also gets ``--host 127.0.0.1``: this machine
talks to itself on loopback only), the phase grid becomes a 4-cell grid, and ``dask`` / ``cotgd``
run from this Python.  The SLURM command is run the same way by tests/cluster/test_slurm.py.
Every process is stopped by its id at the end.
"""
import socket
import subprocess
import sys

import yaml
from cluster_helpers import GRID, ROOT, child_env, readme_block, readme_commands, report

from training.sweep import WORKER_DASK_CONFIG, DaskProcesses, load_results

SECTION = "Running on a cluster"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def localise(argv: list, tmp, port: int, grid, worker: str = "") -> list:
    """A README command for this machine (module docstring)."""
    out = []
    for token in argv:
        token = token.replace("/shared", str(tmp / "shared")).replace("/tmp/cotgd-dask", str(tmp / f"dask-{worker}"))
        token = token.replace("login1:8786", f"127.0.0.1:{port}").replace("examples/sweeps/phase.toml", str(grid))
        out.append(str(port) if token == "8786" else token)
    head = {"dask": [sys.executable, "-m", "dask"], "cotgd": [sys.executable, "-m", "training.app.cli"]}[out[0]]
    return head + out[1:] + (["--host", "127.0.0.1"] if out[1:2] == ["scheduler"] else [])


def test_the_readme_dask_config_is_the_workers():
    assert yaml.safe_load(readme_block(SECTION, "Give the workers", "yaml")) == WORKER_DASK_CONFIG


def test_the_readme_commands_start_a_cluster_and_run_a_sweep_on_it(tmp_path):
    """Training: the README's commands, localised, give a 4-cell table of done cells, each row
    from one of the two workers."""
    commands = readme_commands(readme_block(SECTION, "A cluster started by hand"))
    assert [c[:2] for c in commands] == [["dask", "scheduler"], ["dask", "worker"], ["cotgd", "sweep"]]
    (tmp_path / "shared").mkdir()
    grid = tmp_path / "grid.toml"
    grid.write_text(GRID)
    port = free_port()
    cluster = DaskProcesses(tmp_path / "procs", workers=0)
    cluster.scheduler_file = str(tmp_path / "shared" / "cotgd-scheduler.json")
    config = tmp_path / "dask-config"
    config.mkdir()
    (config / "cotgd.yaml").write_text(readme_block(SECTION, "Give the workers", "yaml"))
    try:
        cluster.spawn("scheduler", localise(commands[0], tmp_path, port, grid))
        address = cluster.wait_for_file()
        assert address == f"tcp://127.0.0.1:{port}"
        for i in range(2):                        # "on each compute host"
            cluster.spawn(f"worker-{i}", localise(commands[1], tmp_path, port, grid, worker=str(i)),
                          env={"DASK_CONFIG": str(config)})
        cluster.wait_for_workers(2)
        run = subprocess.run(localise(commands[2], tmp_path, port, grid), cwd=ROOT, env=child_env(),
                             capture_output=True, text=True, timeout=300, check=False)
    finally:
        cluster.stop()
    assert run.returncode == 0, run.stderr
    table = load_results(tmp_path / "shared" / "sweeps" / "phase")
    assert len(table) == 4 and (table["status"] == "done").all() and table["worker"].nunique() <= 2
    report(f"README's cluster commands: {run.stdout.strip()}")
