"""APGD strength and speed against torchattacks, on an adversarially trained seed CNN (CPU).

    python -m pytest benchmarks/bench_apgd.py -s -k "not autoattack"      # (a), a few minutes
    BENCH_AUTOATTACK=1 python -m pytest benchmarks/bench_apgd.py -s -k autoattack   # (b)

The model: the seed CNN after FGSM adversarial training (``adv-train-fgsm``, ε = 0.1 L∞,
random start, α = 1.25ε) on 10k Fashion-MNIST images for 2 epochs, cached as safetensors in
the temp folder (never a pickle).

(a) ``apgd-ce`` and ``apgd-t`` against torchattacks' APGD / APGDT at equal settings (norm, ε,
    iterations: 100 for APGD-CE, 20 for APGD-T; one restart, 9 target classes), L∞ 0.1 and
    L2 1.5, on the first 150 test images: robust accuracies within one point, and our time at
    most theirs (speed ≥ 1×). torchattacks evaluates steps + 1 points per run, ours
    ``iterations``: the difference is at our expense.
(b) The per-sample worst case of bench's white-box attacks (fgsm or fgm, pgd, apgd-ce,
    apgd-dlr, apgd-t, each run on every sample as the harness runs them) against torchattacks'
    ``AutoAttack(version="standard")`` on the first 100 test images: within half a point, in at
    most a tenth of its time. AutoAttack takes minutes on two cores, so this test runs only with
    ``BENCH_AUTOATTACK=1``; its AutoAttack result is cached in the temp folder (keyed by the
    settings and the model's weights), so a rerun times AutoAttack again only if the file is
    removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path

import pytest
import torch

from advbench import AttackContext, Oracle, ThreatModel, load_registry
from advbench.defense import TrainContext, TrainSettings
from advbench.running.evaluate import predict

CPU = torch.device("cpu")
N_EVAL, N_AUTOATTACK, N_TRAIN = 150, 100, 10_000
# Iterations per attack in (a): AutoAttack's 100 for APGD-CE; 20 for APGD-T, whose 9 rounds
# of 100 would take torchattacks half an hour on two busy cores.
ITERATIONS = {"apgd-ce": 100, "apgd-t": 20}
THREATS = [("linf", 0.1), ("l2", 1.5)]
CACHE = Path(tempfile.gettempdir()) / "advbench-bench"
# Our white-box attacks for (b), sized to a tenth of AutoAttack's time.
# (torchattacks' AutoAttack runs its APGD-CE and APGD-T at their default of 10 steps.)
WORST_CASE = {"fgsm": {}, "fgm": {}, "pgd-linf": {}, "pgd-l2": {},
              "apgd-ce": {"iterations": 25}, "apgd-dlr": {"iterations": 25},
              "apgd-t": {"iterations": 20, "target_classes": 9}}

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="module")
def registry():
    return load_registry()


@pytest.fixture(scope="module")
def adv_cnn(registry) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The FGSM-adversarially trained seed CNN (frozen, eval mode) and the test split."""
    from safetensors.torch import load_file, save_file

    dataset = registry.get("dataset", "fashion-mnist").cls()
    train, test = dataset.load("train", None), dataset.load("test", None)
    torch.manual_seed(0)
    model = registry.get("model", "seed-cnn").cls().build((1, 28, 28), 10)
    path = CACHE / f"seed-cnn_adv-train-fgsm_{N_TRAIN}_2ep_seed0.safetensors"
    if path.is_file():
        model.load_state_dict(load_file(path))
    else:
        defense = registry.get("defense", "adv-train-fgsm").cls(eps=0.1)
        defense.fit(model, train.subset(torch.arange(N_TRAIN)),
                    TrainContext(TrainSettings(epochs=2), CPU, seed=0))
        CACHE.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.eval(), test.x, test.y


def ours(registry, name: str, model, x, y, norm: str, eps: float, seed: int = 0, **options):
    """(seconds, x_adv, queries): one attack through the harness's oracle and gate."""
    attack = registry.get("attack", name).cls(**options)
    oracle = Oracle(model, "gradient", len(x))
    start = time.perf_counter()
    result = attack.perturb(oracle, x, y, ThreatModel(norm, eps),
                            AttackContext(torch.Generator().manual_seed(seed)))
    seconds = time.perf_counter() - start
    assert result.x_adv is not None, result
    return seconds, result.x_adv, oracle.queries


def robust(model, x, x_adv, y) -> torch.Tensor:
    """Per sample: classified correctly both before and after the attack."""
    return (predict(model, x, 500, CPU) == y) & (predict(model, x_adv, 500, CPU) == y)


