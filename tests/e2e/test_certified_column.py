"""Certified accuracy in every L∞ cell the certifier supports, and the cross-check that no
certified sample is ever broken by an attack."""

from __future__ import annotations

import torch

import advbench.running.prepare
from advbench import run_matrix

SMALL = dict(preset="smoke", n_train=3000, n_eval=150)


def test_certified_training_is_certified_and_never_broken(tmp_path):
    frame = run_matrix(attacks="fgsm,pgd-linf", defenses="none,certified-training",
                       model="ibp-cnn", eps={"linf": [0.05]}, cache_dir=tmp_path, **SMALL)
    rows = frame.set_index(["defense", "attack"])
    certified = rows.loc[("certified-training", "pgd-linf"), "certified_accuracy"]
    assert certified > rows.loc[("none", "pgd-linf"), "certified_accuracy"]
    assert certified <= rows.loc[("certified-training", "worst-case"), "robust_accuracy"]
    assert (frame["certified_broken"] == 0).all()
    assert set(frame["certifier"]) == {"crown-ibp"}
    assert frame["flags"].fillna("").str.contains("certified samples were broken").sum() == 0


def test_a_planted_certifier_bug_is_flagged_loudly(tmp_path, monkeypatch):
    def certifies_everything(model, x, y, eps, method):
        return torch.ones(len(y), dtype=torch.bool)

    monkeypatch.setattr(advbench.running.prepare, "certify", certifies_everything)
    frame = run_matrix(attacks="fgsm", defenses="none", cache_dir=tmp_path, **SMALL)
    row = frame.iloc[0]
    assert row["certified_accuracy"] == 1.0 and row["certified_broken"] > 0
    assert "certified samples were broken" in row["flags"]
