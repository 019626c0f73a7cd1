"""Label noise in training (docs/theory.md section 16): the prompts' statistic and GD targets on
noisy labels against numerics' float64 references (equivalence, 1e-12), the draw order, the
config and command-line checks, the theory values of a noisy run (exact), a sweep axis, and a
small CoT run trained with noise landing on the exact noisy loss (statistical + training)."""
import math

import numpy as np
import pytest
import torch

import numerics
import theory
from training import TrainConfig, train
from training.app.cli import main
from training.data import (gd_iterates, gram_statistic, make_batch, noise_terms, sample_prompts,
                           seeded_generator)
from training.evaluate import evaluate_params, theory_reference
from training.sweep import cell_id, make_config, parse_grid

TINY = dict(d=3, n=8, k=3, eta=0.3, batch=64, iters=20, eval_every=10, eval_samples=500,
            theory_samples=2000, structure_samples=64, device="cpu")


def _prompts(noise: float, batch: int = 7, d: int = 3, n: int = 5):
    return sample_prompts(batch, d, n, generator=seeded_generator(0, "test", "cpu"), dtype=torch.float64,
                          noise=noise)


def test_statistic_of_noisy_prompts_is_z_z_transpose_and_numerics():
    """Equivalence (float64): the statistic of noisy prompts is ``Z Z^T / n`` on the (x, y) rows
    of the explicit prompts, and numerics' ``data_statistic`` with ``Xeps``, ``eps_sq``."""
    p = _prompts(1.7)
    assert p.eps is not None and torch.equal(p.y, (p.w_star.unsqueeze(-2) @ p.X).squeeze(-2) + p.eps)
    Z = torch.cat([p.X, p.y.unsqueeze(-2)], dim=-2)                       # (B, d + 1, n)
    explicit = Z @ Z.transpose(-1, -2) / p.X.shape[-1]
    assert torch.allclose(p.data_statistic, explicit, rtol=0, atol=1e-12)
    Xeps, eps_sq = noise_terms(p.X, p.eps)
    reference = numerics.data_statistic(p.S.numpy(), p.w_star.numpy(), Xeps=Xeps.numpy(), eps_sq=eps_sq.numpy())
    np.testing.assert_allclose(gram_statistic(p.S, p.w_star, Xeps, eps_sq).numpy(), reference, rtol=0, atol=1e-12)


def test_noise_is_drawn_last_and_zero_noise_is_the_noiseless_draw():
    """The same generator state gives the same X and w* with and without noise (eps is drawn
    after them), and ``noise=0`` is bitwise the call without the argument."""
    clean, noisy = _prompts(0.0), _prompts(2.0)
    assert clean.eps is None and torch.equal(clean.X, noisy.X) and torch.equal(clean.w_star, noisy.w_star)
    plain = sample_prompts(7, 3, 5, generator=seeded_generator(0, "test", "cpu"), dtype=torch.float64)
    assert torch.equal(plain.y, clean.y) and torch.equal(plain.data_statistic, clean.data_statistic)
    assert not torch.equal(clean.y, noisy.y)
    big = sample_prompts(20000, 2, 5, generator=seeded_generator(1, "test", "cpu"), dtype=torch.float64, noise=1.5)
    assert float(big.eps.var()) == pytest.approx(2.25, rel=0.03)        # statistical: 1e5 draws, ~0.5% se


