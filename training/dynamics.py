"""Training dynamics (Theorem 4.1, docs/theory.md section 6): the reduced gradient-flow ODE laid over
real training.

``run_dynamics`` trains the ``isotropic`` LSA (``V31 = a I``, ``W13 = b I``, ``W24 = -1``) on the
teacher-forced CoT loss with plain gradient descent (SGD, no momentum) at a small learning rate,
on the training engine (``train_reduced``: ``training.engine.Engine`` with ``optimizer='sgd'``),
and compares ``(a, b)`` at time ``t = lr * step`` with the gradient flow of the population loss ``L(a, b)`` (``numerics.dynamics``, exact coefficients from
``theory.reduced``).  ``run_sparse_dynamics`` trains the ``sparse`` parametrisation from the
Assumption 4.1 initialisation and records the eigenvalues of ``V31`` and ``W13`` over time.

Data: a training set of ``pool`` prompts is drawn once (``TrainConfig.pool``); each step
takes the next ``batch`` prompts of a shuffled pass over it (every prompt once per pass).  The
average gradient over a pass is the gradient of the training-set loss, whose coefficients are
within ``~1/sqrt(pool)`` of the population ones; fresh minibatches within a pass keep each step
cheap, where a single fixed batch would bias the flow.

``max_relative_deviation`` is ``max_s ||(a, b)_train(s) - (a, b)_ode(lr s)|| / ||(a, b)_ode(lr s)||``
(Euclidean norms) over every step ``s = 0 .. steps``: a pointwise relative error along the whole
path, with the ODE's own position as the scale.  The flow's stages (``stage_times``) and what
they look like at the paper's setting: README, "Training dynamics (Theorem 4.1)".  The figures:
``training.app.dynamics_plot``.
"""
from __future__ import annotations

import json
import math
import os
import time

import numpy as np
import torch

from numerics.dynamics import (gradient_flow, reduced_argmin_a_value, reduced_coefficient_values,
                               reduced_hessian_value, reduced_loss_value, stage_times)
from theory.validation import check_finite, check_int, check_positive_finite

from .config import PAPER, TrainConfig
from .device import resolve_device
from .engine import Engine
from .engine import torch_threads
from .errors import TrainingDiverged
from .io import atomic_write_text

__all__ = ["default_schedule", "run_dynamics", "run_sparse_dynamics",
           "sparse_eigenvalues", "train_reduced"]

DEVIATION_DEFINITION = ("max over every step s of ||(a,b)_train(s) - (a,b)_ode(lr*s)||_2 / "
                        "||(a,b)_ode(lr*s)||_2 (population gradient flow, exact or Monte Carlo "
                        "coefficients)")


def default_schedule(coeffs: dict, a0: float, b0: float, *, lr: float | None = None,
                     steps: int | None = None) -> tuple:
    """``(lr, steps)`` for a run from ``(a0, b0)`` with reduced-loss coefficients ``coeffs``
    (either may be given; the other is chosen):

    * ``lr = 0.08 / lambda`` rounded down to 2 significant digits, ``lambda`` the larger of the
      stage-1 curvature ``d^2 L/da^2`` at ``(a0, b0)`` and the largest Hessian eigenvalue at the
      minimum: GD is then within ~2% of the flow in the fastest stage (Euler error ~ lr lambda / 4);
    * ``steps`` so that ``lr * steps`` covers the ODE's stage 2 and then ``ln(100) / mu`` (``mu``
      the smallest Hessian eigenvalue at the minimum): the distance to ``(-eta, 1)`` has shrunk
      another 100-fold by the end.

    At the paper's configuration from ``(-0.01, 0.01)`` this gives ``lr = 0.0052``, ``steps = 2589``
    (flow time 13.5; stage 2 ends at 10.8).
    Raises ValueError when the flow does not complete stage 2 (a start that does not converge).
    """
    eta = float(coeffs["eta"])
    H_min = reduced_hessian_value(coeffs, -eta, 1.0)
    mu_min, mu_max = np.linalg.eigvalsh(H_min)
    if lr is None:
        lam = max(reduced_hessian_value(coeffs, a0, b0)[0, 0], mu_max)
        raw = 0.08 / lam
        scale = 10.0 ** math.floor(math.log10(raw) - 1)
        lr = float(f"{math.floor(raw / scale) * scale:.2g}")
    if steps is None:
        horizon = 50.0 / mu_min
        flow = gradient_flow(coeffs, a0, b0, horizon, points=20001)
        end = stage_times(flow["t"], flow["a"], flow["b"], coeffs)["stage2_end"]
        if end is None:
            raise ValueError(f"the gradient flow from a0 = {a0}, b0 = {b0} does not reach (-eta, 1) "
                             f"by t = {horizon:.3g}; give steps explicitly")
        steps = int(math.ceil((end + math.log(100.0) / mu_min) / lr))
    return float(lr), int(steps)


