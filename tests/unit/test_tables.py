"""Tables that do not mislead (issue #26, point 6): one table per threat model, the worst case
and the attack that reached it first and within one ε, the median norm a minimum-norm attack
needed in every view, per-sample norms in samples.parquet, only the norms given to --eps, the
package's version, `bench list` uncut when not on a terminal."""

from __future__ import annotations

import json
import math
import re
import tomllib
from importlib.metadata import version
from pathlib import Path

import pandas as pd
from rich.console import Console
from support.tables import row

from advbench.cli import main
from advbench.reporting.leaderboard import sections, to_markdown, to_rich
from advbench.reporting.results import to_frame
from advbench.reporting.site import render_site

ROOT = Path(__file__).resolve().parents[2]


def sweep() -> pd.DataFrame:
    """One defense, two attacks and their worst case at three L∞ ε, plus an L0 row."""
    rows = []
    for eps, fgsm, pgd, union in ((0.0, 0.9, 0.9, 0.9), (0.1, 0.5, 0.4, 0.35),
                                  (0.2, 0.1, 0.2, 0.05)):
        rows += [row("none", "fgsm", fgsm, eps=eps), row("none", "pgd-linf", pgd, eps=eps),
                 row("none", "worst-case", union, eps=eps)]
    rows += [row("none", "one-pixel", 0.7, norm="l0", eps=1.0)]
    return to_frame(rows)


def test_one_table_per_threat_model_worst_case_first():
    tables = list(sections(sweep()))
    assert [t.title.split(" · ")[-1] for t in tables] == ["l0 ε=1", "linf ε=0", "linf ε=0.1",
                                                          "linf ε=0.2"]
    for table in tables[1:]:
        assert table.headers == ["defense", "clean", "worst case", "worst attack", "fgsm",
                                 "pgd-linf"]
    worst = {t.title.split()[-1]: (t.rows[0][2], t.rows[0][3]) for t in tables}
    # within one ε: the per-sample worst case, and the single attack that left the fewest
    assert worst["ε=0.1"] == ("0.350", "pgd-linf")
    assert worst["ε=0.2"] == ("0.050", "fgsm")
    assert worst["ε=0"] == ("0.900", "fgsm +1")  # two attacks tie
    assert worst["ε=1"] == ("0.700", "one-pixel")  # one attack: its own cell


def test_rows_rank_by_the_worst_case_of_their_own_threat_model():
    frame = to_frame([row("a", "fgsm", 0.6, eps=0.1), row("b", "fgsm", 0.5, eps=0.1),
                      row("a", "fgsm", 0.0, eps=0.3), row("b", "fgsm", 0.2, eps=0.3)])
    ranked = [[r[0] for r in table.rows] for table in sections(frame)]
    assert ranked == [["a", "b"], ["b", "a"]]


def test_median_norm_in_markdown_console_and_page(tmp_path):
    frame = to_frame([row("none", "deepfool", 0.2, norm="l2", eps=1.5, median_norm=0.8312),
                      row("none", "fgm", 0.4, norm="l2", eps=1.5),
                      row("none", "fmn", 0.1, norm="l2", eps=1.5, median_norm=math.inf)])
    text = to_markdown(frame)
    assert "0.200 (median norm 0.831)" in text and "0.100 (median norm ∞)" in text
    assert text.count("median norm") == 2
    console = Console(width=200, record=True)
    for table in to_rich(frame):
        console.print(table)
    assert "median norm 0.831" in console.export_text()
    page = render_site(frame, tmp_path)["index.html"]
    assert '<span class="ci norm">median norm 0.831</span>' in page
    assert re.search(r'class="value"[^>]*>0\.200</', page)  # the number alone, sortable


def test_randomized_defense_note_names_the_draws():
    frame = to_frame([row("noisy", "fgsm", 0.3, prediction_draws=8),
                      row("none", "fgsm", 0.1, prediction_draws=1)])
    table = next(sections(frame))
    clean = {r[0]: r[1] for r in table.rows}
    assert clean == {"noisy": "0.900 [1]", "none": "0.900"}
    assert table.notes == ["noisy: randomized, each prediction (clean and adversarial alike) "
                           "is the mean softmax of 8 draws"]


def test_version_matches_the_changelog():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    changelog = (ROOT / "CHANGELOG.md").read_text()
    documented = re.findall(r"^## \[?(\d+\.\d+\.\d+)", changelog, flags=re.M)
    assert documented and pyproject["project"]["version"] == documented[0]
    assert version("advbench") == pyproject["project"]["version"]


def test_json_listing_is_unchanged(capsys):
    assert main(["list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["plugins"]
