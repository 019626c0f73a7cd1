"""Monte Carlo of evaluation losses with honest tails (docs/theory.md sections 2, 5 and 7).

The evaluation loss of a prompt is ``(1/2) ||w_hat - w*||^2``.  Out of distribution (and, rarely,
in distribution) a prompt with ``eta lambda_max(S) >= 2`` makes GD diverge, and a few such prompts
can dominate a mean.  Every Monte Carlo here therefore returns a ``LossReport``:

* ``mean`` and ``se`` over **all** prompts.  A non-finite loss (overflow) counts as ``+inf``, so
  ``mean`` is then ``inf`` -- never a silently finite number computed from the survivors.
* ``median``, ``q10``, ``q90`` and ``max`` of all prompts (``inf`` included where it falls).
* ``diverged_frac``: the fraction of prompts that diverged.  **Rule**: a prompt diverged when
  ``||w_hat - w*||^2`` is non-finite or exceeds ``DIVERGENCE_FACTOR * (1 + ||w*||^2)``
  (``DIVERGENCE_FACTOR = 1e6``): its error is a million times the size of the task itself.
* ``mean_without_diverged`` / ``se_without_diverged``: the mean over the other prompts, under a
  name that says what it leaves out.

Prompts are drawn in chunks (``chunk`` prompts at a time) so memory stays bounded: the per-prompt
losses (8 bytes each, needed for exact quantiles) plus one chunk.  The prompts drawn depend on
``(seed, chunk, method)``: the same triple gives the same prompts in every function of this module
(the default ``chunk`` of ``eval_loss_mc_params`` is smaller; pass ``chunk`` to share prompts).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from theory import Layout
from theory.validation import check_int, check_positive_finite, check_nonnegative_finite

from .checks import check_params, check_seed, covariance_root
from .lsa import _cot_from_gram, _looped_from_gram
from .params import gd_params, nocot_params
from .sampling import data_statistic, _check_method, _gram_and_task

DIVERGENCE_FACTOR = 1e6
DEFAULT_CHUNK = 8192
_PARAMS_CHUNK_FLOATS = 2 ** 19       # (B, D, D) Gram statistics per chunk: 4 MB (cache-friendly)

_REPORT_KEYS = ("samples", "mean", "se", "median", "q10", "q90", "diverged_frac", "diverged",
                "max", "mean_without_diverged", "se_without_diverged")


@dataclass(frozen=True)
class LossReport(Mapping):
    """Summary of per-prompt evaluation losses (module docstring).  A read-only mapping with keys
    ``samples, mean, se, median, q10, q90, diverged_frac, diverged, max, mean_without_diverged,
    se_without_diverged``; the per-prompt losses are in ``.losses`` when asked for."""

    samples: int
    mean: float
    se: float
    median: float
    q10: float
    q90: float
    diverged_frac: float
    diverged: int
    max: float
    mean_without_diverged: float
    se_without_diverged: float
    losses: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __getitem__(self, key: str):
        if key not in _REPORT_KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(_REPORT_KEYS)

    def __len__(self) -> int:
        return len(_REPORT_KEYS)

    def __str__(self) -> str:
        return (f"mean {self.mean:.6g} +- {self.se:.2g} (se), median {self.median:.6g}, "
                f"q10 {self.q10:.6g}, q90 {self.q90:.6g}, diverged {self.diverged}/{self.samples}")


def diverged_mask(sq_error, w_star_sq) -> np.ndarray:
    """The divergence rule: ``||w_hat - w*||^2`` non-finite or above
    ``DIVERGENCE_FACTOR * (1 + ||w*||^2)`` (arrays of per-prompt squared norms).

    >>> diverged_mask(np.array([1.0, 3e6, np.nan]), np.array([1.0, 1.0, 1.0])).tolist()
    [False, True, True]
    """
    sq_error = np.asarray(sq_error, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return ~np.isfinite(sq_error) | (sq_error > DIVERGENCE_FACTOR * (1.0 + np.asarray(w_star_sq)))


def _mean_se(values: np.ndarray) -> tuple[float, float]:
    if values.size == 0:
        return float("nan"), float("nan")
    with np.errstate(over="ignore", invalid="ignore"):
        mean = float(values.mean())
        if not np.isfinite(mean):
            return float("inf"), float("inf")
        if values.size < 2:
            return mean, float("nan")
        se = float(values.std(ddof=1) / np.sqrt(values.size))
    return mean, se if np.isfinite(se) else float("inf")


def _quantiles(values: np.ndarray, qs) -> list[float]:
    """Linear-interpolation quantiles (numpy's default) that treat ``+inf`` as a value: a quantile
    that interpolates towards an infinite neighbour is infinite."""
    v = np.sort(values)
    out = []
    for q in qs:
        position = q * (v.size - 1)
        lo, hi = int(np.floor(position)), int(np.ceil(position))
        t = position - lo
        if t == 0 or v[lo] == v[hi]:
            out.append(float(v[lo]))
        elif np.isinf(v[hi]):
            out.append(float("inf"))
        else:
            out.append(float(v[lo] + t * (v[hi] - v[lo])))
    return out


def loss_report(losses, diverged=None, *, keep_losses: bool = False) -> LossReport:
    """A ``LossReport`` from per-prompt losses (non-finite entries count as ``+inf`` and as
    diverged) and a per-prompt ``diverged`` mask (None: only the non-finite ones).

    >>> r = loss_report([1.0, 2.0, 3.0, np.inf])
    >>> r["mean"], r["median"], r["diverged_frac"], r["mean_without_diverged"]
    (inf, 2.5, 0.25, 2.0)
    """
    losses = np.array(losses, dtype=np.float64).ravel()
    if losses.size == 0:
        raise ValueError("losses must not be empty")
    losses[~np.isfinite(losses)] = np.inf
    bad = ~np.isfinite(losses)
    if diverged is not None:
        diverged = np.asarray(diverged, dtype=bool).ravel()
        if diverged.shape != losses.shape:
            raise ValueError(f"diverged must have shape {losses.shape}, got {diverged.shape}")
        bad = bad | diverged
    mean, se = _mean_se(losses)
    mean_ok, se_ok = _mean_se(losses[~bad])
    q10, median, q90 = _quantiles(losses, (0.1, 0.5, 0.9))
    return LossReport(samples=int(losses.size), mean=mean, se=se, median=median, q10=q10, q90=q90,
                      diverged_frac=float(bad.mean()), diverged=int(bad.sum()),
                      max=float(losses.max()), mean_without_diverged=mean_ok,
                      se_without_diverged=se_ok, losses=losses if keep_losses else None)


def _run(d, n, samples, seed, sigma, chunk, method, keep_losses, error_of_chunk,
         noise_var=0.0) -> LossReport:
    """Draw ``(S, w*, Xeps, eps_sq)`` chunk by chunk (``sampling._gram_and_task``), get
    ``w_hat - w*`` from ``error_of_chunk(S, w*, Xeps, eps_sq)``."""
    samples = check_int("samples", samples, 1)
    chunk = check_int("chunk", chunk, 1)
    rng = check_seed(seed)
    root = covariance_root(sigma, d)
    noise_var = check_nonnegative_finite("noise_var", noise_var)
    method = _check_method(method, d, n, noise_var)
    losses = np.empty(samples)
    diverged = np.empty(samples, dtype=bool)
    with np.errstate(over="ignore", invalid="ignore"):
        for start in range(0, samples, chunk):
            size = min(chunk, samples - start)
            S, w_star, Xeps, eps_sq = _gram_and_task(d, n, size, rng, root, method, noise_var)
            error = error_of_chunk(S, w_star, Xeps, eps_sq)
            sq = np.einsum("bi,bi->b", error, error)
            sq[np.isnan(sq)] = np.inf
            losses[start:start + size] = sq / 2
            diverged[start:start + size] = diverged_mask(sq, np.einsum("bi,bi->b", w_star, w_star))
    return loss_report(losses, diverged, keep_losses=keep_losses)


def eval_loss_mc(d: int, n: int, eta: float, k: int, *, samples: int, seed, sigma=None,
                 noise_var: float = 0.0, chunk: int = DEFAULT_CHUNK, method: str = "auto",
                 keep_losses: bool = False, stable_part: bool = False) -> LossReport:
    """Monte Carlo of the evaluation loss ``(1/2) ||w_k - w*||^2`` of the Theorem 3.2 transformer,
    i.e. k-step GD with step ``eta`` from ``w_0 = 0`` (docs/theory.md sections 2, 4 and 7).

    Prompts: ``w* ~ N(0, I)``, ``x ~ N(0, Sigma)`` (``sigma=None``: ``Sigma = I``, in
    distribution; any symmetric positive semi-definite ``Sigma``, ``numerics.checks.check_sigma``).
    For a singular ``Sigma`` the part of ``w*`` outside ``range(Sigma)`` is never learned: as
    ``k`` grows at a stable step the mean tends to ``(d - min(n, rank Sigma)) / 2``
    (``theory.gd_limit_loss``, docs/theory.md section 10).  Per prompt the error is
    ``e_k = -(I - eta S)^k w*``, computed by ``k`` batched products with ``I - eta S``
    (``O(k d^2)`` per prompt); ``S`` comes from ``sample_gram``'s ``method`` (Bartlett when
    ``n >= d``).  Returns a ``LossReport`` (module docstring: divergence rule,
    ``mean`` over all prompts, quantiles).  ``seed``: an int or a ``numpy.random.Generator``.

    ``noise_var``: labels ``y = X^T w* + eps``, ``eps ~ N(0, s^2 I_n)``, ``s^2 = noise_var``
    (docs/theory.md section 16): GD runs on the noisy prompt, the error obeys
    ``e_{i+1} = (I - eta S) e_i + eta X eps / n`` and the loss is still against ``w*``
    (method "direct").  ``stable_part``: the loss counted only on prompts with
    ``eta lambda_max(S) < 2`` (0 elsewhere), so that ``mean`` estimates ``E[loss; stable]``, a
    light-tailed quantity: an exact mean far above it is carried by the rare unstable prompts
    (docs/theory.md sections 2 and 16).

    >>> r = eval_loss_mc(10, 20, 0.4, 0, samples=1000, seed=0)
    >>> r["diverged_frac"], round(r["mean"] / 5, 1)          # k = 0: (1/2) E ||w*||^2 = d/2
    (0.0, 1.0)
    """
    d = check_int("d", d)
    n = check_int("n", n)
    eta = check_positive_finite("eta", eta)
    k = check_int("k", k, 0)

    def error_of_chunk(S, w_star, Xeps, eps_sq):
        e = -w_star
        for _ in range(k):
            e = e - eta * np.matmul(S, e[:, :, None])[:, :, 0]
            if Xeps is not None:
                e = e + eta * Xeps
        if stable_part:
            e = np.where((eta * np.linalg.eigvalsh(S)[:, -1] < 2)[:, None], e, 0.0)
        return e

    return _run(d, n, samples, seed, sigma, chunk, method, keep_losses, error_of_chunk, noise_var)


def eval_loss_mc_params(V, W, d: int, n: int, k: int, *, samples: int, seed, sigma=None,
                        noise_var: float = 0.0, mode: str = "cot", chunk: int | None = None,
                        method: str = "auto", keep_losses: bool = False) -> LossReport:
    """Monte Carlo of ``(1/2) ||w_k - w*||^2`` for any LSA parameters ``(V, W)`` (``D x D``,
    ``D = 2d + 2``), ``mode`` "cot" (autoregressive generation, ``k`` generated steps) or
    "looped" (``k`` loops in place), from ``w_0 = 0`` (docs/theory.md section 3).  ``k = 1`` in either
    mode is the no-CoT model (one forward pass on ``Z_0``).

    Uses the rollouts of ``numerics.lsa`` on ``G = Z_0 Z_0^T / n``, which needs only ``S``,
    ``S w*`` and ``w*^T S w*``; ``chunk`` defaults to ``2^19 / D^2`` prompts (4 MB of ``G``).
    Same ``LossReport`` and divergence rule as ``eval_loss_mc``; with ``gd_params(d, eta)`` and the
    same ``seed`` and ``chunk`` it sees the same prompts as ``eval_loss_mc``.  ``noise_var``:
    noisy labels as in ``eval_loss_mc`` (the statistic ``data_statistic(S, w*, Xeps=, eps_sq=)``).
    """
    d = check_int("d", d)
    n = check_int("n", n)
    k = check_int("k", k, 0)
    V, W = check_params(V, W, d)
    if mode not in ("cot", "looped"):
        raise ValueError(f"mode must be 'cot' or 'looped', got {mode!r}")
    layout = Layout(d)
    if chunk is None:
        chunk = max(1, _PARAMS_CHUNK_FLOATS // layout.D ** 2)

    def error_of_chunk(S, w_star, Xeps, eps_sq):
        B = S.shape[0]
        G = np.zeros((B, layout.D, layout.D))                   # Z_0 Z_0^T / n
        G[:, layout.xy, layout.xy] = data_statistic(S, w_star, Xeps=Xeps, eps_sq=eps_sq)
        G[:, layout.one, layout.one] = 1.0 / n                  # the column (0, 0, w_0 = 0, 1)
        c = np.zeros((B, layout.D))
        c[:, layout.one] = 1.0
        if mode == "cot":
            w = _cot_from_gram(G, c, V, W, n, k, layout, all_iterates=False)
        else:
            w = _looped_from_gram(G, c, V, W, k, layout, all_iterates=False)
        return w - w_star

    return _run(d, n, samples, seed, sigma, chunk, method, keep_losses, error_of_chunk, noise_var)


def nocot_loss_mc(d: int, n: int, *, samples: int, seed, sigma=None, eta: float | None = None,
                  noise_var: float = 0.0, chunk: int | None = None, method: str = "auto",
                  keep_losses: bool = False) -> LossReport:
    """Monte Carlo of the no-CoT model's evaluation loss (docs/theory.md section 5): one forward pass on
    ``Z_0``, prediction ``eta S w*``.  ``eta=None`` takes Theorem 3.1's in-distribution optimum
    ``nocot_params(d, n)`` (``eta_1 = n / (n + d + 1)``), also when prompts come from ``sigma``
    (the ID-trained model out of distribution: it degrades but cannot diverge; ``Sigma`` any
    symmetric PSD matrix, singular allowed).  For the model that is optimal *for* Sigma use ``eval_loss_mc_params(*nocot_params(d, n, sigma), d, n, 1,
    sigma=sigma, ...)``.  ``noise_var``: noisy labels (docs/theory.md section 16); ``eta=None``
    then takes the optimum for them, ``n / (n + d + 1 + s^2)``.  Returns a ``LossReport``.
    """
    d = check_int("d", d)
    n = check_int("n", n)
    V, W = nocot_params(d, n, noise_var=noise_var) if eta is None else gd_params(d, eta)
    return eval_loss_mc_params(V, W, d, n, 1, samples=samples, seed=seed, sigma=sigma,
                               noise_var=noise_var, mode="cot", chunk=chunk, method=method,
                               keep_losses=keep_losses)