def _check_config(d, n, k, eta, lr, steps, batch, pool, seed) -> tuple:
    d, n, k = check_int("d", d), check_int("n", n), check_int("k", k)
    eta, lr = check_positive_finite("eta", eta), check_positive_finite("lr", lr)
    steps, batch, pool = check_int("steps", steps), check_int("batch", batch), check_int("pool", pool)
    seed = check_int("seed", seed, 0)
    if pool < batch:
        raise ValueError(f"pool must be >= batch, got pool = {pool}, batch = {batch}")
    return d, n, k, eta, lr, steps, batch, pool, seed


#: Evaluation sizes of a dynamics run's engine (its evaluation points are only the first and the
#: last step; the dynamics are judged against the ODE, not by these).
DYNAMICS_EVAL = dict(eval_samples=2000, theory_samples=2000, structure_samples=512)


def train_reduced(param: str, *, d: int, n: int, k: int, eta: float, lr: float, steps: int,
                  batch: int, pool: int, seed: int = 0, device: str = "cpu", a0: float | None = None,
                  b0: float | None = None, init_scale: float | None = None, record=None,
                  threads: int | None = 1) -> dict:
    """Plain gradient descent (SGD, learning rate ``lr``, no momentum) on the teacher-forced CoT
    loss (docs/theory.md sections 3 and 6) for the ``isotropic`` or ``sparse`` parametrisation,
    float64, one model, run by the training engine (``training.engine.Engine`` with
    ``optimizer='sgd'`` and a fixed ``pool`` of prompts served in shuffled passes of ``batch``).

    ``isotropic`` starts at ``a = a0``, ``b = b0``; ``sparse`` at the Assumption 4.1
    initialisation of ``LSA`` with ``init_scale``.  ``record(params)`` (default: nothing) is
    applied to the parameters before the first step and after every step (``params``: the
    model's named parameters of model 0, detached copies, e.g. ``params['a']``); the copies are
    taken without a host synchronisation and ``record`` runs after training.  ``threads``: torch
    CPU threads during the run (restored afterwards; None leaves them).  Returns a dict with
    ``t`` (``lr * step``), ``loss`` (minibatch loss of each step, NaN for the final state),
    ``records``, ``summary`` (the engine's) and ``seconds``.  Raises ``TrainingDiverged`` on a
    non-finite loss."""
    d, n, k, eta, lr, steps, batch, pool, seed = _check_config(d, n, k, eta, lr, steps, batch, pool, seed)
    if param not in ("isotropic", "sparse"):
        raise ValueError(f"param must be 'isotropic' or 'sparse', got {param!r}")
    init_ab = [check_finite("a0", a0), check_finite("b0", b0)] if param == "isotropic" else None
    threads = None if threads is None else check_int("threads", threads)
    config = TrainConfig(mode="cot", param=param, d=d, n=n, k=k, eta=eta, batch=batch, iters=steps, lr=lr,
                         seed=seed, device=device, eval_every=steps, init_scale=init_scale, dtype="float64",
                         optimizer="sgd", pool=pool, init_ab=init_ab, threads=threads, progress=False,
                         prefetch=False, **DYNAMICS_EVAL)
    snapshots, losses = [], []

    def snapshot(model):
        return {name: p.detach()[0].clone() for name, p in model.named_parameters()}

    def on_step(engine, loss):
        snapshots.append(snapshot(engine.model))
        losses.append(loss[0])

    start = time.perf_counter()
    engine = Engine([config], on_step=on_step)
    snapshots.append(snapshot(engine.model))
    with torch_threads(threads):
        result = engine.run()[0]
    loss = np.append(torch.stack(losses).cpu().numpy(), np.nan)
    bad = np.flatnonzero(~np.isfinite(loss[:-1]))
    if bad.size:
        raise TrainingDiverged(int(bad[0]), f"loss {loss[bad[0]]}")
    record = record or (lambda params: None)
    return {"t": lr * np.arange(steps + 1), "loss": loss,
            "records": [record({name: p.cpu() for name, p in s.items()}) for s in snapshots],
            "summary": result.summary, "seconds": time.perf_counter() - start}


