"""Exceptions of the training package that the command line maps to exit statuses."""


class TrainingDiverged(RuntimeError):
    """A non-finite loss or parameter stopped training (exit status 1).  The message names the
    iteration; the last good checkpoint is kept."""

    def __init__(self, iteration: int, detail: str = ""):
        self.iteration = iteration
        super().__init__(f"training diverged at iteration {iteration}"
                         + (f": {detail}" if detail else "") + "; the last good checkpoint is kept")
