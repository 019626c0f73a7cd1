"""A Dask cluster of separate processes, started the way a user starts one by hand on several
hosts: ``dask scheduler`` (on loopback, at a free port, writing a scheduler file) and ``dask
worker`` processes (``--nthreads 1``, each in its own working directory), all stopped by their
process ids.  ``cotgd bench`` times a sweep on one (``dask-external-2``) and the cluster tests
(tests/cluster/) inject failures into one: a worker or the scheduler killed, a worker that cannot
import cotgd, a worker of another version.

The workers read ``WORKER_DASK_CONFIG`` (``DASK_CONFIG`` pointing at a ``cotgd.yaml`` written
here): the settings README.md's "Running on a cluster" asks a user to put in the Dask
configuration of their workers.
"""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

#: The Dask configuration of a cotgd worker (``executors.DASK_WORKER_CONFIG`` as a YAML/JSON
#: document): no statistical profiler, and glibc's own malloc trimming.
WORKER_DASK_CONFIG = {"distributed": {"worker": {"profile": {"enabled": False}},
                                      "nanny": {"pre-spawn-environ": {"MALLOC_TRIM_THRESHOLD_": None}}}}
#: Environment of the workers: one thread for every numerical library (as ``executors.WORKER_ENV``).
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


def write_worker_config(directory: str) -> str:
    """``directory/cotgd.yaml`` holding ``WORKER_DASK_CONFIG``; returns ``directory``, the value of
    ``DASK_CONFIG`` for the workers."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "cotgd.yaml"), "w", encoding="utf-8") as f:
        json.dump(WORKER_DASK_CONFIG, f)               # JSON is YAML
    return directory


def dask_command(python: str | None = None) -> list:
    """The ``dask`` command of ``python`` (default: this interpreter), as ``python -m dask``."""
    return [python or sys.executable, "-m", "dask"]


class DaskProcesses:
    """``dask scheduler`` and ``workers`` ``dask worker`` processes in ``directory``; a context
    manager (``start`` on entry, ``stop`` on exit, even after a failure).

    ``nanny``: workers under a nanny (Dask's default; a killed worker process is restarted by
    it) or alone (``--no-nanny``: a killed worker is gone, like a host that died).  ``env``:
    extra environment of every process.  Every ``wait`` is bounded by ``timeout`` seconds.
    ``new_session``: each process in its own session (as on hosts of their own; a signal to the
    caller's process group misses them).  Linux's autogroup scheduler then gives each its own
    share of a loaded CPU, so a benchmark that compares engines on one machine passes False.
    ``address``, ``scheduler_file``, ``pids`` (name -> process id) are set once started."""

    def __init__(self, directory, workers: int = 2, *, nanny: bool = True, env: dict | None = None,
                 timeout: float = 60.0, new_session: bool = True):
        self.directory = os.path.abspath(os.fspath(directory))
        self.n_workers, self.nanny, self.timeout, self.new_session = workers, nanny, timeout, new_session
        self.env = dict(env or {})
        self.scheduler_file = os.path.join(self.directory, "scheduler.json")
        self.address: str | None = None
        self.processes: dict = {}           # name -> subprocess.Popen
        self._logs: list = []

    # ------------------------------------------------------------------ starting
    def _environment(self, extra: dict | None = None) -> dict:
        config_dir = write_worker_config(os.path.join(self.directory, "dask-config"))
        env = {**os.environ, **THREAD_ENV, "DASK_CONFIG": config_dir, **self.env, **(extra or {})}
        return env

    def spawn(self, name: str, argv: list, cwd: str | None = None, env: dict | None = None) -> subprocess.Popen:
        """Start ``argv`` as process ``name`` (a ``dask scheduler`` or ``dask worker`` command of
        your own), in ``cwd`` (default ``directory/name``), with the workers' environment plus
        ``env``; ``stop`` stops it with the others."""
        return self._spawn(name, argv, cwd or os.path.join(self.directory, name), self._environment(env))

    def _spawn(self, name: str, argv: list, cwd: str, env: dict) -> subprocess.Popen:
        os.makedirs(cwd, exist_ok=True)
        log = open(os.path.join(self.directory, f"{name}.log"), "ab")    # noqa: SIM115 (open while it runs)
        self._logs.append(log)
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=self.new_session)
        self.processes[name] = process
        return process

    def start(self) -> DaskProcesses:
        """Start the scheduler, wait for its file, start the workers and wait until all joined."""
        os.makedirs(self.directory, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.remove(self.scheduler_file)
        self._spawn("scheduler", dask_command() + ["scheduler", "--host", "127.0.0.1", "--port", "0",
                                                   "--no-dashboard", "--scheduler-file", self.scheduler_file],
                    os.path.join(self.directory, "scheduler"), self._environment())
        self.address = self._wait_for_file()
        for i in range(self.n_workers):
            self.add_worker(f"worker-{i}")
        if self.n_workers:
            self.wait_for_workers(self.n_workers)
        return self

    def add_worker(self, name: str, *, python: str | None = None, env: dict | None = None,
                   cwd: str | None = None) -> subprocess.Popen:
        """Start one ``dask worker`` process named ``name`` (``python``'s ``dask``; its working
        directory ``cwd``, default ``directory/name``); it joins the scheduler by its file."""
        argv = dask_command(python) + ["worker", "--scheduler-file", self.scheduler_file, "--nthreads", "1",
                                       "--name", name, "--local-directory",
                                       os.path.join(self.directory, name, "dask-worker-space"),
                                       "--nanny" if self.nanny else "--no-nanny"]
        return self._spawn(name, argv, cwd or os.path.join(self.directory, name), self._environment(env))

    def wait_for_file(self) -> str:
        """The scheduler's address from its file, once written (bounded by ``timeout``)."""
        return self._wait_for_file()

    def _wait_for_file(self) -> str:
        end = time.monotonic() + self.timeout
        while time.monotonic() < end:
            with contextlib.suppress(OSError, ValueError), open(self.scheduler_file, encoding="utf-8") as f:
                return json.load(f)["address"]
            if self.processes["scheduler"].poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"dask scheduler did not write {self.scheduler_file} within {self.timeout:.0f} s "
                           f"(log: {os.path.join(self.directory, 'scheduler.log')})")

    def wait_for_workers(self, n: int) -> None:
        """Wait (bounded) until ``n`` workers are connected to the scheduler."""
        from distributed import Client
        with Client(self.address, timeout="10s") as client:
            client.wait_for_workers(n, timeout=self.timeout)

    # ------------------------------------------------------------------ stopping
    @property
    def pids(self) -> dict:
        return {name: p.pid for name, p in self.processes.items()}

    def worker_processes(self, name: str) -> list:
        """The process ids of worker ``name``: its nanny and the worker process under it (or the
        worker alone with ``nanny=False``)."""
        import psutil
        pid = self.processes[name].pid
        with contextlib.suppress(psutil.Error):
            return [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
        return [pid]

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to process ``name`` (the scheduler, or a worker's nanny / lone worker)."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.processes[name].pid, sig)

    def stop(self) -> None:
        """Stop every process by its id: the workers (and any process under them), then the
        scheduler; SIGTERM, then SIGKILL after 10 s."""
        order = [n for n in self.processes if n != "scheduler"] + [n for n in self.processes if n == "scheduler"]
        for name in order:
            pids = self.worker_processes(name) if name != "scheduler" else [self.processes[name].pid]
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGTERM)
            process = self.processes[name]
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                pass
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(5)
        for log in self._logs:
            log.close()
        self._logs.clear()

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