def _thin(n_points: int, max_points: int) -> np.ndarray:
    """Indices of at most ``max_points`` evenly spread points of ``n_points``, first and last kept."""
    if n_points <= max_points:
        return np.arange(n_points)
    return np.unique(np.linspace(0, n_points - 1, max_points).round().astype(int))


def _tolist(x) -> list:
    return [None if not math.isfinite(v) else float(v) for v in np.asarray(x, dtype=float).ravel()]


def _finished(result: dict, start: float, out: str | None, name: str) -> dict:
    """``result`` with its total ``seconds`` since ``start``, written as JSON to ``out/name``
    (when ``out`` is given)."""
    result["seconds"] = time.perf_counter() - start
    if out is not None:
        os.makedirs(out, exist_ok=True)
        atomic_write_text(os.path.join(out, name), json.dumps(result, indent=2) + "\n")
    return result


def _coefficient_summary(coeffs: dict) -> dict:
    return {"method": coeffs["method"], "samples": coeffs["samples"],
            "A": coeffs["A"], "B": coeffs["B"], "C": coeffs["C"],
            "se_A": coeffs["se_A"], "se_B": coeffs["se_B"], "se_C": coeffs["se_C"],
            "tr_S2_P2": _tolist(coeffs["tr_S2_P2"]), "tr_S2_P": _tolist(coeffs["tr_S2_P"]),
            "tr_S2": coeffs["tr_S2"]}


