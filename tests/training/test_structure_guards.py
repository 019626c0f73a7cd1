"""Guards from the mutation campaign (tests/mutation): the structure metrics of several models
that differ, against the invariants written out in numpy (docs/theory.md section 4), on all of
R^d and on range(Sigma) for a singular Sigma (section 10).

The metrics of a trained model are read in every summary (``structure``); at Theorem 3.2's point
each is a single number on every diagonal entry, so there a metric that averages the wrong axis
or reads the wrong block still gives the right value.  Here every entry differs."""
import numpy as np
import pytest
import torch

from theory import Layout
from training.structure import (
    block_norms,
    offdiag_energy,
    structure_metrics,
    v31_w13,
    w24_v31,
)

D_, M = 3, 3


def models(seed=0):
    g = np.random.default_rng(seed)
    D = 2 * D_ + 2
    return g.normal(size=(M, D, D)), g.normal(size=(M, D, D))


def invariants(V, W, U=None):
    """numpy: per model, (mean diag of U^T V31 W13 U, W24 * mean diag of U^T V31 U, off-diagonal share)."""
    L = Layout(D_)
    out = []
    for Vm, Wm in zip(V, W):
        P, V31 = Vm[L.w, L.x] @ Wm[L.x, L.w], Vm[L.w, L.x]
        if U is not None:
            P, V31 = U.T @ P @ U, U.T @ V31 @ U
        off = P - np.diag(np.diag(P))
        out.append((np.trace(P) / len(P), Wm[L.y, L.one].item() * np.trace(V31) / len(V31),
                    (off ** 2).sum() / (P ** 2).sum()))
    return np.array(out)


def test_metrics_of_different_models_are_each_models_own():
    V, W = models()
    want = invariants(V, W)
    Vt, Wt = torch.as_tensor(V), torch.as_tensor(W)
    got = np.stack([v31_w13(Vt, Wt).numpy(), w24_v31(Vt, Wt).numpy(), offdiag_energy(Vt, Wt).numpy()], -1)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    rows = structure_metrics(Vt, Wt, n=6, eta=0.3, k=2, samples=64)
    assert len(rows) == M
    for m, row in enumerate(rows):
        assert [row["v31_w13"], row["w24_v31"], row["offdiag_energy"]] == pytest.approx(list(want[m]), rel=1e-12)
    # each block's Frobenius norm, blocks x | y | w | 1
    L = Layout(D_)
    blocks = [L.x, L.y, L.w, L.one]
    bn = block_norms(Vt).numpy()
    for r, rb in enumerate(blocks):
        for c, cb in enumerate(blocks):
            np.testing.assert_allclose(bn[:, r, c], np.sqrt((V[:, rb, cb] ** 2).sum(axis=(1, 2))), rtol=1e-12)


def test_on_a_singular_sigma_the_metrics_are_read_on_its_range():
    V, W = models(1)
    g = np.random.default_rng(2)
    Q = np.linalg.qr(g.normal(size=(D_, D_)))[0]
    U = Q[:, :2]                                    # range of a rank-2 Sigma
    sigma = U @ np.diag([1.5, 0.5]) @ U.T
    rows = structure_metrics(torch.as_tensor(V), torch.as_tensor(W), n=6, eta=0.3, k=2, samples=64,
                             sigma=(sigma + sigma.T) / 2)
    # the metrics are invariant under a rotation within the range: any orthonormal basis of it will do
    want = invariants(V, W, U)
    for m, row in enumerate(rows):
        assert row["v31_w13"] == pytest.approx(want[m, 0], rel=1e-9)
        assert row["w24_v31"] == pytest.approx(want[m, 1], rel=1e-9)
    # the off-diagonal share depends on the basis: Sigma's eigenvectors (distinct eigenvalues: up to sign)
    _, vec = np.linalg.eigh((sigma + sigma.T) / 2)
    eig = invariants(V, W, vec[:, ::-1][:, :2])
    assert [r["offdiag_energy"] for r in rows] == pytest.approx(list(eig[:, 2]), rel=1e-9)
    full = invariants(V, W)
    assert not np.allclose(want[:, :2], full[:, :2])      # the range changes the numbers


