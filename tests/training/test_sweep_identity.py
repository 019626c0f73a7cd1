"""A sweep cell's identity (issue 25, item 3; issue 26's surviving mutant): a cell is the
configuration that determines its result for its mode.

* every field that changes a run's numbers changes the cell's id, the seed included, in every
  mode; for no-CoT, k and eta do not (``grid.MODE_NEUTRAL_FIELDS``), and a no-CoT run is bitwise
  the same for any k and eta (so sharing its run is exact, not an approximation);
* the README's phase grid (48 points) needs 30 runs: its 24 no-CoT points are 6 cells;
* a sweep over k and two seeds trains each no-CoT configuration once, fills a row per grid point
  from it (the point's own k in its row), and gives two seeds two rows of different numbers.

Kinds: argument checks (ids), training (tiny CPU runs, bitwise comparisons).
"""
import json
import threading
from pathlib import Path

import pandas as pd
import pytest
import tomllib

from training import TrainConfig, train
from training.sweep import (
    MODE_NEUTRAL_FIELDS,
    NEUTRAL_FIELDS,
    SWEEP_OWNED,
    LocalExecutor,
    cell_id,
    cell_name,
    config_fields,
    parse_grid,
    result_config,
    run_sweep,
    same_config,
)

ROOT = Path(__file__).resolve().parents[2]
BASE = {"d": 3, "n": 6, "k": 4, "eta": 0.3, "batch": 16, "iters": 5, "seed": 0, "device": "cpu"}
#: Every field but the sweep's own and the neutral ones -> (another valid value, a mode and param
#: in which the field is read).  A field added to TrainConfig must be added here.
OTHER = {
    "mode": ("looped", None), "param": ("sparse", None), "d": (4, None), "n": (7, None), "k": (5, None),
    "eta": (0.25, None), "batch": (17, None), "iters": (6, None), "lr": (2e-3, None), "seed": (1, None),
    "device": ("auto", None), "eval_every": (2, None), "eval_samples": (999, None),
    "sigma": ([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], None), "ood_sigmas": ({"two": 2.0}, None),
    "noise": (0.5, None), "init_scale": (0.5, None), "dtype": ("float64", None), "theory_samples": (999, None),
    "structure_samples": (99, None), "clip_grad": (0.5, None), "threads": (2, None), "optimizer": ("sgd", None),
    "pool": (32, None), "init_ab": ([-0.1, 0.2], ("cot", "isotropic")), "loop_curriculum": (3, ("looped", "full")),
    "loop_window": (2, ("looped", "full")),
}


def test_the_table_of_other_values_covers_every_field_of_a_cell():
    defining = set(config_fields()) - set(SWEEP_OWNED) - set(NEUTRAL_FIELDS)
    assert set(OTHER) == defining


@pytest.mark.parametrize("mode", ["cot", "nocot", "looped"])
@pytest.mark.parametrize("field", sorted(OTHER))
def test_every_field_that_determines_the_result_changes_the_cell(mode, field):
    """Argument check: changing a field changes the cell's id, name and config comparison, in
    each mode; but the fields the mode never reads (no-CoT: k and eta), which leave the id as it
    is (the cell is shared)."""
    value, where = OTHER[field]
    if where is not None and where[0] != mode:
        pytest.skip(f"{field} is read in mode {where[0]} only")
    if field == "mode":
        value = "cot" if mode != "cot" else "nocot"
    fields = dict(BASE, mode=mode, **({"param": where[1]} if where else {}))
    base = TrainConfig(**fields).validate()
    other = TrainConfig(**{**fields, field: value}).validate()
    if field in MODE_NEUTRAL_FIELDS.get(mode, ()):
        assert cell_id(other) == cell_id(base) and cell_name(other) == cell_name(base)
        assert same_config(base.to_dict(), other) and result_config(other) == result_config(base)
    else:
        assert cell_id(other) != cell_id(base) and cell_name(other) != cell_name(base)
        assert not same_config(base.to_dict(), other)


