"""The cell cache: a finished cell is computed once, whatever run folder asks for it again, and
its key changes with everything that determines it."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing

import pytest
import torch
from helpers import assert_one_line_error
from support.cell_cache import TINY, cell, entry_row
from torch import nn

from advbench import load_registry
from advbench.cli import main
from advbench.running import keys as keys_module
from advbench.running.cell_cache import CachedCell, CellCache
from advbench.running.model_cache import ModelCache, content_key
from advbench.running.plan import RunConfig, build_plan
from advbench.running.worker import Worker
from advbench.threat import ThreatModel

# ---- the key ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def plan():
    config = RunConfig(attacks="fgsm", **{**TINY, "defenses": "none"})
    return build_plan(config, load_registry())


def replace_config(plan, **changes):
    return dataclasses.replace(plan, config=dataclasses.replace(plan.config, **changes))


def replace_source(entry, **changes):
    return dataclasses.replace(entry, source=dataclasses.replace(entry.source, **changes))


def other_defense_version(plan):
    return dataclasses.replace(plan, defenses=[replace_source(plan.defenses[0], version="9")])


def other_train_data(plan):
    return dataclasses.replace(plan, train=dataclasses.replace(plan.train, fingerprint="other"))


def other_training(plan):
    settings = {name: dataclasses.replace(s, epochs=s.epochs + 1)
                for name, s in plan.settings.items()}
    return dataclasses.replace(plan, settings=settings)


def other_evaluation(plan, labels: bool):
    """The same sample indices, with one label, or one pixel, changed."""
    data = plan.evaluation["test"]
    x, y = data.x.clone(), data.y.clone()
    if labels:
        y[0] = (y[0] + 1) % 10
    else:
        x[0, 0, 0, 0] = 1 - x[0, 0, 0, 0]
    return dataclasses.replace(plan, evaluation={"test": dataclasses.replace(
        data, x=x, y=y, fingerprint=None)})


# Each part: (plan, cell, attack config, user model) → the same with that part changed.
PARTS = {
    "defended model: training data": lambda p, c, a, u: (other_train_data(p), c, a, u),
    "defended model: defense version": lambda p, c, a, u: (other_defense_version(p), c, a, u),
    "defended model: training config": lambda p, c, a, u: (other_training(p), c, a, u),
    "defended model: model plugin version": lambda p, c, a, u: (dataclasses.replace(
        p, model_source=(p.model_source[0], "9")), c, a, u),
    "defended model: user weights": lambda p, c, a, u: (p, c, a, nn.Linear(2, 2)),
    "attack class": lambda p, c, a, u: (p, dataclasses.replace(c, attack=dataclasses.replace(
        c.attack, cls=type("Other", (c.attack.cls,), {}))), a, u),
    "attack distribution": lambda p, c, a, u: (p, dataclasses.replace(
        c, attack=replace_source(c.attack, distribution="fork")), a, u),
    "attack version": lambda p, c, a, u: (p, dataclasses.replace(
        c, attack=replace_source(c.attack, version="9")), a, u),
    "attack config": lambda p, c, a, u: (p, c, json.dumps({"steps": 3}), u),
    "norm": lambda p, c, a, u: (p, dataclasses.replace(c, threat=ThreatModel("l2", 0.1)), a, u),
    "eps": lambda p, c, a, u: (p, dataclasses.replace(c, threat=ThreatModel("linf", 0.2)), a, u),
    "targeted": lambda p, c, a, u: (replace_config(p, targeted="random"), c, a, u),
    "evaluation labels": lambda p, c, a, u: (other_evaluation(p, labels=True), c, a, u),
    "evaluation images": lambda p, c, a, u: (other_evaluation(p, labels=False), c, a, u),
    "sample hash": lambda p, c, a, u: (dataclasses.replace(
        p, sample_hashes={**p.sample_hashes, "test": "other"}), c, a, u),
    "split": lambda p, c, a, u: (dataclasses.replace(
        p, sample_hashes={**p.sample_hashes, "train": p.sample_hashes["test"]},
        evaluation={**p.evaluation, "train": p.evaluation["test"]}),
        dataclasses.replace(c, split="train"), a, u),
    "seed": lambda p, c, a, u: (replace_config(p, seed=1), c, a, u),
    "eot samples": lambda p, c, a, u: (replace_config(p, eot_samples=2), c, a, u),
    "batch size": lambda p, c, a, u: (replace_config(p, batch_size=7), c, a, u),
    "device": lambda p, c, a, u: (dataclasses.replace(p, device=torch.device("cpu", 0)), c, a, u),
}


def cache_key(plan, cell, attack_config, user_model) -> str:
    defense = plan.build(plan.defenses[0])
    return Worker(plan, user_model).keys.cache_key(cell, defense, attack_config, "{}")


@pytest.mark.parametrize("part", [*PARTS, "bench's code"])
def test_each_part_of_the_key_changes_it(plan, part, monkeypatch):
    cell = plan.cells[0]
    attack_config = json.dumps(plan.build(cell.attack).config(), sort_keys=True)
    before = cache_key(plan, cell, attack_config, None)
    assert cache_key(plan, cell, attack_config, None) == before  # stable
    if part == "bench's code":
        monkeypatch.setattr(keys_module, "code_version", lambda: "edited")
        changed = (plan, cell, attack_config, None)
    else:
        changed = PARTS[part](plan, cell, attack_config, None)
    assert cache_key(*changed) != before


# ---- runs ---------------------------------------------------------------------------------


def test_an_entry_of_another_key_is_not_trusted(tmp_path):
    cache = CellCache(tmp_path)
    cache.store("a", cell(1))
    cache.path("a").rename(cache.path("b"))
    assert cache.load("b") is None


# ---- the entries --------------------------------------------------------------------------


def test_an_entry_reads_back_as_written(tmp_path):
    cache, written = CellCache(tmp_path), cell(3)
    cache.store("k", written)
    read = cache.load("k")
    assert read is not None and read.extras == {"history": None}
    assert json.dumps(read.row) == json.dumps(written.row)  # NaN too
    for name in ("clean_correct", "adv_pred", "labels", "queries", "needed_norm"):
        assert torch.equal(getattr(read.outcome, name), getattr(written.outcome, name))
    assert torch.equal(read.certified, written.certified)
    invalid = CachedCell(entry_row(valid=False, n_samples=50), None)
    cache.store("invalid", invalid)
    read = cache.load("invalid")
    assert read is not None and read.outcome is None
    assert json.dumps(read.row) == json.dumps(invalid.row)


def test_an_entry_graded_on_other_labels_is_dropped_with_a_warning(tmp_path):
    warned = []
    cache, written = CellCache(tmp_path, warned.append), cell(3)
    cache.store("k", written)
    assert cache.load("k", written.outcome.labels) is not None and warned == []
    assert cache.load("k", (written.outcome.labels + 1) % 10) is None
    assert warned == ["[yellow]cell cache entry k.parquet dropped (its labels are not this "
                      "run's evaluation labels): computing the cell again[/yellow]"]


def write_many(root, value: int) -> None:
    cache = CellCache(root)
    for _ in range(30):
        cache.store("same", cell(value, n=2000))


def test_concurrent_writers_leave_a_readable_entry(tmp_path):
    context = multiprocessing.get_context("fork")  # no re-import: quick
    writers = [context.Process(target=write_many, args=(tmp_path, value)) for value in (1, 2)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
    assert [writer.exitcode for writer in writers] == [0, 0]
    read = CellCache(tmp_path).load("same")
    assert read is not None and read.row["robust_accuracy"] in (0.1, 0.2)
    value = int(read.outcome.queries[0])
    assert torch.equal(read.outcome.adv_pred, cell(value, n=2000).outcome.adv_pred)
    assert [path.name for path in tmp_path.iterdir()] == ["same.parquet"]  # no temp file left


# ---- bench cache --------------------------------------------------------------------------

def test_cache_list_and_clear(tmp_path, capsys):
    model_key = content_key({"p": 1})
    ModelCache(tmp_path).save(model_key, {"p": 1}, nn.Linear(3, 2))
    (tmp_path / f"{model_key}.history.json").write_text("{}")
    for key in ("a" * 20, "b" * 20):
        CellCache(tmp_path / "cells").store(key, cell(1))
    # a user's files in the same folders, some named like bench's (issue #30): all kept
    ModelCache(tmp_path).save("mine", {"p": 2}, nn.Linear(3, 2))
    ModelCache(tmp_path).path("mine").rename(tmp_path / "my_finetuned.safetensors")
    (tmp_path / "draft.tmp").write_text("kept")
    (tmp_path / "someone-elses.txt").write_text("kept")
    CellCache(tmp_path / "cells").store("c" * 20, cell(1))
    (tmp_path / "cells" / ("c" * 20 + ".parquet")).rename(tmp_path / "cells" / ("d" * 20
                                                                             + ".parquet"))
    where = ["--cache-dir", str(tmp_path)]
    assert main(["cache", "list", *where]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["models", "1", "entries"]
    assert lines[1].split()[:3] == ["cells", "2", "entries"]
    assert lines[1].endswith(str(tmp_path / "cells"))

    assert main(["cache", "clear", "--cells", *where]) == 0
    out = capsys.readouterr().out
    assert out.startswith("freed ") and out.strip().endswith(": 2 cells")
    assert [path.name for path in (tmp_path / "cells").iterdir()] == ["d" * 20 + ".parquet"]
    assert ModelCache(tmp_path).path(model_key).is_file()
    assert main(["cache", "clear", *where]) == 0
    assert capsys.readouterr().out.strip().endswith(": 1 models, 0 cells")
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "cells", "draft.tmp", "my_finetuned.safetensors", "someone-elses.txt"]


@pytest.mark.parametrize("action", ["list", "clear"])
def test_cache_of_a_mistyped_folder_says_so(action, tmp_path, capsys):
    code = main(["cache", action, "--cache-dir", str(tmp_path / "typo")])
    assert_one_line_error(capsys, code, f"--cache-dir {tmp_path / 'typo'}: no such folder")
