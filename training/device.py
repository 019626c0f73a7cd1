"""Where training runs, and the settings that make a run on it reproducible.

``resolve_device``: ``'auto'`` (CUDA when torch sees a device it can use, else the CPU),
``'cpu'``, ``'cuda'``, ``'cuda:N'``.  ``device_record`` describes a resolved device (GPU name,
compute capability, CUDA version) for manifests and checkpoints; ``resume_device`` picks the
device a checkpointed run continues on.  ``reproducible`` pins, for the length of a run, what
would otherwise change its numbers: the float32 matmul precision (a caller's
``torch.set_float32_matmul_precision('high')`` would switch CUDA runs to TF32) and, on CUDA,
deterministic algorithms (cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG``, set when the ``training``
package is imported, before any CUDA work: ``training/__init__.py``).
"""
from __future__ import annotations

import contextlib
import functools
import os
import platform
import warnings

import torch

from .errors import one_line

#: The float32 matmul precision inside every run (no TF32).
MATMUL_PRECISION = "highest"


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """The ``torch.device`` named by ``spec``.

    ``'auto'`` is ``cuda`` when torch sees a CUDA device and a small test allocation on it
    works, else ``cpu`` (with a warning when a device is seen but unusable).  Asking for CUDA on a
    machine without it, or for a CUDA index that does not exist, raises ValueError naming the
    device instead of failing later inside torch.

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if isinstance(spec, torch.device):
        spec = str(spec)
    if not isinstance(spec, str):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {spec!r}")
    if spec == "auto":
        return _auto_device()
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


@functools.lru_cache(maxsize=None)
def _auto_device() -> torch.device:
    if not torch.cuda.is_available():
        return torch.device("cpu")
    try:
        probe = torch.arange(8.0, device="cuda")
        float((probe * 2).sum())           # an allocation and a kernel, synchronised
    except Exception as exc:  # no kernel image, driver mismatch, out of memory, ...
        message = one_line(exc, 160)
        warnings.warn(f"torch sees a CUDA device but cannot use it ({type(exc).__name__}: {message}); "
                      f"running on the CPU", RuntimeWarning, stacklevel=3)
        return torch.device("cpu")
    return torch.device("cuda")


def device_record(device: torch.device) -> dict:
    """What a run records of its device: ``{"device", "type", "name"}`` and, on CUDA, the
    compute ``capability`` and the ``cuda`` version."""
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        return {"device": f"cuda:{index}", "type": "cuda", "name": torch.cuda.get_device_name(index),
                "capability": f"{major}.{minor}", "cuda": torch.version.cuda}
    return {"device": "cpu", "type": "cpu", "name": platform.machine() or "cpu"}


def resume_device(recorded: dict | None, spec: str) -> torch.device:
    """The device a run continues on: the one it ``recorded`` (bitwise continuation needs it),
    whatever ``spec`` ('auto') resolves to now.  ValueError naming both devices when the recorded
    one is missing here; a warning that the run is no longer bitwise when the GPU model differs.
    Without a record (a run from before devices were recorded): ``resolve_device(spec)``."""
    if not isinstance(recorded, dict) or recorded.get("type") not in ("cpu", "cuda"):
        return resolve_device(spec)
    if recorded["type"] == "cpu":
        return torch.device("cpu")
    usable = torch.cuda.is_available() and _auto_device().type == "cuda"
    if not usable:
        raise ValueError(f"the run was trained on {recorded['device']} ({recorded.get('name')}), and no usable "
                         f"CUDA device is here (torch {torch.__version__} sees "
                         f"{torch.cuda.device_count() if torch.cuda.is_available() else 0}); resume it "
                         f"on a machine with that GPU, or start it again with --device cpu")
    device = torch.device(recorded["device"])
    if device.index is not None and device.index >= torch.cuda.device_count():
        device = torch.device("cuda:0")
    here = device_record(device)
    if here["name"] != recorded.get("name") or here["capability"] != recorded.get("capability"):
        warnings.warn(f"the run was trained on {recorded.get('name')} (compute capability "
                      f"{recorded.get('capability')}) and continues on {here['name']} ({here['capability']}): "
                      f"it is no longer bitwise the uninterrupted run", RuntimeWarning, stacklevel=2)
    return device


@contextlib.contextmanager
def reproducible(device: torch.device):
    """For the length of a run: float32 matmuls at ``MATMUL_PRECISION`` (no TF32 on CUDA) and, on
    CUDA, deterministic algorithms; the caller's settings are restored afterwards."""
    precision = torch.get_float32_matmul_precision()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32)
    torch.set_float32_matmul_precision(MATMUL_PRECISION)
    if torch.device(device).type == "cuda":
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(precision)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32 = cudnn


def run_settings() -> dict:
    """The numerical settings in force, as a run records them."""
    return {"matmul_precision": torch.get_float32_matmul_precision(),
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}
