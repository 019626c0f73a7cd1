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
* ``evaluate``: losses and the theory's reference values; ``suite``: the OOD suite of
  ``cotgd evaluate``; ``structure``: scale-free invariants;
* ``dynamics``: the reduced gradient flow laid over training (Theorem 4.1);
* apps: ``cli`` (the ``cotgd`` command), ``verify``, ``selftest``, ``figures``, ``bench``,
  ``baseline``.
"""
from .config import PAPER, PaperSetting, TrainConfig
from .data import Batch, Prompts, gd_iterates, make_batch, sample_batch, sample_prompts, sigma_root
from .device import resolve_device
from .dynamics import run_dynamics, run_sparse_dynamics, train_reduced
from .engine import Engine, TrainResult, resume, sweep_configs, train, train_models
from .errors import TrainingDiverged
from .evaluate import evaluate_params, theory_reference
from .kernels import (cot_loss, cot_rollout, final_estimate, looped_estimate, looped_loss, nocot_estimate,
                      nocot_loss, objective, teacher_forced_predictions, teacher_forced_step)
from .model import LSA, lsa
from .rundir import Run, load_run
from .suite import Case, evaluate_run, evaluate_suite, standard_suite
from .structure import (block_norms, functional_deviation, offdiag_energy, structure_metrics, v31_w13,
                        w24_v31)

__all__ = [
    "Batch", "Case", "Engine", "LSA", "PAPER", "PaperSetting", "Prompts", "Run", "TrainConfig", "TrainResult",
    "TrainingDiverged", "block_norms", "cot_loss", "cot_rollout", "evaluate_params", "evaluate_run", "evaluate_suite", "final_estimate",
    "functional_deviation", "gd_iterates", "load_run", "looped_estimate", "looped_loss", "lsa", "make_batch",
    "nocot_estimate", "nocot_loss", "objective", "offdiag_energy", "resolve_device", "resume", "run_dynamics",
    "run_sparse_dynamics", "sample_batch", "sample_prompts", "sigma_root", "standard_suite", "structure_metrics", "sweep_configs",
    "teacher_forced_predictions", "teacher_forced_step", "theory_reference", "train", "train_models",
    "train_reduced", "v31_w13", "w24_v31",
]
