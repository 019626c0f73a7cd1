"""Evaluation of trained LSA parameters on fresh prompts (docs/theory.md sections 2, 3 and 7).

CoT models are evaluated autoregressively (``kernels.cot_rollout``), no-CoT by one pass on
``Z_0``, looped by k loops in place (``kernels.final_estimate``).  Evaluation runs in float64.

Losses are summarised by ``numerics.loss_report`` (mean, se, median, q10, q90, diverged_frac, ...)
with numerics' divergence rule, so training and numerics report the same statistics.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

import numerics
import theory
from theory.validation import check_int, check_positive_finite, covariance_and_rank

from .data import derived_seed, exact_noise_var, gram_statistic, sample_prompts, seeded_generator, sigma_root
from .device import resolve_device
from .config import check_field
from .kernels import final_estimate

#: Prompts per evaluation chunk: bounds the (M, chunk, D, D) running statistic.
EVAL_CHUNK = 8192


def eval_generator(seed: int, device: torch.device) -> torch.Generator:
    """The generator of evaluation prompts for ``seed``: separate from the training stream (a
    different seed derived with numpy's SeedSequence), re-created for every evaluation so that
    every evaluation point of a run sees the same prompts."""
    return seeded_generator(seed, "eval", device)


def eval_losses(mode: str, V: torch.Tensor, W: torch.Tensor, *, n: int, k: int, samples: int,
                generator: torch.Generator, sigma=None, w_scale: float = 1.0, noise: float = 0.0,
                chunk: int = EVAL_CHUNK) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt losses ``(1/2) ||w_hat - w*||^2`` and ``||w*||^2`` on ``samples`` fresh prompts
    (float64, drawn from ``generator`` on its device, chunk by chunk): arrays (M, samples) and
    (samples,).  Non-finite errors become ``inf``.  ``w_scale`` c: the task vector is ``c w*``
    (drawn as w*, then scaled before the labels and the data statistic are formed).  ``noise`` s:
    labels ``y = X^T w* + eps``, ``eps ~ N(0, s^2)`` (docs/theory.md section 16); the loss is
    still against ``w*``."""
    samples = check_int("samples", samples, 1)
    chunk = check_int("chunk", chunk, 1)
    w_scale = check_positive_finite("w_scale", w_scale)
    V = V.detach().to(device=generator.device, dtype=torch.float64)
    W = W.detach().to(device=generator.device, dtype=torch.float64)
    d = (V.shape[-1] - 2) // 2
    root = sigma_root(sigma, d, device=generator.device)
    losses, norms = [], []
    for start in range(0, samples, chunk):
        size = min(chunk, samples - start)
        prompts = sample_prompts(size, d, n, generator=generator, sigma_sqrt=root, dtype=torch.float64,
                                 noise=noise)
        w_star = prompts.w_star if w_scale == 1 else w_scale * prompts.w_star
        stat = prompts.data_statistic if w_scale == 1 else gram_statistic(prompts.S, w_star, *prompts.noise_terms)
        est = final_estimate(mode, V, W, stat, k, n)
        sq = (est - w_star).square().sum(-1)
        sq = torch.where(torch.isnan(sq), torch.full_like(sq, float("inf")), sq)
        losses.append((sq / 2).cpu())
        norms.append(w_star.square().sum(-1).cpu())
    return torch.cat(losses, dim=-1).numpy(), torch.cat(norms).numpy()


def loss_reports(losses: np.ndarray, w_star_sq: np.ndarray) -> list:
    """One ``numerics.LossReport`` per model from ``eval_losses``' arrays, with numerics'
    divergence rule (``numerics.diverged_mask``)."""
    return [numerics.loss_report(row, numerics.diverged_mask(2 * row, w_star_sq)) for row in losses]


def report_dict(report) -> dict:
    """A ``LossReport`` as a plain JSON-ready dict (its mapping keys)."""
    return {key: (int(report[key]) if key in ("samples", "diverged") else float(report[key])) for key in report}


def as_models(V, W) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """``(V, W, single)``: parameters given as (D, D) (one model, ``single``) or (M, D, D) tensors
    or arrays, as (M, D, D) tensors; ValueError naming them when they are not LSA parameters."""
    V, W = _as_matrix("V", V), _as_matrix("W", W)
    single = V.dim() == 2
    if single:
        V, W = V.unsqueeze(0), W.unsqueeze(0)
    if V.dim() != 3 or V.shape != W.shape or V.shape[-1] != V.shape[-2] or V.shape[-1] % 2 or V.shape[-1] < 4:
        raise ValueError(f"V and W must both be (D, D) or (M, D, D) with D = 2d + 2, got "
                         f"{tuple(V.shape)} and {tuple(W.shape)}")
    return V, W, single


def _as_matrix(name: str, value) -> torch.Tensor:
    try:
        out = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a (D, D) or (M, D, D) matrix, got {value!r:.40}") from None
    if not (out.is_floating_point() or out.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{name} must be a real matrix, got dtype {out.dtype}")
    return out


def evaluate_params(V, W, *, d: int, n: int, k: int, samples: int, seed: int, sigma=None,
                    mode: str = "cot", device: str | torch.device = "cpu", noise: float = 0.0,
                    chunk: int = EVAL_CHUNK):
    """Evaluation loss of LSA parameters on ``samples`` fresh prompts (float64), as
    ``numerics.LossReport`` (mean, se, median, q10, q90, diverged_frac, ...).

    ``V``, ``W``: (D, D) (one model: one report) or (M, D, D) (a list of M reports), tensors or
    arrays, ``D = 2d + 2``.  ``mode``: 'cot' (k generated steps), 'nocot' (one pass) or 'looped'
    (k loops).  ``sigma``: covariance of x (None: identity, in distribution).  Prompts come from
    ``eval_generator(seed)``: the same seed gives the same prompts.  ``noise``: the label noise's
    standard deviation s (docs/theory.md section 16)."""
    d = check_int("d", d)
    n = check_int("n", n)
    k = check_int("k", k, 0)
    check_field("mode", mode)
    V, W, single = as_models(V, W)
    if V.shape[-1] != 2 * d + 2:
        raise ValueError(f"V must be {2 * d + 2} x {2 * d + 2} for d = {d}, got {tuple(V.shape[-2:])}")
    device = resolve_device(device)
    losses, norms = eval_losses(mode, V, W, n=n, k=k, samples=samples, generator=eval_generator(seed, device),
                                sigma=sigma, noise=noise, chunk=chunk)
    reports = loss_reports(losses, norms)
    return reports[0] if single else reports


#: Largest k for which the exact theory.gd_eval_loss is reported next to the Monte Carlo value:
#: it needs the exact Wishart moments up to 2k (docs/theory.md section 9), whose cost grows
#: steeply with the order.
EXACT_THEORY_MAX_K = 12


def theory_reference(config) -> dict:
    """The theory's evaluation loss for the run's configuration, with how it was obtained:
    ``{value, method, se, step, ...}``; ``step`` is the GD step the trained model should implement
    (eta for cot, Theorem 3.1's eta_1 for nocot, the best single step for looped; for looped also
    ``rescaled_gd``, the best isotropic looped model ``numerics.looped_rescaled_optimum``).

    With ``config.sigma`` the nocot floor is ``theory.nocot_min_loss_sigma`` of the covariance
    made exact (``numerics.exact_covariance``; singular allowed, docs/theory.md section 10); the
    looped optimum is only available for ``Sigma = I`` (value None otherwise).

    With label noise (``config.noise`` s > 0, docs/theory.md section 16) every value is the noisy
    one: GD on the noisy prompts (Monte Carlo, and ``theory.gd_eval_loss(..., noise_var=s^2)``
    exactly), the no-CoT optimum for noisy labels; the looped optimum is not available then."""
    d, n, k, eta = config.d, config.n, config.k, config.eta
    noise_var, exact_var = config.noise ** 2, exact_noise_var(config.noise)
    if config.mode == "cot":
        mc = numerics.eval_loss_mc(d, n, eta, k, samples=config.theory_samples,
                                   seed=derived_seed(config.seed, "theory"), sigma=config.sigma,
                                   noise_var=noise_var)
        out = {"value": float(mc["mean"]), "method": "monte_carlo numerics.eval_loss_mc",
               "se": float(mc["se"]), "step": eta, "monte_carlo": report_dict(mc)}
        if config.sigma is None and k <= EXACT_THEORY_MAX_K:
            out["exact"] = float(numerics.gd_eval_loss_value(d, n, eta, k, noise_var=noise_var))
        return out
    if config.mode == "nocot":
        step = float(theory.nocot_optimal_eta(d, n, noise_var=exact_var))
        if config.sigma is None:
            value = float(theory.nocot_min_loss(d, n, noise_var=exact_var))
        else:
            value = float(theory.nocot_min_loss_sigma(n, numerics.exact_covariance(config.sigma, d),
                                                      noise_var=exact_var))
        return {"value": value, "method": "exact theory.nocot_min_loss", "se": 0.0, "step": step}
    if config.sigma is not None:
        return {"value": None, "method": "unavailable out of distribution", "se": None, "step": None}
    if noise_var:
        return {"value": None, "method": "unavailable with label noise", "se": None, "step": None}
    opt = numerics.looped_optimal_eta(d, n, k)
    out = {"value": float(opt.loss), "method": f"{opt.method} numerics.looped_optimal_eta",
           "se": float(opt.loss_se), "step": float(opt.eta)}
    if 2 * k <= theory.MAX_EXACT_MOMENT:
        r = numerics.looped_rescaled_optimum(d, n, k)
        out["rescaled_gd"] = {"loss": r.loss, "c": r.c, "u": r.u, "method": "exact numerics.looped_rescaled_optimum"}
    return out


class SigmaSpectrum(NamedTuple):
    """``sigma_spectrum``'s result: ``eigenvalues`` (d, descending float64, exactly 0 past the
    rank), the exact ``rank``, the exact matrix ``exact`` (``numerics.exact_covariance``; None for
    the identity) and ``basis``, an orthonormal basis of ``range(Sigma)`` (d x rank float64, the
    eigenvectors of the positive eigenvalues; None when Sigma has full rank, where the range is
    everything, or is 0, where there is nothing to project on)."""

    eigenvalues: np.ndarray
    rank: int
    exact: object
    basis: np.ndarray | None


def sigma_spectrum(sigma, d: int, *, name: str = "sigma") -> SigmaSpectrum:
    """The spectrum of a float covariance of x (None: identity), the one place training reads it
    (docs/theory.md section 10): validated by ``numerics.exact_covariance`` (one ValueError
    naming ``name``), its rank decided exactly by theory's rule
    (``theory.validation.covariance_and_rank`` on the exact matrix), the eigenvalues past the
    rank set to exactly 0, so that theory counts the same rank."""
    d = check_int("d", d)
    if sigma is None:
        return SigmaSpectrum(np.ones(d), d, None, None)
    exact = numerics.exact_covariance(sigma, d, name=name)
    rank = covariance_and_rank(name, exact, d)[1]
    S = np.asarray(sigma, dtype=np.float64)
    lam, Q = np.linalg.eigh((S + S.T) / 2)
    lam, Q = lam[::-1].copy(), Q[:, ::-1]
    lam[rank:] = 0.0
    basis = None if rank in (0, d) else np.ascontiguousarray(Q[:, :rank])
    return SigmaSpectrum(np.maximum(lam, 0.0), rank, exact, basis)


def predicted_stability(eta: float, sigma, d: int, n: int) -> theory.StabilityVerdict:
    """Theorem 4.2's verdict (``theory.stability_verdict``, exact; docs/theory.md section 7) for
    GD with step ``eta`` on prompts ``x ~ N(0, Sigma)`` of n examples, Sigma a float covariance
    (None: identity) read by ``sigma_spectrum``, or its ``SigmaSpectrum`` already read: the one
    verdict of ``cotgd train``'s warning, ``cotgd evaluate``'s suite and the figures."""
    spectrum = sigma if isinstance(sigma, SigmaSpectrum) else sigma_spectrum(sigma, d)
    return theory.stability_verdict(eta, [float(v) for v in spectrum.eigenvalues], d, n)


def stable_scale(eta: float, sigma, d: int, n: int) -> float:
    """The covariance scale ``c*`` at which Theorem 4.2's verdict for ``c Sigma`` flips: ``c
    Sigma`` is stable iff ``c < c*`` (the predicted top scales with c, so ``c* = bound / eta``,
    ``bound`` of ``predicted_stability``; ``inf`` for ``Sigma = 0``).  The boundary the figures
    draw over the scale of Sigma (docs/theory.md section 7)."""
    return float(predicted_stability(eta, sigma, d, n).bound) / check_positive_finite("eta", eta)


def step_stability(config) -> dict:
    """Theorem 4.2's verdict on the run's GD step (docs/theory.md section 7), by
    ``predicted_stability`` for the run's Sigma (identity when None), d and n: ``{"bound",
    "stable", "top", "rank", "rule"}``, ``bound`` the largest stable step (2 / ``top``, the top
    of the predicted spectrum of S on ``range(Sigma)``, rank r), ``stable = eta < bound`` and
    ``rule``, the words that name the rule and its sizes in a message."""
    verdict = predicted_stability(config.eta, config.sigma, config.d, config.n)
    where = (f"at d = {config.d}" if verdict.rank == config.d
             else f"on range(Sigma), rank r = {verdict.rank} < d = {config.d}")
    return {"bound": float(verdict.bound), "stable": verdict.stable, "top": float(verdict.top), "rank": verdict.rank,
            "rule": f"theory.stability_verdict (theory.stable_eta_bound) {where}, n = {config.n}"}
