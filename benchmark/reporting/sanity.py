"""The sanity battery (Carlini et al. 2019; Athalye et al. 2018; AutoAttack's checks).

Each check looks at one defense's finished cells and names the cells it doubts. A failed check
is a visible flag in the results and the leaderboard, never a hidden log line.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from torch import nn

from advbench.data import Split
from advbench.oracle import Oracle

ZERO_GRADIENT_LIMIT = 0.05
UNBOUNDED = {"linf": 1.0}
UNBOUNDED_LIMIT = 0.05
SLACK_SAMPLES = 2  # smaller differences are noise of random attacks, not a finding


def slack(n: int) -> float:
    """Two samples' worth, as a share of ``n``."""
    return SLACK_SAMPLES / max(n, 1)


def eps_zero_differs(cells: pd.DataFrame) -> Iterator[tuple[int, str]]:
    for index, row in cells[cells["eps"] == 0].iterrows():
        if row["robust_accuracy"] != row["clean_accuracy"]:
            yield index, "ε=0 differs from clean accuracy"


def rises_with_eps(cells: pd.DataFrame) -> Iterator[tuple[int, str]]:
    for _, group in cells.groupby(["attack", "norm", "split"]):
        ordered = group.sort_values("eps")
        best_so_far = ordered["robust_accuracy"].cummin().shift(1)
        for index, row in ordered.iterrows():
            if row["robust_accuracy"] > best_so_far[index] + slack(row["n_samples"]):
                yield index, "robust accuracy rises with ε"


def unbounded_not_zero(cells: pd.DataFrame) -> Iterator[tuple[int, str]]:
    for index, row in cells.iterrows():
        limit = UNBOUNDED.get(row["norm"])
        if limit is not None and row["eps"] >= limit and row["robust_accuracy"] > UNBOUNDED_LIMIT:
            yield index, "an unbounded attack leaves accuracy above 5 %"


def single_step_beats_iterative(cells: pd.DataFrame) -> Iterator[tuple[int, str]]:
    """Each iterative gradient attack (PGD, APGD, ...) should do at least as well as the best
    single-step one (``single_step``: FGSM, FGM) of the same threat model."""
    for _, group in cells.groupby(["norm", "eps", "split"]):
        single = group[group["single_step"] & (group["access"] == "gradient")]
        iterative = group[~group["single_step"] & (group["access"] == "gradient")]
        if single.empty or iterative.empty:
            continue
        n = group["n_samples"].iloc[0]
        for index, row in iterative.iterrows():
            if single["robust_accuracy"].min() < row["robust_accuracy"] - slack(n):
                yield index, "a single-step attack beats this iterative one"


def per_sample(rows: pd.DataFrame) -> list[list[bool]] | None:
    """The rows' per-sample outcomes (``robust_samples``: one boolean per evaluation sample,
    robust = correct before and after the attack), or None where a row lacks one or their
    lengths differ."""
    if "robust_samples" not in rows or rows.empty:
        return None
    masks = list(rows["robust_samples"])
    if any(not isinstance(mask, (list, tuple, np.ndarray)) or len(mask) == 0 for mask in masks):
        return None
    if len({len(mask) for mask in masks}) != 1:
        return None
    return [[bool(robust) for robust in mask] for mask in masks]


def robust_to_all(masks: list[list[bool]]) -> list[bool]:
    """Per sample: robust to every one of the attacks (the per-sample worst case)."""
    return [all(column) for column in zip(*masks, strict=True)]


def white_box_robust_accuracy(white: pd.DataFrame) -> float:
    """What the white-box attacks of one threat model leave robust, at their strongest: with
    per-sample outcomes the per-sample worst case (robust only if every white-box attack failed
    on it); without, the robust accuracy of the strongest single white-box attack."""
    masks = per_sample(white)
    if masks is None:
        return float(white["robust_accuracy"].min())
    robust = robust_to_all(masks)
    return sum(robust) / len(robust)


def missed_by_white_box(white: pd.DataFrame, black: pd.DataFrame) -> int | None:
    """AutoAttack's per-sample check: how many samples the one black-box row of ``black``
    broke that every white-box attack left robust (None without per-sample outcomes for all of
    them). A cascade's rows are cumulative: there it counts what the black-box attacks up to
    that row broke after the white-box ones."""
    masks = per_sample(pd.concat([white, black]))
    if masks is None:
        return None
    survived_white, black_robust = robust_to_all(masks[:-1]), masks[-1]
    return sum(w and not b for w, b in zip(survived_white, black_robust, strict=True))


