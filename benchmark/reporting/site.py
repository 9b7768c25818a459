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
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd
from jinja2 import Environment, StrictUndefined

from advbench.errors import BenchError
from advbench.reporting.leaderboard import (
    CELL_PICTURES,
    SECTION_KEYS,
    WORST_CASE,
    manifest_summary,
    sections,
    strongest,
)
from advbench.reporting.pictures import cell_stem
from advbench.reporting.results import write_atomic

PAGE_KEYS = ["dataset", "model"]
MARK = re.compile(r"⚠(\d+)|\[(\d+)\]")  # the note references leaderboard.cell_text writes
NORM = re.compile(r"\((median norm [^)]*)\)")  # leaderboard.norm_text, as cell_text appends it

STYLE = """
:root { color-scheme: light; --ink: #1f2328; --muted: #656d76; --line: #d8dee4;
  --head: #f6f8fa; --accent: #0969da; --warn: #9a6700; --bad: #cf222e; --hover: #eef5ff; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff; line-height: 1.45;
  font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
main { max-width: 1180px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 26px; margin: 0 0 2px; }
h2 { font-size: 19px; margin: 34px 0 10px; }
h3 { font-size: 16px; margin: 22px 0 8px; }
a { color: var(--accent); text-decoration: none; }
a:hover { text-decoration: underline; }
.subtitle { color: var(--muted); margin: 0 0 14px; font-size: 16px; }
.lede { max-width: 860px; color: var(--ink); }
.lede small, .hint { color: var(--muted); }
.crumb { font-size: 14px; margin-bottom: 10px; display: inline-block; }
.filters { display: flex; flex-wrap: wrap; gap: 10px 18px; align-items: end; padding: 12px 14px;
  background: var(--head); border: 1px solid var(--line); border-radius: 8px; margin: 16px 0; }
.filters label { display: flex; flex-direction: column; font-size: 12px; color: var(--muted);
  gap: 3px; }
.filters select, .filters input { font: inherit; font-size: 14px; padding: 4px 6px;
  border: 1px solid var(--line); border-radius: 6px; background: #fff; min-width: 150px; }
.filters output { font-size: 13px; color: var(--muted); margin-left: auto; }
.scroll { overflow-x: auto; border: 1px solid var(--line); border-radius: 8px; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: 7px 12px; border-bottom: 1px solid var(--line); vertical-align: top; }
tbody tr:last-child > * { border-bottom: 0; }
thead th { background: var(--head); font-weight: 600; font-size: 13px; text-align: right;
  white-space: nowrap; position: sticky; top: 0; }
thead th:first-child, tbody th { text-align: left; }
thead th button { all: unset; cursor: pointer; }
thead th button:focus-visible { outline: 2px solid var(--accent); border-radius: 3px; }
thead th button::after { content: " \\2195"; color: #afb8c1; font-weight: 400; }
thead th[aria-sort="ascending"] button::after { content: " \\2191"; color: var(--accent); }
thead th[aria-sort="descending"] button::after { content: " \\2193"; color: var(--accent); }
tbody th { font-weight: 600; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fbfcfd; }
tbody tr:hover { background: var(--hover); }
td { text-align: right; white-space: nowrap; }
td.worst { font-weight: 600; }
td.by { border-right: 1px solid var(--line); text-align: left; color: var(--muted); }
td.clean { border-right: 1px solid var(--line); }
.value { font-size: 15px; }
.ci { display: block; color: var(--muted); font-size: 11.5px; }
.eps { font-size: 11px; margin-left: 4px; padding: 0 4px; border: 1px solid #b6d4fe;
  border-radius: 4px; background: #f1f8ff; }
.mark { color: var(--warn); font-size: 11.5px; margin-left: 3px; cursor: help;
  border-bottom: 1px dotted var(--warn); }
td.invalid .value, td.error .value { color: var(--bad); }
td.invalid .mark, td.error .mark { color: var(--bad); border-color: var(--bad); }
.notes { font-size: 13px; color: var(--muted); margin: 8px 0 0; padding-left: 22px; }
.notes li::marker { color: var(--warn); }
.gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(340px, 1fr));
  gap: 16px; align-items: start; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 8px; padding: 8px;
  background: #fff; }
figure img { display: block; width: 100%; height: auto; }
figcaption { font-size: 13px; color: var(--muted); margin-top: 6px; }
dl.run { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; font-size: 13px; }
dl.run dt { font-weight: 600; }
dl.run dd { margin: 0; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  overflow-wrap: anywhere; }
.pages td, .pages th { text-align: left; }
[hidden] { display: none !important; }
""".strip()

