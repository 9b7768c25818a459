"""Helpers of tests/unit/test_tables.py and tests/e2e/test_tables_e2e.py."""

from __future__ import annotations


def row(defense: str, attack: str, robust: float, *, norm: str = "linf", eps: float = 0.1,
        clean: float = 0.9, **extra) -> dict:
    return {"dataset": "fashion-mnist", "model": "seed-cnn", "defense": defense,
            "attack": attack, "norm": norm, "eps": eps, "split": "test", "n_samples": 100,
            "clean_accuracy": clean, "robust_accuracy": robust, "attack_success_rate": 0.5,
            "valid": True, "status": "ok", "invalid_reason": "", "schema_version": 1, **extra}
