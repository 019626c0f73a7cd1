"""Sweeps: a grid of training configurations, each cell with the theory's value, its Monte Carlo
and (unless ``train = false``) a trained and evaluated model, on local worker processes or a Dask
cluster, resumable at every level (``cotgd sweep run GRID.toml --out DIR``).

The package, in the order a sweep runs:

* ``grid``: the grid file (TOML) -> ``Grid`` -> its ``Cell``s (validated ``TrainConfig``s, each
  with a stable ``cell_id`` and ``cell_name``);
* ``cell``: ``run_cell``, one cell in a worker (train or resume its run, record what it found in
  ``cell.json``), and the results table's row of a cell;
* ``executors``: the engines (``LocalExecutor``: spawned processes; ``DaskExecutor``: a Dask
  ``LocalCluster`` or a running scheduler), behind one interface, ``CellExecutor``;
* ``driver``: ``run_sweep``, the resumable driver (``sweep.json``, the table ``results.parquet`` /
  ``results.csv`` after every cell, retries of lost workers), and ``load_results``;
* ``processes``: ``DaskProcesses``, a Dask cluster of separate ``dask scheduler`` / ``dask
  worker`` processes as a user starts one by hand (the benchmark and the cluster tests).

Every public name of the four modules is importable from ``training.sweep``.
"""
from __future__ import annotations

from .cell import (CELL_RECORD, CELLS_DIR, OOD_STATS, RECORD_EXTRA_KEYS, RECORD_KEYS, RESULT_COLUMNS, RUN_COLUMNS,
                   VERSION_KEYS, WORKER_RECORD, WorkerMismatch, attempt_started, cell_path, cell_task, config_columns,
                   job_id, make_row, ood_names, read_record, record_row, row_columns, run_cell, software_versions,
                   summary_columns, theory_columns, version_mismatch, worker_name)
from .driver import (KIND, MANIFEST, RESULTS_CSV, RESULTS_PARQUET, SweepResult, load_results, run_sweep,
                     table_frame, write_results)
from .executors import (CONNECT_TIMEOUT, DASK_WORKER_CONFIG, WORKER_ENV, CellExecutor, ClusterError, DaskExecutor,
                        LocalExecutor, dask_executor, default_workers, local_executor, warm_cell, warm_imports,
                        worker_facts)
from .grid import (CELL_DEFAULTS, LIST_FIELDS, MODE_NEUTRAL_FIELDS, NEUTRAL_FIELDS, RETRIES, SWEEP_OWNED, TABLE_FIELDS,
                   TOP_KEYS, Cell, Grid, cell_id, cell_name, config_fields, identity_dict, load_grid, make_config,
                   parse_grid, result_config, same_config)
from .processes import WORKER_DASK_CONFIG, DaskProcesses

__all__ = [
    # grid
    "CELL_DEFAULTS", "LIST_FIELDS", "MODE_NEUTRAL_FIELDS", "NEUTRAL_FIELDS", "RETRIES", "SWEEP_OWNED", "TABLE_FIELDS",
    "TOP_KEYS", "Cell", "Grid", "cell_id", "cell_name", "config_fields", "identity_dict", "load_grid", "make_config",
    "parse_grid", "result_config", "same_config",
    # cell
    "CELL_RECORD", "CELLS_DIR", "OOD_STATS", "RECORD_EXTRA_KEYS", "RECORD_KEYS", "RESULT_COLUMNS", "RUN_COLUMNS",
    "VERSION_KEYS", "WORKER_RECORD", "WorkerMismatch", "attempt_started", "cell_path", "cell_task", "config_columns",
    "job_id", "make_row", "ood_names", "read_record", "record_row", "row_columns", "run_cell", "software_versions",
    "summary_columns", "theory_columns", "version_mismatch", "worker_name",
    # executors
    "CONNECT_TIMEOUT", "DASK_WORKER_CONFIG", "WORKER_ENV", "CellExecutor", "ClusterError", "DaskExecutor",
    "LocalExecutor", "dask_executor", "default_workers", "local_executor", "warm_cell", "warm_imports", "worker_facts",
    # driver
    "KIND", "MANIFEST", "RESULTS_CSV", "RESULTS_PARQUET", "SweepResult", "load_results", "run_sweep", "table_frame",
    "write_results",
    # processes
    "WORKER_DASK_CONFIG", "DaskProcesses",
]
