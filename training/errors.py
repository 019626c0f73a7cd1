"""Exceptions of the training package that the command line maps to exit statuses."""
import os


class TrainingDiverged(RuntimeError):
    """A non-finite loss or parameter stopped training (exit status 1).  The message names the
    iteration and says whether a checkpoint of an earlier, finite state exists
    (``checkpoint``: its iteration, or None)."""

    def __init__(self, iteration: int, detail: str = "", *, checkpoint: int | None = None):
        self.iteration = iteration
        self.checkpoint = checkpoint
        kept = ("; no checkpoint was written before it" if checkpoint is None
                else f"; the checkpoint of iteration {checkpoint} is kept")
        super().__init__(f"training diverged at iteration {iteration}" + (f": {detail}" if detail else "") + kept)


class RunExists(ValueError):
    """A run directory already holds a run that a new one would overwrite (exit status 2)."""


class RunFileError(ValueError):
    """A file of a run directory (params.pt, checkpoint.pt, summary.json, manifest.json,
    metrics.jsonl) is damaged: empty, truncated, not the format it should be, or not what this
    toolkit writes there (exit status 1: the run, not the arguments, is at fault).  The message is
    one line naming the file and what is wrong (``rundir.read_run_file``)."""

    def __init__(self, path, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"cannot load {self.path}: {problem}")


class NoCheckpointWarning(RuntimeWarning):
    """``resume`` found no checkpoint and starts the run from iteration 0 with the config of its
    manifest (the numbers are those of an uninterrupted run; only the time is lost)."""
