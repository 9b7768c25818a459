"""The leaderboard as a static web page: the tables of ``leaderboard.md`` (built by
:func:`advbench.reporting.leaderboard.sections`, so both always agree), sortable by any column,
filterable by defense, attack and norm, with 95 % intervals, flags explained on hover, every
cell linked to its pictures and the per-defense figures of the run shown under the tables.

One page per dataset and model: ``index.html`` is that page when there is one, else an index
linking ``<dataset>_<model>.html`` pages. Everything the page needs is inline (CSS and a few
dozen lines of plain JS, allowed by hash in its Content-Security-Policy, which also forbids any
other script, style, font or connection); figures are linked by relative path, so the folder
opens from disk or any static host. Every string taken from results (plugin names are
third-party input) is escaped by Jinja2's autoescaping, and URLs are percent-encoded. The
output depends only on the results, the manifest and which figures exist: no timestamps.

Where the run folder holds the per-sample radii (``radii.json``, written by
:mod:`advbench.reporting.curves`), the page also ranks the defenses per split and norm at an ε
the reader picks on a slider: robust accuracy at ε is the share of samples whose attack radius
is above it, certified accuracy the share certified at a positive radius ≥ ε, recomputed in the
browser from the radii embedded in the page (no rerun). Without the file there is no such
section and the page is exactly what it was.

The page's Jinja2 template, style sheet and script are the files of ``templates/``
(``page.html``, ``site.css``, ``site.js``, and ``slider.css``, ``slider.js`` for the ε slider,
added to the page only where it has one), shipped as package data.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pandas as pd
from jinja2 import Environment, StrictUndefined

from advbench._util import write_atomic
from advbench.errors import BenchError
from advbench.reporting.curves import GROUP, certified_at, robust_at
from advbench.reporting.leaderboard import (
    CELL_PICTURES,
    SECTION_KEYS,
    WORST_CASE,
    manifest_summary,
    sections,
    strongest,
)
from advbench.reporting.pictures import cell_stem

PAGE_KEYS = ["dataset", "model"]
MARK = re.compile(r"⚠(\d+)|\[(\d+)\]")  # the note references leaderboard.cell_text writes
NORM = re.compile(r"\((median norm [^)]*)\)")  # leaderboard.norm_text, as cell_text appends it


def _template(name: str) -> str:
    """A file of ``templates/``, shipped as package data."""
    return resources.files("advbench.reporting").joinpath("templates", name).read_text("utf-8")


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def csp(style: str, script: str) -> str:
    """Nothing but the page's own inline style and script and images of the site's own origin:
    no network, and an injected <script> could not run even if escaping failed."""
    return (f"default-src 'none'; img-src 'self'; style-src {_csp_hash(style)}; "
            f"script-src {_csp_hash(script)}; base-uri 'none'; form-action 'none'")


STYLE = _template("site.css").strip()
SCRIPT = _template("site.js").strip()
CSP = csp(STYLE, SCRIPT)
# A page with ε sliders: the same style and script, each with the slider's part after it.
SLIDER_STYLE = STYLE + "\n" + _template("slider.css").strip()
SLIDER_SCRIPT = SCRIPT + "\n" + _template("slider.js").strip()
SLIDER_CSP = csp(SLIDER_STYLE, SLIDER_SCRIPT)
RADII_FILE = "radii.json"  # the per-sample radii a run writes (curves.radii_json)
ENVIRONMENT = Environment(autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True)
TEMPLATE = ENVIRONMENT.from_string(_template("page.html"))


@dataclass
class Mark:
    label: str
    title: str


@dataclass
class Cell:
    text: str
    sort: str = ""
    css: str = ""
    attack: str = ""
    title: str = ""
    ci: str = ""
    examples: str = ""
    eps: str = ""
    marks: list[Mark] = field(default_factory=list)
    norm: str = ""  # the median norm a minimum-norm attack needed


@dataclass
class Header:
    label: str
    type: str = "number"
    attack: str = ""


@dataclass
class Row:
    defense: str
    cells: list[Cell]


@dataclass
class Board:
    title: str
    split: str
    norm: str
    eps: str
    headers: list[Header]
    rows: list[Row]
    notes: list[str]


@dataclass
class Picture:
    href: str
    caption: str


@dataclass
class Gallery:
    heading: str
    defense: str
    pictures: list[Picture]


@dataclass
class Standing:
    """A defense's row under an ε slider, as shown before the script re-ranks it."""
    defense: str
    robust: str
    certified: str
    certifier: str


