"""Helpers shared by test files of both tiers (importable as ``helpers``: pytest's ``pythonpath``
puts tests/ on sys.path). A helper used by one file stays in that file."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from torch import nn

from advbench.cli import main

# The smallest ``bench run``: the flags every refused-run test adds its bad one to.
RUN = ["run", "--preset", "smoke", "--attacks", "fgsm", "--defenses", "none"]


def assert_one_line_error(capsys, code: int | None, expected: str) -> None:
    """Exit code 2 and one stderr line, from bench, containing ``expected``: no traceback."""
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, (code, err)
    assert "\n" not in err and "Traceback" not in err, err
    assert err.startswith("bench"), err
    assert expected in err, err


def assert_run_refused(extra: list[str], expected: str, tmp_path, capsys) -> None:
    """``bench run`` with ``extra`` exits 2 with one line containing ``expected``, writing
    nothing."""
    out = tmp_path / "out"
    code = main([*RUN, *extra, "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    assert_one_line_error(capsys, code, expected)
    assert not out.exists()


def write_idx(path: Path, array: np.ndarray, compress: bool) -> None:
    """IDX: two zero bytes, type 0x08 (ubyte), rank, big-endian dims, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if compress else data)


def write_cifar_binary(root: Path, per_batch: int) -> dict[str, np.ndarray]:
    """cifar-10-batches-bin: records of <1 label byte><1024 R><1024 G><1024 B>."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    written = {}
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        records = rng.integers(0, 256, (per_batch, 3073), dtype=np.uint8)
        records[:, 0] = rng.integers(0, 10, per_batch)
        records.tofile(folder / name)
        written[name] = records
    return written


def idx_folder(root: Path, seed: int, size: int = 28, top_label: int = 9) -> Path:
    """A Fashion-MNIST-format folder of random images: 60 training, 20 test."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", 60), ("t10k", 20)):
        write_idx(root / f"{prefix}-images-idx3-ubyte.gz",
                  rng.integers(0, 256, (n, size, size), dtype=np.uint8), compress=True)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        labels[0] = top_label
        write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", labels, compress=True)
    return root


class Counting(nn.Module):
    """``model`` counting the rows and the calls of every forward pass: the ground truth for
    the queries an attack reports."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.rows, self.calls = model, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += x.shape[0]
        self.calls += 1
        return self.model(x)


class Scaled(nn.Module):
    """``model`` with its logits multiplied by ``factor``: the same decisions, a saturated
    softmax (cross-entropy's gradients vanish)."""

    def __init__(self, model: nn.Module, factor: float) -> None:
        super().__init__()
        self.model, self.factor = model, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.factor
