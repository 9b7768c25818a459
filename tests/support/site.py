"""Helpers of tests/e2e/test_site.py and tests/unit/test_site_unit.py."""

from __future__ import annotations

from html.parser import HTMLParser

import pandas as pd

from advbench.reporting.results import to_frame

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