@dataclass
class Slider:
    """One split and norm's ranking at an ε the reader picks: the slider's range, the rows at
    the run's ε and the per-sample radii the page's script recomputes them from."""
    split: str
    norm: str
    top: str
    step: str
    value: str
    rows: list[Standing]
    data: list[dict[str, Any]]


@dataclass
class Page:
    dataset: str
    model: str
    href: str
    defenses: list[str]
    attacks: list[str]
    norms: list[str]
    tables: list[Board]
    galleries: list[Gallery]
    sliders: list[Slider] = field(default_factory=list)


class Figures:
    """The figures a page may link: files that exist under one of the run folders, as URLs
    relative to the folder the page is written to."""

    def __init__(self, folder: Path, roots: Sequence[Path]) -> None:
        self.folder = Path(folder).resolve()
        self.roots = list(dict.fromkeys(Path(root).resolve() for root in roots))

    def href(self, relative: str) -> str:
        """The URL of ``relative`` (``figures/x.png``) in the first run folder holding it, or
        "" when none does."""
        for root in self.roots:
            path = root / relative
            if path.is_file():
                return quote(Path(os.path.relpath(path, self.folder)).as_posix())
        return ""

    def listed(self, manifest: dict[str, Any] | None) -> list[str]:
        """The run's figures: the manifest's list, or without one every PNG in figures/."""
        if manifest is not None:
            return [str(p) for p in manifest.get("figures") or []]
        return sorted({f"figures/{path.name}" for root in self.roots
                       for path in (root / "figures").glob("*.png")})


def number(value: Any) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def interval(row: pd.Series | None, column: str) -> str:
    """The 95 % interval of ``column`` as shown under its number ("" without a number)."""
    if row is None or number(row.get(column)) is None:
        return ""
    low, high = (number(row.get(f"{column}_ci_{end}")) for end in ("low", "high"))
    return "" if low is None or high is None else f"{low:.3f}–{high:.3f}"


def split_marks(text: str, notes: list[str]) -> tuple[str, list[Mark]]:
    """A leaderboard cell's text without its note references, and those references with the
    note each explains."""
    marks = []
    for match in MARK.finditer(text):
        index = int(match.group(1) or match.group(2))
        note = notes[index - 1] if 0 < index <= len(notes) else ""
        marks.append(Mark(match.group(0), note))
    return MARK.sub("", text).strip(), marks


def describe(row: pd.Series) -> str:
    """A cell's hover text: what the number is, its interval and sample count, the rest."""
    parts = [f"{row['defense']} × {row['attack']} ({row['norm']} ε={float(row['eps']):g})"]
    if not bool(row["valid"]):
        parts.append(f"{row.get('status', 'invalid')}: {row['invalid_reason']}")
        return "\n".join(parts)
    accuracy = number(row["robust_accuracy"])
    if accuracy is not None:
        text = f"robust accuracy {accuracy:.3f}"
        if ci := interval(row, "robust_accuracy"):
            text += f" (95 % interval {ci})"
        parts.append(text)
    if (samples := number(row.get("n_samples"))) is not None:
        parts.append(f"{samples:.0f} samples")
    if (success := number(row.get("attack_success_rate"))) is not None:
        parts.append(f"attack success rate {success:.3f}")
    if (certified := number(row.get("certified_accuracy"))) is not None:
        parts.append(f"certified accuracy {certified:.3f}")
    if (queries := number(row.get("queries_mean"))) is not None:
        parts.append(f"{queries:.1f} queries per sample")
    if (needed := number(row.get("median_norm"))) is not None:
        parts.append(f"median {row['norm']} norm needed {needed:.4g}")
    return "\n".join(parts)


