"""A sweep engine that runs cells in the test process, for the tests that must see the cell and
driver code run: mutmut (tests/mutation) links a test to a function only when the function runs in
the test's own process, and a process pool's workers are other processes."""
from __future__ import annotations

import concurrent.futures as cf
import contextlib

import torch

from training.sweep.executors import CellExecutor


class CallingThreadExecutor(cf.Executor):
    """Runs each task at ``submit``, in the calling thread, and returns its finished future.  Not a
    worker thread: a cell records its warnings with ``warnings.catch_warnings``, which is process-wide,
    and the driver's own catch_warnings (pandas writing the table) in another thread would race with
    it (a cell's warning then escaped its row, about one run in six with two test runs at once)."""

    def submit(self, fn, /, *args, **kwargs):
        future = cf.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:         # noqa: BLE001 - the future carries it, as a pool's would
            future.set_exception(exc)
        return future


@contextlib.contextmanager
def inline_executor():
    """A ``CellExecutor`` running one cell at a time in this process, in the driver's thread; the
    torch thread count a cell sets is restored after."""
    threads = torch.get_num_threads()
    executor = CellExecutor(CallingThreadExecutor(), 1, "inline-1")
    try:
        yield executor
    finally:
        executor.close()
        torch.set_num_threads(threads)
