"""Guards from the mutation campaign (tests/mutation): the theory's reference value of a run and
the covariance facts evaluate reads, against theory and numerics called directly.

A run's summary compares the trained model with ``theory_reference`` (``theory_eval_loss``,
``relative_gap``); a wrong reference silently moves every gap a user reads."""
import math

import numpy as np
import pytest
import sympy

import numerics
import theory
from training import TrainConfig
from training.data import derived_seed
from training.evaluate import (
    EXACT_THEORY_MAX_K,
    evaluate_params,
    predicted_stability,
    sigma_spectrum,
    stable_scale,
    step_stability,
    theory_reference,
)

TINY = {"d": 3, "n": 8, "k": 3, "eta": 0.3, "theory_samples": 4000, "seed": 5}


def test_cot_reference_is_gd_monte_carlo_on_the_runs_theory_stream_and_exact_when_it_can_be():
    ref = theory_reference(TrainConfig(**TINY))
    mc = numerics.eval_loss_mc(3, 8, 0.3, 3, samples=4000, seed=derived_seed(5, "theory"))
    assert ref["value"] == float(mc["mean"]) and ref["se"] == float(mc["se"]) and ref["step"] == 0.3
    assert ref["monte_carlo"]["median"] == float(mc["median"])
    assert ref["exact"] == float(theory.gd_eval_loss(3, 8, sympy.Rational(3, 10), 3))
    assert abs(ref["value"] - ref["exact"]) < 4 * ref["se"]
    assert "exact" not in theory_reference(TrainConfig(**dict(TINY, k=EXACT_THEORY_MAX_K + 1)))
    assert "exact" in theory_reference(TrainConfig(**dict(TINY, k=EXACT_THEORY_MAX_K)))
    sigma = [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.5]]
    on_sigma = theory_reference(TrainConfig(**TINY, sigma=sigma))
    assert "exact" not in on_sigma
    mc = numerics.eval_loss_mc(3, 8, 0.3, 3, samples=4000, seed=derived_seed(5, "theory"), sigma=np.array(sigma))
    assert on_sigma["value"] == float(mc["mean"])