def board(keys: tuple, part: pd.DataFrame, figures: Figures) -> Board:
    """One table of ``leaderboard.md`` with each cell's interval, hover text and pictures: the
    clean accuracy, the worst case and the attack that reached it first, then the attacks."""
    section = next(sections(part))
    dataset, model, split, norm, eps = keys
    by_cell = {(row["defense"], str(row["attack"])): row for _, row in part.iterrows()}
    attacks = section.headers[4:]
    headers = ([Header(section.headers[0], "text"), Header(section.headers[1]),
                Header(section.headers[2]), Header(section.headers[3], "text")]
               + [Header(attack, attack=attack) for attack in attacks])
    rows = []
    for texts in section.rows:
        defense = texts[0]
        first = part[part["defense"] == defense].iloc[0]
        text, marks = split_marks(texts[1], section.notes)
        clean = Cell(text, css="clean", marks=marks, ci=interval(first, "clean_accuracy"),
                     title=f"{defense}: clean accuracy", sort=sortable(first["clean_accuracy"]))
        _, named, worst = strongest(part[part["defense"] == defense])
        text, marks = split_marks(texts[2], section.notes)
        text, norm_line = split_norm(text)
        what = ("" if worst is None else "per-sample worst case over every attack"
                if worst["attack"] == WORST_CASE else f"lowest valid cell, {worst['attack']}")
        worst_cell = Cell(text, css="worst", marks=marks, ci=interval(worst, "robust_accuracy"),
                          sort="" if worst is None else sortable(worst["robust_accuracy"]),
                          title=f"{defense}: {what}" if what else "", norm=norm_line)
        by = Cell(texts[3], css="by", sort=named, title=f"{defense}: the single attack leaving "
                  "the fewest robust samples" if named else "")
        cells = [clean, worst_cell, by]
        for attack, cell_text in zip(attacks, texts[4:], strict=True):
            cells.append(cell(by_cell.get((defense, attack)), cell_text, section.notes,
                              figures, attack))
        rows.append(Row(defense, cells))
    title = f"{split} split · {norm} ε={eps:g}"
    return Board(title, str(split), str(norm), f"{eps:g}", headers, rows, list(section.notes))


def split_norm(text: str) -> tuple[str, str]:
    """A cell's text without the median norm :func:`norm_text` appended, and that norm."""
    match = NORM.search(text)
    return (text, "") if match is None else (NORM.sub("", text).strip(), match.group(1))


def sortable(value: Any) -> str:
    value = number(value)
    return "" if value is None else repr(value)


def cell(row: pd.Series | None, text: str, notes: list[str], figures: Figures,
         attack: str) -> Cell:
    """One attack cell: the leaderboard's text, the robust accuracy to sort by, its interval,
    hover text, and links to the cell's pictures where they exist."""
    text, marks = split_marks(text, notes)
    text, norm_line = split_norm(text)
    if row is None:
        return Cell(text, attack=attack, css="missing")
    valid = bool(row["valid"])
    result = Cell(text, attack=attack, marks=marks, title=describe(row), norm=norm_line,
                  css="ok" if valid else str(row.get("status") or "invalid"))
    if valid:
        result.sort = sortable(row["robust_accuracy"])
        result.ci = interval(row, "robust_accuracy")
        stem = cell_stem(row["attack"], row["defense"], row["split"], row["norm"],
                         float(row["eps"]))
        result.examples = figures.href(f"figures/{stem}_examples.png")
        sweep = cell_stem(row["attack"], row["defense"], row["split"], row["norm"])
        # the ε sweep's picture; runs before 0.2 drew one per cell, with the ε in its name
        result.eps = (figures.href(f"figures/{sweep}_eps.png")
                      or figures.href(f"figures/{stem}_eps.png"))
    return result


def owner(stem: str, defenses: Iterable[str], attacks: Iterable[str]) -> str:
    """The defense a run-level picture belongs to ("" for none): training curves
    (``training_<d>``), certified curves (``certified_<d>_<split>``), ε sweeps
    (``eps_sweep_<d>_<split>``), an attack's own figures (``<attack>_<d>_...``, e.g. heat maps).
    The longest matching name wins, so a variant is not mistaken for its base defense."""
    attacks = list(attacks)
    found = [d for d in defenses
             if stem in (f"training_{d}", f"certified_{d}")
             or stem.startswith((f"certified_{d}_", f"eps_sweep_{d}_"))
             or any(stem.startswith(f"{a}_{d}_") for a in attacks)]
    return max(found, key=len, default="")


def caption(stem: str, defense: str, attacks: Iterable[str]) -> str:
    if stem == f"training_{defense}":
        return "training curves"
    for prefix, what in (("certified_", "certified accuracy against the L2 radius"),
                         ("eps_sweep_", "robust accuracy against ε")):
        if stem.startswith(f"{prefix}{defense}"):
            rest = stem[len(prefix + defense):].strip("_")
            return f"{what} ({rest} split)" if rest else what
    for attack in sorted(attacks, key=len, reverse=True):
        if stem.startswith(f"{attack}_{defense}_"):
            parts = stem[len(f"{attack}_{defense}_"):].split("_")
            if len(parts) == 3:  # the cell's split, norm and ε, as the runner names it
                return f"{attack} · {parts[0]} split · {parts[1]} ε={parts[2]}"
            return f"{attack} · {' '.join(parts)}"
    return stem


KIND_ORDER = ("training_", "certified_", "eps_sweep_")


