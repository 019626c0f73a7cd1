"""The engines a sweep's cells run on: a ``CellExecutor`` wraps a ``concurrent.futures.Executor``
(how many cells run at once, how many more to queue, a fresh executor after a broken one),
one code path for every engine in the driver.

``LocalExecutor`` (``local_executor``, the default): worker processes started with ``spawn``,
one torch thread and one thread of every numerical library each (``WORKER_ENV``), which exit
when the driver that started them is gone.  ``DaskExecutor`` (``dask_executor``): a Dask
``Client``'s executor, of a ``LocalCluster`` of N one-thread worker processes that it starts
(``DASK_WORKER_CONFIG``), or of a running scheduler at an address, or of a cluster object (a
cluster of your own, e.g. SLURM through dask-jobqueue's ``SLURMCluster``).  A cluster of your own is
checked when the driver connects (a bounded connect, ``CONNECT_TIMEOUT``; every worker must
import cotgd and run the driver's versions, ``check_workers``) and watched while the sweep runs:
a lost scheduler, a worker that cannot import cotgd or runs other versions end the sweep with a
one-line ``ClusterError``.  Tasks travel by reference to importable functions
(``training.sweep.cell.run_cell``); ``warm_imports`` and ``warm_cell`` are tasks that start a
worker's imports and caches before it is timed.
"""
from __future__ import annotations

import concurrent.futures as cf
import contextlib
import os
import threading
import time

from ..errors import one_line
from .cell import (
    WorkerMismatch,
    cell_task,
    run_cell,
    software_versions,
    version_mismatch,
    worker_name,
)
from .grid import parse_grid

#: How long the driver waits to connect to a Dask scheduler of your own (an address where
#: nothing listens fails after this, in one line).
CONNECT_TIMEOUT = "10s"


class ClusterError(RuntimeError):
    """The cluster cannot run the sweep: its scheduler was lost, a worker cannot import cotgd or
    runs other versions than the driver.  One line naming the problem (``cotgd sweep run``:
    exit status 1); the cells done so far are kept, and a rerun continues."""


def worker_facts(_=None) -> dict:
    """On a worker: its ``software_versions``, host and job id (``check_workers``)."""
    import socket

    from .cell import job_id
    return {**software_versions(), "host": socket.gethostname(), "job_id": job_id()}


def _watch_parent(parent: int) -> None:
    """In a local worker: exit at once when the driver that started it is gone (a SIGKILLed
    driver must not leave workers training behind it)."""
    def watch():
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(1)
    threading.Thread(target=watch, daemon=True, name="cotgd-parent-watch").start()


def _init_worker(parent: int) -> None:
    import torch
    torch.set_num_threads(1)
    _watch_parent(parent)


def warm_imports(_=None) -> str:
    """A task that imports what a cell needs (used to start workers before timing them); returns
    the worker's name."""
    import torch  # noqa: F401

    from .. import engine  # noqa: F401
    time.sleep(0.2)
    return worker_name()