def run_dynamics(*, d: int = PAPER.d, n: int = PAPER.n, k: int = PAPER.k, eta: float = PAPER.eta,
                 lr: float | None = None, steps: int | None = None, a0: float = -0.01, b0: float = 0.01,
                 batch: int = PAPER.batch, pool: int = 40000, seed: int = 0, device: str = "cpu",
                 out: str | None = None, coefficient_method: str = "auto", max_points: int = 1001,
                 threads: int | None = 1) -> dict:
    """The reduced ODE laid over real training (Theorem 4.1, docs/theory.md section 6).

    Trains the isotropic model (``train_reduced``) from ``(a0, b0)`` for ``steps`` steps of
    learning rate ``lr`` (None: ``default_schedule``) and integrates the population gradient flow
    of ``L(a, b)`` (``numerics.dynamics.gradient_flow``; coefficients exact when
    ``2k <= MAX_EXACT_MOMENT``,
    else Monte Carlo with standard errors, ``coefficient_method``) to ``t = lr * steps``.
    ``threads`` as in ``train_reduced``.

    Returns a JSON-ready dict: ``max_relative_deviation`` (module docstring; ``deviation_definition``
    says it in words) and the time it occurs, ``final_a``, ``final_b`` (trained),
    ``ode_final_a``, ``ode_final_b``, ``stage_times`` (of the ODE, flow time, see
    ``numerics.dynamics.stage_times``: ``stage1_end``, ``a_90``, ``b_90``, ``stage2_end``),
    ``training_stage_times`` (same definition on the trained path), ``coefficients`` (method,
    values, standard errors), ``ode`` and ``training`` (``t``, ``a``, ``b``, ``loss``; training
    also ``population_loss`` = ``L`` at the trained ``(a, b)`` and ``relative_deviation``; at most
    ``max_points`` points each), ``final_loss`` (``L`` at the trained end point), ``saddle`` and
    ``minimum`` of ``L``, ``stage1_plateau_a`` (``a*(b0)``, where stage 1 takes ``a``),
    ``local_loss_rate`` (``2 mu``, ``mu`` the smallest Hessian eigenvalue at the minimum: the rate
    of the final linear convergence ``L ~ exp(-2 mu t)``) and ``measured_loss_rate`` (the decay
    rate of the trained path's ``L`` over the last 10% of the run), ``config``, ``train_seconds``
    and ``seconds``.  With ``out``, writes ``dynamics.json`` there (the figure:
    ``training.app.dynamics_plot.plot_dynamics``).
    """
    d, n, k, eta, _, _, batch, pool, seed = _check_config(d, n, k, eta, lr or 1.0, steps or 1, batch,
                                                          pool, seed)
    lr = None if lr is None else check_positive_finite("lr", lr)
    steps = None if steps is None else check_int("steps", steps)
    a0, b0 = check_finite("a0", a0), check_finite("b0", b0)
    max_points = check_int("max_points", max_points, 2)
    start = time.perf_counter()
    coeffs = reduced_coefficient_values(d, n, eta, k, method=coefficient_method, seed=seed)
    lr, steps = default_schedule(coeffs, a0, b0, lr=lr, steps=steps)

    def record(params):
        return (float(params["a"]), float(params["b"]))

    run = train_reduced("isotropic", d=d, n=n, k=k, eta=eta, lr=lr, steps=steps, batch=batch,
                        pool=pool, seed=seed, device=device, a0=a0, b0=b0, record=record,
                        threads=threads)
    t = run["t"]
    a_tr, b_tr = np.array(run["records"]).T
    ode = gradient_flow(coeffs, a0, b0, float(t[-1]), t_eval=t)
    with np.errstate(divide="ignore", invalid="ignore"):
        dev = np.hypot(a_tr - ode["a"], b_tr - ode["b"]) / np.hypot(ode["a"], ode["b"])
    dev[np.isnan(dev)] = 0.0                       # 0 / 0: both paths at the origin
    worst = int(np.argmax(dev))
    keep = _thin(t.size, max_points)
    A, B, C = coeffs["A"], coeffs["B"], coeffs["C"]
    mu = float(np.linalg.eigvalsh(reduced_hessian_value(coeffs, -eta, 1.0))[0])
    pop = reduced_loss_value(coeffs, a_tr, b_tr)
    tail = slice(int(0.9 * t.size), t.size)
    slope = np.polyfit(t[tail], np.log(np.maximum(pop[tail], 1e-300)), 1)[0] if t.size >= 20 else None
    result = {
        "max_relative_deviation": float(dev[worst]),
        "max_relative_deviation_time": float(t[worst]),
        "deviation_definition": DEVIATION_DEFINITION,
        "final_a": float(a_tr[-1]), "final_b": float(b_tr[-1]),
        "ode_final_a": float(ode["a"][-1]), "ode_final_b": float(ode["b"][-1]),
        "target_a": -eta, "target_b": 1.0,
        "stage_times": stage_times(t, ode["a"], ode["b"], coeffs),
        "training_stage_times": stage_times(t, a_tr, b_tr, coeffs),
        "final_loss": float(reduced_loss_value(coeffs, a_tr[-1], b_tr[-1])),
        "coefficient_method": coeffs["method"],
        "coefficients": _coefficient_summary(coeffs),
        "minimum": {"a": -eta, "b": 1.0},
        "saddle": {"a": 0.0, "b": (C - B) / (B - A) if B != A else None},
        "stage1_plateau_a": float(reduced_argmin_a_value(coeffs, b0)),
        "local_loss_rate": 2 * mu,
        "measured_loss_rate": None if slope is None else float(-slope),
        "ode": {"t": _tolist(t[keep]), "a": _tolist(ode["a"][keep]), "b": _tolist(ode["b"][keep]),
                "loss": _tolist(ode["loss"][keep])},
        "training": {"t": _tolist(t[keep]), "a": _tolist(a_tr[keep]), "b": _tolist(b_tr[keep]),
                     "loss": _tolist(run["loss"][keep]),
                     "population_loss": _tolist(pop[keep]),
                     "relative_deviation": _tolist(dev[keep])},
        "config": {"d": d, "n": n, "k": k, "eta": eta, "lr": lr, "steps": steps, "a0": a0, "b0": b0,
                   "batch": batch, "pool": pool, "seed": seed, "device": str(resolve_device(device)),
                   "dtype": "float64", "optimizer": "SGD (no momentum)", "time": "t = lr * step",
                   "threads": threads},
        "train_seconds": run["seconds"],
    }
    return _finished(result, start, out, "dynamics.json")


