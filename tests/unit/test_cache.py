"""Trained models are cached as safetensors and never trusted when corrupt or mismatched."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advbench._util import write_atomic
from advbench.running.model_cache import ModelCache, content_key

PARTS = {"dataset": "d", "model": "m", "defense": "none", "seed": 0}


def model(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


def test_round_trip_is_bit_identical(tmp_path):
    cache, key = ModelCache(tmp_path), content_key(PARTS)
    original = model(0)
    cache.save(key, PARTS, original)
    restored = model(1)
    assert cache.load(key, PARTS, restored)
    for a, b in zip(original.state_dict().values(), restored.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_corrupt_or_truncated_file_is_not_trusted(tmp_path):
    cache, key = ModelCache(tmp_path), content_key(PARTS)
    cache.save(key, PARTS, model(0))
    path = cache.path(key)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    assert not cache.load(key, PARTS, model(1))
    path.write_bytes(b"not safetensors at all")
    assert not cache.load(key, PARTS, model(1))


def test_mismatched_metadata_or_architecture_is_not_trusted(tmp_path):
    cache, key = ModelCache(tmp_path), content_key(PARTS)
    cache.save(key, PARTS, model(0))
    assert not cache.load(key, {**PARTS, "seed": 1}, model(1))
    assert not cache.load(key, PARTS, nn.Sequential(nn.Linear(4, 2)))


def test_key_depends_on_every_part():
    assert content_key(PARTS) == content_key(dict(reversed(PARTS.items())))
    assert content_key(PARTS) != content_key({**PARTS, "defense": "other"})


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("old\n")

    def write_half(temporary):
        temporary.write_text("half of the new")
        raise KeyboardInterrupt  # Ctrl-C mid-write

    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, write_half)
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["results.csv"]
    write_atomic(path, lambda temporary: temporary.write_text("new\n"))
    assert path.read_text() == "new\n" and len(list(tmp_path.iterdir())) == 1


def test_an_interrupted_model_save_keeps_the_cached_model(tmp_path, monkeypatch):
    cache, key = ModelCache(tmp_path), content_key(PARTS)
    cache.save(key, PARTS, model(0))

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("advbench.running.model_cache.save_file", crash)
    with pytest.raises(OSError):
        cache.save(key, PARTS, model(1))
    restored = model(2)
    assert cache.load(key, PARTS, restored)
    assert torch.equal(restored[0].weight, model(0)[0].weight)
    assert [p.name for p in tmp_path.iterdir()] == [cache.path(key).name]
