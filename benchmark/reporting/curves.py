"""Robustness curves from one run: robust accuracy against every ε, per defense and norm.

A minimum-norm attack (FMN, FAB, DeepFool...) reports per sample the smallest perturbation it
found that breaks it (``needed_norm`` in ``samples.parquet``): an *upper* bound on the sample's
robust radius. Each sample's **attack radius** is the smallest such norm over the run's
minimum-norm cells of that defense, norm and split, capped at ε by every valid cell that broke
the sample at its ε (a fixed-ε attack may find what the minimum-norm ones missed); a sample
misclassified before any attack has radius 0. Robust accuracy at ε is then the share of samples
whose radius is above ε, for every ε at once, with a 95 % Wilson band.

A certificate gives a *lower* bound: the **certified radius**, the largest radius at which the
sample is certified correct (CROWN-IBP: the largest ε of the run it certified; randomized
smoothing: its own per-sample radius where the harness has it, else likewise the largest ε of
the run), 0 where none. Certified accuracy at ε is the share of samples certified at a positive
radius ≥ ε, the lower curve. Between the two lies what neither settled: per correctly
classified sample, attack radius − certified radius; its median is the row's
``median_radius_gap``.

Files written into the run folder: ``radii.parquet`` (one row per sample), ``radii.json``
(the same radii as plain lists, for a web page's ε slider), and ``figures/curves_<norm>.png``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from advbench._util import write_atomic
from advbench.gate import allowance
from advbench.reporting.results import WORST_CASE_ROW, wilson_interval, write_results
from advbench.reporting.sanity import certificate_contradicted, minimum_norm_weak

GROUP = ["dataset", "model", "defense", "norm", "split"]  # one curve each
THREAT_MODEL = [*GROUP, "eps"]
RADII_COLUMNS = ["median_radius", "median_certified_radius", "median_radius_gap"]
CURVE_POINTS = 200  # ε values a figure evaluates the curves at


def as_array(values: Any) -> np.ndarray:
    """A tensor, array or list as a NumPy array (tensors through ``.numpy()``)."""
    return np.asarray(values.numpy() if hasattr(values, "numpy") else values)


def certified_radii(certified: Mapping[tuple[str, float], Any],
                    exact: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Split → per-sample certified radius from per-ε certificates (``(split, ε)`` → one
    boolean per sample, as the worker keeps them): the largest ε certified, 0 where none. Where
    ``exact`` gives a split's own radii (smoothing's, 0 where it abstained or was wrong), those."""
    radii: dict[str, np.ndarray] = {}
    for (split, eps), mask in certified.items():
        mask = as_array(mask).astype(bool)
        best = radii.setdefault(split, np.zeros(len(mask)))
        radii[split] = np.where(mask, np.maximum(best, float(eps)), best)
    for split, values in (exact or {}).items():
        radii[split] = np.nan_to_num(as_array(values).astype(float), nan=0.0).clip(min=0.0)
    return radii