def warm_cell(fields: dict) -> str:
    """A task that runs a one-iteration cell of ``fields`` in a temporary directory: imports and
    the theory's caches (exact moments) warm, as in a worker that has run cells before."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        grid = parse_grid({"name": "warm", "fixed": dict(fields, iters=1, eval_every=1)})
        cell = grid.expand()[0]
        run_cell(cell_task(grid, cell, tmp, 1))
    time.sleep(0.5)                     # long enough for every idle worker to take one
    return worker_name()


#: Environment of local worker processes: one thread for every numerical library.
WORKER_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}


class CellExecutor:
    """The engine cells run on: a ``concurrent.futures.Executor`` (``executor``) with ``slots()``
    (how many cells run at once), ``renew()`` (a fresh executor after a broken one) and
    ``close()``.  ``local_executor`` and ``dask_executor`` make them."""

    kind = "executor"
    #: Cells submitted beyond ``slots()``, so that a worker that finishes a cell starts the next
    #: at once, without the driver's round trip: one for a process pool (its workers share one
    #: queue); every pending cell for Dask, whose scheduler queues them itself (and whose
    #: adaptive clusters scale on what it sees queued).
    queued = 0

    def __init__(self, executor: cf.Executor, workers: int, description: str):
        self.executor, self.workers, self.description = executor, workers, description

    def slots(self) -> int:
        return self.workers

    def renew(self) -> None:
        pass

    def close(self, abort: bool = False) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)

    def failure(self, exc: BaseException | None = None) -> ClusterError | None:
        """The ``ClusterError`` that ends the sweep, after a task raised ``exc`` (None: a
        periodic look), or None when the engine can go on (the cell is retried)."""
        if isinstance(exc, WorkerMismatch):
            return ClusterError(one_line(exc))
        return None

    def where(self, record: dict) -> str:
        """Where a cell ran, for a line on a failure: its worker and job id ('' when the
        record names none, as a lost worker's does)."""
        parts = [record["worker"]] if record.get("worker") else []
        if record.get("job_id"):
            parts.append(f"job {record['job_id']}")
        return ", ".join(parts)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class LocalExecutor(CellExecutor):
    """``max_workers`` worker processes (``concurrent.futures.ProcessPoolExecutor``, ``spawn``),
    one torch thread each; ``renew`` replaces a pool broken by a killed worker."""

    kind = "local"
    queued = 1

    def __init__(self, workers: int):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        self._saved_env = {k: os.environ.get(k) for k in WORKER_ENV}
        os.environ.update(WORKER_ENV)           # inherited by the spawned workers
        super().__init__(self._pool(workers), workers, f"local-{workers}")

    def _pool(self, workers: int) -> cf.ProcessPoolExecutor:
        import multiprocessing
        return cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                      initializer=_init_worker, initargs=(os.getpid(),))

    def renew(self) -> None:
        with contextlib.suppress(Exception):
            self.executor.shutdown(wait=True, cancel_futures=True)
        self.executor = self._pool(self.workers)

    def close(self, abort: bool = False) -> None:
        """Stop the workers: after the running cells end, or at once with ``abort`` (an
        interrupted sweep: the killed cells resume from their checkpoints next time)."""
        if abort:
            for process in list((getattr(self.executor, "_processes", None) or {}).values()):
                with contextlib.suppress(Exception):
                    process.kill()
        with contextlib.suppress(Exception):
            self.executor.shutdown(wait=not abort, cancel_futures=True)
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