def test_nocot_reference_is_theorem_3_1s_floor_and_step():
    ref = theory_reference(TrainConfig(**TINY, mode="nocot"))
    assert ref["value"] == float(theory.nocot_min_loss(3, 8)) == pytest.approx(3 * 4 / (2 * 12))
    assert ref["step"] == pytest.approx(8 / 12, rel=1e-15) and ref["se"] == 0.0
    sigma = [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    ref = theory_reference(TrainConfig(**TINY, mode="nocot", sigma=sigma))
    exact = sympy.diag(2, 1, 0)
    assert ref["value"] == float(theory.nocot_min_loss_sigma(8, exact))


def test_looped_reference_is_the_best_single_step_and_the_rescaled_optimum():
    ref = theory_reference(TrainConfig(**TINY, mode="looped"))
    opt = numerics.looped_optimal_eta(3, 8, 3)
    assert ref["value"] == float(opt.loss) and ref["step"] == float(opt.eta) and ref["se"] == float(opt.loss_se)
    r = numerics.looped_rescaled_optimum(3, 8, 3)
    assert ref["rescaled_gd"]["loss"] == r.loss and (ref["rescaled_gd"]["c"], ref["rescaled_gd"]["u"]) == (r.c, r.u)
    out = theory_reference(TrainConfig(**TINY, mode="looped", sigma=[[1.0, 0, 0], [0, 1.0, 0], [0, 0, 2.0]]))
    assert out["value"] is None and out["step"] is None


def test_sigma_spectrum_of_a_singular_covariance():
    Q = numerics.random_rotation(3, 1)
    sigma = (Q * [0.5, 0.0, 2.0]) @ Q.T
    s = sigma_spectrum((sigma + sigma.T) / 2, 3)
    assert s.rank == 2
    np.testing.assert_allclose(s.eigenvalues, [2.0, 0.5, 0.0], atol=1e-12)
    assert s.eigenvalues[2] == 0.0
    assert s.basis.shape == (3, 2)
    np.testing.assert_allclose(s.basis.T @ s.basis, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(s.basis @ s.basis.T @ sigma, sigma, atol=1e-12)      # it spans the range
    np.testing.assert_allclose(s.basis[:, 0], Q[:, 2] * np.sign(s.basis[:, 0] @ Q[:, 2]), atol=1e-12)
    full = sigma_spectrum(np.diag([1.0, 3.0, 2.0]), 3)
    assert full.rank == 3 and full.basis is None and list(full.eigenvalues) == [3.0, 2.0, 1.0]
    ident = sigma_spectrum(None, 4)
    assert ident.rank == 4 and ident.basis is None and list(ident.eigenvalues) == [1.0] * 4


def test_theorem_42_bound_scale_and_step_verdict_as_written():
    """bound = 2 / (lambda_max (1 + sqrt(r/n))^2) on range(Sigma), c* = bound / eta."""
    sigma = np.diag([2.0, 1.0, 0.0])
    bound = 2 / (2.0 * (1 + math.sqrt(2 / 8)) ** 2)
    v = predicted_stability(0.3, sigma, 3, 8)
    assert float(v.bound) == pytest.approx(bound, rel=1e-12) and v.rank == 2 and v.stable == (0.3 < bound)
    assert stable_scale(0.3, sigma, 3, 8) == pytest.approx(bound / 0.3, rel=1e-12)
    for eta in (0.97 * bound, 1.03 * bound):
        s = step_stability(TrainConfig(d=3, n=8, eta=eta, sigma=sigma.tolist()))
        assert s["bound"] == pytest.approx(bound, rel=1e-12) and s["stable"] == (eta < bound)
        assert s["top"] == pytest.approx(2.0 * (1 + math.sqrt(2 / 8)) ** 2, rel=1e-12) and s["rank"] == 2
        assert "rank r = 2 < d = 3" in s["rule"] and "n = 8" in s["rule"]
    s = step_stability(TrainConfig(d=3, n=8, eta=0.3))
    assert s["bound"] == pytest.approx(2 / (1 + math.sqrt(3 / 8)) ** 2, rel=1e-12) and "at d = 3" in s["rule"]


def test_reference_records_say_how_each_value_was_obtained():
    """The keys and method a summary shows for each mode, as documented."""
    cot = theory_reference(TrainConfig(**TINY))
    assert set(cot) == {"value", "method", "se", "step", "monte_carlo", "exact"}
    assert cot["method"] == "monte_carlo numerics.eval_loss_mc"
    nocot = theory_reference(TrainConfig(**TINY, mode="nocot"))
    assert nocot == {"value": nocot["value"], "method": "exact theory.nocot_min_loss", "se": 0.0,
                     "step": nocot["step"]}
    looped = theory_reference(TrainConfig(**TINY, mode="looped"))
    opt = numerics.looped_optimal_eta(3, 8, 3)
    assert set(looped) == {"value", "method", "se", "step", "rescaled_gd"}
    assert looped["method"] == f"{opt.method} numerics.looped_optimal_eta"
    assert looped["rescaled_gd"]["method"] == "exact numerics.looped_rescaled_optimum"
    ood = theory_reference(TrainConfig(**TINY, mode="looped", sigma=[[1.0, 0, 0], [0, 1.0, 0], [0, 0, 2.0]]))
    assert ood == {"value": None, "method": "unavailable out of distribution", "se": None, "step": None}
    noisy = theory_reference(TrainConfig(**TINY, mode="looped", noise=0.5))
    assert noisy == {"value": None, "method": "unavailable with label noise", "se": None, "step": None}


@pytest.mark.parametrize("kwargs, name", [({"d": 0}, "d"), ({"n": 0}, "n"), ({"k": -1}, "k")])
def test_bad_sizes_are_one_error_naming_the_parameter(kwargs, name):
    V, W = numerics.gd_params(2, 0.3)
    with pytest.raises(ValueError, match=f"^{name} must be an integer"):
        evaluate_params(V, W, **{"d": 2, "n": 4, "k": 3, **kwargs}, samples=10, seed=0)
    with pytest.raises(ValueError, match="^eta must be"):
        stable_scale(0.0, None, 2, 4)


def test_zero_steps_predict_w0_and_lose_d_over_2():
    """k = 0 is allowed: the model's estimate is w_0 = 0, so the loss is ||w*||^2 / 2, mean d/2."""
    V, W = numerics.gd_params(2, 0.3)
    r = evaluate_params(V, W, d=2, n=4, k=0, samples=4000, seed=0)
    assert abs(r["mean"] - 1.0) < 4 * r["se"]


def test_evaluate_params_is_eval_losses_on_the_seeds_prompts_in_the_chunks_asked_for():
    """evaluate_params(seed, chunk) reports exactly eval_losses on eval_generator(seed) with that
    chunk (the prompts are drawn chunk by chunk, so the chunk decides which prompts are drawn)."""
    import torch

    from training.evaluate import eval_generator, eval_losses, loss_reports
    V, W = numerics.gd_params(2, 0.3)
    for chunk in (250, 300, 1000):
        r = evaluate_params(V, W, d=2, n=4, k=3, samples=1000, seed=7, chunk=chunk)
        losses, norms = eval_losses("cot", torch.as_tensor(V).unsqueeze(0), torch.as_tensor(W).unsqueeze(0), n=4, k=3,
                                    samples=1000, generator=eval_generator(7, torch.device("cpu")), chunk=chunk)
        assert r["mean"] == loss_reports(losses, norms)[0]["mean"] and r["samples"] == losses.shape[1] == 1000


@pytest.mark.parametrize("V, W", [
    (np.zeros((2, 4, 4)), np.zeros((2, 6, 6))),            # V and W of different shapes
    (np.zeros((1, 6, 4)), np.zeros((1, 6, 4))),            # not square
    (np.zeros((4, 6)), np.zeros((4, 6))),
    (np.zeros((5, 5)), np.zeros((5, 5))),                  # D odd
    (np.zeros((2, 2)), np.zeros((2, 2))),                  # D < 4
    (np.zeros((1, 1, 4, 4)), np.zeros((1, 1, 4, 4))),      # not (D, D) or (M, D, D)
])
def test_parameters_that_are_not_an_lsa_are_refused(V, W):
    from training.evaluate import as_models
    with pytest.raises(ValueError, match="^V and W must both be"):
        as_models(V, W)


def test_real_matrices_of_any_real_dtype_are_lsa_parameters_and_others_are_named():
    from training.evaluate import as_models
    V, W, single = as_models(np.zeros((4, 4), dtype=np.int64), np.eye(4))
    assert single and V.shape == (1, 4, 4)
    assert as_models(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)))[2] is False
    with pytest.raises(ValueError, match="^V must be a real matrix"):
        as_models(np.zeros((4, 4), dtype=complex), np.eye(4))
    with pytest.raises(ValueError, match="^W must be a real matrix"):
        as_models(np.eye(4), np.zeros((4, 4), dtype=complex))
    with pytest.raises(ValueError, match=r"^V must be a \(D, D\)"):
        as_models("V", np.eye(4))
    with pytest.raises(ValueError, match=r"^W must be a \(D, D\)"):
        as_models(np.eye(4), "W")
    V, W = numerics.gd_params(1, 0.3)                       # d = 1: D = 4, the smallest LSA
    assert evaluate_params(V, W, d=1, n=4, k=2, samples=50, seed=0)["samples"] == 50