SCRIPT = """
(function () {
  "use strict";
  function key(row, index) {
    var cell = row.cells[index];
    return cell ? cell.getAttribute("data-sort") || "" : "";
  }
  document.querySelectorAll("table.board").forEach(function (table) {
    var heads = table.querySelectorAll("thead th");
    heads.forEach(function (th, index) {
      th.querySelector("button").addEventListener("click", function () {
        var numeric = th.getAttribute("data-type") === "number";
        var current = th.getAttribute("aria-sort");
        var descending = current ? current === "ascending" : numeric;
        heads.forEach(function (other) { other.removeAttribute("aria-sort"); });
        th.setAttribute("aria-sort", descending ? "descending" : "ascending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (a, b) {
          var x = key(a, index), y = key(b, index), order = 0;
          if (x === "" || y === "") {
            order = (x === "") - (y === "");  /* no number: always last */
          } else {
            order = numeric ? parseFloat(x) - parseFloat(y) : x.localeCompare(y);
            if (descending) { order = -order; }
          }
          return order || a.getAttribute("data-rank") - b.getAttribute("data-rank");
        });
        rows.forEach(function (row) { body.appendChild(row); });
      });
    });
  });
  var controls = document.getElementById("filters");
  if (!controls) { return; }
  function value(name) { return controls.querySelector("[name=" + name + "]").value; }
  function apply() {
    var defense = value("defense"), attack = value("attack"), norm = value("norm");
    var text = value("text").trim().toLowerCase(), shown = 0, total = 0;
    document.querySelectorAll("section.board").forEach(function (section) {
      var columns = section.querySelectorAll("thead th[data-attack]");
      var hasAttack = attack === "" || Array.prototype.some.call(columns, function (th) {
        return th.getAttribute("data-attack") === attack;
      });
      var visible = hasAttack && (norm === "" || section.getAttribute("data-norm") === norm);
      section.querySelectorAll("[data-attack]").forEach(function (cell) {
        cell.hidden = attack !== "" && cell.getAttribute("data-attack") !== attack;
      });
      var rows = 0;
      section.querySelectorAll("tbody tr").forEach(function (row) {
        var name = row.getAttribute("data-defense");
        row.hidden = (defense !== "" && name !== defense) ||
          (text !== "" && name.toLowerCase().indexOf(text) < 0);
        total += 1;
        if (visible && !row.hidden) { rows += 1; }
      });
      section.hidden = !visible || rows === 0;
      shown += rows;
    });
    document.querySelectorAll("[data-gallery]").forEach(function (gallery) {
      var name = gallery.getAttribute("data-gallery");
      gallery.hidden = (defense !== "" && name !== defense) ||
        (text !== "" && name.toLowerCase().indexOf(text) < 0);
    });
    document.getElementById("count").textContent = shown + " of " + total + " rows shown";
  }
  controls.addEventListener("input", apply);
  controls.addEventListener("change", apply);
  apply();
}());
""".strip()


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# Nothing but the inline style and script above and images of the site's own origin: no
# network, and an injected <script> could not run even if escaping failed.
CSP = (f"default-src 'none'; img-src 'self'; style-src {_csp_hash(STYLE)}; "
       f"script-src {_csp_hash(SCRIPT)}; base-uri 'none'; form-action 'none'")

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<meta name="referrer" content="no-referrer">
<title>{{ title }}</title>
<style>{{ style | safe }}</style>
</head>
<body>
<main>
{% if back %}<a class="crumb" href="index.html">&larr; all leaderboards</a>{% endif %}
<h1>bench leaderboard</h1>
{% if page %}
<p class="subtitle">{{ page.dataset }} · {{ page.model }}</p>
<p class="lede">Robust accuracy: the fraction of evaluation samples classified correctly both
before and after the attack, with its 95&nbsp;% Wilson interval underneath. <em>worst case</em>
counts a sample as robust only if every attack of the threat model failed on it; <em>worst
attack</em> is the single attack leaving the fewest robust samples (+k: k others tie). One table
per threat model: a norm and its ε. A number links to the cell's clean against
adversarial examples, <span class="eps">ε</span> to one image attacked across ε; a
<span class="mark">⚠</span> or <span class="mark">[n]</span> mark is explained on hover and in
the notes under its table. <small>Click a column header to sort.</small></p>
<div class="filters" id="filters" role="search">
<label>defense<select name="defense"><option value="">all defenses</option>
{% for name in page.defenses %}<option value="{{ name }}">{{ name }}</option>
{% endfor %}</select></label>
<label>attack<select name="attack"><option value="">all attacks</option>
{% for name in page.attacks %}<option value="{{ name }}">{{ name }}</option>
{% endfor %}</select></label>
<label>norm<select name="norm"><option value="">all norms</option>
{% for name in page.norms %}<option value="{{ name }}">{{ name }}</option>
{% endfor %}</select></label>
<label>filter defenses<input name="text" type="search" placeholder="name contains…"
 autocomplete="off"></label>
<output id="count" aria-live="polite"></output>
</div>
{% for table in page.tables %}
<section class="board" data-norm="{{ table.norm }}" data-eps="{{ table.eps }}"
 data-split="{{ table.split }}">
