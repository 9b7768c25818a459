"""The leaderboard web page: escaped, linked only to figures that exist, deterministic, the same
tables as leaderboard.md, and working in a real browser (headless Chromium through Playwright)
from file:// with no network."""

from __future__ import annotations

from html.parser import HTMLParser

import pandas as pd

from advbench.cli import main
from advbench.reporting.results import to_frame
from advbench.reporting.site import render_site, write_site

EVIL = "<script>alert(1)</script>"
EVIL_ATTACK = '"><img src=x onerror=alert(2)>'


def row(defense: str, attack: str, robust: float | None, *, norm: str = "linf", eps: float = 0.1,
        clean: float = 0.9, dataset: str = "fashion-mnist", model: str = "seed-cnn",
        flags: str | None = None, valid: bool = True, reason: str | None = None) -> dict:
    return {"dataset": dataset, "model": model, "defense": defense, "attack": attack,
            "norm": norm, "eps": eps, "split": "test", "n_samples": 100,
            "clean_accuracy": clean, "clean_accuracy_ci_low": clean - 0.05,
            "clean_accuracy_ci_high": min(1.0, clean + 0.05),
            "robust_accuracy": robust if valid else float("nan"),
            "robust_accuracy_ci_low": robust - 0.04 if valid else float("nan"),
            "robust_accuracy_ci_high": robust + 0.04 if valid else float("nan"),
            "attack_success_rate": 0.5, "flags": flags, "valid": valid,
            "status": "ok" if valid else "invalid", "invalid_reason": reason,
            "schema_version": 1}


def small_frame() -> pd.DataFrame:
    return to_frame([
        row("none", "fgsm", 0.30, clean=0.95), row("none", "pgd-linf", 0.10, clean=0.95),
        row("adv-train", "fgsm", 0.70, clean=0.85),
        row("adv-train", "pgd-linf", 0.60, clean=0.85, flags="a black-box attack beats"),
        row("smooth", "fgsm", 0.0, clean=0.80, valid=False, reason="norm 0.2 > ε"),
        row("smooth", "pgd-linf", 0.50, clean=0.80),
        row("none", "fgm", 0.20, clean=0.95, norm="l2", eps=1.5),
        row("adv-train", "fgm", 0.65, clean=0.85, norm="l2", eps=1.5),
    ])


class Page(HTMLParser):
    """Every element, its attributes, and the text of each <script>."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.scripts: list[str] = []
        self.text: list[str] = []
        self._in_script = False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag):
        self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data
        else:
            self.text.append(data)

    def links(self) -> list[str]:
        return [attrs[key] for _, attrs in self.elements for key in ("href", "src")
                if attrs.get(key)]


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