def certificate_frame(certified: Mapping[str, Mapping[tuple[str, float], Any]],
                      exact: Mapping[str, Mapping[str, Any]] | None = None) -> pd.DataFrame:
    """One row per defense, split and sample with its ``certified_radius``, from each defense's
    per-ε certificates (and exact radii where given): see :func:`certified_radii`."""
    parts = []
    for defense in sorted(set(certified) | set(exact or {})):
        radii = certified_radii(certified.get(defense, {}), (exact or {}).get(defense))
        parts += [pd.DataFrame({"defense": defense, "split": split, "sample": range(len(r)),
                                "certified_radius": r}) for split, r in radii.items()]
    columns = ["defense", "split", "sample", "certified_radius"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def cell_samples(frame: pd.DataFrame, samples: pd.DataFrame) -> dict[int, pd.DataFrame]:
    """Row index of ``frame`` → that valid cell's per-sample outcome (ordered by sample)."""
    by_key = {key: part.sort_values("sample") for key, part in samples.groupby("cell_key")}
    return {index: by_key[row["cell_key"]] for index, row in frame.iterrows()
            if bool(row["valid"]) and row["cell_key"] in by_key}


def certifiers(frame: pd.DataFrame) -> dict[tuple[str, str], tuple[str, str]]:
    """(defense, split) → (certified norm, certifier), from the rows a certificate filled in."""
    named = frame[frame["certifier"].fillna("").astype(str) != ""] \
        if "certifier" in frame.columns else frame.iloc[:0]
    return {(row["defense"], row["split"]): (row["norm"], row["certifier"])
            for _, row in named.iterrows()}


def sample_radii(frame: pd.DataFrame, samples: pd.DataFrame,
                 certificates: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per defense, norm, split and sample: ``minimum_norm`` (the smallest norm the run's
    minimum-norm attacks reported; inf where they found none, NaN where none reported),
    ``attack_radius`` (capped by every cell that broke the sample, 0 where misclassified) and,
    where the defense's certificate is of that norm, ``certified_radius``. Only where a
    minimum-norm attack ran: without one there is no curve, only the fixed-ε cells."""
    cells = cell_samples(frame, samples)
    certified = certifiers(frame)
    parts = []
    for keys, rows in frame.loc[list(cells)].groupby(GROUP, sort=True):
        own = [cells[i] for i in rows.index]
        needed = np.stack([part["needed_norm"].to_numpy(float) for part in own])
        if np.isnan(needed).all():
            continue
        clean = own[0]["clean_correct"].to_numpy(bool)
        minimum = np.fmin.reduce(needed, axis=0)  # NaN only where no cell reported one
        radius = np.where(np.isnan(minimum), np.inf, minimum)
        for (_, row), part in zip(rows.iterrows(), own, strict=True):
            broken = clean & ~part["robust"].to_numpy(bool)
            radius = np.where(broken, np.minimum(radius, float(row["eps"])), radius)
        part = pd.DataFrame(dict(zip(GROUP, keys, strict=True)), index=range(len(clean)))
        part["sample"] = own[0]["sample"].to_numpy()
        part["label"] = own[0]["label"].to_numpy()
        part["clean_correct"] = clean
        part["minimum_norm"] = minimum
        part["attack_radius"] = np.where(clean, radius, 0.0)
        parts.append(with_certificate(part, certificates, certified))
    columns = [*GROUP, "sample", "label", "clean_correct", "minimum_norm", "attack_radius",
               "certified_radius", "certifier"]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)


def with_certificate(part: pd.DataFrame, certificates: pd.DataFrame | None,
                     certified: dict[tuple[str, str], tuple[str, str]]) -> pd.DataFrame:
    """One group's radii with its defense's certified radii, where its certificate is of the
    group's norm (NaN and no certifier otherwise). A sample the harness graded misclassified
    has radius 0 whatever the certifier said (smoothing's CERTIFY and PREDICT draw their noise
    apart, and may disagree on a sample)."""
    first = part.iloc[0]
    norm, certifier = certified.get((first["defense"], first["split"]), ("", ""))
    part["certified_radius"], part["certifier"] = np.nan, ""
    if certificates is None or norm != first["norm"]:
        return part
    found = certificates[(certificates["defense"] == first["defense"])
                         & (certificates["split"] == first["split"])]
    if len(found) == len(part):
        radius = found.sort_values("sample")["certified_radius"].to_numpy(float)
        part["certified_radius"] = np.where(part["clean_correct"], radius, 0.0)
        part["certifier"] = certifier
    return part


def robust_at(radii: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """Robust accuracy at each ε: the share of samples whose attack radius is above it."""
    ordered = np.sort(np.asarray(radii, dtype=float))
    return (len(ordered) - np.searchsorted(ordered, eps, side="right")) / max(len(ordered), 1)


def certified_at(radii: np.ndarray, eps: np.ndarray) -> np.ndarray:
    """Certified accuracy at each ε: the share certified at a positive radius ≥ ε."""
    positive = np.sort(np.asarray(radii, dtype=float)[np.asarray(radii) > 0])
    below = np.searchsorted(positive, eps, side="left")
    return (len(positive) - below) / max(len(radii), 1)


def with_band(accuracy: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The 95 % Wilson interval of each accuracy (a count over ``n`` samples)."""
    intervals = {count: wilson_interval(count, n)
                 for count in {int(round(a * n)) for a in accuracy}}
    bounds = np.array([intervals[int(round(a * n))] for a in accuracy]).reshape(-1, 2)
    return bounds[:, 0], bounds[:, 1]


def curve(part: pd.DataFrame, eps: np.ndarray) -> pd.DataFrame:
    """One group's curves at ``eps``: robust accuracy with its band, and certified accuracy
    (NaN where the group has no certificate)."""
    n = len(part)
    robust = robust_at(part["attack_radius"].to_numpy(float), eps)
    low, high = with_band(robust, n)
    certificate = part["certified_radius"].to_numpy(float)
    certified = (certified_at(certificate, eps) if not np.isnan(certificate).any()
                 else np.full(len(eps), np.nan))
    return pd.DataFrame({"eps": eps, "robust_accuracy": robust, "robust_accuracy_ci_low": low,
                         "robust_accuracy_ci_high": high, "certified_accuracy": certified})


def summary(radii: pd.DataFrame) -> pd.DataFrame:
    """Per group: ``median_radius`` (over every sample, misclassified ones at 0),
    ``median_certified_radius`` and ``median_radius_gap`` (over the correctly classified
    samples, attack radius − certified radius: what neither settled), NaN without a
    certificate."""
    rows = []
    for keys, part in radii.groupby(GROUP, sort=True):
        certified = part["certified_radius"].to_numpy(float)
        has = not np.isnan(certified).any()
        correct = part[part["clean_correct"].astype(bool)]
        gap = (correct["attack_radius"] - correct["certified_radius"]).to_numpy(float)
        rows.append({**dict(zip(GROUP, keys, strict=True)),
                     "median_radius": float(np.median(part["attack_radius"])),
                     "median_certified_radius": float(np.median(certified)) if has else np.nan,
                     "median_radius_gap": float(np.median(gap)) if has and len(gap) else np.nan})
    return pd.DataFrame(rows, columns=[*GROUP, *RADII_COLUMNS])


def worst_case_rows(frame: pd.DataFrame) -> pd.Series:
    """Each threat model's worst case: its worst-case row, or its one valid row where only one
    attack ran (that row is then the worst case)."""
    valid = frame["valid"].astype(bool)
    worst = valid & (frame["attack"] == WORST_CASE_ROW)
    keys = frame[THREAT_MODEL].astype(str).agg("|".join, axis=1)
    has_worst = keys.isin(set(keys[worst]))
    alone = valid & ~has_worst & (keys.map(keys[valid].value_counts()) == 1)
    return worst | alone


def add_radius_columns(frame: pd.DataFrame, medians: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with each group's median radii in its worst-case rows (NaN elsewhere)."""
    frame = frame.copy()
    for column in RADII_COLUMNS:
        frame[column] = np.nan
    target = worst_case_rows(frame)
    for _, medians_row in medians.iterrows():
        rows = target & np.logical_and.reduce(
            [frame[column] == medians_row[column] for column in GROUP])
        for column in RADII_COLUMNS:
            frame.loc[rows, column] = medians_row[column]
    return frame


def consistency_flags(frame: pd.DataFrame, samples: pd.DataFrame,
                      radii: pd.DataFrame) -> dict[int, list[str]]:
    """The sanity battery's per-sample checks of a run's curves, per row index of ``frame``:
    a cell that broke samples at ε whose minimum-norm radius is above ε (the minimum-norm
    attacks were weak there), and a cell whose adversarial examples lie below a certified
    radius (a certificate or gate bug)."""
    flags: dict[int, list[str]] = {}
    groups = {keys: part.sort_values("sample") for keys, part in radii.groupby(GROUP)}
    for index, part in cell_samples(frame, samples).items():
        row = frame.loc[index]
        if row["attack"] == WORST_CASE_ROW:  # its attacks' own rows carry their flags
            continue
        group = groups.get(tuple(row[c] for c in GROUP))
        if group is None or len(group) != len(part):
            continue
        clean = group["clean_correct"].to_numpy(bool)
        broken = clean & ~part["robust"].to_numpy(bool)
        if isinstance(row.get("cascade"), str) and row["cascade"]:  # only what it broke itself
            broken &= part["adv_pred"].to_numpy() != -1  # (what it skipped is predicted −1)
        needed = part["needed_norm"].to_numpy(float)
        found = np.where(broken, float(row["eps"]), np.inf)  # this cell's own examples
        found = np.where(np.isnan(needed) | ~clean, found, np.fmin(found, needed))
        minimum = group["minimum_norm"].to_numpy(float)
        certified = group["certified_radius"].to_numpy(float)
        # Only a fixed-ε cell can show the minimum-norm attacks weak: a minimum-norm attack's
        # own cell may break a sample by its ε-projection while reporting a larger norm.
        fixed_eps = bool(np.isnan(needed).all())
        eps = float(row["eps"])
        for message in (minimum_norm_weak(broken, minimum, eps, allowance(row["norm"], eps))
                        if fixed_eps
                        else None,
                        None if np.isnan(certified).any()
                        else certificate_contradicted(certified, found)):
            if message:
                flags.setdefault(index, []).append(message)
    return flags


def with_flags(frame: pd.DataFrame, flags: dict[int, list[str]]) -> pd.DataFrame:
    """``frame`` with ``flags`` appended to each row's (``; ``-joined, as the battery's)."""
    frame = frame.copy()
    for index, added in flags.items():
        before = frame.at[index, "flags"]
        before = before if isinstance(before, str) and before else ""
        new = [flag for flag in added if flag not in before.split("; ")]
        frame.at[index, "flags"] = "; ".join([before, *new] if before else new)
    return frame


def radii_json(radii: pd.DataFrame) -> dict[str, Any]:
    """The per-sample radii as plain lists per group, for a page's ε slider: robust accuracy at
    ε is the share of ``attack_radius`` above ε (``null``: never broken, above every ε);
    certified accuracy the share of positive ``certified_radius`` at or above ε."""
    def plain(values: pd.Series) -> list[float | None]:
        return [None if math.isinf(v) else round(float(v), 6) for v in values]

    groups = []
    for keys, part in radii.groupby(GROUP, sort=True):
        part = part.sort_values("sample")
        certified = part["certified_radius"]
        groups.append({**dict(zip(GROUP, keys, strict=True)), "n": len(part),
                       "attack_radius": plain(part["attack_radius"]),
                       "certified_radius": None if certified.isna().any() else plain(certified),
                       "certifier": str(part["certifier"].iloc[0])})
    return {"format": 1, "groups": groups}


def eps_range(radii: pd.DataFrame, cells: pd.DataFrame) -> np.ndarray:
    """The ε a figure shows: 0 to a little past the largest finite radius or ε of the run."""
    values = np.concatenate([radii["attack_radius"].to_numpy(float),
                             radii["certified_radius"].to_numpy(float),
                             cells["eps"].to_numpy(float)])
    finite = values[np.isfinite(values)]
    top = 1.1 * float(finite.max()) if len(finite) and finite.max() > 0 else 1.0
    return np.linspace(0.0, top, CURVE_POINTS)


def grid_points(cells: pd.DataFrame) -> list[tuple[float, float]]:
    """Smoothing's certified accuracy at the L2 radii of RADIUS_GRID, as its rows carry it."""
    from advbench.reporting.results import RADIUS_GRID, radius_columns
    points = []
    for radius in RADIUS_GRID:
        column = radius_columns(radius)[0]
        values = cells[column].dropna() if column in cells.columns else pd.Series(dtype=float)
        if len(values):
            points.append((radius, float(values.iloc[0])))
    return points


def curve_figures(frame: pd.DataFrame, radii: pd.DataFrame, folder: Path) -> list[Path]:
    """One PNG per split and norm, every defense on it: robust accuracy against ε from the
    per-sample radii with its 95 % band (solid), the fixed-ε worst cases as points with their
    intervals, and the certified accuracy (dashed; smoothing's radius grid as crosses)."""
    import matplotlib.pyplot as plt

    from advbench.reporting.figures import save_figure  # matplotlib (Agg) only when drawing
    written = []
    worst = frame[worst_case_rows(frame)]
    for (split, norm), part in radii.groupby(["split", "norm"], sort=True):
        eps = eps_range(part, frame[(frame["split"] == split) & (frame["norm"] == norm)])
        figure, axis = plt.subplots(figsize=(6.4, 4.2))
        for number, (defense, own) in enumerate(part.groupby("defense", sort=True)):
            color = f"C{number % 10}"
            values = curve(own, eps)
            axis.plot(eps, values["robust_accuracy"], color=color, label=defense)
            axis.fill_between(eps, values["robust_accuracy_ci_low"],
                              values["robust_accuracy_ci_high"], color=color, alpha=0.15)
            if values["certified_accuracy"].notna().all():
                axis.plot(eps, values["certified_accuracy"], color=color, linestyle="--",
                          label=f"{defense}: certified ({own['certifier'].iloc[0]})")
            cells = worst[(worst["defense"] == defense) & (worst["split"] == split)
                          & (worst["norm"] == norm)]
            if len(cells):
                accuracy = cells["robust_accuracy"].to_numpy(float)
                spread = np.abs(np.stack([accuracy - cells["robust_accuracy_ci_low"],
                                          cells["robust_accuracy_ci_high"] - accuracy]))
                axis.errorbar(cells["eps"], accuracy, yerr=spread, fmt="o", color=color,
                              capsize=3)
            own_rows = frame[(frame["defense"] == defense) & (frame["split"] == split)]
            if norm == "l2" and (points := grid_points(own_rows)):
                axis.plot(*zip(*points, strict=True), "x", color=color)
        axis.set(xlabel=f"ε ({norm})", ylabel="accuracy", ylim=(0, 1), xlim=(0, eps[-1]))
        axis.set_title(f"robust accuracy against ε · {norm} · {split}\nsolid: attacks (95 % "
                       "band) · points: fixed-ε worst case · dashed: certified", fontsize=9)
        axis.grid(alpha=0.3)
        axis.legend(fontsize="x-small")
        written.append(save_figure(figure, folder / f"curves_{split}_{norm}.png"))
    return written


def with_curves(frame: pd.DataFrame, samples: pd.DataFrame,
                certified: Mapping[str, Mapping[tuple[str, float], Any]] | None = None,
                exact: Mapping[str, Mapping[str, Any]] | None = None
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The results with the median radii and the consistency flags, and the per-sample radii,
    from the per-sample outcomes (``samples.parquet``'s frame) and each defense's certificates
    (defense → ``(split, ε)`` → one boolean per sample; ``exact``: defense → split → radii).
    Unchanged results and no radii where no minimum-norm attack ran."""
    certificates = certificate_frame(certified or {}, exact) if certified or exact else None
    radii = sample_radii(frame, samples, certificates)
    if radii.empty:
        return frame, radii
    frame = add_radius_columns(frame, summary(radii))
    return with_flags(frame, consistency_flags(frame, samples, radii)), radii


def record_curves(frame: pd.DataFrame, out: Path,
                  certified: Mapping[str, Mapping[tuple[str, float], Any]] | None = None,
                  exact: Mapping[str, Mapping[str, Any]] | None = None
                  ) -> tuple[pd.DataFrame, list[Path]]:
    """A finished run's curves (:func:`with_curves`, from its ``samples.parquet``): the results
    files rewritten with the median radii and flags, the per-sample radii (``radii.parquet``,
    ``radii.json``) and one figure per split and norm in ``figures/``. Returns the updated
    results and the figures written."""
    path = out / "samples.parquet"
    if not path.is_file() or frame.empty:
        return frame, []
    frame, radii = with_curves(frame, pd.read_parquet(path), certified, exact)
    if radii.empty:
        return frame, []
    write_atomic(out / "radii.parquet", lambda p: radii.to_parquet(p, index=False))
    text = json.dumps(radii_json(radii), indent=1) + "\n"
    write_atomic(out / "radii.json", lambda p: p.write_text(text, encoding="utf-8"))
    write_results(out, frame.to_dict("records"))
    return frame, curve_figures(frame, radii, out / "figures")