def test_sigma_spectrum_names_its_arguments_and_reads_float32_in_float64():
    with pytest.raises(ValueError, match="^d must be an integer"):
        sigma_spectrum(None, 0)
    with pytest.raises(ValueError, match=r"^sigma\b"):
        sigma_spectrum(np.diag([1.0, -1.0]), 2)
    with pytest.raises(ValueError, match="Sigma_ood"):
        sigma_spectrum(np.diag([1.0, -1.0]), 2, name="Sigma_ood")
    Q = numerics.random_rotation(3, 2)
    s32 = ((Q * [2.0, 1.0, 0.5]) @ Q.T).astype(np.float32)
    s32 = (s32 + s32.T) / 2
    np.testing.assert_allclose(sigma_spectrum(s32, 3).eigenvalues,
                               np.linalg.eigvalsh(s32.astype(np.float64))[::-1], rtol=1e-13)


def test_reports_use_numerics_divergence_rule_on_the_squared_error_and_count_in_integers():
    """A loss is (1/2)||e||^2; a prompt diverges when ||e||^2 = 2 * loss exceeds
    DIVERGENCE_FACTOR (1 + ||w*||^2) (numerics' rule), so the threshold on the loss is half that."""
    from numerics.montecarlo import DIVERGENCE_FACTOR
    from training.evaluate import loss_reports, report_dict
    limit = DIVERGENCE_FACTOR * 2.0 / 2                 # ||w*||^2 = 1: ||e||^2 limit 2 F, loss limit F
    losses = np.array([[0.5, 0.9 * limit, 1.1 * limit, 0.25]])
    r = loss_reports(losses, np.ones(4))[0]
    assert r["diverged"] == 1 and r["diverged_frac"] == 0.25 and r["samples"] == 4
    out = report_dict(r)
    assert type(out["samples"]) is int and type(out["diverged"]) is int and out["diverged"] == 1
    assert all(type(out[key]) is float for key in out if key not in ("samples", "diverged"))


