"""Guards from the mutation campaign (tests/mutation): a sweep's cell identity.

A cell's id decides which run directory a cell reuses and which rows a table has: two cells
whose runs give different numbers must never share one.  A grid over seeds is the common case
(a sweep over seeds that reused seed 0's cell would report one seed's numbers for every seed)."""
import numpy as np
import pytest

from training import TrainConfig
from training.sweep import cell_id, cell_name, parse_grid, same_config

BASE = {"mode": "cot", "d": 3, "n": 6, "k": 4, "eta": 0.3, "batch": 16, "iters": 5, "seed": 0}

# field -> another valid value; each changes what a CoT run computes
CHANGES = {
    "seed": 1, "d": 4, "n": 7, "k": 5, "eta": 0.25, "batch": 17, "iters": 6, "lr": 2e-3, "noise": 0.5,
    "param": "sparse", "mode": "looped", "dtype": "float64", "init_scale": 0.5, "optimizer": "sgd",
    "eval_samples": 999, "theory_samples": 999, "sigma": [[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
}


@pytest.mark.parametrize("field", sorted(CHANGES))
def test_every_field_that_changes_a_runs_numbers_changes_the_cell(field):
    base = TrainConfig(**BASE)
    other = TrainConfig(**{**BASE, field: CHANGES[field]})
    assert cell_id(other) != cell_id(base)
    assert cell_name(other) != cell_name(base)
    assert not same_config(base.to_dict(), other)
    assert same_config(other.to_dict(), other)


def test_a_grid_over_seeds_has_one_cell_per_seed():
    grid = parse_grid({"grid": {"seed": [0, 1, 2], "eta": [0.3, 0.2]}, "fixed": {k: v for k, v in BASE.items()
                                                                                  if k not in ("seed", "eta")}})
    cells = grid.expand()
    assert [(c.config.seed, c.config.eta) for c in cells] == [(s, e) for s in (0, 1, 2) for e in (0.3, 0.2)]
    assert len({c.id for c in cells}) == len({c.name for c in cells}) == 6
    assert [f"seed{s}" in c.name for c, s in zip(cells, (0, 0, 1, 1, 2, 2))] == [True] * 6


def test_the_id_is_stable_and_ignores_fields_that_change_no_number():
    a = TrainConfig(**BASE)
    assert cell_id(a) == cell_id(TrainConfig(**BASE)) and len(cell_id(a)) == 12
    assert cell_id(TrainConfig(**BASE, checkpoint_every=3)) == cell_id(a)
    assert cell_id(TrainConfig(**BASE, prefetch=False)) == cell_id(a)


@pytest.mark.parametrize("table, where", [
    ({"grid": {"param": ["isotropic", "full"], "d": [3]}, "fixed": {"init_ab": [0.1, 0.1]}},
     '[grid] cell param = "full", d = 3: '),
    ({"fixed": {"param": "full", "init_ab": [0.1, 0.1]}}, "[grid] cell (fixed only): "),
    ({"grid": {"d": [3]}, "cells": [{"d": 4}, {"param": "full", "init_ab": [0.1, 0.2]}]}, "[[cells]] entry 2: "),
])
def test_a_bad_cell_is_named_by_its_place_in_the_grid(table, where):
    with pytest.raises(ValueError) as err:
        parse_grid(table)
    assert str(err.value).startswith(where + "init_ab is for param 'isotropic' only")


def test_saved_fields_that_are_not_a_config_are_never_the_same_config():
    config = TrainConfig(**BASE)
    for saved in ("not a dict", None, {"d": 0}, {"no_such_field": 1}, {**BASE, "mode": "no such mode"}):
        assert not same_config(saved, config)


def test_a_grid_file_records_its_name_and_absolute_source(tmp_path, monkeypatch):
    from training.sweep import load_grid
    (tmp_path / "phase.toml").write_text('[grid]\nseed = [0, 1]\n[fixed]\nd = 3\nn = 6\n')
    monkeypatch.chdir(tmp_path)
    grid = load_grid("phase.toml")
    assert grid.name == "phase" and grid.source == str(tmp_path / "phase.toml")
    assert [c.config.seed for c in grid.expand()] == [0, 1]


def test_duplicate_grid_points_are_one_cell_at_their_first_place_and_the_rest_follow():
    cells = parse_grid({"grid": {"seed": [0, 0, 1], "eta": [0.3, 0.2]},
                        "fixed": {k: v for k, v in BASE.items() if k not in ("seed", "eta")}}).expand()
    assert [(c.config.seed, c.config.eta) for c in cells] == [(0, 0.3), (0, 0.2), (1, 0.3), (1, 0.2)]
    assert [c.index for c in cells] == [0, 1, 2, 3]
    assert cells[2].axes == {"seed": 1, "eta": 0.3}


def test_make_config_names_where_and_reads_a_number_as_c_identity_at_the_default_d():
    from training.sweep import make_config
    with pytest.raises(ValueError, match="^cell: d must be an integer >= 1"):
        make_config({"d": 0})
    with pytest.raises(ValueError, match="^mine: d must be an integer, got 'x'"):
        make_config({"d": "x"}, "mine")
    c = make_config({"sigma": 2.0})
    assert c.sigma == (2.0 * np.eye(TrainConfig().d)).tolist()


def test_a_cells_id_is_the_same_across_versions():
    """The id names the cell's directory: a rerun finds its finished cells by it, so the hash of
    a given config must not change (this one has been a5a08d44bf92 since the sweep package began)."""
    assert cell_id(TrainConfig(**BASE)) == "a5a08d44bf92"
    assert cell_name(TrainConfig(**BASE)) == "cot-full-d3-n6-k4-eta0.3-seed0-a5a08d44bf92"


def test_sigma_as_a_number_in_a_grid_cell():
    from training.sweep import make_config
    assert make_config({"d": 1, "n": 4, "sigma": 2.0}).sigma == [[2.0]]
    assert make_config({"d": 2, "sigma": 1.0}).sigma is None                      # 1 I is the default identity
    assert make_config({"d": 2, "sigma": 2}).sigma == [[2.0, 0.0], [0.0, 2.0]]
    with pytest.raises(ValueError, match="^cell: d must be an integer >= 1"):
        make_config({"d": 0, "sigma": 2.0})
    with pytest.raises(ValueError, match="^cell: sigma"):
        make_config({"d": 2, "sigma": -1.0})


def test_a_cells_label_shows_strings_quoted_and_other_values_as_python_writes_them():
    with pytest.raises(ValueError) as err:
        parse_grid({"grid": {"prefetch": [True], "param": ["full"]}, "fixed": {"init_ab": [0.1, 0.1]}})
    assert str(err.value).startswith('[grid] cell prefetch = True, param = "full": ')


@pytest.mark.parametrize("table, message", [
    ({"grid": {"seed": [0]}, "cells": [{"d": 3}, {"nonsense": 1}]},
     "[[cells]] entry 2 nonsense: unknown field (TrainConfig fields: mode, param, d, n, k, eta,"),
    ({"grid": {"nonsense": [1]}}, "[grid] nonsense: unknown field (TrainConfig fields: mode, param, d,"),
    ({"grid": {"d": ["x"]}}, "[grid] d: d must be an integer, got 'x'"),
    ({"fixed": {"d": "x"}}, "[fixed] d: d must be an integer, got 'x'"),
    ({"cells": [{"d": "x"}]}, "[[cells]] d: d must be an integer, got 'x'"),
    ({"cells": [1, 2]}, "cells must be an array of tables ([[cells]])"),
    ({"name": "a/b", "grid": {"seed": [0]}}, "name must be a non-empty string without '/', got 'a/b'"),
    ({"name": " ", "grid": {"seed": [0]}}, "name must be a non-empty string without '/'"),
    ({"name": 3, "grid": {"seed": [0]}}, "name must be a non-empty string without '/'"),
    ({"train": "yes", "grid": {"seed": [0]}}, "train must be true or false, got 'yes'"),
    ({"retries": -1, "grid": {"seed": [0]}}, "retries must be an integer >= 0, got -1"),
    ({"retries": True, "grid": {"seed": [0]}}, "retries must be an integer >= 0, got True"),
    ({"retries": 1.5, "grid": {"seed": [0]}}, "retries must be an integer >= 0, got 1.5"),
])
def test_a_bad_grid_is_one_error_naming_its_place(table, message):
    with pytest.raises(ValueError) as err:
        parse_grid(table)
    assert str(err.value).startswith(message)


def test_a_grids_settings_are_kept():
    table = {"grid": {"seed": [0, 1]}, "train": False, "retries": 0}
    g = parse_grid(table)
    assert (g.name, g.train, g.retries, g.raw, g.source) == ("sweep", False, 0, table, None)
    g = parse_grid({"grid": {"seed": [0]}, "retries": 3, "name": "mine"}, source="/x/mine.toml")
    assert (g.name, g.train, g.retries, g.source) == ("mine", True, 3, "/x/mine.toml")


@pytest.mark.parametrize("mode", ["cot", "nocot", "looped"])
def test_a_cells_name_is_its_modes_fields_then_its_id(mode):
    """A cell's directory and table name: mode, param, d, n, then k and eta where the mode reads
    them (not for no-CoT), the seed and the cell id (training/sweep/grid.py cell_name)."""
    c = TrainConfig(mode=mode, d=3, n=7, k=4, eta=0.25, seed=2)
    middle = "" if mode == "nocot" else "-k4-eta0.25"
    assert cell_name(c) == f"{mode}-full-d3-n7{middle}-seed2-{cell_id(c)}"
