"""The cell cache: a finished cell is computed once, whatever run folder asks for it again, and
its key changes with everything that determines it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
from helpers import write_idx
from support.cell_cache import TINY

from advbench import run_matrix
from advbench.cli import main
from advbench.data import read_idx
from advbench.running.cell_cache import CellCache
from advbench.running.model_cache import ModelCache
from advbench.running.worker import Worker


@pytest.fixture
def computed(monkeypatch) -> Counter:
    """The cells attacked (by attack name) and the defended models prepared, this test."""
    counts: Counter = Counter()
    run_cell, defended_state = Worker.run_cell, Worker.defended_state

    def counting_run_cell(self, cell, defense, state):
        counts[cell.attack_name] += 1
        return run_cell(self, cell, defense, state)

    def counting_defended_state(self, defense):
        counts["defended models"] += 1
        return defended_state(self, defense)

    monkeypatch.setattr(Worker, "run_cell", counting_run_cell)
    monkeypatch.setattr(Worker, "defended_state", counting_defended_state)
    return counts


def results(folder) -> pd.DataFrame:
    return pd.read_parquet(folder / "results.parquet").drop(columns="seconds")


def manifest(folder) -> dict:
    return json.loads((folder / "manifest.json").read_text())


# ---- the key ------------------------------------------------------------------------------


# ---- runs ---------------------------------------------------------------------------------

def test_the_same_command_twice_computes_no_cell(tmp_path, computed, capsys):
    command = ["run", "--preset", "smoke", "--n-train", "1000", "--n-eval", "40", "--model",
               "sample_models:tiny_mlp", "--attacks", "fgsm,pgd-linf,fgm", "--defenses", "none",
               "--cache-dir", str(tmp_path / "cache")]
    assert main([*command, "--out", str(tmp_path / "first")]) == 0
    assert computed == {"fgsm": 1, "pgd-linf": 1, "fgm": 1, "defended models": 1}
    # where the time went: per phase in the manifest, one line in the output
    phases = manifest(tmp_path / "first")["phases"]
    assert set(phases["cells_by"]) == {"fgsm", "pgd-linf", "fgm"}
    assert phases["cells"] == pytest.approx(sum(phases["cells_by"].values()), abs=0.2)
    assert set(phases["training_by"]) == {"none"} and phases["data"] > 0
    assert sum(v for k, v in phases.items() if not k.endswith("_by")) <= (
        manifest(tmp_path / "first")["total_seconds"] + 0.5)
    assert "time: " in capsys.readouterr().out
    computed.clear()
    assert main([*command, "--out", str(tmp_path / "second")]) == 0
    assert computed == {}  # no cell attacked, and the defended model not even loaded
    assert "3 cells reused from the cache" in capsys.readouterr().out
    first, second = results(tmp_path / "first"), results(tmp_path / "second")
    worst = first[first["attack"] == "worst-case"]  # its certificates come from the cache
    assert len(worst) and worst["certified_accuracy"].notna().all()
    pd.testing.assert_frame_equal(first, second)
    assert (manifest(tmp_path / "second")["reused_cells"],
            manifest(tmp_path / "first")["reused_cells"]) == (3, 0)
    assert len(manifest(tmp_path / "second")["reused_cell_keys"]) == 3
    # the cells' pictures come with them, copied byte for byte, not drawn again
    pictures = sorted(p.name for p in (tmp_path / "first" / "figures").glob("*_examples.png"))
    assert len(pictures) == 3
    for name in pictures:
        assert ((tmp_path / "second" / "figures" / name).read_bytes()
                == (tmp_path / "first" / "figures" / name).read_bytes())

    computed.clear()
    assert main([*command, "--out", str(tmp_path / "fresh"), "--fresh"]) == 0
    assert computed == {"fgsm": 1, "pgd-linf": 1, "fgm": 1, "defended models": 1}
    assert "reused" not in capsys.readouterr().out
    assert manifest(tmp_path / "fresh")["reused_cells"] == 0
    pd.testing.assert_frame_equal(results(tmp_path / "fresh"), first)


def shifted_labels_copy(registry, folder: Path) -> Path:
    """Fashion-MNIST's files in ``folder`` (linked), each test label moved to the next class."""
    folder.mkdir()
    dataset = registry.get("dataset", "fashion-mnist").cls()
    for split in ("train", "test"):
        for name in dataset.load(split, None).files:
            (folder / Path(name).name).symlink_to(name)
    labels = folder / "t10k-labels-idx1-ubyte.gz"
    shifted = (read_idx(labels) + 1) % 10
    labels.unlink()
    write_idx(labels, shifted, compress=True)
    return folder


