"""The one-layer linear self-attention (LSA) model ``f(Z) = Z + V Z (Z^T W Z) / n`` (docs/theory.md
section 3) with three parametrisations of ``(V, W)``, and a literal forward pass for reference.

Every parameter carries a leading MODEL axis ``M``: ``V`` and ``W`` are (M, D, D), so M models
(seeds, step sizes, ...) train as one batched computation; a normal run has M = 1.

* ``full``: every entry of V and W trainable, small random init (the paper's experiments).
* ``sparse``: ``V31`` and ``W13`` trainable, ``W24 = -1`` fixed, every other entry 0; initialised
  as the paper's Assumption 4.1 (docs/theory.md section 6): ``V31(0)`` and ``W13(0)`` small, sharing
  eigenvectors and eigenvalues (up to the sign of V31, see ``LSA``).
* ``isotropic``: ``V31 = a I``, ``W13 = b I``, ``W24 = -1`` (docs/theory.md section 6).
"""
from __future__ import annotations

import torch

import numerics
from theory import Layout
from theory.validation import check_int, check_positive_finite

from .config import check_field

#: Default init scale of each parametrisation (``init_scale=None``).  ``full``: the standard
#: deviation of every entry; ``sparse``: the largest eigenvalue of ``W13(0)`` (and of ``-V31(0)``);
#: ``isotropic``: ``b(0) = -a(0)``.  Measured at the paper's configuration (CoT, 750 Adam steps of
#: 1e-3, seeds 0, 1, 2): full-model functional deviation 0.006 / 0.006 / 0.010 at 0.01, but
#: 0.019 / 0.025 / 0.033 at 0.05; 0.1 stalls and 0.2 diverges (random blocks acting through the
#: CoT columns must be unlearned first).  Smaller is also what keeps the looped map stable at init.
DEFAULT_INIT_SCALE = {"full": 0.01, "sparse": 0.05, "isotropic": 0.05}


def lsa(Z: torch.Tensor, V: torch.Tensor, W: torch.Tensor, n: int) -> torch.Tensor:
    """Literal LSA layer ``f(Z) = Z + V Z (Z^T W Z) / n`` (docs/theory.md section 3) on (..., D, N)
    tokens; ``n`` is the number of examples (fixed normalisation, not the number of columns).
    Cost O(D N^2): the reference for tests, not the training path."""
    return Z + V @ Z @ (Z.transpose(-1, -2) @ W @ Z) / n


class LSA(torch.nn.Module):
    """Trainable ``(V, W)`` of the one-layer LSA, M models at once; ``matrices()`` gives the
    (M, D, D) pair (differentiable in the trainable parameters).

    Initialisation (all from ``generator``, on its device):

    * ``full``: every entry of V and W i.i.d. ``N(0, init_scale^2)``.
    * ``sparse`` (Assumption 4.1, docs/theory.md section 6): with ``Q`` Haar-orthogonal and eigenvalues
      ``l_j`` uniform in ``[init_scale / 2, init_scale]``, ``W13(0) = Q diag(l) Q^T`` and
      ``V31(0) = -Q diag(l) Q^T``: the two blocks share eigenvectors and eigenvalue magnitudes, and
      ``V31(0) W13(0)`` is negative definite like the target ``-eta I``.  ``W24 = -1`` fixed.
    * ``isotropic``: ``a(0) = -init_scale``, ``b(0) = init_scale``, ``W24 = -1`` fixed.
    """

    def __init__(self, d: int, param: str = "full", *, models: int = 1, init_scale: float | None = None,
                 generator: torch.Generator, dtype=torch.float32):
        super().__init__()
        self.d = check_int("d", d)
        self.M = check_int("models", models)
        check_field("param", param)
        self.param = param
        self.layout = Layout(self.d)
        scale = DEFAULT_INIT_SCALE[param] if init_scale is None else check_positive_finite("init_scale", init_scale)
        self.init_scale = scale
        M, D, device = self.M, self.layout.D, generator.device
        if param == "full":
            self.V = torch.nn.Parameter(scale * torch.randn((M, D, D), generator=generator, device=device, dtype=dtype))
            self.W = torch.nn.Parameter(scale * torch.randn((M, D, D), generator=generator, device=device, dtype=dtype))
        elif param == "sparse":
            A = torch.randn((M, d, d), generator=generator, device=device, dtype=torch.float64)
            Q = torch.as_tensor(numerics.haar_orthogonal(A.cpu().numpy()), device=device)
            l = scale * (0.5 + 0.5 * torch.rand((M, d), generator=generator, device=device, dtype=torch.float64))
            P = (Q * l.unsqueeze(-2)) @ Q.transpose(-1, -2)
            P = (P + P.transpose(-1, -2)) / 2
            self.V31 = torch.nn.Parameter((-P).to(dtype))
            self.W13 = torch.nn.Parameter(P.to(dtype))
        else:
            self.a = torch.nn.Parameter(torch.full((M,), -scale, device=device, dtype=dtype))
            self.b = torch.nn.Parameter(torch.full((M,), scale, device=device, dtype=dtype))

    def matrices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(V, W)``, each (M, D, D), assembled from the trainable parameters."""
        if self.param == "full":
            return self.V, self.W
        L, M, D = self.layout, self.M, self.layout.D
        if self.param == "sparse":
            V31, W13 = self.V31, self.W13
        else:
            eye = torch.eye(self.d, dtype=self.a.dtype, device=self.a.device)
            V31, W13 = self.a.view(M, 1, 1) * eye, self.b.view(M, 1, 1) * eye
        V = V31.new_zeros((M, D, D))
        W = W13.new_zeros((M, D, D))
        V[:, L.w, L.x] = V31
        W[:, L.x, L.w] = W13
        W[:, L.y, L.one] = -1.0
        return V, W
