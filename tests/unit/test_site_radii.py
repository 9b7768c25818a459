"""The leaderboard page's ε slider (#28): from a run folder's per-sample radii (radii.json) the
page embeds the radii and, per split and norm, a table ranked at the run's ε; without the file
the page is exactly what it was. Hand-made run folders: nothing trains."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from pathlib import Path

from support.site import EVIL, Page, small_frame

from advbench.cli import main
from advbench.reporting.leaderboard import sections
from advbench.reporting.site import CSP, render_site

# Two L∞ defenses whose order flips between ε = 0.02 and ε = 0.1 (None: never broken), one
# with a certificate, and an L2 one.
GROUPS = [
    {"defense": "adv-train", "norm": "linf", "attack_radius": [0.0, 0.3, 0.3, 0.3],
     "certified_radius": [0.0, 0.08, 0.12, 0.2], "certifier": "crown-ibp"},
    {"defense": "none", "norm": "linf", "attack_radius": [0.05, 0.06, 0.07, None],
     "certified_radius": None, "certifier": ""},
    {"defense": "none", "norm": "l2", "attack_radius": [0.5, 2.0, None, 1.0],
     "certified_radius": None, "certifier": ""},
]


def write_radii(folder: Path, groups: list[dict] = GROUPS) -> Path:
    """A run folder's radii.json, as curves.radii_json writes it."""
    folder.mkdir(parents=True, exist_ok=True)
    full = [{"dataset": "fashion-mnist", "model": "seed-cnn", "split": "test",
             "n": len(g["attack_radius"]), **g} for g in groups]
    path = folder / "radii.json"
    path.write_text(json.dumps({"format": 1, "groups": full}, indent=1))
    return path


def sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def curve_sections(page: Page) -> list[dict]:
    return [attrs for tag, attrs in page.elements if tag == "section"
            and attrs.get("class") == "curve"]


def rows(text: str, norm: str) -> list[tuple[str, str, str]]:
    """A slider table's (defense, robust, certified) as the page ships it, before any script."""
    section = text.split(f'<section class="curve" data-curve-norm="{norm}"', 1)[1]
    body = section.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    found = re.findall(r'<tr data-curve-defense="([^"]*)">.*?<td class="robust">([^<]*)</td>\s*'
                       r'<td class="certified"[^>]*>([^<]*)</td>', body, re.S)
    return [(html.unescape(name), robust, certified) for name, robust, certified in found]


def test_page_embeds_the_radii_and_ranks_the_defenses_at_the_runs_eps(tmp_path):
    write_radii(tmp_path)
    text = render_site(small_frame(), tmp_path)["index.html"]
    page = Page(text)
    assert [(s["data-curve-split"], s["data-curve-norm"]) for s in curve_sections(page)] == [
        ("test", "l2"), ("test", "linf")]
    # the leaderboard tables' rows and sections are what they were (selectors stay unique)
    assert [attrs["data-defense"] for tag, attrs in page.elements if "data-defense" in attrs
            ] == [cells[0] for section in sections(small_frame()) for cells in section.rows]
    assert [attrs["data-norm"] for tag, attrs in page.elements if "data-norm" in attrs] == [
        "l2", "linf"]
    sliders = [attrs for tag, attrs in page.elements if attrs.get("type") == "range"]
    # 0 to 1.1 × the largest finite radius or ε (2.0, 0.3), at the run's ε, in powers of ten
    assert [(s["min"], s["max"], s["step"], s["value"]) for s in sliders] == [
        ("0", "2.2", "0.01", "1.5"), ("0", "0.33", "0.001", "0.1")]
    labels = [tag for tag, _ in page.elements]
    assert labels.count("label") >= 2 + 4  # each slider inside its label, beside the filters'
    # at ε = 0.1: adv-train 3 of 4 robust, certified 2 of 4 (radii ≥ 0.1); none only the sample
    # never broken
    assert rows(text, "linf") == [("adv-train", "0.750", "0.500"), ("none", "0.250", "—")]
    assert rows(text, "l2") == [("none", "0.500", "—")]  # above 1.5: 2.0 and never broken
    data = [json.loads(script) for script in page.scripts if script.lstrip().startswith("[")]
    assert data == [
        [{"defense": "none", "n": 4, "attack": [0.5, 2.0, None, 1.0], "certified": None}],
        [{"defense": "adv-train", "n": 4, "attack": [0.0, 0.3, 0.3, 0.3],
          "certified": [0.0, 0.08, 0.12, 0.2]},
         {"defense": "none", "n": 4, "attack": [0.05, 0.06, 0.07, None], "certified": None}]]
    script = next(s for s in page.scripts if "section.curve" in s)
    style = text.split("<style>", 1)[1].split("</style>", 1)[0]
    csp = next(attrs["content"] for tag, attrs in page.elements
               if attrs.get("http-equiv") == "Content-Security-Policy")
    assert f"script-src {sha256(script)};" in csp and f"style-src {sha256(style)};" in csp
    assert "td.robust" in style and csp != CSP