def test_cells_are_keyed_on_the_data_not_its_indices(tmp_path, computed, registry):
    """Issue #30: another --data-root with as many samples reused the cell computed on
    Fashion-MNIST (and the reverse); the key now hashes the evaluation images and labels."""
    copy = shifted_labels_copy(registry, tmp_path / "shifted")
    run = dict(attacks="fgsm", cache_dir=tmp_path / "cache", **TINY)
    first = run_matrix(**run)
    shifted = run_matrix(**run, data_root=copy)
    assert shifted.attrs["manifest"]["reused_cells"] == 0 and computed["fgsm"] == 2
    assert computed["defended models"] == 2  # the model itself (same training data) is cached
    assert shifted["clean_accuracy"].iloc[0] != first["clean_accuracy"].iloc[0]
    again = run_matrix(**run)  # the entry the copy wrote is not this data's
    assert again.attrs["manifest"]["reused_cells"] == 1 and computed["fgsm"] == 2
    pd.testing.assert_frame_equal(first.drop(columns="seconds"), again.drop(columns="seconds"))


def test_adding_an_attack_computes_only_its_cells(tmp_path, computed):
    run_matrix(attacks="fgsm", cache_dir=tmp_path, **TINY)
    computed.clear()
    frame = run_matrix(attacks="fgsm,fgm", cache_dir=tmp_path, **TINY)
    assert computed == {"fgm": 1, "defended models": 1}
    assert frame.attrs["manifest"]["reused_cells"] == 1
    assert list(frame["attack"]) == ["fgsm", "fgm"]


def test_fresh_reads_no_model_from_the_cache(tmp_path, monkeypatch):
    run_matrix(attacks="fgsm", cache_dir=tmp_path, **TINY)
    loads = []
    monkeypatch.setattr(ModelCache, "load", lambda *args: loads.append(1) or False)
    run_matrix(attacks="fgsm", cache_dir=tmp_path, fresh=True, **TINY)
    assert loads == []


def test_a_corrupt_entry_is_recomputed_and_replaced(tmp_path, computed):
    first = run_matrix(attacks="fgsm", cache_dir=tmp_path, **TINY)
    (entry,) = (tmp_path / "cells").glob("*.parquet")
    key = entry.stem
    entry.write_bytes(entry.read_bytes()[:100])  # cut by a crash
    computed.clear()
    again = run_matrix(attacks="fgsm", cache_dir=tmp_path, **TINY)
    assert computed["fgsm"] == 1
    assert CellCache(tmp_path / "cells").load(key) is not None  # written whole again
    pd.testing.assert_frame_equal(first.drop(columns="seconds"), again.drop(columns="seconds"))


# ---- the entries --------------------------------------------------------------------------


# ---- bench cache --------------------------------------------------------------------------


@pytest.mark.parametrize("argv, fix", [
    (["cache"], "list|clear"),
    (["cache", "clear", "--models", "--cells"], "not allowed with argument"),
    (["run", "--resume", "somewhere", "--fresh"], "drop one of the two"),
])
def test_usage_errors_are_one_line(argv, fix, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert fix in err and len(err.strip().splitlines()) == 1
