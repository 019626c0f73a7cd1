"""Exceptions of the training package that the command line maps to exit statuses."""


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