def test_eval_losses_names_its_arguments_and_takes_one_prompt_chunks():
    import torch

    from training.evaluate import eval_generator, eval_losses
    V, W = (torch.as_tensor(a).unsqueeze(0) for a in numerics.gd_params(2, 0.3))
    gen = eval_generator(0, torch.device("cpu"))
    one, _ = eval_losses("cot", V, W, n=4, k=2, samples=1, generator=gen, chunk=1)
    assert one.shape == (1, 1)
    for kwargs, name in (({"samples": 0}, "samples"), ({"chunk": 0}, "chunk"), ({"w_scale": 0.0}, "w_scale")):
        with pytest.raises(ValueError, match=f"^{name} must be"):
            eval_losses("cot", V, W, n=4, k=2, generator=gen, **{"samples": 4, **kwargs})


def test_a_rank_one_sigma_has_a_basis_of_its_range():
    v = np.array([1.0, 2.0, 2.0]) / 3
    s = sigma_spectrum(2.0 * np.outer(v, v), 3)
    assert s.rank == 1 and s.basis.shape == (3, 1)
    np.testing.assert_allclose(abs(s.basis[:, 0] @ v), 1.0, atol=1e-12)


def test_nocot_reference_on_a_covariance_with_label_noise_is_the_noisy_optimum():
    sigma = [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]]
    ref = theory_reference(TrainConfig(**TINY, mode="nocot", sigma=sigma, noise=0.5))
    assert ref["value"] == float(theory.nocot_min_loss_sigma(8, sympy.diag(2, 1, 0), noise_var=sympy.Rational(1, 4)))
    assert ref["value"] > theory_reference(TrainConfig(**TINY, mode="nocot", sigma=sigma))["value"]


@pytest.mark.parametrize("k, exact", [(3, True), (4, False)])
def test_the_looped_rescaled_optimum_is_reported_while_the_exact_moments_suffice(monkeypatch, k, exact):
    """rescaled_gd needs the exact Wishart moments up to 2k: reported iff 2k <= MAX_EXACT_MOMENT
    (here lowered to 6, so that the boundary is at small k)."""
    monkeypatch.setattr(theory, "MAX_EXACT_MOMENT", 6)
    ref = theory_reference(TrainConfig(**dict(TINY, k=k), mode="looped"))
    assert ("rescaled_gd" in ref) == exact
