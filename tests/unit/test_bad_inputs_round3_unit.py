"""Issue #30, everything but the cell cache: plugins that exit or print at import, empty and
over-long paths, no-op attacks, NaN logits, models of the wrong shape, misleading messages, and
output streams that fail. Each case is one line naming the fix (or a right result), never a
traceback, a hang, a silent exit 0 or a lost results file."""

from __future__ import annotations

import errno
import io
import json

import numpy as np
import pytest
import torch
from helpers import RUN, assert_one_line_error, assert_run_refused, idx_folder, write_idx
from support.bad_inputs_round3 import LONG, SMALL, plugin_module

from advbench import (
    BenchError,
)
from advbench.algorithms.pgd import PGDAttack
from advbench.cli import main
from advbench.data import read_idx
from advbench.oracle import Oracle
from advbench.reporting.leaderboard import to_markdown
from advbench.reporting.results import to_frame

# -- plugins at import ----------------------------------------------------------------------


def test_a_plugin_printing_at_import_keeps_list_json_valid(tmp_path, capfd, monkeypatch):
    plugin_module(tmp_path, monkeypatch, "chatty_plugin", "\n".join([
        "from advbench import hookimpl", "print('hello from the plugin')", "",
        "@hookimpl", "def bench_attacks():", "    print('and from its hook')",
        "    return []", ""]))
    assert main(["list", "--json"]) == 0
    captured = capfd.readouterr()
    listed = json.loads(captured.out)
    assert "fgsm" in {p["name"] for p in listed["plugins"]}
    assert "hello from the plugin" in captured.err and "and from its hook" in captured.err


def test_a_plugin_printing_to_file_descriptor_1_keeps_list_json_valid(tmp_path, capfd,
                                                                      monkeypatch):
    plugin_module(tmp_path, monkeypatch, "raw_printer", "import os\nos.write(1, b'raw')\n")
    assert main(["list", "--json"]) == 0
    captured = capfd.readouterr()
    assert "fgsm" in {p["name"] for p in json.loads(captured.out)["plugins"]}
    assert "raw" in captured.err


def test_a_plugin_interrupting_its_hook(tmp_path, capsys, monkeypatch):
    plugin_module(tmp_path, monkeypatch, "interrupts_hook", "\n".join([
        "from advbench import hookimpl", "@hookimpl", "def bench_defenses():",
        "    raise KeyboardInterrupt", ""]))
    code = main(["list"])
    assert code == 130
    assert capsys.readouterr().err.strip() == (
        "bench: error: interrupted in bench_defenses() of plugin interrupts_hook (local -): "
        "nothing was run")


