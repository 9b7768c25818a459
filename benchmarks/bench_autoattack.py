"""bench's default worst case against AutoAttack "standard" as its authors run it (#25).

    BENCH_AA_DEFENSES=adv-train-pgd BENCH_AA_NORMS=l2 \
        python -m pytest benchmarks/bench_autoattack.py -o python_files='bench_*.py' -s

On the default run's own trained models (the cpu preset: every defense, L∞ 0.1 and L2 1.5, the
run's 150 evaluation samples), side by side in one process:

- bench: ``bench run --attacks all`` as a user of a fresh clone runs it (bench's own attacks, not
  the optional adapters'; the preset's mode, a cascade at the cpu preset) on the L∞ and L2
  attacks, every cell computed (the model cache is copied without its cells), its worst-case
  row per (defense, norm) and the seconds of its cells;
- the reference: AutoAttack "standard" (Croce & Hein 2020) built from torchattacks'
  components with the authors' settings (fra31/auto-attack, ``AutoAttack.set_version``):
  APGD-CE 100 iterations, 1 restart, ρ 0.75; APGD-T 100 iterations, 9 target classes, 1 restart;
  FAB-T 100 iterations, 9 target classes, 1 restart; Square 5000 queries, p_init 0.8, margin
  loss, the schedule not rescaled (the authors' ``resc_schedule=False``; torchattacks' default
  rescales it). Not torchattacks' ``AutoAttack`` class, which builds them at 10 steps. Each
  component runs only on the samples the earlier ones left robust, as the authors' loop does;
  every prediction is graded by bench's own rule (a randomized defense by its mean softmax over
  the run's EOT draws), its examples projected onto the ball and the box first.

It prints, per (defense, norm): the robust accuracy of each, after each reference component,
the per-sample disagreements (robust for bench but broken by the reference, and the reverse),
and the seconds of each. The reference takes 500-1600 s per (model, norm) on 2 busy cores, so
environment variables reduce it:

- ``BENCH_AA_DEFENSES``: comma list (default: all five built-in defenses);
- ``BENCH_AA_NORMS``: ``linf``, ``l2`` or both (default);
- ``BENCH_AA_N``: evaluation samples (default: the preset's 150; fewer are a subset of them);
- ``BENCH_AA_CACHE``: the model cache to train into or load from (default: the user cache, so
  the models are those of the README's first line);
- ``BENCH_AA_REFERENCE=0``: bench's side only (its cells' seconds on the chosen pairs).

bench's side runs its attacks of the chosen norms with ``eps`` naming only those norms; the
table counts the cells of each (defense, norm) only.

Measured 2026-12-03 (2 cores shared with five other jobs, the models retrained as the default
run trains them): adv-train-pgd, L2 1.5, 150 samples: bench 0.340 robust (cascade, FAB
included), the reference 0.333 (0.433 after APGD-CE, 0.380 after APGD-T, 0.340 after FAB-T,
0.333 after Square); 2 samples robust for bench that the reference broke, 1 the reverse; bench's
cells 299 s (apgd-t 150, random-search 79, fab-l2 29, fab-t 21, apgd-ce 16), the reference 764 s
(35 + 172 + 242 + 315).

Measured again 2026-12-03 on all three adversarially trained or certified models, both norms
(two runs, one per norm, sharing 2 cores, one torch thread each; models retrained by it), bench
against the reference: L∞ 0.1 adv-train-pgd 0.540 / 0.540, adv-train-fgsm 0.433 / 0.433,
certified-training 0.493 / 0.493 (no disagreement); L2 1.5 adv-train-pgd 0.273 / 0.267,
adv-train-fgsm 0.260 / 0.253, certified-training 0.093 / 0.080 with fab-t at 20 iterations; with
fab-t at 100 (the cpu preset since) the L2 worst cases are 0.267, 0.260 and 0.080. Reference
2.0-4.0x bench's seconds per pair.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
import torch
from torch import nn

from advbench import load_registry, run_matrix
from advbench.running.evaluate import is_randomized, predict
from advbench.running.model_cache import cache_roots
from advbench.running.plan import Plan, RunConfig, build_plan
from advbench.running.worker import Worker
from advbench.threat import ThreatModel, clip_to_box, project

DEFENSES = os.environ.get("BENCH_AA_DEFENSES",
                          "none,adv-train-fgsm,adv-train-pgd,certified-training,"
                          "gaussian-smoothing")
NORMS = os.environ.get("BENCH_AA_NORMS", "linf,l2").split(",")
N_EVAL = int(os.environ["BENCH_AA_N"]) if os.environ.get("BENCH_AA_N") else None
CACHE = Path(os.environ["BENCH_AA_CACHE"]) if os.environ.get("BENCH_AA_CACHE") else None
REFERENCE = os.environ.get("BENCH_AA_REFERENCE", "1") != "0"
TA_NORM = {"linf": "Linf", "l2": "L2"}
# Optional extras: a fresh clone's ``bench run --attacks all`` has none of their attacks.
ADAPTERS = ("torchattacks-adapter", "art-adapter")


Attack = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def reference_components(model: nn.Module, norm: str, eps: float,
                         randomized: bool) -> list[tuple[str, Attack]]:
    """AutoAttack with the authors' settings, from torchattacks' components: "standard", or
    against a randomized model their version "rand" (APGD-CE and APGD-DLR, 100 iterations,
    EOT over 20 draws a step)."""
    ta = pytest.importorskip("torchattacks")
    common = dict(norm=TA_NORM[norm], eps=eps, seed=0)
    if randomized:
        return [(f"apgd-{loss}", ta.APGD(model, loss=loss, steps=100, n_restarts=1, rho=0.75,
                                         eot_iter=20, **common)) for loss in ("ce", "dlr")]
    return [
        ("apgd-ce", ta.APGD(model, loss="ce", steps=100, n_restarts=1, rho=0.75, **common)),
        ("apgd-t", ta.APGDT(model, steps=100, n_restarts=1, n_classes=10, rho=0.75, **common)),
        ("fab-t", ta.FAB(model, multi_targeted=True, steps=100, n_restarts=1, n_classes=10,
                         **common)),
        ("square", ta.Square(model, n_queries=5000, n_restarts=1, p_init=0.8, loss="margin",
                             resc_schedule=False, **common)),
    ]


def run_reference(model: nn.Module, x: torch.Tensor, y: torch.Tensor, threat: ThreatModel,
                  grade: Callable[[torch.Tensor], torch.Tensor], randomized: bool) -> dict:
    """The reference's per-sample robust mask, robust accuracy after each component and each
    component's seconds; each runs on the samples every earlier one left robust."""
    robust = grade(x) == y
    after, seconds = {}, {}
    for name, attack in reference_components(model, threat.norm, threat.eps, randomized):
        index = torch.nonzero(robust).flatten()
        started = time.perf_counter()
        if len(index):
            adv = attack(x[index], y[index]).detach()
            adv = clip_to_box(x[index] + project(adv - x[index], threat))
            robust[index[grade(adv) != y[index]]] = False
        seconds[name] = time.perf_counter() - started
        after[name] = float(robust.float().mean())
    return {"robust": robust, "after": after, "seconds": seconds}


