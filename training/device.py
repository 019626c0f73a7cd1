"""Where training runs: ``'auto'`` (CUDA when present, else CPU), ``'cpu'``, ``'cuda'``, ``'cuda:N'``."""
from __future__ import annotations

import torch


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """The ``torch.device`` named by ``spec``.

    ``'auto'`` is ``cuda`` when a CUDA device is present and ``cpu`` otherwise.  Asking for CUDA on
    a machine without it, or for a CUDA index that does not exist, raises ValueError naming the
    device instead of failing later inside torch.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    if not isinstance(spec, str):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {spec!r}")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or spec.startswith("cuda:"):
        try:
            device = torch.device(spec)
        except RuntimeError:
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {spec!r}") from None
        if not torch.cuda.is_available():
            raise ValueError(f"device {spec!r} is not available: torch sees no CUDA device "
                             f"(torch {torch.__version__}); use --device cpu or auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {spec!r} is not available: torch sees "
                             f"{torch.cuda.device_count()} CUDA device(s)")
        return device
    raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {spec!r}")
