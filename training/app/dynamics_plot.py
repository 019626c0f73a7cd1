"""The figures of ``cotgd dynamics`` (Theorem 4.1, docs/theory.md section 6): ``dynamics.png`` of
``training.dynamics.run_dynamics`` and ``sparse_dynamics.png`` of ``run_sparse_dynamics``."""
from __future__ import annotations

import numpy as np

from numerics.dynamics import reduced_argmin_a_value

from ..io import atomic_write_bytes


def _figure(ncols: int, width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols)


def _save(fig, path: str) -> str:
    import io
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120)
    atomic_write_bytes(path, buffer.getvalue())
    return path


def _mark_stages(ax, stages: dict, style: str = "--") -> None:
    colours = {"stage1_end": "tab:purple", "a_90": "tab:green", "b_90": "tab:orange"}
    for name, colour in colours.items():
        if stages.get(name) is not None:
            ax.axvline(stages[name], color=colour, ls=style, lw=1, label=f"{name} = {stages[name]:.2f}")


def plot_dynamics(result: dict, path: str) -> str:
    """``dynamics.png`` of ``run_dynamics``: (left) the path in the (a, b) plane, ODE curve and
    training points, start, the minimum (-eta, 1), the saddle and the slow manifold ``a = a*(b)``
    (from the result's ``coefficients``); (middle) ``a(t)`` and ``b(t)``; (right) the loss vs time on a log
    scale, ODE and training (minibatch and population loss at the trained point), with the stage
    times of the ODE marked."""
    fig, (ax0, ax1, ax2) = _figure(3, 16, 4.8)
    ode, tr, cfg = result["ode"], result["training"], result["config"]
    eta = cfg["eta"]
    stride = max(1, len(tr["t"]) // 60)
    ax0.plot(ode["a"], ode["b"], color="k", lw=1.5, label="gradient flow (ODE)")
    ax0.plot(tr["a"][::stride], tr["b"][::stride], "o", ms=3.5, color="tab:red", alpha=0.7,
             label="GD training (isotropic)")
    coeffs = dict(result["coefficients"], k=cfg["k"], eta=eta)
    bs = np.linspace(min(min(ode["b"]), 0.0), max(max(ode["b"]), 1.0) * 1.05, 200)
    ax0.plot(reduced_argmin_a_value(coeffs, bs), bs, ":", color="tab:blue",
             label="slow manifold a*(b) = argmin_a L")
    ax0.plot([cfg["a0"]], [cfg["b0"]], "s", color="tab:gray", label="start")
    ax0.plot([-eta], [1.0], "*", ms=14, color="gold", mec="k", label="minimum (-eta, 1)")
    ax0.set_xlabel("a  (V31 = a I)")
    ax0.set_ylabel("b  (W13 = b I)")
    ax0.set_title(f"(a, b) plane, d={cfg['d']}, n={cfg['n']}, k={cfg['k']}, eta={eta}")
    ax0.legend(fontsize=8)
    ax1.plot(ode["t"], ode["a"], color="k", lw=1.2, label="a (ODE)")
    ax1.plot(ode["t"], ode["b"], color="k", lw=1.2, ls="-.", label="b (ODE)")
    ax1.plot(tr["t"][::stride], tr["a"][::stride], "o", ms=2.5, color="tab:red", label="a (training)")
    ax1.plot(tr["t"][::stride], tr["b"][::stride], "^", ms=2.5, color="tab:blue", label="b (training)")
    ax1.axhline(-eta, color="gray", lw=0.6)
    ax1.axhline(1.0, color="gray", lw=0.6)
    _mark_stages(ax1, result["stage_times"])
    ax1.set_xlabel("time t = lr * step")
    ax1.set_title(f"a(t), b(t); max relative deviation {result['max_relative_deviation']:.3f}")
    ax1.legend(fontsize=7)
    floor = 1e-12
    ax2.semilogy(ode["t"], np.maximum(np.array(ode["loss"], dtype=float), floor), color="k", lw=1.5,
                 label="L(a, b) along the ODE")
    mb = np.array([np.nan if v is None else v for v in tr["loss"]], dtype=float)
    ax2.semilogy(tr["t"], np.maximum(mb, floor), color="tab:red", lw=0.5, alpha=0.5,
                 label="training minibatch loss")
    ax2.semilogy(tr["t"], np.maximum(np.array(tr["population_loss"], dtype=float), floor), "--",
                 color="tab:red", lw=1.2, label="L(a, b) at the trained point")
    _mark_stages(ax2, result["stage_times"])
    ax2.set_xlabel("time t = lr * step")
    ax2.set_ylabel("CoT loss")
    measured = result["measured_loss_rate"]
    ax2.set_title(f"CoT loss (final rate: theory {result['local_loss_rate']:.2f}"
                  + ("" if measured is None else f", trained {measured:.2f}") + ")")
    ax2.legend(fontsize=7)
    return _save(fig, path)


def plot_sparse_dynamics(result: dict, path: str) -> str:
    """``sparse_dynamics.png`` of ``run_sparse_dynamics``, against reduced time ``tau``:
    eigenvalues of ``V31`` and of ``W13`` (solid: training, dotted: the reduced ODE of each
    direction); their spread (max - min over directions, training vs independent ODEs) and the
    off-diagonal energy in the initial eigenbasis; the CoT loss with the per-direction stage ends."""
    fig, (ax0, ax1, ax2, ax3) = _figure(4, 20, 4.8)
    tau = np.array(result["tau"])
    cfg = result["config"]
    v, w = np.array(result["v"], dtype=float), np.array(result["w"], dtype=float)
    ov, ow = np.array(result["ode_v"], dtype=float), np.array(result["ode_w"], dtype=float)
    for j in range(v.shape[0]):
        c = f"C{j % 10}"
        ax0.plot(tau, v[j], color=c, lw=1)
        ax0.plot(tau, ov[j], ":", color=c, lw=1)
        ax1.plot(tau, w[j], color=c, lw=1)
        ax1.plot(tau, ow[j], ":", color=c, lw=1)
    ax0.axhline(result["target_v"], color="gray", lw=0.6)
    ax1.axhline(result["target_w"], color="gray", lw=0.6)
    ax0.set_title("eigenvalues of V31 (solid: GD, dotted: reduced ODE)")
    ax1.set_title("eigenvalues of W13 (solid: GD, dotted: reduced ODE)")
    ax2.semilogy(tau, np.ptp(v, axis=0), color="tab:red", label="spread of V31 eigenvalues (GD)")
    ax2.semilogy(tau, np.ptp(ov, axis=0), ":", color="tab:red", label="same, independent ODEs")
    ax2.semilogy(tau, np.ptp(w, axis=0), color="tab:blue", label="spread of W13 eigenvalues (GD)")
    ax2.semilogy(tau, np.ptp(ow, axis=0), ":", color="tab:blue", label="same, independent ODEs")
    ax2.semilogy(tau, np.maximum(np.array(result["offdiag"], dtype=float), 1e-12), color="k", lw=0.8,
                 label="off-diagonal energy (initial eigenbasis)")
    ax2.set_ylim(bottom=1e-5)
    ax2.set_title("spread across directions")
    ax2.legend(fontsize=7)
    loss = np.array([np.nan if x is None else x for x in result["loss"]], dtype=float)
    ax3.semilogy(tau, loss, color="k", lw=1, label="training minibatch loss")
    for key, colour, label in (("stage1_end", "tab:purple", "stage 1 ends"),
                               ("stage2_end", "tab:orange", "stage 2 ends")):
        times = [s[key] for s in result["direction_stage_times"] if s[key] is not None]
        if times:
            ax3.axvspan(min(times), max(times) + 1e-3 * tau[-1], color=colour, alpha=0.3,
                        label=f"{label} ({min(times):.2f}-{max(times):.2f})")
    ax3.set_title(f"sparse model, d={cfg['d']}, n={cfg['n']}, k={cfg['k']}, eta={cfg['eta']}")
    ax3.legend(fontsize=8)
    for ax in (ax0, ax1, ax2, ax3):
        ax.set_xlabel("reduced time tau = lr * step / d")
    return _save(fig, path)
