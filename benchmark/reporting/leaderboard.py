"""The leaderboard: one table per dataset, model, split and threat model (norm and ε); defenses
as rows, their worst case first, then attacks as columns, robust accuracy in the cells. Markdown
for files, rich for terminals."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
from rich.table import Table
from tabulate import tabulate

from advbench.errors import UsageError

SECTION_KEYS = ["dataset", "model", "split", "norm", "eps"]  # one threat model each
WORST_CASE = "worst-case"  # the per-sample worst case's rows (advbench.running.plan)


@dataclass
class Section:
    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)


def format_accuracy(value: Any) -> str:
    return "—" if pd.isna(value) else f"{float(value):.3f}"


def note_number(notes: list[str], text: str) -> int:
    """The 1-based number of ``text`` among the table's notes (added once)."""
    if text not in notes:
        notes.append(text)
    return notes.index(text) + 1


def cascade_note(part: pd.DataFrame) -> str:
    """The note of a table whose cells ran as a cascade ("" if they did not)."""
    chains = [c for c in part.get("cascade", ()) if isinstance(c, str) and c]
    if not chains:
        return ""
    longest = max(chains, key=lambda chain: chain.count(" > "))
    return (f"cascade ({longest}): each attack ran only on the samples the attacks before it "
            "left robust; its column is the robust accuracy against it and all of them")


def norm_text(row: pd.Series) -> str:
    """The median perturbation a minimum-norm attack needed (``median_norm``), as shown beside
    its robust accuracy; "" for attacks that report none."""
    value = row.get("median_norm")
    if value is None or pd.isna(value):
        return ""
    return f"median norm {'∞' if math.isinf(float(value)) else format(float(value), '.3g')}"


def cell_text(row: pd.Series, notes: list[str], cascade: str = "", norm: bool = True) -> str:
    """Robust accuracy (with ⚠ marks for sanity flags, and a reference to the ``cascade``
    note where the cell is cumulative) and, with ``norm``, the median norm a minimum-norm
    attack needed, or why the cell has no number."""
    if not bool(row["valid"]):
        number = note_number(notes, f"{row['defense']} × {row['attack']}: "
                                    f"{row['invalid_reason']}")
        return f"{row.get('status', 'invalid')} [{number}]"
    flags = row.get("flags")
    flags = flags.split("; ") if isinstance(flags, str) and flags else []
    marks = [f"⚠{note_number(notes, row['defense'] + ': ' + flag)}" for flag in flags]
    chain = str(row.get("cascade") or "")
    if cascade and chain.endswith(f" > {row['attack']}"):  # cumulative: not a chain's first
        marks.append(f"[{note_number(notes, cascade)}]")
    needed = norm_text(row) if norm else ""
    return " ".join([format_accuracy(row["robust_accuracy"]), *marks,
                     *([f"({needed})"] if needed else [])])


def draws_note(cells: pd.DataFrame) -> str:
    """How a randomized defense's predictions were graded ("" for a deterministic one)."""
    draws = cells["prediction_draws"] if "prediction_draws" in cells else pd.Series(dtype=float)
    draws = draws.dropna()
    if draws.empty or draws.max() <= 1:
        return ""
    return (f"{cells['defense'].iloc[0]}: randomized, each prediction (clean and adversarial "
            f"alike) is the mean softmax of {int(draws.max())} draws")


def strongest(cells: pd.DataFrame) -> tuple[float, str, pd.Series | None]:
    """A row's worst case and the attack that reached it, within one threat model: the
    per-sample worst case when the run made one (robust only if every attack failed), else the
    lowest valid cell; the attack named is the single one leaving the fewest robust samples
    (``+k`` when k others tie with it). NaN and "" without a valid cell."""
    valid = cells[cells["valid"].astype(bool) & cells["robust_accuracy"].notna()]
    union = valid[valid["attack"] == WORST_CASE]
    single = valid[valid["attack"] != WORST_CASE]
    if single.empty:
        return float("nan"), "", None
    lowest = single["robust_accuracy"].astype(float).min()
    tied = sorted(single.loc[single["robust_accuracy"] == lowest, "attack"].astype(str))
    name = tied[0] + (f" +{len(tied) - 1}" if len(tied) > 1 else "")
    row = union.iloc[0] if len(union) else single[single["attack"] == tied[0]].iloc[0]
    return float(row["robust_accuracy"]), name, row