def kind(stem: str) -> int:
    """Training curves first, then certified curves, ε sweeps, the attacks' own figures."""
    return next((i for i, prefix in enumerate(KIND_ORDER) if stem.startswith(prefix)),
                len(KIND_ORDER))


def galleries(frame: pd.DataFrame, figures: Figures, listed: list[str]) -> list[Gallery]:
    """The run-level pictures (not the per-cell ones, which the cells link), per defense."""
    defenses = sorted(frame["defense"].astype(str).unique())
    attacks = sorted(frame["attack"].astype(str).unique())
    by_defense: dict[str, list[Picture]] = {}
    for relative in sorted(listed, key=lambda p: (kind(Path(p).stem), p)):
        stem = Path(relative).stem
        if stem.endswith(CELL_PICTURES):
            continue
        href = figures.href(relative)
        if not href:
            continue
        defense = owner(stem, defenses, attacks)
        text = caption(stem, defense, attacks) if defense else stem
        by_defense.setdefault(defense, []).append(Picture(href, text))
    result = [Gallery(d, d, by_defense[d]) for d in defenses if d in by_defense]
    if "" in by_defense:
        result.append(Gallery("other figures", "", by_defense[""]))
    return result


def check_group(group: dict[str, Any]) -> None:
    """One radii group as curves.radii_json writes it (ValueError naming what is not)."""
    missing = [key for key in (*GROUP, "n", "attack_radius", "certified_radius", "certifier")
               if key not in group]
    if missing:
        raise ValueError(f"a group without {', '.join(missing)}")
    n = group["n"]
    for key in ("attack_radius", "certified_radius"):
        values = group[key]
        if values is None and key == "certified_radius":
            continue
        if not isinstance(values, list) or len(values) != n or not all(
                v is None or (isinstance(v, (int, float)) and v >= 0) for v in values):
            raise ValueError(f"{key} of {group['defense']} is not {n} radii ≥ 0")


def radii_groups(path: Path) -> list[dict[str, Any]]:
    """The groups of one ``radii.json``, checked, since a wrong file would mean wrong numbers."""
    try:
        data = json.loads(path.read_text("utf-8"))
        if not isinstance(data, dict) or data.get("format") != 1:
            raise ValueError("not format 1")
        for group in data["groups"]:
            check_group(group)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BenchError(f"{path}: not the per-sample radii bench run writes ({exc}); rerun "
                         f"bench run into that folder or delete the file") from exc
    return data["groups"]


def read_radii(roots: Sequence[Path]) -> list[dict[str, Any]]:
    """The radii groups of every run folder's ``radii.json`` (the first folder's where two
    hold a group); none where no folder has the file."""
    found: dict[tuple[str, ...], dict[str, Any]] = {}
    for root in roots:
        path = Path(root) / RADII_FILE
        if path.is_file():
            for group in radii_groups(path):
                found.setdefault(tuple(str(group[key]) for key in GROUP), group)
    return list(found.values())


def slider_range(groups: Sequence[dict[str, Any]], eps: Sequence[float]) -> tuple[float, float]:
    """The slider's top and step: a little past the largest finite radius or ε of the run, in
    a hundred to a thousand steps of a power of ten."""
    values = [float(v) for group in groups for key in ("attack_radius", "certified_radius")
              for v in group[key] or [] if v is not None] + [float(e) for e in eps]
    largest = max(values, default=0.0)
    top = 1.1 * largest if largest > 0 else 1.0
    step = 10.0 ** math.floor(math.log10(top / 100))
    return math.ceil(round(top / step, 6)) * step, step


def standings(groups: Sequence[dict[str, Any]], eps: float) -> list[Standing]:
    """The defenses at ``eps``, by robust accuracy (best first, ties in the groups' order), as
    the page's script ranks them."""
    def radii(values: list[float | None]) -> np.ndarray:
        return np.array([math.inf if v is None else float(v) for v in values])  # None: inf

    rows = []
    for group in groups:
        robust = float(robust_at(radii(group["attack_radius"]), np.asarray(eps)))
        certified = group["certified_radius"]
        shown = ("—" if certified is None
                 else f"{float(certified_at(radii(certified), np.asarray(eps))):.3f}")
        rows.append((-robust, Standing(str(group["defense"]), f"{robust:.3f}", shown,
                                       "" if certified is None else str(group["certifier"]))))
    return [row for _, row in sorted(rows, key=lambda pair: pair[0])]


def number_text(value: float) -> str:
    return f"{value:.12g}"


