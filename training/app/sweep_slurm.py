"""A sweep on SLURM through dask-jobqueue (``pip install "cotgd[cluster]"``), from a login node:

    cotgd sweep slurm GRID.toml --out DIR --jobs N [--memory 4GB] [--walltime 04:00:00]
        [--prologue "source ~/venvs/cotgd/bin/activate"] [--slurm-option KEY=VALUE ...] [--interface IFACE]

(``python -m training.app.sweep_slurm ...`` is the same command)

or, in Python, ``slurm_sweep(grid, out, jobs=N, ...)``.  It starts a Dask scheduler in this
process and ``dask_jobqueue.SLURMCluster`` workers as SLURM jobs (one core, one worker process,
one thread each; ``--slurm-option partition=short`` becomes ``#SBATCH --partition=short``), runs the
grid on them (``training.sweep.run_sweep``: resumable, a rerun reuses the done cells), and cancels
its jobs at the end, even after a failure.  The workers read ``WORKER_DASK_CONFIG`` from
``DIR/.dask-config`` (DIR must be on a filesystem the compute nodes share); their SLURM logs go to
``DIR/.slurm-logs``.  Each row of the table names the job its cell ran in (``job_id``).

Bad arguments are one line, exit status 2; a cluster that cannot run the sweep (a worker
without cotgd, of other versions, a lost scheduler) one line, exit status 1.
"""
from __future__ import annotations

import os
import sys

from ..errors import one_line
from ..sweep import RESULTS_PARQUET, ClusterError, dask_executor, run_sweep
from ..sweep.processes import write_worker_config


def slurm_options(pairs) -> list:
    """``["KEY=VALUE", ...]`` -> ``["--KEY=VALUE", ...]`` (#SBATCH directives); ValueError for a
    pair without '=' or an empty key."""
    out = []
    for pair in pairs or ():
        key, sep, value = str(pair).partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise ValueError(f"--slurm-option expects KEY=VALUE (an sbatch option), got {pair!r}")
        out.append(f"--{key}={value}")
    return out


def slurm_sweep(grid, out, *, jobs: int, memory: str = "4GB", walltime: str = "04:00:00",
                prologue=(), options=(), interface: str | None = None, adapt: bool = False, progress=None,
                **cluster_options):
    """Run the sweep of ``grid`` into ``out`` on ``jobs`` SLURM jobs of one worker each
    (``adapt``: scale between 0 and ``jobs`` with the queue) and return its ``SweepResult``.
    ``prologue``: shell lines each job runs first (activate cotgd's environment); ``options``:
    ``KEY=VALUE`` sbatch options; ``interface``: the network interface of the scheduler and the
    workers (None: Dask's choice); other keywords go to ``SLURMCluster``."""
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    directives = slurm_options(options)
    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        raise ValueError("dask-jobqueue is not installed: pip install \"cotgd[cluster]\"") from None
    out = os.path.abspath(os.fspath(out))
    config_dir = write_worker_config(os.path.join(out, ".dask-config"))
    logs = os.path.join(out, ".slurm-logs")
    os.makedirs(logs, exist_ok=True)
    lines = [*prologue, f"export DASK_CONFIG={config_dir}", "export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1"]
    with SLURMCluster(cores=1, processes=1, memory=memory, walltime=walltime, job_extra_directives=directives,
                      job_script_prologue=lines, log_directory=logs, interface=interface,
                      python=cluster_options.pop("python", sys.executable), **cluster_options) as cluster:
        if adapt:
            cluster.adapt(minimum_jobs=0, maximum_jobs=jobs)
        else:
            cluster.scale(jobs=jobs)
        with dask_executor(cluster=cluster) as engine:
            return run_sweep(grid, out, executor=engine, progress=progress)


def cli_slurm(args) -> int:
    """``cotgd sweep slurm`` (``training.app.cli`` parses the arguments)."""
    try:
        result = slurm_sweep(args.grid, args.out, jobs=args.jobs, memory=args.memory, walltime=args.walltime,
                             prologue=args.prologue, options=args.slurm_option, interface=args.interface,
                             adapt=args.adapt)
    except ClusterError as exc:        # the cluster, not the arguments, is at fault: exit status 1
        print(f"cotgd: error: {one_line(exc)}", file=sys.stderr)
        return 1
    jobs = sorted({str(j) for j in result.table["job_id"].dropna()})
    c = result.counts
    print(f"sweep {result.name}: {len(result.table)} cells ({c['done']} done, {c['failed']} failed, "
          f"{c['diverged']} diverged); {result.ran} run now, {result.reused} reused; SLURM jobs "
          f"{' '.join(jobs) or '-'}; {result.seconds:.1f} s; {os.path.join(result.out, RESULTS_PARQUET)}")
    return 0


def main(argv=None) -> int:
    """``python -m training.app.sweep_slurm ARGS`` is ``cotgd sweep slurm ARGS``."""
    from .cli import main as cotgd
    return cotgd(["sweep", "slurm", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
