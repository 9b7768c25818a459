"""Dataset loaders on tiny files written here in the real on-disk formats."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import write_cifar_binary, write_idx

from advbench import BenchError

rng = np.random.default_rng(0)


def write_mnist_layout(root: Path, n_train: int, n_test: int, compress: bool) -> dict:
    """torchvision's layout: ROOT/MNIST/raw/train-images-idx3-ubyte and its siblings."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        suffix = ".gz" if compress else ""
        write_idx(raw / f"{prefix}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress)
        arrays[prefix] = (images, labels)
    return arrays


@pytest.mark.parametrize("compress", [False, True])
def test_mnist_reads_torchvision_layout(registry, tmp_path, compress):
    arrays = write_mnist_layout(tmp_path, 12, 5, compress)
    dataset = registry.get("dataset", "mnist").cls()
    train, test = dataset.load("train", tmp_path), dataset.load("test", tmp_path)
    assert train.x.shape == (12, 1, 28, 28) and test.x.shape == (5, 1, 28, 28)
    assert train.x.dtype == torch.float32 and float(train.x.max()) <= 1.0
    images, labels = arrays["train"]
    assert torch.equal(train.x[3, 0], torch.from_numpy(images[3]).float() / 255)
    assert torch.equal(train.y, torch.from_numpy(labels.astype(np.int64)))


def test_fashion_mnist_from_data_root(registry, tmp_path):
    arrays = write_mnist_layout(tmp_path, 7, 3, compress=True)
    flat = tmp_path / "flat"
    (tmp_path / "MNIST" / "raw").rename(flat)
    dataset = registry.get("dataset", "fashion-mnist").cls()
    test = dataset.load("test", flat)
    assert torch.equal(test.y, torch.from_numpy(arrays["t10k"][1].astype(np.int64)))


def test_fashion_mnist_default_is_the_debian_package(registry):
    dataset = registry.get("dataset", "fashion-mnist").cls()
    test = dataset.load("test", None)
    assert test.x.shape == (10_000, 1, 28, 28)
    assert torch.bincount(test.y).tolist() == [1000] * 10


def test_idx_with_wrong_size_is_refused(registry, tmp_path):
    write_mnist_layout(tmp_path, 4, 4, compress=False)
    path = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(BenchError, match="truncated or corrupt"):
        registry.get("dataset", "mnist").cls().load("test", tmp_path)


def test_cifar10_reads_the_binary_format(registry, tmp_path):
    written = write_cifar_binary(tmp_path, 4)
    dataset = registry.get("dataset", "cifar10").cls()
    train, test = dataset.load("train", tmp_path), dataset.load("test", tmp_path)
    assert train.x.shape == (20, 3, 32, 32) and test.x.shape == (4, 3, 32, 32)
    record = written["test_batch.bin"][2]
    assert int(test.y[2]) == record[0]
    red_plane = torch.from_numpy(record[1:1025].reshape(32, 32)).float() / 255
    blue_plane = torch.from_numpy(record[2049:].reshape(32, 32)).float() / 255
    assert torch.equal(test.x[2, 0], red_plane) and torch.equal(test.x[2, 2], blue_plane)


def test_cifar10_truncated_batch_is_refused(registry, tmp_path):
    write_cifar_binary(tmp_path, 3)
    path = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(BenchError, match="truncated or corrupt"):
        registry.get("dataset", "cifar10").cls().load("test", tmp_path)
