"""Structure metrics (training/structure.py): exact at Theorem 3.2's point (numeric float64) and
invariant under the rescaling (V31, W13, W24) -> (c V31, W13 / c, W24 / c) (numeric, hypothesis)."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import numerics
from theory import Layout
from training.data import seeded_generator
from training.structure import (block_norms, functional_deviation, offdiag_energy, structure_metrics,
                                v31_w13, w24_v31)


def _theory(d, eta):
    return tuple(torch.as_tensor(a) for a in numerics.gd_params(d, eta))


@pytest.mark.parametrize("d, eta", [(1, 0.4), (3, 0.25), (10, 0.4)])
def test_exact_at_theory_point(d, eta):
    V, W = _theory(d, eta)
    s = structure_metrics(V, W, n=2 * d, eta=eta, k=5, samples=500)
    assert s["v31_w13"] == pytest.approx(-eta, abs=1e-15)
    assert s["w24_v31"] == pytest.approx(eta, abs=1e-15)
    assert s["offdiag_energy"] == 0.0
    assert s["functional_deviation"] < 1e-12
    bV, bW = np.array(s["block_norms"]["V"]), np.array(s["block_norms"]["W"])
    assert bV[2, 0] == pytest.approx(eta * math.sqrt(d)) and np.count_nonzero(bV) == 1
    assert bW[0, 2] == pytest.approx(math.sqrt(d)) and bW[1, 3] == 1.0 and np.count_nonzero(bW) == 2


@given(c=st.floats(0.05, 20.0), seed=st.integers(0, 2**31))
def test_scale_invariance(c, seed):
    """Numeric float64: rescaling (V31, W13, W24) by (c, 1/c, 1/c) of a perturbed theory point
    changes none of the four invariants (the function is unchanged)."""
    d, eta = 3, 0.3
    L = Layout(d)
    g = torch.Generator().manual_seed(seed)
    V, W = _theory(d, eta)
    V = V + 0.05 * torch.randn(V.shape, generator=g, dtype=torch.float64)
    W = W + 0.05 * torch.randn(W.shape, generator=g, dtype=torch.float64)
    V2, W2 = V.clone(), W.clone()
    V2[L.w, :] *= c
    W2[:, L.w] /= c
    W2[:, L.one] /= c
    a = structure_metrics(V, W, n=7, eta=eta, k=4, samples=300, seed=1)
    b = structure_metrics(V2, W2, n=7, eta=eta, k=4, samples=300, seed=1)
    for key in ("v31_w13", "w24_v31", "offdiag_energy", "functional_deviation"):
        assert b[key] == pytest.approx(a[key], rel=1e-9, abs=1e-12)


def test_offdiag_energy_of_a_known_product():
    d = 2
    L = Layout(d)
    V = torch.zeros(1, L.D, L.D, dtype=torch.float64)
    W = torch.zeros(1, L.D, L.D, dtype=torch.float64)
    V[0, L.w, L.x] = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    W[0, L.x, L.w] = torch.eye(2)
    W[0, L.y, L.one] = -2.0
    assert float(offdiag_energy(V, W)[0]) == pytest.approx(4 / 6)
    assert float(v31_w13(V, W)[0]) == pytest.approx(1.0)
    assert float(w24_v31(V, W)[0]) == pytest.approx(-2.0)
    assert block_norms(V).shape == (1, 4, 4)


def test_functional_deviation_sees_a_wrong_step():
    """Numeric float64 / statistical: GD parameters with step 0.2 judged against eta = 0.4 deviate
    by exactly half a GD step: deviation = 0.5."""
    V, W = _theory(4, 0.2)
    dev = functional_deviation(V.unsqueeze(0), W.unsqueeze(0), n=9, eta=0.4, k=5, samples=400,
                               generator=seeded_generator(0, "structure"))
    assert float(dev[0]) == pytest.approx(0.5, rel=1e-10)


def test_several_models_and_errors():
    V, W = _theory(2, 0.3)
    out = structure_metrics(torch.stack([V, V]), torch.stack([W, W]), n=5, eta=0.3, k=3, samples=50)
    assert isinstance(out, list) and len(out) == 2
    with pytest.raises(ValueError, match="V and W"):
        structure_metrics(V[:3], W, n=5, eta=0.3, k=3)
    with pytest.raises(ValueError, match="eta"):
        structure_metrics(V, W, n=5, eta=0.0, k=3)