def test_the_seed_is_part_of_every_cell_name_and_id():
    for mode in ("cot", "nocot", "looped"):
        ids = {cell_id(TrainConfig(**dict(BASE, mode=mode, seed=s))) for s in range(5)}
        assert len(ids) == 5
        assert "-seed3-" in cell_name(TrainConfig(**dict(BASE, mode=mode, seed=3)))


def test_nocot_runs_are_bitwise_the_same_for_any_k_and_eta():
    """Training: the fields MODE_NEUTRAL_FIELDS names really change no number of a no-CoT run
    (only the config echoed in its summary and the timings differ)."""
    fields = dict({k: v for k, v in BASE.items() if k not in ("k", "eta")}, mode="nocot", iters=30, batch=32, eval_every=10, eval_samples=500, theory_samples=2000,
                  structure_samples=64, progress=False, ood_sigmas={"two": 2.0})
    a = train(TrainConfig(**fields, k=1, eta=0.4)).summary
    b = train(TrainConfig(**fields, k=7, eta=1.5)).summary
    for s in (a, b):
        for key in ("config", "seconds", "train_seconds", "ms_per_iteration"):
            s.pop(key, None)
    assert json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def test_the_phase_grid_needs_30_runs_for_its_48_points():
    grid = parse_grid(tomllib.loads((ROOT / "examples" / "sweeps" / "phase.toml").read_text()))
    points = grid.expand()
    nocot = [p for p in points if p.config.mode == "nocot"]
    assert len(points) == 48 and len(nocot) == 24
    assert len({p.id for p in nocot}) == 6 and len({p.id for p in points}) == 30
    assert all(p.name == p.name.replace(f"-k{p.config.k}-", "-") for p in nocot)


def test_a_sweep_over_k_and_seeds_trains_each_nocot_config_once(tmp_path):
    """Training: mode x k x seed (8 points): 6 runs (4 CoT, 2 no-CoT); each no-CoT row is its
    seed's one run, bitwise training.train of the point's own config, with its own k in the row;
    the two seeds give different numbers; a rerun runs nothing."""
    grid = {"name": "share", "grid": {"mode": ["cot", "nocot"], "k": [1, 3], "seed": [0, 1]},
            "fixed": dict(BASE, k=None, seed=None, iters=20, batch=32, eval_every=10, eval_samples=500,
                          theory_samples=2000, structure_samples=64)}
    grid["fixed"] = {k: v for k, v in grid["fixed"].items() if v is not None}
    box = {}
    with LocalExecutor(2) as pool:
        thread = threading.Thread(target=lambda: box.update(r=run_sweep(grid, tmp_path / "s", executor=pool,
                                                                          progress=False)), daemon=True)
        thread.start()
        thread.join(240)
        assert "r" in box, "the sweep did not finish within 240 s"
        result = box["r"]
        again = run_sweep(grid, tmp_path / "s", executor=pool, progress=False)
    table = result.table
    assert len(table) == 8 and result.distinct == 6 and (table["status"] == "done").all()
    assert len(list((tmp_path / "s" / "cells").glob("*/cell.json"))) == 6
    nocot = table[table["mode"] == "nocot"]
    assert list(nocot["k"]) == [1, 1, 3, 3] and list(nocot["seed"]) == [0, 1, 0, 1] and nocot["cell"].nunique() == 2
    for seed in (0, 1):
        rows = nocot[nocot["seed"] == seed]
        assert rows["final_eval_loss"].nunique() == 1 and rows["median"].nunique() == 1
    s = train(TrainConfig(**{**grid["fixed"], "mode": "nocot", "k": 3, "seed": 1, "checkpoint_every": 10,
                             "progress": False})).summary
    assert nocot.iloc[3]["final_eval_loss"] == s["final_eval_loss"]
    by_seed = table.set_index(["mode", "k", "seed"])["final_eval_loss"]
    assert all(by_seed[(m, k, 0)] != by_seed[(m, k, 1)] for m in ("cot", "nocot") for k in (1, 3))
    assert again.ran == 0 and again.reused == 8
    pd.testing.assert_frame_equal(again.table.drop(columns=["seconds"]), table.drop(columns=["seconds"]))