def test_without_radii_json_the_page_has_no_slider(tmp_path):
    plain = render_site(small_frame(), tmp_path)["index.html"]
    write_radii(tmp_path / "elsewhere")  # another folder's radii are not this run's
    assert render_site(small_frame(), tmp_path)["index.html"] == plain
    page = Page(plain)
    assert curve_sections(page) == [] and len(page.scripts) == 1
    assert "section.curve" not in plain and "td.robust" not in plain
    assert [attrs["content"] for tag, attrs in page.elements
            if attrs.get("http-equiv") == "Content-Security-Policy"] == [CSP]
    assert "application/json" not in plain and 'type="range"' not in plain


def test_radii_of_another_dataset_add_nothing(tmp_path):
    path = write_radii(tmp_path)
    data = json.loads(path.read_text())
    for group in data["groups"]:
        group["dataset"] = "mnist"
    path.write_text(json.dumps(data))
    assert curve_sections(Page(render_site(small_frame(), tmp_path)["index.html"])) == []


def test_leaderboard_html_finds_the_radii_beside_the_results(tmp_path):
    run = tmp_path / "run"
    write_radii(run)
    (run / "results.csv").write_text(small_frame().to_csv(index=False))
    site = tmp_path / "site"
    assert main(["leaderboard", str(run / "results.csv"), "--html", str(site), "--out",
                 str(tmp_path / "board.md")]) == 0
    assert len(curve_sections(Page((site / "index.html").read_text()))) == 2
    (run / "radii.json").unlink()
    assert main(["leaderboard", str(run / "results.csv"), "--html", str(site), "--out",
                 str(tmp_path / "board.md")]) == 0
    assert curve_sections(Page((site / "index.html").read_text())) == []


def test_a_defense_name_stays_text_inside_the_embedded_radii(tmp_path):
    write_radii(tmp_path, [{**GROUPS[1], "defense": EVIL}])
    frame = small_frame()
    frame.loc[frame["defense"] == "none", "defense"] = EVIL
    text = render_site(frame, tmp_path)["index.html"]
    page = Page(text)
    assert text.count("</script>") == 2 and "<script>alert" not in text
    assert [json.loads(s)[0]["defense"] for s in page.scripts if s.startswith("[")] == [EVIL]
    assert EVIL in [attrs.get("data-curve-defense") for tag, attrs in page.elements
                    if tag == "tr"]


def test_a_wrong_radii_json_is_a_one_line_error(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "results.csv").parent.mkdir()
    (run / "results.csv").write_text(small_frame().to_csv(index=False))
    broken = [{**GROUPS[0], "attack_radius": [0.1, 0.2]},  # 2 radii for n = 4
              {**GROUPS[0], "attack_radius": [0.1, -1.0, 0.2, 0.3]},
              {key: v for key, v in GROUPS[0].items() if key != "certifier"}]
    for groups in broken:
        write_radii(run, [groups])
        assert main(["leaderboard", str(run / "results.csv"), "--html", str(tmp_path / "s"),
                     "--out", str(tmp_path / "b.md")]) == 2
        error = capsys.readouterr().err
        assert error.startswith("bench: error:") and "radii.json" in error
        assert "delete the file" in error and len(error.strip().splitlines()) == 1
    (run / "radii.json").write_text("{not json")
    assert main(["leaderboard", str(run / "results.csv"), "--html", str(tmp_path / "s"),
                 "--out", str(tmp_path / "b.md")]) == 2
    assert "radii.json" in capsys.readouterr().err
