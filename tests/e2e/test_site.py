"""The leaderboard web page: escaped, linked only to figures that exist, deterministic, the same
tables as leaderboard.md, and working in a real browser (headless Chromium through Playwright)
from file:// with no network."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pandas as pd
import pytest
from matplotlib import pyplot as plt
from support.site import EVIL, EVIL_ATTACK, Page, row, small_frame

from advbench import run_matrix
from advbench.cli import main
from advbench.reporting.leaderboard import sections
from advbench.reporting.reading import read_results
from advbench.reporting.results import to_frame
from advbench.reporting.site import render_site, write_site

PUBLISHED = Path(__file__).resolve().parents[2] / "leaderboard"


def png(path: Path) -> Path:
    """A real (tiny) PNG picture."""
    path.parent.mkdir(parents=True, exist_ok=True)
    plt.imsave(path, np.linspace(0, 1, 64).reshape(8, 8), cmap="gray")
    return path


# ---------------------------------------------------------------- without a browser


def test_page_has_the_tables_of_the_markdown_leaderboard():
    frame = read_results(PUBLISHED / "results.csv")
    page = Page(render_site(frame, PUBLISHED)["index.html"])
    rows = [attrs["data-defense"] for tag, attrs in page.elements
            if tag == "tr" and "data-defense" in attrs]
    expected = [cells[0] for section in sections(frame) for cells in section.rows]
    assert rows == expected
    values = [attrs["data-sort"] for tag, attrs in page.elements
              if tag == "td" and attrs.get("class") == "clean"]
    assert [float(v) for v in values] == [float(cells[1]) for section in sections(frame)
                                          for cells in section.rows]
    shown = "".join(page.text)
    for section in sections(frame):
        for note in section.notes:
            assert note in shown
    valid = frame[frame["valid"]]
    for _, cell in valid.iterrows():  # every interval is on the page
        assert f"{cell['robust_accuracy_ci_low']:.3f}–{cell['robust_accuracy_ci_high']:.3f}" \
            in shown


def test_links_only_to_figures_that_exist(tmp_path):
    run = tmp_path / "run"
    png(run / "figures" / "fgsm_none_test_linf_0.1_examples.png")
    png(run / "figures" / "fgsm_none_test_linf_0.1_eps.png")
    png(run / "figures" / "pgd-linf_adv-train_test_linf_0.1_examples.png")
    png(run / "figures" / "training_adv-train.png")
    png(run / "figures" / "unlisted.png")
    png(run / "figures" / "fgsm_smooth_test_linf_0.1_examples.png")  # an invalid cell's: unused
    manifest = {"figures": ["figures/training_adv-train.png", "figures/gone.png",
                            "figures/fgsm_none_test_linf_0.1_examples.png"]}
    text = render_site(small_frame(), run, manifest)["index.html"]
    links = Page(text).links()
    for link in links:
        assert (run / unquote(link)).is_file(), link
    assert sorted(links) == sorted([
        "figures/fgsm_none_test_linf_0.1_examples.png", "figures/fgsm_none_test_linf_0.1_eps.png",
        "figures/pgd-linf_adv-train_test_linf_0.1_examples.png",
        "figures/training_adv-train.png", "figures/training_adv-train.png"])  # <a> and <img>
    # written elsewhere (bench leaderboard --html DIR), the links climb back to the run
    (run / "results.csv").write_text(small_frame().to_csv(index=False))
    (run / "manifest.json").write_text(json.dumps(manifest))
    site = tmp_path / "site" / "deeper"
    assert main(["leaderboard", str(run / "results.csv"), "--manifest",
                 str(run / "manifest.json"), "--html", str(site), "--out",
                 str(tmp_path / "board.md")]) == 0
    links = Page((site / "index.html").read_text()).links()
    assert len(links) == 5 and all(link.startswith("../../run/figures/") for link in links)
    assert all((site / unquote(link)).is_file() for link in links)


def regenerate_published(folder: Path) -> Path:
    """The published leaderboard's page, regenerated from its raw results in ``folder`` (the
    figures linked in place) by the command the README gives."""
    for name in ("results.csv", "manifest.json", "radii.json"):
        shutil.copy(PUBLISHED / name, folder / name)
    try:
        os.symlink(PUBLISHED / "figures", folder / "figures", target_is_directory=True)
    except OSError:
        shutil.copytree(PUBLISHED / "figures", folder / "figures")
    assert main(["leaderboard", str(folder / "results.csv"), "--manifest",
                 str(folder / "manifest.json"), "--html", str(folder), "--out",
                 str(folder / "README.md")]) == 0
    return folder / "index.html"


def test_published_page_regenerates_identically(tmp_path):
    assert regenerate_published(tmp_path).read_text() == (PUBLISHED / "index.html").read_text()


# ---------------------------------------------------------------- in a real browser


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser tests need Playwright's Python package: pip install playwright "
                    "(no browser download: the Debian package chromium is used)")
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("browser tests need Chromium: apt-get install chromium (Debian package "
                    "chromium; with the pip package playwright)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True,
                                              args=["--no-sandbox"])
        yield chromium
        chromium.close()


class Tab:
    """A page with every console error, page error, dialog and request recorded."""

    def __init__(self, browser, url: str) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error"
                     else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(url)
        self.page.wait_for_load_state("load")

    def defenses(self, section: str) -> list[str]:
        """The defenses of a table, top to bottom, as shown."""
        return self.page.locator(f"{section} tbody tr:visible").evaluate_all(
            "rows => rows.map(r => r.getAttribute('data-defense'))")


@pytest.fixture(scope="module")
def published_site(tmp_path_factory):
    return regenerate_published(tmp_path_factory.mktemp("published"))


@pytest.fixture
def tab(browser, published_site):
    tab = Tab(browser, published_site.as_uri())
    yield tab
    tab.page.close()


def test_page_loads_from_disk_offline_with_every_figure(tab, tmp_path):
    page = tab.page
    assert page.title() == "bench leaderboard · fashion-mnist · seed-cnn"
    assert page.locator("section.board").count() == 3
    images = page.locator("img").evaluate_all("images => images.map(i => [i.src, "
                                              "i.complete, i.naturalWidth])")
    shown = {Path(url).name for url, _, _ in images}
    figures = {path.name for path in (PUBLISHED / "figures").glob("*.png")
               if not path.name.endswith("_examples.png")}  # those are behind links
    assert shown == figures and len(figures) >= 5  # training, certificate, curves (at least)
    assert all(complete and width > 0 for _, complete, width in images), images
    assert all(url.startswith("file://") for url in tab.requests), tab.requests
    assert page.locator("#count").inner_text() == "15 of 15 rows shown"
    page.screenshot(path=tmp_path / "leaderboard.png", full_page=True)
    page.screenshot(path="/tmp/leaderboard.png", full_page=True)
    assert tab.errors == [] and tab.dialogs == []


def test_clicking_a_header_sorts_the_rows(tab):
    frame = read_results(PUBLISHED / "results.csv")
    linf = frame[(frame["norm"] == "linf")]
    section = "section[data-norm=linf]"
    clean = linf.groupby("defense")["clean_accuracy"].first()
    pgd = linf[linf["attack"] == "pgd-linf"].set_index("defense")["robust_accuracy"]
    header = tab.page.locator(f"{section} thead th button")
    header.get_by_text("clean", exact=True).click()  # numbers: best first, then reversed
    assert tab.defenses(section) == list(clean.sort_values(ascending=False).index)
    assert tab.page.locator(f"{section} thead th").nth(1).get_attribute("aria-sort") \
        == "descending"
    header.get_by_text("clean", exact=True).click()
    assert tab.defenses(section) == list(clean.sort_values().index)
    header.get_by_text("pgd-linf", exact=True).click()
    assert tab.defenses(section) == list(pgd.sort_values(ascending=False).index)
    header.get_by_text("defense", exact=True).click()  # names: A to Z
    assert tab.defenses(section) == sorted(clean.index)
    assert tab.defenses(section) != list(clean.sort_values().index)
    assert tab.errors == []


def test_filters_hide_rows_columns_and_sections(tab):
    page = tab.page
    page.select_option("select[name=defense]", "none")
    for norm in ("l0", "l2", "linf"):
        assert tab.defenses(f"section[data-norm={norm}]") == ["none"]
    assert page.locator("#count").inner_text() == "3 of 15 rows shown"
    assert not page.locator("[data-gallery=adv-train-pgd]").is_visible()
    page.select_option("select[name=defense]", "")
    page.select_option("select[name=norm]", "l2")
    assert page.locator("section.board:visible").evaluate_all(
        "s => s.map(e => e.getAttribute('data-norm'))") == ["l2"]
    page.select_option("select[name=norm]", "")
    page.select_option("select[name=attack]", "fgsm")  # an L∞ attack: only that table
    assert page.locator("section.board:visible").count() == 1
    assert page.locator("section[data-norm=linf] thead th:visible").all_inner_texts() == [
        "defense", "clean", "worst case", "worst attack", "fgsm"]
    page.select_option("select[name=attack]", "")
    page.fill("input[name=text]", "adv-train")
    assert tab.defenses("section[data-norm=l2]") == ["adv-train-fgsm", "adv-train-pgd"]
    assert page.locator("#count").inner_text() == "6 of 15 rows shown"
    page.fill("input[name=text]", "no such defense")
    assert page.locator("section.board:visible").count() == 0
    assert tab.errors == []


def test_a_cell_opens_its_figures(tab):
    page = tab.page
    cell = page.locator("section[data-norm=linf] tr[data-defense=none] td[data-attack=apgd-ce]")
    assert "0.000" in cell.inner_text()
    hover = cell.get_attribute("title")
    assert "robust accuracy 0.000" in hover and "500 samples" in hover
    cell.locator("a.value").click()
    page.wait_for_load_state("load")
    assert page.url.endswith("/figures/apgd-ce_none_test_linf_0.1_examples.png")
    assert page.evaluate("document.images[0].naturalWidth") > 0
    page.go_back()
    # the flags people hover, each one of results.csv's (defense: flag)
    eot = page.locator("section[data-norm=l2] tr[data-defense=gaussian-smoothing] .mark").first
    assert "randomized defense: gradient attacks used EOT" in eot.get_attribute("title")
    marks = page.locator("section tr .mark")
    shown = {marks.nth(i).get_attribute("title") for i in range(marks.count())}
    rows = pd.read_csv(PUBLISHED / "results.csv").dropna(subset=["flags"])
    cascades = {title for title in shown if title.startswith("cascade (")}  # notes, not flags
    assert cascades and shown - cascades == {f"{r.defense}: {flag}" for r in rows.itertuples()
                                             for flag in r.flags.split("; ")}
    assert tab.errors == []


@pytest.mark.parametrize("norm", ["l0", "l2", "linf"])
def test_the_worst_case_is_visible_without_scrolling_at_1400_px(browser, published_site, norm):
    """What readers come for, per threat model: clean accuracy, the worst case and the attack
    that reached it, in the first columns, inside the table's visible area at 1400 px."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(published_site.as_uri())
    section = page.locator(f"section[data-norm={norm}]")
    heads = section.locator("thead th").all_inner_texts()
    assert heads[:4] == ["defense", "clean", "worst case", "worst attack"]
    scroll = section.locator(".scroll")
    assert scroll.evaluate("e => e.scrollLeft") == 0
    box = scroll.bounding_box()
    for css in ("td.clean", "td.worst", "td.by"):
        cells = section.locator(f"tbody {css}")
        assert cells.count() == 5
        for i in range(cells.count()):
            cell = cells.nth(i).bounding_box()
            assert box["x"] <= cell["x"] and cell["x"] + cell["width"] <= box["x"] + box["width"]
            assert cell["x"] + cell["width"] <= 1400
    worst = section.locator("tbody tr").first.locator("td.worst .value").inner_text()
    frame = read_results(PUBLISHED / "results.csv")
    rows = frame[frame["norm"] == norm]
    # a defense's worst case: its worst-case row, or its one attack's where only one ran
    worst_by_defense = rows.groupby("defense")["robust_accuracy"].min()
    assert worst == f"{worst_by_defense.max():.3f}"  # best first
    page.close()