def sections(frame: pd.DataFrame) -> Iterator[Section]:
    """One table per threat model (dataset, model, split, norm and ε): per defense its clean
    accuracy, the worst case and the attack that reached it first, then one column per attack;
    rows sorted by the worst case, best first."""
    for keys, part in frame.groupby(SECTION_KEYS, sort=True):
        notes: list[str] = []
        cascade = cascade_note(part)
        columns = sorted(set(part["attack"].astype(str)) - {WORST_CASE})
        ranked = []
        for defense, cells in part.groupby("defense", sort=True):
            by_attack = {row["attack"]: row for _, row in cells.iterrows()}
            worst, attack, row = strongest(cells)
            clean = format_accuracy(cells["clean_accuracy"].iloc[0])
            if note := draws_note(cells):
                clean += f" [{note_number(notes, note)}]"
            worst_text = "—" if row is None else cell_text(row, notes, norm=False)
            texts = [cell_text(by_attack[c], notes, cascade) if c in by_attack else ""
                     for c in columns]
            ranked.append((worst, [str(defense), clean, worst_text, attack or "—", *texts]))
        ranked.sort(key=lambda item: -1.0 if pd.isna(item[0]) else -float(item[0]))
        dataset, model, split, norm, eps = keys
        yield Section(
            title=f"{dataset} · {model} · {split} split · {norm} ε={eps:g}",
            headers=["defense", "clean", "worst case", "worst attack", *columns],
            rows=[row for _, row in ranked],
            notes=notes,
        )


def md_text(text: Any) -> str:
    """Text from a results file or manifest (plugin names, reasons, flags), shown literally in
    Markdown as the web page shows it: no HTML (``<`` and ``&`` escaped), no ``|`` ending a
    table cell early, no line break ending its row."""
    escaped = str(text).replace("&", "&amp;").replace("<", "&lt;").replace("|", "\\|")
    return " ".join(escaped.splitlines())


def to_markdown(frame: pd.DataFrame, manifest: dict[str, Any] | None = None) -> str:
    """The Markdown leaderboard (GitHub pipe tables) with the run's manifest under it."""
    parts = ["# bench leaderboard", "",
             "Robust accuracy (correct before and after the attack) on the evaluation samples, "
             "one table per threat model. `worst case`: a sample counts as robust only if every "
             "attack failed on it; `worst attack`: the single attack leaving the fewest robust "
             "samples (+k: k others tie).", ""]
    for section in sections(frame):
        parts += [f"## {md_text(section.title)}", "",
                  tabulate([[md_text(cell) for cell in row] for row in section.rows],
                           headers=[md_text(header) for header in section.headers],
                           tablefmt="pipe", disable_numparse=True), ""]
        parts += [f"[{i}] {md_text(note)}" + "  " for i, note in enumerate(section.notes, 1)]
        parts += [""] if section.notes else []
    parts += curves_section(frame, (manifest or {}).get("figures") or [])
    if manifest and manifest.get("figures"):
        parts += figures_section(manifest["figures"])
    if manifest:
        parts += ["## Run", ""]
        parts += [f"- **{key}**: {md_text(value)}"
                  for key, value in manifest_summary(manifest).items()]
        parts += [""]
    return "\n".join(parts)


CELL_PICTURES = ("_examples", "_eps")  # per-cell pictures: linked, not shown inline
CURVES = "curves_"  # advbench.reporting.curves's figures: curves_<split>_<norm>.png
RADII = ["median_radius", "median_certified_radius", "median_radius_gap"]


def format_radius(value: Any) -> str:
    """A radius as the tables print it: 3 significant digits, ∞ for never broken."""
    if value is None or pd.isna(value):
        return "—"
    return "∞" if math.isinf(float(value)) else format(float(value), ".3g")