<h2>{{ table.title }}</h2>
<div class="scroll"><table class="board">
<thead><tr>{% for head in table.headers %}<th scope="col" data-type="{{ head.type }}"
{%- if head.attack %} data-attack="{{ head.attack }}"{% endif %}><button type="button"
 title="sort by {{ head.label }}">{{ head.label }}</button></th>{% endfor %}</tr></thead>
<tbody>
{% for row in table.rows %}<tr data-defense="{{ row.defense }}" data-rank="{{ loop.index }}">
<th scope="row" data-sort="{{ row.defense }}">{{ row.defense }}</th>
{% for cell in row.cells %}<td class="{{ cell.css }}" data-sort="{{ cell.sort }}"
{%- if cell.attack %} data-attack="{{ cell.attack }}"{% endif %}
{%- if cell.title %} title="{{ cell.title }}"{% endif %}>
{%- if cell.examples %}<a class="value" href="{{ cell.examples }}"
 title="clean against adversarial examples">{{ cell.text }}</a>
{%- else %}<span class="value">{{ cell.text }}</span>{% endif %}
{%- for mark in cell.marks %}<span class="mark" title="{{ mark.title }}">{{ mark.label }}</span>
{%- endfor %}
{%- if cell.eps %}<a class="eps" href="{{ cell.eps }}" title="one image attacked across ε">ε</a>
{%- endif %}
{%- if cell.ci %}<span class="ci">{{ cell.ci }}</span>{% endif %}
{%- if cell.norm %}<span class="ci norm">{{ cell.norm }}</span>{% endif %}</td>
{% endfor %}</tr>
{% endfor %}</tbody>
</table></div>
{% if table.notes %}<ol class="notes">{% for note in table.notes %}<li>{{ note }}</li>
{% endfor %}</ol>{% endif %}
</section>
{% endfor %}
{% if page.galleries %}
<h2>Figures</h2>
{% for gallery in page.galleries %}
<section{% if gallery.defense %} data-gallery="{{ gallery.defense }}"{% endif %}>
<h3>{{ gallery.heading }}</h3>
<div class="gallery">{% for picture in gallery.pictures %}
<figure><a href="{{ picture.href }}"><img src="{{ picture.href }}" alt="{{ picture.caption }}"></a>
<figcaption>{{ picture.caption }}</figcaption></figure>{% endfor %}
</div>
</section>
{% endfor %}
{% endif %}
{% else %}
<p class="subtitle">{{ pages | length }} leaderboards</p>
<div class="scroll"><table class="pages">
<thead><tr><th>dataset</th><th>model</th><th>defenses</th><th>attacks</th><th>norms</th></tr>
</thead><tbody>
{% for entry in pages %}<tr><td><a href="{{ entry.href }}">{{ entry.dataset }}</a></td>
<td><a href="{{ entry.href }}">{{ entry.model }}</a></td><td>{{ entry.defenses | length }}</td>
<td>{{ entry.attacks | length }}</td><td>{{ entry.norms | join(", ") }}</td></tr>
{% endfor %}</tbody></table></div>
{% endif %}
{% if run %}
<h2>Run</h2>
<dl class="run">{% for name, text in run %}<dt>{{ name }}</dt><dd>{{ text }}</dd>
{% endfor %}</dl>
{% endif %}
</main>
<script>{{ script | safe }}</script>
</body>
</html>
"""

ENVIRONMENT = Environment(autoescape=True, undefined=StrictUndefined, keep_trailing_newline=True)


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
class Page:
    dataset: str
    model: str
    href: str
    defenses: list[str]
    attacks: list[str]
    norms: list[str]
    tables: list[Board]
    galleries: list[Gallery]


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
            rest = stem[len(f"{attack}_{defense}_"):].split("_")
            if len(rest) == 3:  # the cell's split, norm and ε, as the runner names it
                return f"{attack} · {rest[0]} split · {rest[1]} ε={rest[2]}"
            return f"{attack} · {' '.join(rest)}"
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
            tables=tables, galleries=galleries(part, figures, listed)))
    template = ENVIRONMENT.from_string(TEMPLATE)
    common = {"csp": CSP, "style": STYLE, "script": SCRIPT, "run": run_facts(manifest)}
    files = {page.href: template.render(
        title=f"bench leaderboard · {page.dataset} · {page.model}", page=page,
        back=len(pages) > 1, pages=pages, **common) for page in pages}
    if len(pages) != 1:
        files["index.html"] = template.render(title="bench leaderboard", page=None, back=False,
                                              pages=pages, **common)
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
            write_atomic(folder / name, lambda p, text=text: p.write_text(text, encoding="utf-8"))
            written.append(folder / name)
    except OSError as exc:
        raise BenchError(f"{folder}: cannot write the leaderboard page there "
                         f"({exc.strerror or exc}); choose a writable folder") from exc
    return written
