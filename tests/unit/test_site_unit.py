"""The leaderboard web page: escaped, linked only to figures that exist, deterministic, the same
tables as leaderboard.md, and working in a real browser (headless Chromium through Playwright)
from file:// with no network."""

from __future__ import annotations

import pandas as pd
from support.site import EVIL, EVIL_ATTACK, Page, row, small_frame

from advbench.cli import main
from advbench.reporting.results import to_frame
from advbench.reporting.site import render_site, write_site

# ---------------------------------------------------------------- without a browser


def test_strings_from_results_cannot_inject_markup(tmp_path):
    frame = to_frame([
        row(EVIL, EVIL_ATTACK, 0.4, flags="<b onmouseover=alert(3)>flag</b>"),
        row(EVIL, "fgsm", 0.0, valid=False, reason="<iframe src=javascript:alert(4)>"),
        row("none", "fgsm", 0.2, dataset="<svg onload=alert(5)>", model="m'\"<"),
    ])
    files = render_site(frame, tmp_path, {"command": ["bench", EVIL], "figures": []})
    assert set(files) == {"index.html", "svg-onload-alert-5-_m.html", "fashion-mnist_seed-cnn.html"}
    for name, text in files.items():
        page = Page(text)
        assert len(page.scripts) == 1 and "alert" not in page.scripts[0], name
        tags = {tag for tag, _ in page.elements}
        assert not tags & {"iframe", "svg", "b"}, name
        assert [tag for tag, _ in page.elements].count("img") == 0, name
        assert not [key for _, attrs in page.elements for key in attrs if key.startswith("on")]
        assert "<script>alert" not in text and "<img src=x" not in text and "<iframe" not in text
    page = Page(files["fashion-mnist_seed-cnn.html"])
    shown = "".join(page.text)
    assert EVIL in shown and "<iframe src=javascript:alert(4)>" in shown  # shown, as text
    assert EVIL_ATTACK in shown
    titles = [attrs.get("title") or "" for _, attrs in page.elements]
    assert any("<b onmouseover=alert(3)>flag</b>" in title for title in titles)  # hover text
    assert {attrs.get("data-defense") for _, attrs in page.elements} >= {EVIL}


def test_a_cell_without_a_number_has_no_interval(tmp_path):
    broken = row("broken", "fgsm", 0.0, valid=False, reason="raised ValueError")
    broken.update(status="error", clean_accuracy=float("nan"))
    page = Page(render_site(to_frame([broken, row("none", "fgsm", 0.3)]), tmp_path)["index.html"])
    cells = [attrs for tag, attrs in page.elements if tag == "td"]
    assert [(c["class"], c["data-sort"]) for c in cells] == [  # in leaderboard.md's order
        ("clean", ""), ("worst", ""), ("by", ""), ("error", ""),
        ("clean", "0.9"), ("worst", "0.3"), ("by", "fgsm"), ("ok", "0.3")]
    shown = "".join(page.text)
    assert "0.850–0.950" in shown and shown.count("–") == 3  # none's three intervals only
    assert "broken × fgsm: raised ValueError" in shown


def test_output_is_deterministic_and_offline(tmp_path):
    frame = small_frame()
    first = write_site(frame, tmp_path / "a")
    second = write_site(frame.sample(frac=1, random_state=1), tmp_path / "b")
    assert [p.name for p in first] == [p.name for p in second] == ["index.html"]
    assert first[0].read_text() == second[0].read_text()
    text = first[0].read_text()
    assert "http://" not in text and "https://" not in text
    page = Page(text)
    assert not [attrs for tag, attrs in page.elements if tag == "link"]  # no stylesheet, font
    assert all(not attrs.get("src") for tag, attrs in page.elements if tag == "script")
    csp = next(attrs["content"] for tag, attrs in page.elements
               if attrs.get("http-equiv") == "Content-Security-Policy")
    assert "default-src 'none'" in csp


def test_one_page_per_dataset_and_model_with_an_index(tmp_path):
    frame = pd.concat([small_frame(), to_frame([
        row("none", "fgsm", 0.5, dataset="mnist"), row("none", "fgsm", 0.1, model="resnet")])])
    written = write_site(frame, tmp_path)
    assert [p.name for p in written] == ["index.html", "fashion-mnist_resnet.html",
                                         "fashion-mnist_seed-cnn.html", "mnist_seed-cnn.html"]
    links = Page(written[0].read_text()).links()
    assert sorted(set(links)) == sorted(p.name for p in written[1:])
    for path in written[1:]:
        assert "index.html" in Page(path.read_text()).links()


def test_unwritable_folder_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    (tmp_path / "results.csv").write_text(small_frame().to_csv(index=False))
    assert main(["leaderboard", str(tmp_path / "results.csv"), "--html",
                 str(tmp_path / "file" / "site"), "--out", str(tmp_path / "b.md")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("bench: error:") and "leaderboard page" in error
    assert len(error.strip().splitlines()) == 1


# ---------------------------------------------------------------- in a real browser
