"""PyTorch training of the one-layer linear transformer (Huang, Wang, Lee, ICLR 2025).

``train(TrainConfig(...))`` trains the LSA ``f(Z) = Z + V Z (Z^T W Z) / n`` (full, sparse or
isotropic parameters) on the CoT, no-CoT or looped objective and compares it with the theory;
``resume(out_dir)`` continues a checkpointed run; ``train_models`` trains a sweep of models as one
computation.  Building blocks: ``model`` (parameters),
``data`` (prompts on the device), ``objectives`` (losses from sufficient statistics),
``evaluate`` (autoregressive rollout, loss statistics), ``structure`` (scale-free invariants),
``device``.  The command line ``cotgd`` lives in ``training.cli``.
"""
from .data import Batch, Prompts, gd_iterates, make_batch, sample_batch, sample_prompts, sigma_root
from .device import resolve_device
from .dynamics import run_dynamics, run_sparse_dynamics, train_reduced
from .errors import TrainingDiverged
from .evaluate import evaluate_params
from .kernels import cot_rollout, final_estimate, nocot_estimate
from .model import LSA, lsa
from .kernels import (cot_loss, looped_estimate, looped_loss, nocot_loss, objective, teacher_forced_predictions,
                         teacher_forced_step)
from .structure import (block_norms, functional_deviation, offdiag_energy, structure_metrics, v31_w13,
                        w24_v31)
from .config import PAPER, PaperSetting, TrainConfig
from .engine import Engine, TrainResult, resume, sweep_configs, train, train_models
from .evaluate import theory_reference
from .rundir import Run, load_run

__all__ = [
    "Batch", "Engine", "LSA", "Run", "PAPER", "PaperSetting", "Prompts", "TrainConfig", "TrainResult", "TrainingDiverged", "block_norms", "cot_loss",
    "cot_rollout", "evaluate_params", "final_estimate", "functional_deviation", "gd_iterates", "looped_estimate",
    "looped_loss", "load_run", "lsa", "make_batch", "nocot_estimate", "nocot_loss", "objective", "offdiag_energy", "resolve_device", "resume",
    "run_dynamics", "run_sparse_dynamics", "sample_batch", "sample_prompts", "sigma_root", "structure_metrics", "sweep_configs",
    "teacher_forced_predictions", "teacher_forced_step", "theory_reference", "train", "train_models",
    "train_reduced", "v31_w13", "w24_v31",
]