def test_interrupted_while_checking_the_inputs_writes_nothing(tmp_path, capsys, monkeypatch):
    (tmp_path / "interrupting_factory.py").write_text(
        "def build():\n    raise KeyboardInterrupt\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code = main([*RUN, "--model", "interrupting_factory:build", "--out", str(tmp_path / "out")])
    captured = capsys.readouterr()
    assert code == 130
    assert captured.err.strip() == "bench: interrupted before the run began: nothing was written"
    assert "--resume" not in captured.out and not (tmp_path / "out").exists()


def test_a_model_factory_calling_sys_exit(tmp_path, capsys):
    assert_run_refused(["--model", "sys:exit"], "--model 'sys:exit': the factory called "
                       "sys.exit(None)", tmp_path, capsys)


class ReadingStdinFails(io.StringIO):
    """A stdin a factory must never read (a pipe that would block forever)."""

    def readline(self, *args) -> str:
        raise AssertionError("the factory read bench's stdin")


def test_a_model_factory_reading_stdin_does_not_wait(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", ReadingStdinFails())
    assert_run_refused(["--model", "builtins:input"], "(EOFError: EOF when reading a line)",
                       tmp_path, capsys)


# -- paths ------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    [*RUN, "--out", LONG], [*RUN, "--data-root", f"x/{LONG}"], [*RUN, "--cache-dir", LONG],
    ["leaderboard", LONG], ["leaderboard", "x.csv", "--out", f"{LONG}/board.md"],
    ["cache", "list", "--cache-dir", LONG],
], ids=["out", "data-root", "cache-dir", "leaderboard", "leaderboard-out", "cache-list"])
def test_a_name_too_long_is_one_line(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(capsys, main(argv), "is 300 bytes long; file systems allow 255")


def test_a_path_too_long_is_one_line(tmp_path, capsys):
    path = "/".join(["b" * 250] * 20)
    assert_one_line_error(capsys, main([*RUN, "--out", path]),
                          "the path is 5019 bytes long; file systems allow 4096")


def test_a_broken_symlink_as_data_root_says_where_it_points(tmp_path, capsys):
    link = tmp_path / "data"
    link.symlink_to(tmp_path / "moved")
    code = main([*RUN, "--data-root", str(link), "--out", str(tmp_path / "out")])
    assert_one_line_error(capsys, code, f"--data-root {link} is a broken symlink (to "
                                        f"{tmp_path / 'moved'})")


def test_a_cache_dir_on_a_full_disk_is_refused_before_training(tmp_path, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("advbench.running.plan.tempfile.TemporaryFile", full)
    code = main([*RUN, *SMALL, "--cache-dir", str(tmp_path / "cache"),
                 "--out", str(tmp_path / "out")])
    assert_one_line_error(capsys, code, f"cannot write in {tmp_path} (No space left on device)")
    assert not (tmp_path / "out").exists()


# -- data files -------------------------------------------------------------------------------

def test_an_idx_header_with_huge_dimensions_names_the_file(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte"  # 2**31 · 2**31 · 4 = 2**64: 0 in int64
    path.write_bytes(bytes([0, 0, 8, 3]) + (2**31).to_bytes(4, "big") * 2
                     + (4).to_bytes(4, "big"))
    with pytest.raises(BenchError, match=f"{path} is truncated or corrupt: 16 bytes, header "
                                         f"says {16 + 2**64}"):
        read_idx(path)


def test_an_idx_header_with_too_many_dimensions_names_the_file(tmp_path):
    path = tmp_path / "t10k-labels-idx1-ubyte"  # numpy stops at 64 dimensions
    path.write_bytes(bytes([0, 0, 8, 100]) + (1).to_bytes(4, "big") * 100 + b"\x01")
    with pytest.raises(BenchError, match=f"{path} is truncated or corrupt: its header says "
                                         "100 dimensions"):
        read_idx(path)


def test_an_idx_file_of_the_wrong_rank_says_its_rank(tmp_path, capsys):
    root = idx_folder(tmp_path / "data", 0)
    images = root / "train-images-idx3-ubyte.gz"
    write_idx(images, np.zeros((60, 784), dtype=np.uint8), compress=True)
    code = main([*RUN, "--data-root", str(root), "--out", str(tmp_path / "out")])
    assert_one_line_error(capsys, code, f"{images} holds a rank-2 array (60, 784); images "
                                        "(count × height × width) need rank 3")


def test_sample_counts_from_the_preset_say_so(tmp_path, capsys):
    root = idx_folder(tmp_path / "data", 0)  # 60 training and 20 test images
    code = main([*RUN, "--data-root", str(root), "--out", str(tmp_path / "out")])
    assert_one_line_error(capsys, code, "the smoke preset's --n-train 10000 exceeds the 60 "
                                        "training samples; pass --n-train 60 or fewer")
    code = main([*RUN, "--data-root", str(root), "--n-train", "60",
                 "--out", str(tmp_path / "out")])
    assert_one_line_error(capsys, code, "the smoke preset's --n-eval 200 exceeds the 20 "
                                        "samples of the test split; pass --n-eval 20 or fewer")
    code = main([*RUN, "--data-root", str(root), "--n-train", "61",
                 "--out", str(tmp_path / "out")])
    assert_one_line_error(capsys, code, "bench: error: --n-train 61 exceeds the 60")


# -- attacks that do nothing ------------------------------------------------------------------


def test_pgd_without_steps_still_draws_a_random_start():
    assert PGDAttack(steps=0, random_start=True).steps == 0


# -- models -----------------------------------------------------------------------------------


class ConstantLogits(torch.nn.Module):
    """Logits that ignore the input: a trainable bias only, or nothing trainable at all."""

    def __init__(self, trainable: bool) -> None:
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(10), requires_grad=trainable)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(len(x), 10)


@pytest.mark.parametrize("trainable", [True, False])
def test_the_gradient_of_a_model_ignoring_its_input_is_zero(trainable):
    """A constant model (was: RuntimeError 'the differentiated Tensor … not used in the
    graph' in the sanity battery, a traceback): its input gradient is zero, and the run
    flags 100% of input gradients zero."""
    x, y = torch.rand(3, 1, 28, 28), torch.tensor([0, 1, 2])
    grad, logits = Oracle(ConstantLogits(trainable), "gradient", 3).gradient(x, y)
    assert torch.equal(grad, torch.zeros_like(x)) and logits.shape == (3, 10)


def test_a_plugin_integer_past_int64_gives_the_signed_range(tmp_path, capsys):
    assert_run_refused(["--attacks", "random-search", "--set",
                        f"random-search.max_queries={2**64 - 1}"],
                       "max_queries must fit in a signed 64-bit integer: from "
                       "-9,223,372,036,854,775,808 up to 9,223,372,036,854,775,807",
                       tmp_path, capsys)


# -- runs: resume, SIGTERM --------------------------------------------------------------------


# -- output streams ---------------------------------------------------------------------------


# -- leaderboard.md ---------------------------------------------------------------------------

def row(defense: str, attack: str, robust: float) -> dict:
    """A valid results row of one L∞ cell."""
    return {"dataset": "fashion-mnist", "model": "seed-cnn", "defense": defense,
            "attack": attack, "norm": "linf", "eps": 0.1, "split": "test", "n_samples": 100,
            "clean_accuracy": 0.9, "robust_accuracy": robust, "attack_success_rate": 0.5,
            "valid": True, "status": "ok", "invalid_reason": "", "schema_version": 1}


def test_leaderboard_md_escapes_names_as_the_page_does():
    frame = to_frame([row("<script>alert(1)</script>", "fgsm", 0.5),
                      row("a|b", "fgsm", 0.4), row("none", "x|y", 0.3)])
    text = to_markdown(frame)
    assert "<script>" not in text and "&lt;script>alert(1)&lt;/script>" in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    cells = [len(line.replace("\\|", "").split("|")) for line in table]
    assert len(set(cells)) == 1, table  # every row has as many cells as the header
    assert "a\\|b" in text and "x\\|y" in text


@pytest.mark.parametrize("value", ["linf=0_1", "l2=1_5"])
def test_an_underscore_in_eps_is_refused_not_read_as_another_number(value):
    """float("0_1") is 1.0: a typo of 0.1 must not run ten times the ε asked for."""
    from advbench.cli import parse_eps
    from advbench.errors import UsageError
    with pytest.raises(UsageError, match="is not a comma list of numbers"):
        parse_eps([value])
