"""``cotgd sweep run|plot``: the command over ``training.sweep`` (the grid on an executor) and
``sweep_plot`` (its phase diagrams)."""
from __future__ import annotations

import json
import os
import sys

from ..errors import one_line
from ..io import atomic_write_text
from ..sweep import RESULTS_PARQUET, ClusterError, run_sweep


def cli_sweep(args) -> int:
    """``cotgd sweep run|plot`` (``training.cli``)."""
    if args.sweep_command == "plot":
        from .sweep_plot import plot_sweep
        paths, notes = plot_sweep(args.dir, out=args.out)
        for note in notes:
            print(f"cotgd: {note}", file=sys.stderr)
        for path in paths:
            print(path)
        return 0
    try:
        result = run_sweep(args.grid, args.out, workers=args.workers, dask_workers=args.dask_local,
                           scheduler=args.dask_scheduler, progress=args.progress, retries=args.retries,
                           retry_failed=args.retry_failed)
    except ClusterError as exc:        # the cluster, not the arguments, is at fault: exit status 1
        print(f"cotgd: error: {one_line(exc)}", file=sys.stderr)
        return 1
    c = result.counts
    shared = (f" ({len(result.table)} grid points of {result.distinct} distinct cells)"
              if result.distinct < len(result.table) else "")
    print(f"sweep {result.name}: {len(result.table)} cells ({c['done']} done, {c['failed']} failed, "
          f"{c['diverged']} diverged); {result.ran} run now, {result.reused} reused{shared}; "
          f"{result.seconds:.1f} s; {os.path.join(result.out, RESULTS_PARQUET)}")
    if args.json_file:
        atomic_write_text(args.json_file, json.dumps({"out": result.out, "cells": len(result.table), "ran": result.ran,
                                                      "reused": result.reused, "counts": c,
                                                      "seconds": result.seconds}, indent=2) + "\n")
    return 0
