"""Trained models are cached as safetensors and never trusted when corrupt or mismatched."""

from __future__ import annotations

import torch
from torch import nn

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
