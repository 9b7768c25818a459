"""The whole matrix on a small slice of real Fashion-MNIST, through the CLI and the API."""

from __future__ import annotations

import json

from advbench.cli import main


def test_list_json_shows_every_builtin(capsys):
    assert main(["list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    by_name = {p["name"]: p for p in listing["plugins"]}
    assert by_name["fgsm"]["capabilities"]["norms"] == ["linf"]
    assert by_name["fgsm"]["capabilities"]["access"] == "gradient"
    assert by_name["fgm"]["distribution"] == "advbench"
    assert {"none", "fashion-mnist", "mnist", "cifar10", "seed-cnn"} <= set(by_name)
    assert listing["failures"] == []