#: Dask settings of the LocalCluster's workers (``--dask-local``; for a cluster of your own, put
#: them in its Dask configuration): no statistical profiler (it samples every 10 ms, CPU a cell
#: would use), and glibc's own malloc trimming instead of the nanny's MALLOC_TRIM_THRESHOLD_ =
#: 65536, which returns freed blocks to the kernel at every step of training (a cell runs
#: slower with it; README.md gives the measured factor).
DASK_WORKER_CONFIG = {"distributed.worker.profile.enabled": False,
                      "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}


class DaskExecutor(CellExecutor):
    """A Dask ``Client``'s executor (``client.get_executor()``): of a ``LocalCluster`` of
    ``n_workers`` processes with one thread each that it starts (and closes), or of the running
    scheduler at ``address``.  The scheduler reschedules the cell of a lost worker itself."""

    kind = "dask"
    queued = 1 << 30

    def __init__(self, *, n_workers: int | None = None, address: str | None = None, client=None, cluster=None,
                 check: bool = True):
        import logging

        from distributed import Client, LocalCluster
        self.cluster, self.own_client, self.address = None, client is None, address
        if client is None and cluster is not None:
            client = Client(cluster, timeout=CONNECT_TIMEOUT)
            self.own_client, self.address = True, getattr(cluster, "scheduler_address", None)
            description = f"dask-{type(cluster).__name__}"
        elif client is None:
            if address is not None:
                if not isinstance(address, str) or not address.strip():
                    raise ValueError(f"dask scheduler address must be a non-empty string, got {address!r}")
                try:
                    client = Client(address, timeout=CONNECT_TIMEOUT)
                except (OSError, TimeoutError) as exc:
                    raise ValueError(f"cannot reach the Dask scheduler at {address!r} within {CONNECT_TIMEOUT}: "
                                     f"{one_line(exc, 300)}") from None
                description = f"dask-{address}"
            else:
                if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
                    raise ValueError(f"dask workers must be an integer >= 1, got {n_workers!r}")
                import dask
                with dask.config.set(DASK_WORKER_CONFIG):
                    self.cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                                dashboard_address=":0", silence_logs=logging.ERROR)
                client = Client(self.cluster)
                description = f"dask-{n_workers}"
        else:
            description = "dask-client"
        self.client = client
        if self.address is None:
            with contextlib.suppress(Exception):
                self.address = client.scheduler.address
        self._slots_at = (0.0, 1)
        self._lost = None
        super().__init__(client.get_executor(pure=False), n_workers or 0, description)
        if check and self.cluster is None:
            try:
                self.check_workers()
            except BaseException:
                self.close()
                raise

    def check_workers(self) -> dict:
        """Every worker connected now imports cotgd and runs the driver's ``software_versions``;
        returns ``{worker address: facts}`` (``worker_facts``), else a one-line ``ClusterError``
        naming the first worker at fault.  Workers that join later are checked by each cell's
        task (``cell.WorkerMismatch``)."""
        facts = self.client.run(worker_facts, on_error="return")
        mine = software_versions()
        for address, fact in sorted(facts.items()):
            if isinstance(fact, BaseException):
                raise ClusterError(self._import_line(fact, address)) from None
            mismatch = version_mismatch(mine, fact, f"Dask worker {address} (host {fact.get('host')})")
            if mismatch:
                raise ClusterError(mismatch)
        return facts

    @staticmethod
    def _import_line(exc: BaseException, address: str | None = None) -> str:
        who = f"Dask worker {address}" if address else "a Dask worker"
        text = one_line(exc, 200) if type(exc) is Exception else f"{type(exc).__name__}: {one_line(exc, 200)}"
        return (f"{who} cannot import cotgd ({text}); install cotgd "
                f"(pip install -e . or the driver's wheel) in the Python environment of every worker")

    def failure(self, exc: BaseException | None = None) -> ClusterError | None:
        if self._lost is None and self.client.status not in ("running", "newly-created"):
            self._lost = f"lost the Dask scheduler at {self.address} (client {self.client.status})"
        if self._lost is not None:
            return ClusterError(f"{self._lost}: the cells done so far are kept; start the cluster again and "
                                f"rerun the same command to finish the sweep")
        if isinstance(exc, cf.CancelledError):
            # a future cancelled under a running client: the scheduler forgot it (a restart)
            self._lost = f"the Dask scheduler at {self.address} dropped the sweep's tasks"
            return self.failure()
        if isinstance(exc, ImportError) or (exc is not None and "No module named" in str(exc)):
            return ClusterError(self._import_line(exc))    # a worker that joined later without cotgd
        return super().failure(exc)

    def slots(self) -> int:
        now = time.monotonic()
        if now - self._slots_at[0] > 5.0:
            with contextlib.suppress(Exception):
                self._slots_at = (now, max(1, sum(self.client.nthreads().values())))
        return self._slots_at[1]

    def renew(self) -> None:
        self.executor = self.client.get_executor(pure=False)

    def close(self, abort: bool = False) -> None:
        import logging
        with contextlib.suppress(Exception):
            self.executor.shutdown(wait=False)
        if self.own_client:
            quiet = self._lost is not None
            # after a lost scheduler, the client's reconnect loop logs a traceback as it is
            # cancelled: the driver said it in one line
            loggers = [logging.getLogger(name) for name in ["distributed", *logging.root.manager.loggerDict]
                       if name.startswith("distributed")] if quiet else []
            states = [(lg, lg.disabled) for lg in loggers]
            for lg in loggers:
                lg.disabled = True
            try:
                with contextlib.suppress(Exception):
                    self.client.close(timeout=10 if not quiet else 2)
            finally:
                for lg, disabled in states:
                    lg.disabled = disabled
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()


def local_executor(workers: int | None = None) -> LocalExecutor:
    """``workers`` local worker processes (default: the cores this process may use)."""
    return LocalExecutor(default_workers() if workers is None else workers)


def dask_executor(n_workers: int | None = None, *, address: str | None = None, client=None,
                  cluster=None) -> DaskExecutor:
    """A Dask engine: ``LocalCluster(n_workers)``, or the scheduler at ``address``, or ``client``,
    or a cluster object of your own (``dask_jobqueue.SLURMCluster``; the caller scales and closes
    it)."""
    return DaskExecutor(n_workers=n_workers, address=address, client=client, cluster=cluster)


def default_workers() -> int:
    """The cores this process may use (at least 1): the local pool's default size."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)
