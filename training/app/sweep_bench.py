"""The sweep benchmark of ``cotgd bench``: training cells per minute on each engine of
``training.sweep`` (local processes, a Dask LocalCluster, an external Dask cluster of separate
``dask scheduler`` / ``dask worker`` processes) and the machine's parallel speedup."""
from __future__ import annotations

import os
import time

from ..rundir import load_average
from ..sweep import (DaskExecutor, DaskProcesses, Grid, LocalExecutor, cell_task, parse_grid, run_cell, run_sweep,
                     warm_cell, warm_imports)

#: The identical cells ``bench_sweep`` times: CoT, full parameters, d 5, n 10, k 8, batch 500.
BENCH_CELL = {"mode": "cot", "d": 5, "n": 10, "k": 8, "eta": 0.4, "batch": 500, "eval_samples": 2000,
              "theory_samples": 2000, "structure_samples": 256, "device": "cpu"}


def _bench_grid(iters: int, cells: int) -> Grid:
    fixed = dict(BENCH_CELL, iters=iters, eval_every=iters)
    return parse_grid({"name": "bench", "grid": {"seed": list(range(cells))}, "fixed": fixed})


def _timed_sweep(grid: Grid, executor) -> tuple[float, float]:
    """Wall seconds of the sweep of ``grid`` on ``executor`` into a temporary directory, and the
    seconds its cells spent inside ``run_cell`` (summed over the cells)."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = run_sweep(grid, os.path.join(tmp, "sweep"), executor=executor, progress=False)
        return time.perf_counter() - t0, float(result.table["seconds"].sum())


def _cell_seconds(iters: int) -> float:
    """Seconds of one bench cell run in this process (one torch thread)."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        grid = _bench_grid(iters, 1)
        cell = grid.expand()[0]
        t0 = time.perf_counter()
        run_cell(cell_task(grid, cell, tmp, 1))
        return time.perf_counter() - t0


def _spin(seconds: float) -> int:
    """Matrix products on one torch thread for ``seconds``; returns how many."""
    import torch
    torch.set_num_threads(1)
    a = torch.randn(160, 160)
    count, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        a = torch.tanh(a @ a)
        count += 1
    return count


def parallel_speedup(seconds: float = 2.0, executor: "LocalExecutor | None" = None) -> float:
    """The machine's real parallel speedup on pure matrix products: products per second of two
    worker processes together over one alone (2.0 on two free cores; less when other processes
    hold them).  On ``executor`` (two local workers) when given."""
    own = executor is None
    ex = LocalExecutor(2) if own else executor
    try:
        if own:
            list(ex.executor.map(warm_imports, range(2)))
        one = ex.executor.submit(_spin, seconds).result()
        two = sum(f.result() for f in [ex.executor.submit(_spin, seconds) for _ in range(2)])
    finally:
        if own:
            ex.close()
    return two / max(one, 1)