def radius_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset, model, split, norm and defense with its median radii (the
    worst-case rows carry them, the same at every ε of the norm)."""
    if "median_radius" not in frame.columns:
        return frame.iloc[:0]
    keys = ["dataset", "model", "split", "norm", "defense"]
    return frame[frame["median_radius"].notna()].drop_duplicates(keys).sort_values(keys)


def curves_section(frame: pd.DataFrame, figures: list[str]) -> list[str]:
    """The robustness curves: per split and norm, each defense's median robust radius from the
    minimum-norm attacks (an upper bound), its median certified radius (a lower bound) and the
    median gap between the two, with the curve figure."""
    rows = radius_rows(frame)
    if rows.empty:
        return []
    parts = ["## Robustness curves", "",
             "Per sample, the smallest perturbation found to break it (minimum-norm attacks, "
             "capped by every fixed-ε attack that broke it; 0 if misclassified) bounds its "
             "robust radius from above, a certificate from below. `median radius`: over all "
             "samples; `median certified`: the certified radius (CROWN-IBP: the largest ε of "
             "the run certified); `unsettled gap`: median over correctly classified samples of "
             "(attack radius − certified radius), what neither attack nor certificate has "
             "settled.", ""]
    for (dataset, model, split, norm), part in rows.groupby(
            ["dataset", "model", "split", "norm"], sort=True):
        table = [[md_text(row["defense"]), *(format_radius(row.get(c)) for c in RADII)]
                 for _, row in part.iterrows()]
        parts += [f"### {md_text(f'{dataset} · {model} · {split} split · {norm}')}", "",
                  tabulate(table, headers=["defense", "median radius", "median certified",
                                           "unsettled gap"],
                           tablefmt="pipe", disable_numparse=True), ""]
        name = f"{CURVES}{split}_{norm}.png"
        parts += [f"![{Path(p).stem}]({quote(str(p))})" for p in figures
                  if Path(p).name == name] + [""]
    return parts


def figures_section(paths: list[str]) -> list[str]:
    """Summary figures shown inline; the many per-cell pictures as one line of links each
    (the robustness curves are shown in their own section)."""
    paths = [p for p in paths if not Path(p).name.startswith(CURVES)]
    if not paths:
        return []
    shown = [p for p in paths if not Path(p).stem.endswith(CELL_PICTURES)]
    linked = [p for p in paths if Path(p).stem.endswith(CELL_PICTURES)]
    parts = ["## Figures", ""] + [f"![{Path(p).stem}]({quote(str(p))})" for p in shown] + [""]
    if linked:
        parts += ["Clean against adversarial examples, and one image across ε, per cell:", ""]
        parts += [f"- [{Path(p).stem}]({quote(str(p))})" for p in linked] + [""]
    return parts


def manifest_summary(manifest: dict[str, Any]) -> dict[str, Any]:
    keys = ("command", "started", "wall_seconds", "resumed_cells", "seed", "device", "versions",
            "samples")
    return {key: manifest[key] for key in keys if key in manifest}


def to_rich(frame: pd.DataFrame) -> list[Table]:
    """The same tables for the terminal."""
    tables = []
    for section in sections(frame):
        table = Table(title=section.title, title_justify="left")
        for header in section.headers:  # folded, never cut: variants differ only at the end
            table.add_column(header, justify="left" if header == "defense" else "right",
                             overflow="fold")
        for row in section.rows:
            table.add_row(*row)
        if section.notes:
            table.caption = "  ".join(f"[{i}] {n}" for i, n in enumerate(section.notes, 1))
        tables.append(table)
    return tables


RUN_FILES = ("results.csv", "results.parquet")


def run_inputs(paths: list[Path]) -> tuple[list[Path], Path | None]:
    """Results files to merge, a run folder standing for its results.csv and results.parquet
    (both, so a hand edit of one shows as a conflict); and the manifest of a lone run folder."""
    files: list[Path] = []
    for path in paths:
        if not path.is_dir():
            files.append(path)
            continue
        found = [path / name for name in RUN_FILES if (path / name).is_file()]
        if not found:
            raise UsageError(f"{path} is a folder without {' or '.join(RUN_FILES)}: pass a run "
                             "folder or a results file")
        files += found
    manifest = paths[0] / "manifest.json" if len(paths) == 1 and paths[0].is_dir() else None
    return files, manifest if manifest is not None and manifest.is_file() else None


def read_manifest(path: Path, label: str = "--manifest") -> dict[str, Any]:
    """A run's manifest.json: a JSON object whose ``figures``, if any, is a list of paths."""
    try:
        if not path.is_file():  # a folder, a device or a pipe (read forever): not a manifest
            raise FileNotFoundError(path)
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{label} {path}: not a readable manifest ({type(exc).__name__})") \
            from exc
    if not isinstance(manifest, dict):
        raise UsageError(f"{label} {path}: not a bench manifest (a JSON object expected, found "
                         f"{type(manifest).__name__}); pass the run's manifest.json")
    figures = manifest.get("figures", [])
    if not isinstance(figures, list) or not all(isinstance(f, str) for f in figures):
        raise UsageError(f"{label} {path}: 'figures' must be a list of paths")
    return manifest


def write_output(path: Path, text: str) -> None:
    """The leaderboard to a file, or a one-line refusal (a folder, a missing parent...)."""
    if path.is_dir():
        raise UsageError(f"--out {path} is a folder; name a file, e.g. {path / 'leaderboard.md'}")
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"--out {path}: cannot write there ({exc.strerror}); choose a writable "
                         "file") from exc
