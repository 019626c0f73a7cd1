"""Exceptions of the training package that the command line maps to exit statuses, and
``one_line``, the one way an error message is put on one line."""
import os


def one_line(exc: BaseException, limit: int | None = None) -> str:
    """The exception's message with its whitespace (newlines included) collapsed to single
    spaces, cut at ``limit`` characters: the command line promises one line of error.

    >>> one_line(ValueError("a\\n  b"))
    'a b'
    """
    text = " ".join(str(exc).split())
    return text if limit is None else text[:limit]


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
