"""The leaderboard page's ε slider (#28) in a real browser (headless Chromium through
Playwright, from file://, under the page's strict Content-Security-Policy): moving the slider
re-ranks the defenses from the per-sample radii embedded in the page."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support.site import small_frame

from advbench.reporting.site import write_site

# At ε = 0.02 "none" is ahead (4 of 4 robust against 3 of 4); at ε = 0.1 "adv-train" (3 of 4
# against 1 of 4, the sample never broken). adv-train's certificate: radii 0.08, 0.12, 0.2.
LINF = [
    {"defense": "adv-train", "attack_radius": [0.0, 0.3, 0.3, 0.3],
     "certified_radius": [0.0, 0.08, 0.12, 0.2], "certifier": "crown-ibp"},
    {"defense": "none", "attack_radius": [0.05, 0.06, 0.07, None],
     "certified_radius": None, "certifier": ""},
]


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("browser tests need Playwright's Python package: pip install playwright")
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("browser tests need Chromium: apt-get install chromium")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, headless=True,
                                              args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, tmp_path):
    """The page of a hand-made run folder with radii.json, open, every error recorded."""
    groups = [{"dataset": "fashion-mnist", "model": "seed-cnn", "split": "test", "norm": "linf",
               "n": 4, **group} for group in LINF]
    (tmp_path / "radii.json").write_text(json.dumps({"format": 1, "groups": groups}))
    path: Path = write_site(small_frame(), tmp_path)[0]
    tab = browser.new_page(viewport={"width": 1280, "height": 900})
    tab.errors = []  # console errors include any Content-Security-Policy violation
    tab.on("console", lambda m: tab.errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda e: tab.errors.append(str(e)))
    tab.goto(path.as_uri())
    tab.wait_for_load_state("load")
    yield tab
    tab.close()


def table(page) -> list[list[str]]:
    """The slider table's rows as shown: defense, robust and certified accuracy."""
    return page.locator("section.curve tbody tr:visible").evaluate_all(
        "rows => rows.map(r => Array.from(r.cells, c => c.textContent))")


def slide(page, value: str) -> None:
    page.locator("section.curve input[type=range]").evaluate(
        "(e, v) => { e.value = v; e.dispatchEvent(new Event('input', {bubbles: true})); }", value)


def test_moving_the_slider_re_ranks_the_defenses(page, tmp_path):
    slider = page.get_by_label("linf ε")  # the slider has its label
    assert slider.get_attribute("max") == "0.33" and slider.input_value() == "0.1"
    assert page.locator("section.curve output").inner_text() == "ε = 0.1"
    assert table(page) == [["adv-train", "0.750", "0.500"], ["none", "0.250", "—"]]
    slide(page, "0.02")
    assert page.locator("section.curve output").inner_text() == "ε = 0.02"
    assert table(page) == [["none", "1.000", "—"], ["adv-train", "0.750", "0.750"]]
    slide(page, "0.065")  # none: 0.07 and never broken; adv-train certified 0.08, 0.12, 0.2
    assert table(page) == [["adv-train", "0.750", "0.750"], ["none", "0.500", "—"]]
    slider.focus()
    page.keyboard.press("End")  # the top: only the sample never broken, nothing certified
    assert slider.input_value() == "0.33"
    assert table(page) == [["none", "0.250", "—"], ["adv-train", "0.000", "0.000"]]
    page.keyboard.press("Home")  # ε = 0: the clean accuracy of the radii
    assert table(page) == [["none", "1.000", "—"], ["adv-train", "0.750", "0.750"]]
    page.screenshot(path=tmp_path / "slider.png", full_page=True)
    assert page.errors == []


def test_the_page_filters_reach_the_slider_table(page):
    page.select_option("select[name=defense]", "none")
    assert table(page) == [["none", "0.250", "—"]]
    page.select_option("select[name=defense]", "")
    page.select_option("select[name=norm]", "l2")
    assert not page.locator("section.curve").is_visible()
    page.select_option("select[name=norm]", "linf")
    assert page.locator("section.curve").is_visible() and len(table(page)) == 2
    assert page.errors == []
