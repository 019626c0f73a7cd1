"""PyTorch training of the one-layer linear transformer (Huang, Wang, Lee, ICLR 2025).

``train(TrainConfig(...))`` trains the LSA ``f(Z) = Z + V Z (Z^T W Z) / n`` (full, sparse or
isotropic parameters) on the CoT, no-CoT or looped objective and compares it with the theory;
``train_models`` trains M models that differ in seed, k and eta as one computation; ``resume``
continues either; ``load_run`` reads a run directory back.  The layout (docs/architecture.md):

* ``config``: ``PAPER`` (the paper's setting) and ``TrainConfig``;
* ``kernels``: every torch pass (teacher-forced CoT loss with its gradient, one model step,
  rollout, looped, no-CoT);
* ``model``: the parameters; ``data``: prompts and the data statistic on the device;
* ``engine``: the one training loop, for M >= 1 models; ``rundir``: run directories;
* ``evaluate``: losses and the theory's reference values; ``explain``: which algorithm family a
  trained model runs (``explain_run``); ``suite``: the OOD suite of
  ``cotgd evaluate``; ``structure``: scale-free invariants;
* ``dynamics``: the reduced gradient flow laid over training (Theorem 4.1);
* apps (``training.app``): ``cli`` (the ``cotgd`` command), ``verify``, ``selftest``, ``figures``,
  ``bench``, ``baseline``.

Importing the package is cheap: each public name below is imported from the module that owns it
on first use (PEP 562), so ``cotgd --help`` loads neither torch nor sympy; ``from training import
train`` works as it always did.
"""
from __future__ import annotations

import importlib
import os

# cuBLAS reads this when its first handle is created; setting it later has no effect.  Set here,
# when the package is imported and so before any CUDA work of its modules (training.device
# reports it).  Harmless on a CPU.  A value the user set is kept.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

#: The public names, by the module that owns each.
_OWNERS = {
    "config": ("PAPER", "PaperSetting", "TrainConfig"),
    "data": ("Batch", "Prompts", "gd_iterates", "make_batch", "sample_batch", "sample_prompts", "sigma_root"),
    "device": ("resolve_device",),
    "dynamics": ("run_dynamics", "run_sparse_dynamics", "train_reduced"),
    "engine": ("Engine", "TrainResult", "model_grid_configs", "resume", "train", "train_models"),
    "errors": ("RunFileError", "TrainingDiverged"),
    "evaluate": ("evaluate_params", "theory_reference"),
    "explain": ("explain_run", "format_explanation"),
    "kernels": ("cot_loss", "cot_rollout", "final_estimate", "looped_estimate", "looped_loss", "nocot_estimate",
                "nocot_loss", "objective", "teacher_forced_predictions", "teacher_forced_step"),
    "model": ("LSA", "lsa"),
    "rundir": ("Run", "load_run"),
    "suite": ("Case", "evaluate_run", "evaluate_suite", "standard_suite"),
    "structure": ("block_norms", "functional_deviation", "offdiag_energy", "structure_metrics", "v31_w13",
                  "w24_v31"),
}
_OWNER = {name: module for module, names in _OWNERS.items() for name in names}

__all__ = sorted(_OWNER)


def __getattr__(name: str):
    """A public name, imported from its module on first use (then kept in the package); one of
    those modules (``training.engine`` after ``import training``), imported."""
    if name in _OWNERS:
        return importlib.import_module(f".{name}", __name__)
    module = _OWNER.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list:
    return sorted(set(globals()) | set(__all__))