def sliders(groups: Sequence[dict[str, Any]], part: pd.DataFrame) -> list[Slider]:
    """Per split and norm of one page's radii, the ε slider, starting at the run's largest ε of
    that split and norm."""
    dataset, model = (str(part[key].iloc[0]) for key in PAGE_KEYS)
    mine = [g for g in groups if (str(g["dataset"]), str(g["model"])) == (dataset, model)]
    result = []
    for split, norm in sorted({(str(g["split"]), str(g["norm"])) for g in mine}):
        members = sorted((g for g in mine if (str(g["split"]), str(g["norm"])) == (split, norm)),
                         key=lambda g: str(g["defense"]))
        cells = part[(part["split"].astype(str) == split) & (part["norm"].astype(str) == norm)]
        eps = [float(e) for e in cells["eps"] if number(e) is not None]
        top, step = slider_range(members, eps)
        value = max(eps, default=0.0)
        data = [{"defense": str(g["defense"]), "n": int(g["n"]), "attack": g["attack_radius"],
                 "certified": g["certified_radius"]} for g in members]
        result.append(Slider(split, norm, number_text(top), number_text(step),
                             number_text(value), standings(members, value), data))
    return result


def page_name(dataset: str, model: str, taken: set[str]) -> str:
    """A file name for a dataset/model page: safe characters only, unique in the site."""
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{dataset}_{model}").strip("-.") or "page"
    name, counter = f"{base}.html", 1
    while name in taken or name == "index.html":
        counter += 1
        name = f"{base}-{counter}.html"
    taken.add(name)
    return name


def run_facts(manifest: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The manifest lines leaderboard.md shows under its tables."""
    if not manifest:
        return []
    facts = []
    for key, value in manifest_summary(manifest).items():
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            text = " ".join(value)
        elif isinstance(value, (dict, list)):
            text = json.dumps(value, sort_keys=True, default=str)
        else:
            text = str(value)
        facts.append((key, text))
    return facts


def render_site(frame: pd.DataFrame, folder: Path, manifest: dict[str, Any] | None = None,
                roots: Sequence[Path] | None = None) -> dict[str, str]:
    """The site's files (name → HTML) for pages written to ``folder``; figures are looked up
    under each of ``roots`` (run folders holding ``figures/``; default ``folder``)."""
    figures = Figures(folder, roots or [folder])
    listed = figures.listed(manifest)
    radii = read_radii(figures.roots)
    groups = list(frame.groupby(PAGE_KEYS, sort=True))
    taken: set[str] = set()
    pages = []
    for (dataset, model), part in groups:
        href = "index.html" if len(groups) == 1 else page_name(str(dataset), str(model), taken)
        tables = [board(keys, cells, figures)
                  for keys, cells in part.groupby(SECTION_KEYS, sort=True)]
        pages.append(Page(
            str(dataset), str(model), href,
            defenses=sorted(part["defense"].astype(str).unique()),
            attacks=sorted(part["attack"].astype(str).unique()),
            norms=sorted(part["norm"].astype(str).unique()),
            tables=tables, galleries=galleries(part, figures, listed),
            sliders=sliders(radii, part)))
    plain = {"csp": CSP, "style": STYLE, "script": SCRIPT}
    with_sliders = {"csp": SLIDER_CSP, "style": SLIDER_STYLE, "script": SLIDER_SCRIPT}
    run = run_facts(manifest)
    files = {page.href: TEMPLATE.render(
        title=f"bench leaderboard · {page.dataset} · {page.model}", page=page,
        back=len(pages) > 1, pages=pages, run=run, **(with_sliders if page.sliders else plain))
        for page in pages}
    if len(pages) != 1:
        files["index.html"] = TEMPLATE.render(title="bench leaderboard", page=None, back=False,
                                              pages=pages, run=run, **plain)
    return files


def write_site(frame: pd.DataFrame, folder: Path, manifest: dict[str, Any] | None = None,
               roots: Sequence[Path] | None = None) -> list[Path]:
    """Write the leaderboard site into ``folder`` (created if needed); returns the files,
    ``index.html`` first. See :func:`render_site`."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        files = render_site(frame, folder, manifest, roots)
        written = []
        for name in sorted(files, key=lambda n: (n != "index.html", n)):
            text = files[name]
            write_atomic(folder / name,
                         functools.partial(Path.write_text, data=text, encoding="utf-8"))
            written.append(folder / name)
    except OSError as exc:
        raise BenchError(f"{folder}: cannot write the leaderboard page there "
                         f"({exc.strerror or exc}); choose a writable folder") from exc
    return written