def test_injected_names_stay_text_in_the_browser(browser, tmp_path):
    frame = to_frame([row(EVIL, EVIL_ATTACK, 0.4, flags="<img src=y onerror=alert(3)>"),
                      row("none", EVIL_ATTACK, 0.2)])
    path = write_site(frame, tmp_path)[0]
    tab = Tab(browser, path.as_uri())
    assert tab.page.locator("tbody th").all_inner_texts() == [EVIL, "none"]  # best first
    assert EVIL_ATTACK in tab.page.locator("thead").inner_text()
    tab.page.select_option("select[name=defense]", EVIL)
    assert tab.defenses("section.board") == [EVIL]
    assert tab.page.locator("img").count() == 0
    assert tab.dialogs == [] and tab.errors == []
    tab.page.close()


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    """A real run (the seed CNN on 2000 Fashion-MNIST images, FGSM at two ε) into a run
    folder."""
    root = tmp_path_factory.mktemp("small-run")
    run_matrix(attacks="fgsm", defenses="none", preset="smoke", n_train=2000, n_eval=60,
               eps={"linf": [0.05, 0.1]}, out=root / "run", cache_dir=root / "cache")
    return root / "run"


@pytest.mark.slow
def test_a_run_writes_its_page_next_to_leaderboard_md(small_run):
    assert (small_run / "leaderboard.md").is_file()
    page = Page((small_run / "index.html").read_text())
    links = page.links()
    assert "figures/fgsm_none_test_linf_0.1_examples.png" in links
    assert all((small_run / unquote(link)).is_file() for link in links)
    frame = read_results(small_run / "results.csv")
    assert [attrs["data-defense"] for tag, attrs in page.elements if tag == "tr"
            and "data-defense" in attrs] == [r[0] for s in sections(frame) for r in s.rows]


@pytest.mark.slow
def test_a_run_page_opens_its_pictures_in_the_browser(browser, small_run):
    tab = Tab(browser, (small_run / "index.html").as_uri())
    link = tab.page.locator("td[data-attack=fgsm] a.value[href$='_0.1_examples.png']")
    link.click()
    tab.page.wait_for_load_state("load")
    assert tab.page.url.endswith("/figures/fgsm_none_test_linf_0.1_examples.png")
    assert tab.page.evaluate("document.images[0].naturalWidth") > 0
    tab.page.go_back()
    eps = tab.page.locator("td[data-attack=fgsm] a.eps").first  # the sweep's ε picture
    assert eps.get_attribute("href") == "figures/fgsm_none_test_linf_eps.png"
    eps.click()
    tab.page.wait_for_load_state("load")
    assert tab.page.url.endswith("/figures/fgsm_none_test_linf_eps.png")
    assert tab.page.evaluate("document.images[0].naturalWidth") > 0
    assert tab.errors == []
    tab.page.close()
