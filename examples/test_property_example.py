"""A property test of your own with the toolkit's hypothesis strategies (run with pytest):

    python -m pytest examples/test_property_example.py

The claim tested: for any prompt, any step size that is stable for it and any number of steps,
the constructed Theorem 3.2 transformer's CoT rollout equals plain GD in float64; and a model
whose V31 is off by 1e-3 does not (the property can fail).
"""
import numpy as np
from hypothesis import given

from numerics import cot_rollout, gd_iterates, gd_params, iterate_deviation
from numerics.strategies import gd_problems
from theory import Layout


@given(gd_problems(max_d=6, max_n=15, max_k=20))
def test_constructed_transformer_is_gd(p):
    d = p.X.shape[0]
    V, W = gd_params(d, p.eta)
    _, rel = iterate_deviation(cot_rollout(p.X, p.y, V, W, p.k), gd_iterates(p.X, p.y, p.eta, p.k))
    assert rel <= 1e-10


@given(gd_problems(max_d=6, max_n=15, max_k=20, with_sigma=False))
def test_perturbed_transformer_is_not_gd(p):
    d = p.X.shape[0]
    V, W = gd_params(d, p.eta)
    L = Layout(d)
    V[L.w, L.x] *= 1 + 1e-3
    model = cot_rollout(p.X, p.y, V, W, max(p.k, 1))
    gd = gd_iterates(p.X, p.y, p.eta, max(p.k, 1))
    assert np.max(np.abs(model - gd)) > 1e-10 * max(1.0, np.max(np.abs(gd)))
