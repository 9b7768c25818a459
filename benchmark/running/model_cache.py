"""Keys for cached results and the safetensors model cache: a trained model is reused only when
everything that determined it is the same."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from platformdirs import user_cache_dir
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from advbench._util import write_atomic
from advbench.data import Split


def history_problem(history: Any) -> str | None:
    """Why a cached training history cannot be drawn (None: it can, or there is none): it must
    be a JSON object that reads as a ``TrainingHistory`` (a list or garbage is not)."""
    from advbench.algorithms.adversarial_training import TrainingHistory

    if history is None:
        return None
    try:
        TrainingHistory.from_dict(history)
    except Exception as exc:
        return f"its training history is not one ({type(exc).__name__})"
    return None


def read_history(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """A cached model's ``<key>.history.json``: the history, or None and why it was dropped
    (a file that is not a readable history is treated as missing, never raised)."""
    if not path.is_file():
        return None, None
    try:
        history = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, f"{path.name} unreadable ({type(exc).__name__}): its history dropped"
    problem = history_problem(history)
    return (None, f"{path.name}: {problem}, dropped") if problem else (history, None)


def cache_roots(cache_dir: Path | None) -> tuple[Path, Path]:
    """The model cache and the cell cache: ``--cache-dir`` holds the models (as it always has)
    and a ``cells`` folder; by default both lie in the user cache folder."""
    if cache_dir is not None:
        return Path(cache_dir), Path(cache_dir) / "cells"
    root = Path(user_cache_dir("advbench"))
    return root / "models", root / "cells"


def content_key(parts: Any) -> str:
    """A stable hash of everything that determines a result or a model (any JSON value)."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def tensor_hash(*tensors: torch.Tensor) -> str:
    """sha256 of the tensors' dtypes, shapes and bytes (~0.15 s for Fashion-MNIST's training
    split): two data sets with the same number of samples must not share a key."""
    digest = hashlib.sha256()
    for tensor in tensors:
        array = tensor.detach().cpu().contiguous().numpy()
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.data.cast("B"))
    return digest.hexdigest()[:20]


def data_fingerprint(split: Split) -> str:
    """The model cache's key for the training data: a hash of the images and labels actually
    trained on, computed once per split and kept on it."""
    if split.fingerprint is None:
        split.fingerprint = tensor_hash(split.x, split.y)
    return split.fingerprint


class ModelCache:
    """Trained weights as ``<key>.safetensors``; the key's inputs are stored in the metadata and
    compared on load, so a corrupt or mismatched file is retrained, never trusted."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, key: str) -> Path:
        return self.root / f"{key}.safetensors"

    def load(self, key: str, parts: dict[str, Any], model: nn.Module) -> bool:
        path = self.path(key)
        if not path.is_file():
            return False
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
            if metadata.get("key") != json.dumps(parts, sort_keys=True, default=str):
                return False
            model.load_state_dict(load_file(str(path)), strict=True)
        except Exception:  # corrupt, truncated or foreign: the caller retrains
            return False
        return True

    def save(self, key: str, parts: dict[str, Any], model: nn.Module) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        state = {name: tensor.detach().cpu().contiguous() for name, tensor in
                 model.state_dict().items()}
        metadata = {"key": json.dumps(parts, sort_keys=True, default=str)}
        write_atomic(self.path(key), lambda path: save_file(state, str(path), metadata=metadata))