def bench_sweep(device: str = "cpu", quick: bool = False, *, cells: int | None = None,
                seconds: float | None = None) -> dict:
    """``sweep_cells_per_minute``: ``{local-1, local-2, dask-2, dask-external-2}`` on identical
    training cells (dask-external-2: ``dask scheduler`` and two ``dask worker`` processes started
    as a user starts them, ``training.sweep.DaskProcesses``, reached by address)
    (``BENCH_CELL``, seeds 0..; 8 cells of about 5 s, quick: 4 of about 1.5 s), each engine's
    workers started and warmed before the clock starts; and details: cell seconds, the ratio
    local-2 / local-1, Dask's overhead per cell relative to the local pool with the same
    workers, and the machine's parallel speedup on pure matrix products (``parallel_speedup``).
    ``device`` is accepted for ``cotgd bench``; the cells run on the CPU.  ``cells`` and
    ``seconds`` (per cell) override the plan.  The three engines are started and warmed first
    (``startup_seconds``), then timed interleaved (two repetitions, quick: one), each
    repetition followed by the matrix-product speedup of two processes (what other processes
    leave of the second core); a figure is the fastest repetition.  ``dask_overhead_per_cell``: dask-2's wall time over local-2's,
    minus 1; ``seconds_outside_cells_per_cell``: per cell, the workers' wall time not spent in
    ``run_cell`` (scheduling, transfers, the driver's table writes)."""
    cells_default, target = (4, 1.5) if quick else (8, 5.0)
    cells = cells_default if cells is None else cells
    target = target if seconds is None else seconds
    import pandas  # noqa: F401  (the driver's table; imported before any clock starts)
    _cell_seconds(1)                                    # warm: imports, exact moments
    fixed_part = _cell_seconds(1)
    pilot_iters = 300
    pilot = _cell_seconds(pilot_iters)
    per_iter = max((pilot - fixed_part) / (pilot_iters - 1), 1e-4)
    iters = int(max(20, min(50000, (target - fixed_part) / per_iter)))
    grid = _bench_grid(iters, cells)
    cell_seconds = _cell_seconds(iters)
    import tempfile
    scratch = tempfile.TemporaryDirectory()
    # in the bench's own session, as the local pools' workers: the same share of a loaded CPU
    external = DaskProcesses(os.path.join(scratch.name, "cluster"), workers=2, new_session=False)

    def external_engine() -> DaskExecutor:
        return DaskExecutor(address=external.start().address)

    makers = {"local-1": lambda: LocalExecutor(1), "local-2": lambda: LocalExecutor(2),
              "dask-2": lambda: DaskExecutor(n_workers=2), "dask-external-2": external_engine}
    engines, startup = {}, {}
    walls = {label: [] for label in makers}
    inside = {label: [] for label in makers}
    try:
        for label, make in makers.items():
            t0 = time.perf_counter()
            engines[label] = make()
            warm = [engines[label].executor.submit(warm_cell, dict(BENCH_CELL)) for _ in range(2)]
            for future in warm:
                future.result()
            startup[label] = time.perf_counter() - t0
        speedups = []
        for _ in range(1 if quick else 2):                  # interleaved repetitions
            for label, engine in engines.items():
                wall, cell_total = _timed_sweep(grid, engine)
                walls[label].append(wall)
                inside[label].append(cell_total)
            speedups.append(parallel_speedup(1.0, engines["local-2"]))
    finally:
        for engine in engines.values():
            engine.close()
        external.stop()
        scratch.cleanup()
    best = {label: min(values) for label, values in walls.items()}
    per_minute = {label: 60.0 * cells / t for label, t in best.items()}
    # per cell, the wall time the engine's workers spent outside run_cell (scheduling, transfer,
    # the driver's writes), from the fastest repetition of each engine
    outside = {label: (best[label] * int(label[-1]) - inside[label][walls[label].index(best[label])]) / cells
               for label in makers}
    mean_cell = sum(inside[label][walls[label].index(best[label])] for label in makers) / (cells * len(makers))
    return {"sweep_cells_per_minute": per_minute,
            "sweep_bench": {"cells": cells, "iters": iters, "cell": dict(BENCH_CELL, iters=iters),
                            "cell_seconds_alone": cell_seconds, "cell_seconds_in_sweeps": mean_cell,
                            "sweep_seconds": walls, "startup_seconds": startup,
                            "local2_over_local1": per_minute["local-2"] / per_minute["local-1"],
                            "dask_overhead_per_cell": best["dask-2"] / best["local-2"] - 1.0,
                            "dask_external_over_local2": per_minute["dask-external-2"] / per_minute["local-2"],
                            "dask_external_over_local2_by_repetition": [a / b for a, b in zip(walls["local-2"],
                                                                                               walls["dask-external-2"])],
                            "seconds_outside_cells_per_cell": outside,
                            "dask_extra_outside_per_cell": (outside["dask-2"] - outside["local-2"]) / mean_cell,
                            "parallel_speedup_matmul": max(speedups),
                            "parallel_speedup_matmul_by_repetition": speedups,
                            "local2_over_local1_by_repetition": [a / b for a, b in zip(walls["local-1"],
                                                                                        walls["local-2"])],
                            "load_average": load_average()}}


def format_bench_sweep(figures: dict) -> str:
    """The sweep's benchmark lines for ``cotgd bench``."""
    per, b = figures["sweep_cells_per_minute"], figures["sweep_bench"]
    return ("  sweep_cells_per_minute      " + ", ".join(f"{k} {v:.1f}" for k, v in per.items())
            + f"   ({b['cells']} cells of {b['cell_seconds_alone']:.1f} s; local-2 / local-1 "
            f"{b['local2_over_local1']:.2f}x, dask-external-2 / local-2 {b['dask_external_over_local2']:.2f}x, "
            f"Dask overhead {100 * b['dask_overhead_per_cell']:.1f}% per cell "
            f"({100 * b['dask_extra_outside_per_cell']:.1f}% outside the cells), "
            f"2 processes of matrix products {b['parallel_speedup_matmul']:.2f}x one)")


