"""Scale-free structure of learned LSA parameters (docs/theory.md section 4).

The function is unchanged under ``(V31, W13, W24) -> (c V31, W13 / c, W24 / c)``, so learned weights
are judged by invariants that Theorem 3.2's point fixes:

* ``v31_w13``: mean diagonal of ``V31 W13`` (theory: ``-eta``);
* ``w24_v31``: mean diagonal of ``W24 V31`` (theory: ``eta``);
* ``offdiag_energy``: ``||offdiag(V31 W13)||_F^2 / ||V31 W13||_F^2`` (theory: 0);
* ``functional_deviation``: ``E ||model step - GD step|| / E ||GD step||`` for one step from a GD
  iterate ``w_i`` (i uniform in 0..k-1) with the true CoT history, on fresh prompts (theory: 0).
  This judges the whole function, including blocks that act only through the CoT columns;
* ``block_norms``: the 4 x 4 table of Frobenius norms of the blocks of V and of W.

All functions take (M, D, D) parameters and return per-model values.

On a singular Sigma (rank r < d; docs/theory.md section 10) x lies in ``range(Sigma)``: the data
never probe ``V31`` and ``W13`` on the other ``d - r`` directions, so the three matrix invariants
are read on the range, ``U^T (V31 W13) U`` and ``U^T V31 U`` for an orthonormal basis ``U`` of it
(``basis=``, d x r; ``structure_metrics`` takes it from ``evaluate.sigma_spectrum``).  Averaged over
all d directions they would be diluted by the untrained ones.  For a full-rank Sigma nothing changes.
"""
from __future__ import annotations

import torch

from theory import Layout
from theory.validation import check_int, check_positive_finite

from .device import resolve_device
from .data import make_batch, sample_prompts, seeded_generator, sigma_root
from .kernels import teacher_forced_step

STRUCTURE_KEYS = ("v31_w13", "w24_v31", "offdiag_energy", "functional_deviation")