def test_gd_targets_on_noisy_prompts_are_numerics_gd_on_x_y():
    """Equivalence (float64): the CoT targets of a noisy batch are GD on its explicit (X, y),
    ``numerics.gd_iterates``; and GD's error is the section-16 closed form."""
    p = _prompts(0.8, batch=5, d=4, n=6)
    eta, k = 0.25, 6
    batch = make_batch(p, eta, k)
    reference = numerics.gd_iterates(p.X.numpy(), p.y.numpy(), eta, k)
    np.testing.assert_allclose(batch.iterates.numpy(), reference, rtol=0, atol=1e-12)
    Xeps, _ = noise_terms(p.X, p.eps)
    direct = gd_iterates(p.S, p.w_star, eta, k, Xeps)
    assert torch.equal(direct, batch.iterates)
    S, w, b = p.S.numpy(), p.w_star.numpy(), Xeps.numpy()
    for i in range(5):
        lam, Q = np.linalg.eigh(S[i])
        A = Q @ np.diag((1 - eta * lam) ** k) @ Q.T
        G = Q @ np.diag((1 - (1 - eta * lam) ** k) / lam) @ Q.T
        np.testing.assert_allclose(reference[i, k] - w[i], -A @ w[i] + G @ b[i], rtol=0, atol=1e-10)


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf"), "1"])
def test_bad_noise_is_one_clear_error(value, capsys):
    with pytest.raises(ValueError, match="noise"):
        TrainConfig(noise=value).validate()
    if isinstance(value, float):
        assert main(["train", "--d", "2", "--n", "4", "--iters", "1", "--noise", str(value)]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
        assert len(err) == 1 and "noise" in err[0]


def test_theory_reference_of_noisy_runs():
    """Exact: the noisy run's theory values are theory's noisy ones (docs/theory.md section 16)."""
    cot = theory_reference(TrainConfig(**TINY, noise=1.5))
    assert cot["exact"] == numerics.gd_eval_loss_value(3, 8, 0.3, 3, noise_var=2.25)
    assert cot["exact"] > numerics.gd_eval_loss_value(3, 8, 0.3, 3)
    assert abs(cot["value"] - cot["exact"]) < 4 * cot["se"]             # its Monte Carlo is noisy too
    nocot = theory_reference(TrainConfig(**dict(TINY, k=1), mode="nocot", noise=1.5))
    assert nocot["value"] == float(theory.nocot_min_loss(3, 8, noise_var=2.25))
    assert nocot["step"] == pytest.approx(8 / (8 + 3 + 1 + 2.25), rel=1e-15)
    looped = theory_reference(TrainConfig(**TINY, mode="looped", noise=1.5))
    assert looped["value"] is None and "noise" in looped["method"]


def test_evaluation_of_gd_on_noisy_prompts_matches_the_exact_noisy_loss():
    """Statistical: Theorem 3.2's parameters evaluated on noisy prompts (``evaluate_params``,
    20,000 prompts) within 4 SE of ``theory.gd_eval_loss(..., noise_var=)``."""
    d, n, eta, k, s = 3, 8, 0.3, 4, 1.2
    report = evaluate_params(*numerics.gd_params(d, eta), d=d, n=n, k=k, samples=20000, seed=3, noise=s)
    exact = numerics.gd_eval_loss_value(d, n, eta, k, noise_var=s * s)
    assert abs(report["mean"] - exact) < 4 * report["se"]
    assert report["mean"] > numerics.gd_eval_loss_value(d, n, eta, k) + 4 * report["se"]


def test_noise_is_a_sweep_axis():
    grid = parse_grid({"grid": {"noise": [0.0, 0.5]}, "fixed": {"d": 3, "n": 8, "k": 2, "iters": 5}})
    configs = [cell.config for cell in grid.expand()]
    assert sorted(c.noise for c in configs) == [0.0, 0.5]
    assert len({cell_id(c) for c in configs}) == 2
    assert cell_id(make_config({"d": 3, "n": 8, "k": 2, "iters": 5, "noise": 0.0})) == \
        cell_id(make_config({"d": 3, "n": 8, "k": 2, "iters": 5}))      # the default keeps old cell ids
    with pytest.raises(ValueError, match="noise"):
        parse_grid({"grid": {"noise": [-1.0]}})


def test_cot_trained_with_noise_lands_on_the_exact_noisy_loss():
    """Training: a small CoT run with label noise s = 1 ends within 10% of the exact noisy loss at
    its k (evaluated on noisy prompts against w*), and its structure is GD's (the construction
    runs GD on whatever labels it is given)."""
    config = TrainConfig(d=3, n=10, k=4, eta=0.3, batch=500, iters=1000, eval_every=1000, eval_samples=20000,
                         theory_samples=20000, structure_samples=512, noise=1.0, device="cpu")
    summary = train(config).summary
    exact = numerics.gd_eval_loss_value(3, 10, 0.3, 4, noise_var=1.0)
    assert summary["theory"]["exact"] == exact
    final = summary["final_eval_loss"]
    assert math.isfinite(final) and abs(final / exact - 1) < 0.10
    assert summary["structure"]["functional_deviation"] < 0.05
