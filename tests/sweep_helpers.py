"""A sweep engine that runs cells in the test process (one thread), for the tests that must see
the cell and driver code run: mutmut (tests/mutation) links a test to a function only when the
function runs in the test's own process, and a process pool's workers are other processes."""
from __future__ import annotations

import concurrent.futures as cf
import contextlib

import torch

from training.sweep.executors import CellExecutor


@contextlib.contextmanager
def inline_executor():
    """A ``CellExecutor`` running one cell at a time in a thread of this process; the torch
    thread count a cell sets is restored after."""
    threads = torch.get_num_threads()
    executor = CellExecutor(cf.ThreadPoolExecutor(max_workers=1), 1, "inline-1")
    try:
        yield executor
    finally:
        executor.close()
        torch.set_num_threads(threads)