def timed_reference(attack, x, y) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    x_adv = attack(x, y)
    return time.perf_counter() - start, x_adv


@pytest.mark.parametrize(("norm", "eps"), THREATS)
@pytest.mark.parametrize("name", ["apgd-ce", "apgd-t"])
def test_apgd_against_torchattacks(registry, adv_cnn, name, norm, eps):
    torchattacks = pytest.importorskip("torchattacks")
    model, x, y = adv_cnn
    x, y = x[:N_EVAL], y[:N_EVAL]
    iterations = ITERATIONS[name]
    settings = dict(norm="Linf" if norm == "linf" else "L2", eps=eps, steps=iterations,
                    n_restarts=1, seed=0)
    if name == "apgd-ce":
        reference = torchattacks.APGD(model, loss="ce", **settings)
        options = {"iterations": iterations}
    else:
        reference = torchattacks.APGDT(model, n_classes=10, **settings)
        options = {"iterations": iterations, "target_classes": 9}
    our_time, our_adv, queries = ours(registry, name, model, x, y, norm, eps, **options)
    their_time, their_adv = timed_reference(reference, x, y)
    clean = float((predict(model, x, 500, CPU) == y).float().mean())
    our_acc = float(robust(model, x, our_adv, y).float().mean())
    their_acc = float(robust(model, x, their_adv, y).float().mean())
    print(f"\n[bench_apgd a] {name} {norm} ε={eps}, {iterations} iterations, {len(x)} images, "
          f"clean {clean:.3f}")
    print(f"[bench_apgd a] robust accuracy: bench {our_acc:.3f}, torchattacks {their_acc:.3f}; "
          f"time: bench {our_time:.1f} s, torchattacks {their_time:.1f} s, "
          f"speed ×{their_time / our_time:.2f}; bench queries/sample {queries.float().mean():.0f}")
    assert abs(our_acc - their_acc) <= 0.01 + 1e-9
    assert our_time <= their_time


def autoattack_reference(model, x, y, norm: str, eps: float) -> tuple[float, torch.Tensor]:
    """(seconds, per-sample robust) of torchattacks' AutoAttack standard, cached per model."""
    torchattacks = pytest.importorskip("torchattacks")
    weights = hashlib.sha256(b"".join(p.numpy().tobytes() for p in model.state_dict().values()))
    key = f"{weights.hexdigest()[:16]}_{norm}_{eps}_{len(x)}_{torchattacks.__version__}"
    path = CACHE / f"autoattack_{key}.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        return saved["seconds"], torch.tensor(saved["robust"])
    attack = torchattacks.AutoAttack(model, norm="Linf" if norm == "linf" else "L2", eps=eps,
                                     version="standard", n_classes=10, seed=0)
    seconds, x_adv = timed_reference(attack, x, y)
    mask = robust(model, x, x_adv, y)
    CACHE.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"seconds": seconds, "robust": mask.tolist()}))
    return seconds, mask


@pytest.mark.skipif(not os.environ.get("BENCH_AUTOATTACK"),
                    reason="minutes on 2 cores: BENCH_AUTOATTACK=1 pytest ... -k autoattack")
@pytest.mark.parametrize(("norm", "eps"), THREATS)
def test_worst_case_against_autoattack(registry, adv_cnn, norm, eps):
    model, x, y = adv_cnn
    x, y = x[:N_AUTOATTACK], y[:N_AUTOATTACK]
    their_time, their_robust = autoattack_reference(model, x, y, norm, eps)
    names = [name for name in WORST_CASE if norm in registry.get("attack", name).cls.norms]
    our_time, our_robust, lines = 0.0, torch.ones(len(x), dtype=torch.bool), []
    for name in names:
        seconds, x_adv, _ = ours(registry, name, model, x, y, norm, eps, **WORST_CASE[name])
        alone = robust(model, x, x_adv, y)
        our_time += seconds
        our_robust &= alone
        lines.append(f"{name} {float(alone.float().mean()):.3f} ({seconds:.1f} s)")
    our_acc, their_acc = float(our_robust.float().mean()), float(their_robust.float().mean())
    print(f"\n[bench_apgd b] {norm} ε={eps}, {len(x)} images: " + ", ".join(lines))
    print(f"[bench_apgd b] worst case: bench {our_acc:.3f} in {our_time:.1f} s; AutoAttack "
          f"standard {their_acc:.3f} in {their_time:.1f} s (time ratio "
          f"{our_time / their_time:.3f}); broken by AutoAttack only: "
          f"{int((our_robust & ~their_robust).sum())}, by bench only: "
          f"{int((their_robust & ~our_robust).sum())}")
    assert our_acc <= their_acc + 0.005
    assert our_time <= their_time / 10