def black_box_beats_white_box(cells: pd.DataFrame) -> Iterator[tuple[int, str]]:
    """Black-box attacks that break what the gradients missed: the gradients mislead, the
    model is not as robust as white-box attacks say. With per-sample outcomes (in every mode)
    it is AutoAttack's check: more than two samples broken that every white-box attack left
    robust, flagged with the count. Without them, the totals: a black-box attack leaving
    clearly fewer robust samples than the strongest white-box evidence
    (:func:`white_box_robust_accuracy`); in a cascade the rows' difference is the count.
    Comparing with the white-box attacks together, not with each, keeps the flag about
    gradient masking rather than about a weak white-box attack (fixed-step PGD against a
    model where random search does better). It needs a fixed-ε white-box attack: a
    minimum-norm one alone (fmn-l0 beside one-pixel and pixel-scan) looks for each sample's
    smallest perturbation, not for one within ε, and where it misses one that a fixed-ε attack
    found, :func:`minimum_norm_weak` says so."""
    for _, group in cells.groupby(["norm", "eps", "split"]):
        white = group[group["access"] == "gradient"]
        black = group[group["access"] != "gradient"]
        fixed_eps = white[~white["minimum_norm"]] if "minimum_norm" in white else white
        if fixed_eps.empty or black.empty:
            continue
        n = group["n_samples"].iloc[0]
        strongest = white_box_robust_accuracy(white)
        for index, row in black.iterrows():
            cumulative = isinstance(row.get("cascade"), str) and bool(row["cascade"])
            missed = missed_by_white_box(white, black.loc[[index]])
            if missed is None and cumulative:
                missed = round((strongest - row["robust_accuracy"]) * n)
            if missed is None:
                if row["robust_accuracy"] < strongest - slack(n):
                    yield index, "a black-box attack beats every white-box one (gradient masking?)"
            elif missed > SLACK_SAMPLES:
                yield index, (f"after every white-box attack of the cascade, black-box attacks "
                              f"broke {missed} more samples (gradient masking?)" if cumulative
                              else f"a black-box attack broke {missed} samples every white-box "
                              "attack missed (gradient masking?)")


def certified_sample_broken(cells: pd.DataFrame) -> Iterator[tuple[int, str]]:
    if "certified_broken" not in cells:
        return
    for index, row in cells.iterrows():
        if row["certified_broken"] > 0:
            yield index, (f"{int(row['certified_broken'])} certified samples were broken: the "
                          "certifier or the validity gate is wrong")


RADIUS_TOLERANCE = 1e-6  # the validity gate's: an example up to ε + 1e-6 counts as within ε


def minimum_norm_weak(broken: np.ndarray, minimum_norm: np.ndarray, eps: float,
                      tolerance: float = RADIUS_TOLERANCE) -> str | None:
    """A cell that broke samples at ``eps`` (``broken``: one boolean per sample) whose
    minimum-norm radius (the smallest norm the run's minimum-norm attacks found; NaN where
    none reported) is above ``eps`` (by more than the gate's ``tolerance``): those attacks
    were weak there, and the robustness curve rests on the cap of this fixed-ε cell for them.
    The flag, with the count, or None."""
    weak = int((np.asarray(broken, bool)
                & (np.asarray(minimum_norm, float) > eps + tolerance)).sum())
    plural = "s" * (weak != 1)
    return (f"minimum-norm attack weak on {weak} sample{plural} (this cell broke them at "
            f"ε={eps:g}, below the smallest norm the minimum-norm attacks found for them)"
            ) if weak else None


def certificate_contradicted(certified: np.ndarray, found: np.ndarray) -> str | None:
    """Samples certified at a radius above the norm of an adversarial example found for them
    (``found``: per sample the smallest norm a cell reached, inf where it broke none): no
    attack may ever beat a certificate, so the certificate, the validity gate or the attack's
    reported norm is wrong. A loud flag with the count, or None."""
    wrong = int((np.asarray(certified, float)
                 > np.asarray(found, float) + RADIUS_TOLERANCE).sum())
    plural = "s" * (wrong != 1)
    return (f"CERTIFICATE CONTRADICTED on {wrong} sample{plural}: certified at a radius above "
            "the norm of an adversarial example found for them; the certifier, the validity "
            "gate or the attack's reported norm is wrong") if wrong else None


CHECKS = (certified_sample_broken, eps_zero_differs, rises_with_eps, unbounded_not_zero,
          single_step_beats_iterative, black_box_beats_white_box)


def cell_flags(cells: pd.DataFrame) -> dict[int, list[str]]:
    """Flags per row index of ``cells`` (one defense's valid attack cells, with the attack's
    ``access`` and ``single_step`` capabilities as columns, optionally ``minimum_norm``, and
    optionally each cell's
    per-sample outcome as ``robust_samples``)."""
    flags: dict[int, list[str]] = {}
    for check in CHECKS:
        for index, message in check(cells):
            flags.setdefault(index, []).append(message)
    return flags


def zero_gradient_fraction(model: nn.Module, data: Split, device: torch.device,
                           limit: int = 500) -> float:
    """Fraction of samples whose input gradient is exactly zero (shattered or masked
    gradients make gradient attacks look weak)."""
    x, y = data.x[:limit].to(device), data.y[:limit].to(device)
    if len(y) == 0:
        return 0.0
    grad, _ = Oracle(model, "gradient", len(y)).gradient(x, y)
    return float((grad.flatten(1).abs().amax(dim=1) == 0).float().mean())


def defense_flags(zero_fraction: float, eot_samples: int, bpda: bool = False,
                  left_out: Sequence[str] = ()) -> list[str]:
    """Flags that concern every cell of a defense; ``left_out``: the attacks its cascade left
    out as AutoAttack's version for randomized defenses does (``Attack.against_randomized``)."""
    flags = []
    if zero_fraction > ZERO_GRADIENT_LIMIT:
        flags.append(f"{zero_fraction:.0%} of input gradients are zero")
    if eot_samples > 1:
        flags.append(f"randomized defense: gradient attacks used EOT over {eot_samples} draws")
    if left_out:
        flags.append(f"the cascade left out {', '.join(left_out)}, as AutoAttack's version for "
                     "randomized defenses does (--no-cascade runs them)")
    if bpda:
        flags.append("the defense wraps its trained model: gradient attacks also used BPDA "
                     "(the unwrapped model's gradients)")
    return flags
