"""Helpers of the cluster tests (tests/cluster/): the ``cotgd`` command in a subprocess, Python
environments for workers that lack cotgd or run another version of it, a bounded wait, and the
lines printed in pytest's terminal summary (``report``)."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Four tiny cells (d x mode), a fraction of a second of training each.
GRID = """
name = "slurm"
[grid]
d = [2, 3]
mode = ["cot", "nocot"]
[fixed]
n = 6
k = 3
iters = 20
batch = 32
eval_every = 10
eval_samples = 500
theory_samples = 2000
structure_samples = 64
device = "cpu"
"""
#: Lines for pytest's terminal summary (tests/cluster/conftest.py prints them).
REPORT: list = []


def report(line: str) -> None:
    REPORT.append(line)


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = "1"
    return env


def cotgd(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    """``cotgd ARGS`` as a user types it (``python -m training.app.cli``), bounded by ``timeout``."""
    return subprocess.run([sys.executable, "-m", "training.app.cli", *map(str, args)], cwd=ROOT, env=child_env(),
                          capture_output=True, text=True, timeout=timeout, check=False)


def start_cotgd(*args, log: Path) -> subprocess.Popen:
    """``cotgd ARGS`` started in the background, its output to ``log``."""
    with open(log, "wb") as f:
        return subprocess.Popen([sys.executable, "-m", "training.app.cli", *map(str, args)], cwd=ROOT,
                                env=child_env(), stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def worker_python(directory: Path, *, cotgd_version: str | None = None) -> str:
    """A Python environment for a ``dask worker`` on a host without cotgd: a venv that sees this
    environment's packages (dask, torch, ...) but not cotgd (the editable install's finder is a
    .pth file of this environment, which a path entry does not run).  With ``cotgd_version``:
    cotgd from this checkout, installed as that version (a host with another release of it)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(directory)], check=True, timeout=120)
    python = directory / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True, timeout=60).stdout.strip()
    Path(site, "host_packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    if cotgd_version is not None:
        Path(site, "cotgd_checkout.pth").write_text(str(ROOT) + "\n")
        info = Path(site, f"cotgd-{cotgd_version}.dist-info")
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: cotgd\nVersion: {cotgd_version}\n")
    return str(python)


def wait_until(condition, timeout: float, step: float = 0.05, what: str = "the condition"):
    """Poll ``condition()`` until it returns something true (returned) or ``timeout`` s pass (AssertionError)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"{what} did not happen within {timeout:.0f} s")


def readme_block(heading: str, after: str, language: str = "bash") -> str:
    """The first ```language block of README.md's section ``heading`` that follows the text ``after``."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    rest = section.split(after, 1)[1]
    return rest.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def readme_commands(block: str) -> list:
    """The commands of a README block: comments dropped, continued lines joined, split as a shell would."""
    import shlex
    joined = block.replace("\\\n", " ")
    return [shlex.split(line, comments=True) for line in joined.splitlines() if shlex.split(line, comments=True)]
