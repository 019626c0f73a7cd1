"""The LSA model and its parametrisations (training/model.py).  Numeric checks (float64) of the
literal layer against numerics, and of the structure of each parametrisation and initialisation."""
import numpy as np
import pytest
import torch

import numerics
from theory import Layout
from training.model import LSA, lsa


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_literal_layer_matches_numerics():
    """Numeric float64: lsa(Z) = numerics.lsa_forward(Z) for random tokens and parameters."""
    g = _gen(3)
    Z = torch.randn(8, 6, generator=g, dtype=torch.float64)
    V, W = (torch.randn(8, 8, generator=g, dtype=torch.float64) for _ in range(2))
    np.testing.assert_allclose(lsa(Z, V, W, 5).numpy(), numerics.lsa_forward(Z.numpy(), V.numpy(), W.numpy(), 5),
                               rtol=1e-12, atol=1e-12)


def test_full_init_scale_and_shapes():
    m = LSA(4, "full", models=3, init_scale=0.1, generator=_gen())
    V, W = (A.detach() for A in m.matrices())
    assert V.shape == W.shape == (3, 10, 10)
    assert 0.08 < float(V.std()) < 0.12 and 0.08 < float(W.std()) < 0.12
    assert sum(p.numel() for p in m.parameters()) == 2 * 3 * 100


def test_sparse_init_is_assumption_4_1():
    """Numeric: only V31, W13 (trainable) and W24 = -1 (fixed) are non-zero; V31(0) and W13(0) are
    small, symmetric, commute (shared eigenvectors) and have the same eigenvalue magnitudes, and
    V31(0) W13(0) is negative definite like -eta I."""
    d = 5
    L = Layout(d)
    m = LSA(d, "sparse", models=2, init_scale=0.05, generator=_gen(1), dtype=torch.float64)
    V, W = m.matrices()
    mask_V = torch.zeros(L.D, L.D, dtype=torch.bool)
    mask_V[L.w, L.x] = True
    mask_W = torch.zeros(L.D, L.D, dtype=torch.bool)
    mask_W[L.x, L.w] = True
    mask_W[L.y, L.one] = True
    assert (V[:, ~mask_V] == 0).all() and (W[:, ~mask_W] == 0).all()
    assert (W[:, L.y, L.one] == -1).all()
    V31, W13 = m.V31.detach(), m.W13.detach()
    torch.testing.assert_close(V31 @ W13, W13 @ V31)
    torch.testing.assert_close(V31, V31.transpose(-1, -2))
    ev_V, ev_W = torch.linalg.eigvalsh(V31), torch.linalg.eigvalsh(W13)
    torch.testing.assert_close(torch.sort(-ev_V).values, torch.sort(ev_W).values)
    assert (ev_W > 0).all() and ev_W.max() <= 0.05 + 1e-12
    assert (torch.linalg.eigvalsh((V31 @ W13 + W13 @ V31) / 2) < 0).all()
    assert {name for name, _ in m.named_parameters()} == {"V31", "W13"}


def test_isotropic_structure_and_gradients():
    """Numeric: V31 = a I, W13 = b I, W24 = -1; gradients reach a and b only."""
    m = LSA(3, "isotropic", init_scale=0.1, generator=_gen(), dtype=torch.float64)
    V, W = m.matrices()
    L = Layout(3)
    (V.sum() + W.square().sum()).backward()
    V, W = V.detach(), W.detach()
    torch.testing.assert_close(V[0, L.w, L.x], -0.1 * torch.eye(3, dtype=torch.float64))
    torch.testing.assert_close(W[0, L.x, L.w], 0.1 * torch.eye(3, dtype=torch.float64))
    assert float(W[0, L.y, L.one]) == -1.0
    assert float(m.a.grad[0]) == pytest.approx(3.0) and float(m.b.grad[0]) == pytest.approx(2 * 0.1 * 3)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="param"):
        LSA(3, "dense", generator=_gen())
    with pytest.raises(ValueError, match="init_scale"):
        LSA(3, "full", init_scale=-1.0, generator=_gen())
    with pytest.raises(ValueError, match="models"):
        LSA(3, "full", models=0, generator=_gen())
    with pytest.raises(ValueError, match="d must be"):
        LSA(0, "full", generator=_gen())