# ----------------------------------------------------------------------------- sparse model


def sparse_eigenvalues(V31: np.ndarray, W13: np.ndarray, Q: np.ndarray) -> dict:
    """Spectral summary of the sparse blocks in the eigenbasis ``Q`` of the initialisation
    (Assumption 4.1: ``V31(0)``, ``W13(0)`` share eigenvectors): ``v``, ``w`` = the diagonals of
    ``Q^T V31 Q`` and ``Q^T W13 Q`` (the eigenvalues while the blocks stay diagonal in Q),
    ``v_sym``, ``w_sym`` = eigenvalues of the symmetric parts (ascending), and ``offdiag`` = the
    largest relative off-diagonal Frobenius energy of the two in the Q basis."""
    def split(M):
        R = Q.T @ M @ Q
        diag = np.diag(R).copy()
        off = np.linalg.norm(R - np.diag(diag)) / max(np.linalg.norm(R), 1e-300)
        return diag, np.linalg.eigvalsh((M + M.T) / 2), off
    v, v_sym, v_off = split(V31)
    w, w_sym, w_off = split(W13)
    return {"v": v, "w": w, "v_sym": v_sym, "w_sym": w_sym, "offdiag": max(v_off, w_off)}


def run_sparse_dynamics(*, d: int = PAPER.d, n: int = PAPER.n, k: int = PAPER.k, eta: float = PAPER.eta,
                        lr: float | None = None, steps: int | None = None,
                        init_scale: float = 0.02, batch: int = PAPER.batch,
                        pool: int = 40000, seed: int = 0, device: str = "cpu", out: str | None = None,
                        max_points: int = 701, threads: int | None = 1) -> dict:
    """Beyond isotropic (docs/theory.md section 6): train the ``sparse`` parametrisation (``V31``,
    ``W13`` free, ``W24 = -1``) from the Assumption 4.1 initialisation of ``training.model.LSA``
    (``W13(0) = Q diag(l) Q^T = -V31(0)``, ``l`` uniform in ``[init_scale/2, init_scale]``) with
    the same GD as ``run_dynamics``, recording the eigenvalues of ``V31`` and ``W13`` over time
    (``sparse_eigenvalues``).

    Time.  On ``V31 = a I`` the matrix gradient is ``(dL/da / d) I``, so the matrix flow moves an
    isotropic point ``d`` times slower than the reduced ODE: reduced time is ``tau = lr step / d``
    (hence ``lr=None`` is ``d`` times ``default_schedule``'s isotropic one, for the mean initial
    eigenvalue ``0.75 init_scale``; ``steps=None`` is its step count).  Over each eigen-direction ``j``
    the reduced ODE started at ``(v_j(0), w_j(0))`` is laid in reduced time (what the direction
    would do if the whole model were isotropic at its value).

    Returns a JSON-ready dict: ``t`` (``lr * step``) and ``tau`` (``t / d``); ``v``, ``w`` (``d``
    eigenvalue paths: the diagonal in the initial eigenbasis), ``v_sym``, ``w_sym``, ``offdiag``,
    ``loss``; ``ode_v``, ``ode_w`` per direction; ``direction_stage_times`` and
    ``ode_direction_stage_times`` (``numerics.dynamics.stage_times`` of each ``(v_j, w_j)`` path,
    in reduced time); ``initial_*``, ``final_v``, ``final_w``, ``max_offdiag``, ``config``,
    ``seconds``.  With ``out``, writes ``sparse_dynamics.png`` and ``sparse_dynamics.json``.
    """
    d, n, k, eta, _, _, batch, pool, seed = _check_config(d, n, k, eta, lr or 1.0, steps or 1, batch,
                                                          pool, seed)
    lr = None if lr is None else check_positive_finite("lr", lr)
    steps = None if steps is None else check_int("steps", steps)
    init_scale = check_positive_finite("init_scale", init_scale)
    max_points = check_int("max_points", max_points, 2)
    start = time.perf_counter()
    coeffs = reduced_coefficient_values(d, n, eta, k, seed=seed)
    lr_iso, steps = default_schedule(coeffs, -0.75 * init_scale, 0.75 * init_scale,
                                     lr=None if lr is None else lr / d, steps=steps)
    lr = d * lr_iso if lr is None else lr
    basis = {}

    def record(params):
        V31 = params["V31"].numpy()
        W13 = params["W13"].numpy()
        if "Q" not in basis:
            basis["Q"] = np.linalg.eigh((W13 + W13.T) / 2)[1]
        return sparse_eigenvalues(V31, W13, basis["Q"])

    run = train_reduced("sparse", d=d, n=n, k=k, eta=eta, lr=lr, steps=steps, batch=batch, pool=pool,
                        seed=seed, device=device, init_scale=init_scale, record=record,
                        threads=threads)
    t, recs = run["t"], run["records"]
    tau = t / d
    keep = _thin(t.size, max_points)
    v = np.array([r["v"] for r in recs])            # (steps + 1, d)
    w = np.array([r["w"] for r in recs])
    ode_v, ode_w, ode_stages, stages = [], [], [], []
    for j in range(d):
        flow = gradient_flow(coeffs, v[0, j], w[0, j], float(tau[-1]), t_eval=tau[keep])
        ode_v.append(_tolist(flow["a"]))
        ode_w.append(_tolist(flow["b"]))
        ode_stages.append(stage_times(flow["t"], flow["a"], flow["b"], coeffs))
        stages.append(stage_times(tau, v[:, j], w[:, j], coeffs))
    result = {
        "t": _tolist(t[keep]), "tau": _tolist(tau[keep]),
        "v": [_tolist(v[keep, j]) for j in range(d)], "w": [_tolist(w[keep, j]) for j in range(d)],
        "v_sym": [_tolist(recs[i]["v_sym"]) for i in keep],
        "w_sym": [_tolist(recs[i]["w_sym"]) for i in keep],
        "offdiag": _tolist([recs[i]["offdiag"] for i in keep]),
        "loss": _tolist(run["loss"][keep]),
        "ode_v": ode_v, "ode_w": ode_w,
        "direction_stage_times": stages, "ode_direction_stage_times": ode_stages,
        "initial_v": _tolist(v[0]), "initial_w": _tolist(w[0]),
        "final_v": _tolist(v[-1]), "final_w": _tolist(w[-1]),
        "max_offdiag": float(max(r["offdiag"] for r in recs)),
        "final_offdiag": float(recs[-1]["offdiag"]),
        "target_v": -eta, "target_w": 1.0,
        "coefficient_method": coeffs["method"],
        "config": {"d": d, "n": n, "k": k, "eta": eta, "lr": lr, "steps": steps,
                   "init_scale": init_scale, "batch": batch, "pool": pool, "seed": seed,
                   "device": str(resolve_device(device)), "dtype": "float64",
                   "optimizer": "SGD (no momentum)", "time": "t = lr * step, tau = t / d"},
        "train_seconds": run["seconds"],
    }
    return _finished(result, start, out, "sparse_dynamics.json")