def _deviation_numpy(A, eta, k, n, sigma, s, samples=40000, seed=0):
    """Monte Carlo in numpy of E||model step - GD step|| / E||GD step|| for V31 = -A (the rest of
    Theorem 3.2's point): at a step i uniform in 0..k-1 of GD on the prompt, both steps are
    -(A or eta I) (S w_i - X y / n)."""
    g = np.random.default_rng(seed)
    d = A.shape[0]
    L = np.linalg.cholesky(sigma + 1e-300 * np.eye(d)) if sigma is not None else np.eye(d)
    X = L @ g.normal(size=(samples, d, n))
    w = g.normal(size=(samples, d))
    y = np.einsum("bdn,bd->bn", X, w) + s * g.normal(size=(samples, n))
    S, b = X @ X.transpose(0, 2, 1) / n, np.einsum("bdn,bn->bd", X, y) / n
    steps = g.integers(0, k, samples)
    wi = np.zeros((samples, d))
    grad = np.zeros((samples, d))
    for i in range(k):
        cur = np.einsum("bij,bj->bi", S, wi) - b
        grad[steps == i] = cur[steps == i]
        wi = wi - eta * cur
    model, gd = -grad @ A.T, -eta * grad
    return np.linalg.norm(model - gd, axis=1).mean() / np.linalg.norm(gd, axis=1).mean()


@pytest.mark.parametrize("sigma, s", [(None, 0.0), (np.diag([3.0, 1.0, 0.2]), 0.0), (np.diag([3.0, 1.0, 0.2]), 3.0)])
def test_functional_deviation_of_a_wrong_step_matrix_on_the_runs_distribution(sigma, s):
    """Statistical: V31 = -diag(0.1, 0.3, 0.5) against GD with eta 0.3, read on the run's Sigma and
    label noise, agrees with the numpy estimate within 0.6% (each case differs from the others by more)."""
    import numerics
    d, n, k, eta = 3, 6, 3, 0.3
    A = np.diag([0.1, 0.3, 0.5])
    V, W = numerics.gd_params(d, eta)
    L = Layout(d)
    V[L.w, L.x] = -A
    got = structure_metrics(torch.as_tensor(V), torch.as_tensor(W), n=n, eta=eta, k=k, samples=40000,
                            sigma=sigma, noise=s)["functional_deviation"]
    assert got == pytest.approx(_deviation_numpy(A, eta, k, n, sigma, s), rel=0.006)


def test_structure_metrics_defaults_and_precision():
    """The documented defaults (4096 prompts of seed 0's 'structure' stream, no noise) and float32
    parameters read as float64."""
    import numerics
    from training.data import seeded_generator
    from training.structure import functional_deviation
    V, W = (torch.as_tensor(a) for a in numerics.gd_params(3, 0.3))
    V = V.clone()
    V[Layout(3).w, Layout(3).x] = -torch.diag(torch.tensor([0.1, 0.3, 0.5], dtype=V.dtype))  # depends on the prompts
    default = structure_metrics(V, W, n=6, eta=0.3, k=3)
    assert default == structure_metrics(V, W, n=6, eta=0.3, k=3, samples=4096, seed=0, noise=0.0)
    stream = functional_deviation(V.unsqueeze(0), W.unsqueeze(0), n=6, eta=0.3, k=3, samples=4096,
                                  generator=seeded_generator(0, "structure", torch.device("cpu")))
    assert default["functional_deviation"] == float(stream[0])
    single = structure_metrics(V.float(), W.float(), n=6, eta=0.3, k=3, samples=512)
    assert single["functional_deviation"] == pytest.approx(
        structure_metrics(V, W, n=6, eta=0.3, k=3, samples=512)["functional_deviation"], rel=1e-6)


@pytest.mark.parametrize("kwargs, name", [({"n": 0}, "n"), ({"k": 0}, "k"), ({"samples": 0}, "samples"),
                                          ({"eta": 0.0}, "eta")])
def test_bad_arguments_are_one_error_naming_them(kwargs, name):
    from training.data import seeded_generator
    from training.structure import functional_deviation
    V, W = models()
    args = {"n": 6, "eta": 0.3, "k": 2, "samples": 8, **kwargs}
    with pytest.raises(ValueError, match=f"^{name} must be"):
        functional_deviation(torch.as_tensor(V), torch.as_tensor(W), generator=seeded_generator(0, "structure",
                                                                                                 torch.device("cpu")),
                             **args)


def test_a_basis_of_the_range_is_checked_and_any_width_from_one_to_d_is_read():
    V, W = (torch.as_tensor(a) for a in models(3))
    Q = np.linalg.qr(np.random.default_rng(4).normal(size=(D_, D_)))[0]
    for r in (1, 2, D_):
        U = Q[:, :r]
        want = invariants(V.numpy(), W.numpy(), U)
        assert v31_w13(V, W, U).numpy() == pytest.approx(want[:, 0], rel=1e-12)
        assert v31_w13(V.float(), W.float(), U).numpy() == pytest.approx(want[:, 0], rel=1e-5)   # float32 too
    for bad in (Q[:, 0], Q[:2, :2], np.zeros((D_, 0)), np.zeros((D_, D_ + 1)), np.zeros((D_ + 1, 2))):
        with pytest.raises(ValueError, match="^basis must be a d x r matrix"):
            v31_w13(V, W, bad)
