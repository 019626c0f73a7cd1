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
from .evaluate import cot_rollout, evaluate_params, final_estimate
from .model import LSA, lsa
from .batched import train_models
from .objectives import (cot_loss, looped_estimate, looped_loss, nocot_loss, objective, teacher_forced_predictions,
                         teacher_forced_step)
from .structure import (block_norms, functional_deviation, offdiag_energy, structure_metrics, v31_w13,
                        w24_v31)
from .config import PAPER, PaperSetting, TrainConfig
from .train import TrainResult, resume, theory_reference, train

__all__ = [
    "Batch", "LSA", "PAPER", "PaperSetting", "Prompts", "TrainConfig", "TrainResult", "TrainingDiverged", "block_norms", "cot_loss",
    "cot_rollout", "evaluate_params", "final_estimate", "functional_deviation", "gd_iterates", "looped_estimate",
    "looped_loss", "lsa", "make_batch", "nocot_loss", "objective", "offdiag_energy", "resolve_device", "resume",
    "run_dynamics", "run_sparse_dynamics", "sample_batch", "sample_prompts", "sigma_root", "structure_metrics",
    "teacher_forced_predictions", "teacher_forced_step", "theory_reference", "train", "train_models",
    "train_reduced", "v31_w13", "w24_v31",
]