def _layout(V: torch.Tensor) -> Layout:
    return Layout((V.shape[-1] - 2) // 2)


def _on_range(A: torch.Tensor, basis) -> torch.Tensor:
    """``U^T A U`` (M, r, r) for an orthonormal basis ``U`` (d x r) of ``range(Sigma)``; ``A``
    itself for ``basis=None`` (module docstring)."""
    if basis is None:
        return A
    U = torch.as_tensor(basis, dtype=A.dtype, device=A.device)
    if U.dim() != 2 or U.shape[0] != A.shape[-1] or not 1 <= U.shape[1] <= U.shape[0]:
        raise ValueError(f"basis must be a d x r matrix with d = {A.shape[-1]}, 1 <= r <= d, got {tuple(U.shape)}")
    return U.T @ A @ U


def v31_w13(V: torch.Tensor, W: torch.Tensor, basis=None) -> torch.Tensor:
    """Mean diagonal of ``V31 W13`` per model, (M,), on ``range(Sigma)`` when ``basis`` is given
    (module docstring); ``-eta`` at Theorem 3.2's point."""
    L = _layout(V)
    return torch.diagonal(_on_range(V[:, L.w, L.x] @ W[:, L.x, L.w], basis), dim1=-2, dim2=-1).mean(-1)


def w24_v31(V: torch.Tensor, W: torch.Tensor, basis=None) -> torch.Tensor:
    """Mean diagonal of ``W24 V31`` per model, (M,), on ``range(Sigma)`` when ``basis`` is given
    (module docstring); ``eta`` at Theorem 3.2's point."""
    L = _layout(V)
    return W[:, L.y, L.one].reshape(-1) * torch.diagonal(_on_range(V[:, L.w, L.x], basis), dim1=-2, dim2=-1).mean(-1)


def offdiag_energy(V: torch.Tensor, W: torch.Tensor, basis=None) -> torch.Tensor:
    """Off-diagonal share of the energy of ``V31 W13``: ``||offdiag||_F^2 / ||V31 W13||_F^2`` per
    model, (M,), of ``U^T V31 W13 U`` when ``basis`` U is given (module docstring); 0 at Theorem
    3.2's point (nan for an all-zero product)."""
    L = _layout(V)
    P = _on_range(V[:, L.w, L.x] @ W[:, L.x, L.w], basis)
    off = P - torch.diag_embed(torch.diagonal(P, dim1=-2, dim2=-1))
    return off.square().sum(dim=(-1, -2)) / P.square().sum(dim=(-1, -2))


def block_norms(A: torch.Tensor) -> torch.Tensor:
    """Frobenius norm of each block (row block, column block) of A, (M, 4, 4); blocks 1 = x,
    2 = y, 3 = w, 4 = one (docs/theory.md section 3), so ``[:, 2, 0]`` is ``||V31||``."""
    L = _layout(A)
    blocks = [L.x, L.y, L.w, L.one]
    return torch.stack([torch.stack([A[:, r, c].square().sum(dim=(-1, -2)).sqrt() for c in blocks], -1)
                        for r in blocks], -2)


def functional_deviation(V: torch.Tensor, W: torch.Tensor, *, n: int, eta: float, k: int, samples: int,
                         generator: torch.Generator, sigma=None, noise: float = 0.0) -> torch.Tensor:
    """``E ||model step - GD step|| / E ||GD step||`` per model, (M,), in float64 on
    ``generator``'s device.  Each fresh prompt gets a step ``i`` uniform in ``0 .. k-1``; the model
    sees the true CoT history ``w_0 .. w_i`` (teacher forcing) and its step is its prediction
    minus ``w_i``; GD's step is ``w_{i+1} - w_i`` (docs/theory.md sections 2 and 4), on the
    prompts' labels (noisy ones with ``noise`` s > 0, docs/theory.md section 16)."""
    n = check_int("n", n)
    k = check_int("k", k)
    samples = check_int("samples", samples)
    eta = check_positive_finite("eta", eta)
    device = generator.device
    V = V.detach().to(device=device, dtype=torch.float64)
    W = W.detach().to(device=device, dtype=torch.float64)
    d = _layout(V).d
    prompts = sample_prompts(samples, d, n, generator=generator, dtype=torch.float64,
                             sigma_sqrt=sigma_root(sigma, d, device=device), noise=noise)
    steps = torch.randint(0, k, (samples,), generator=generator, device=device)
    batch = make_batch(prompts, eta, k)
    its = batch.iterates
    rows = torch.arange(samples, device=device)
    model_step = teacher_forced_step(V, W, batch.stat, its[:, :-1, :], steps, n) - its[rows, steps, :]
    gd_step = its[rows, steps + 1, :] - its[rows, steps, :]
    return (model_step - gd_step).norm(dim=-1).mean(-1) / gd_step.norm(dim=-1).mean(-1)


def structure_metrics(V, W, *, n: int, eta: float, k: int, samples: int = 4096, seed: int = 0,
                      device: str | torch.device = "cpu", sigma=None, noise: float = 0.0):
    """Every structure metric of (D, D) or (M, D, D) parameters: a dict ``{v31_w13, w24_v31,
    offdiag_energy, functional_deviation, block_norms: {V, W}}`` of floats (4 x 4 nested lists for
    the block norms) for one model, a list of such dicts for M models.  ``functional_deviation``
    uses ``samples`` fresh prompts from the 'structure' stream of ``seed`` (with label noise of
    standard deviation ``noise``) with ``x ~ N(0, sigma)``; for a singular ``sigma``, ``v31_w13``,
    ``w24_v31`` and ``offdiag_energy`` are read on ``range(sigma)`` (module docstring)."""
    from .evaluate import as_models, sigma_spectrum
    V, W, single = as_models(V, W)
    generator = seeded_generator(seed, "structure", resolve_device(device))
    V64, W64 = V.detach().double().cpu(), W.detach().double().cpu()
    basis = sigma_spectrum(sigma, _layout(V).d).basis
    values = {
        "v31_w13": v31_w13(V64, W64, basis),
        "w24_v31": w24_v31(V64, W64, basis),
        "offdiag_energy": offdiag_energy(V64, W64, basis),
        "functional_deviation": functional_deviation(V, W, n=n, eta=eta, k=k, samples=samples,
                                                     generator=generator, sigma=sigma, noise=noise).cpu(),
    }
    bV, bW = block_norms(V64), block_norms(W64)
    out = [dict({key: float(values[key][m]) for key in STRUCTURE_KEYS},
                block_norms={"V": bV[m].tolist(), "W": bW[m].tolist()}) for m in range(V.shape[0])]
    return out[0] if single else out