def bench_side(tmp_path: Path, cache: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """bench's default run on the chosen pairs, every cell computed on the cached models: the
    rows, and the per-sample outcomes (samples.parquet)."""
    registry = load_registry()
    attacks = [name for name, entry in registry.entries["attack"].items()
               if set(entry.cls.norms) & set(NORMS) and entry.source.distribution == "advbench"
               and entry.source.plugin not in ADAPTERS]
    fresh = tmp_path / "cache"
    shutil.copytree(cache, fresh, ignore=shutil.ignore_patterns("cells"), dirs_exist_ok=True)
    eps = {norm: [float(registry.get("dataset", "fashion-mnist").cls().default_eps[norm])]
           for norm in NORMS}
    frame = run_matrix(attacks=",".join(sorted(attacks)), defenses=DEFENSES, n_eval=N_EVAL,
                       eps=eps, out=tmp_path / "bench", cache_dir=fresh, registry=registry)
    return frame, pd.read_parquet(tmp_path / "bench" / "samples.parquet")


def defended_models(cache: Path) -> tuple[dict[str, nn.Module], Plan]:
    """Each defense's model as the default run trains (or loaded from ``cache``), with the
    run's evaluation samples."""
    registry = load_registry()
    plan = build_plan(RunConfig(attacks="fgsm", defenses=DEFENSES, n_eval=N_EVAL,
                                cache_dir=cache), registry)
    worker = Worker(plan, None)
    models = {}
    for entry in plan.defenses:
        defense = plan.build(entry)
        base, _, line = worker.models.trained_model(defense)
        print(line)
        models[entry.name] = defense.wrap(base).eval()
    return models, plan


def test_default_worst_case_against_autoattack_standard(tmp_path: Path) -> None:
    cache = CACHE or cache_roots(None)[0]
    models, plan = defended_models(cache)  # trains what the cache lacks, once
    frame, samples = bench_side(tmp_path, cache)
    data = plan.evaluation["test"]
    rows = []
    for defense, model in models.items():
        draws = plan.config.eot_samples if is_randomized(model, data.x[:16]) else 1
        for param in model.parameters():
            param.requires_grad_(False)

        def grade(x: torch.Tensor, model=model, draws=draws) -> torch.Tensor:
            return predict(model, x, plan.config.batch_size, plan.device, draws)

        for norm in NORMS:
            part = frame[(frame["defense"] == defense) & (frame["norm"] == norm)]
            worst = part[part["attack"] == "worst-case"].iloc[0]
            outcome = samples[samples["cell_key"] == worst["cell_key"]].sort_values("sample")
            ours = torch.tensor(outcome["robust"].to_numpy())
            row = {"defense": defense, "norm": norm, "eps": float(worst["eps"]),
                   "bench": float(worst["robust_accuracy"]),
                   "bench_s": float(part.loc[part["attack"] != "worst-case", "seconds"].sum()),
                   "mode": "cascade" if str(worst["cascade"]) else "full matrix",
                   "reference": "rand" if draws > 1 else "standard",
                   "broken_by": worst["broken_by"], "flags": worst["flags"]}
            if REFERENCE:
                threat = ThreatModel(norm, row["eps"])
                ref = run_reference(model, data.x, data.y, threat, grade, draws > 1)
                theirs = ref["robust"]
                assert len(theirs) == len(ours)
                row.update({"reference_robust": float(theirs.float().mean()),
                            "reference_s": sum(ref["seconds"].values()),
                            "bench_robust_ref_broke": int((ours & ~theirs).sum()),
                            "ref_robust_bench_broke": int((theirs & ~ours).sum()),
                            **{f"after_{k}": v for k, v in ref["after"].items()},
                            **{f"{k}_s": round(v, 1) for k, v in ref["seconds"].items()}})
                row["gap_pt"] = round(100 * (row["bench"] - row["reference_robust"]), 1)
                row["time_ratio"] = round(row["reference_s"] / max(row["bench_s"], 1e-9), 1)
            rows.append(row)
            print(json.dumps(row))
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print("\n" + table.drop(columns=["broken_by", "flags"]).round(3).to_string(index=False))
    by = frame.attrs["manifest"]["phases"].get("cells_by", {})
    print("bench cells' seconds by attack: "
          + json.dumps({name: round(seconds, 1) for name, seconds in by.items()}))
    assert not table.empty
