"""Issue #30, everything but the cell cache: plugins that exit or print at import, empty and
over-long paths, no-op attacks, NaN logits, models of the wrong shape, misleading messages, and
output streams that fail. Each case is one line naming the fix (or a right result), never a
traceback, a hang, a silent exit 0 or a lost results file."""

from __future__ import annotations

import errno
import io
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch
from helpers import RUN, assert_one_line_error, assert_run_refused
from support.bad_inputs_round3 import LONG, SMALL, plugin_module

from advbench import (
    Defense,
    UsageError,
    evaluate_model,
    hookimpl,
    load_registry,
    run_matrix,
)
from advbench.cli import main


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """A model cache holding the smoke seed CNN, trained once for this module's runs."""
    root = tmp_path_factory.mktemp("cache")
    assert main([*RUN, *SMALL, "--out", str(root / "first"), "--cache-dir", str(root)]) == 0
    return root


def small_run(tmp_path: Path, cache: Path, name: str = "run") -> list[str]:
    return [*RUN, *SMALL, "--out", str(tmp_path / name), "--cache-dir", str(cache)]


def assert_complete(out: Path) -> None:
    """Every results file of a finished run is on disk, whole."""
    for name in ("results.csv", "results.parquet", "leaderboard.md", "index.html",
                 "manifest.json"):
        assert (out / name).is_file(), name
    assert len(pd.read_csv(out / "results.csv")) == 1
    assert (out / "leaderboard.md").read_text().startswith("# bench leaderboard")
    assert (out / "index.html").read_text().rstrip().endswith("</html>")


# -- plugins at import ----------------------------------------------------------------------


@dataclass(kw_only=True)
class NaNDefense(Defense):
    name = "nan-logits"

    def wrap(self, model):
        return NaNLogits(model)


@hookimpl
def bench_defenses():
    return [NaNDefense]


def test_a_plugin_calling_sys_exit_at_import_is_a_failed_plugin(tmp_path, capsys, monkeypatch):
    name = plugin_module(tmp_path, monkeypatch, "exits_at_import", "import sys\nsys.exit(3)\n")
    assert main(["list", "--json"]) == 0
    failures = json.loads(capsys.readouterr().out)["failures"]
    assert [(f["plugin"], f["error"]) for f in failures] == [
        (name, "SystemExit: 3 (the module called sys.exit() at import)")]
    code = main(["list", "--strict-plugins"])
    assert_one_line_error(capsys, code, f"plugin {name} (local -) failed: SystemExit: 3")


def test_a_run_with_an_exiting_plugin_says_so_and_runs(tmp_path, cache, capsys, monkeypatch):
    plugin_module(tmp_path, monkeypatch, "exits_in_run", "raise SystemExit\n")
    assert main(small_run(tmp_path, cache)) == 0
    err = capsys.readouterr().err
    assert "plugin exits_in_run (local -) failed to load: SystemExit (the module called " \
           "sys.exit() at import)" in err
    assert_complete(tmp_path / "run")


@pytest.mark.parametrize("body,error", [
    ("raise GeneratorExit\n", "GeneratorExit"),
    ("from advbench import hookimpl\n@hookimpl\ndef bench_attacks():\n    raise SystemExit(4)\n",
     "bench_attacks() raised SystemExit: 4"),
], ids=["GeneratorExit at import", "SystemExit in a hook"])
def test_other_exits_are_failed_plugins(body, error, tmp_path, capsys, monkeypatch):
    name = plugin_module(tmp_path, monkeypatch, f"exits_{abs(hash(body))}", body)
    assert main(["list", "--json"]) == 0
    failures = json.loads(capsys.readouterr().out)["failures"]
    assert [(f["plugin"], f["error"]) for f in failures] == [(name, error)]


def test_a_plugin_raising_keyboard_interrupt_at_import(tmp_path, capsys, monkeypatch):
    plugin_module(tmp_path, monkeypatch, "interrupts_import", "raise KeyboardInterrupt\n")
    code = main(["list"])
    err = capsys.readouterr().err.strip()
    assert code == 130
    assert err == ("bench: error: interrupted while importing plugin interrupts_import "
                   "(local -): nothing was run")


# -- paths ------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    [*RUN, "--out", ""], [*RUN, "--cache-dir", ""], [*RUN, "--data-root", ""],
    ["run", "--resume", ""], ["leaderboard", ""], ["leaderboard", "x.csv", "--out", ""],
    ["cache", "list", "--cache-dir", ""], ["cache", "clear", "--cache-dir", ""],
], ids=lambda argv: " ".join(a or "''" for a in argv[-2:]))
def test_an_empty_path_is_refused(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(capsys, main(argv), "the path is empty; name a folder or file")
    assert list(tmp_path.iterdir()) == []  # nothing written in the current folder


@pytest.mark.parametrize("key", ["out", "cache_dir", "data_root"])
def test_an_empty_path_in_the_api(key, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=f"--{key.replace('_', '-')}: the path is empty"):
        run_matrix(preset="smoke", attacks="fgsm", defenses="none", **{key: ""})
    assert list(tmp_path.iterdir()) == []


def test_a_device_as_manifest_is_not_read_forever(cache, capsys):
    code = main(["leaderboard", str(cache / "first"), "--manifest", "/dev/zero"])
    assert_one_line_error(capsys, code, "--manifest /dev/zero: not a readable manifest")


@pytest.mark.parametrize("argv", [
    [*RUN, "--data-root", "{loop}"], [*RUN, *SMALL, "--cache-dir", "{loop}"],
    [*RUN, "--out", "{loop}"], ["run", "--resume", "{loop}"], ["leaderboard", "{loop}"],
    ["leaderboard", "x.csv", "--out", "{loop}"], ["cache", "list", "--cache-dir", "{loop}/a"],
], ids=["data-root", "cache-dir", "out", "resume", "leaderboard", "leaderboard-out",
        "cache-list"])
def test_a_symlink_loop_is_called_one(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    code = main([arg.format(loop=loop) for arg in argv])
    assert_one_line_error(capsys, code, " runs into a symlink loop; name a real folder")
    assert [p.name for p in tmp_path.iterdir()] == ["loop"]  # nothing trained or written


@pytest.mark.parametrize("key", ["data_root", "cache_dir", "out"])
def test_paths_in_the_api_are_checked_as_flags_are(key, tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    flag = f"--{key.replace('_', '-')}"
    for path, expected in [(loop, f"{flag}: {loop} runs into a symlink loop"),
                           (tmp_path / LONG, f"{flag}: the name aaaaaaaaaaaaaaaaaaaa… is 300 "
                                             "bytes long; file systems allow 255")]:
        with pytest.raises(UsageError, match=expected):
            run_matrix(preset="smoke", attacks="fgsm", defenses="none",
                       **{"out": tmp_path / "out", key: path})
    assert [p.name for p in tmp_path.iterdir()] == ["loop"]


# -- data files -------------------------------------------------------------------------------


# -- attacks that do nothing ------------------------------------------------------------------

NO_OPS = {
    "pixel-scan without values": (["--attacks", "pixel-scan", "--set",
                                   "pixel-scan.values=[]"], "values is empty"),
    "pgd without steps or start": (["--attacks", "pgd-linf", "--set", "pgd-linf.steps=0",
                                    "--set", "pgd-linf.random_start=false"],
                                   "steps=0 with random_start=false does not attack at all"),
    "half a pixel": (["--attacks", "pixel-scan", "--eps", "l0=1,0.5"],
                     "--eps l0=1,0.5: the L0 ε counts pixels that may change; give whole "
                     "numbers"),
}


@pytest.mark.parametrize("case", list(NO_OPS), ids=list(NO_OPS))
def test_an_attack_that_would_do_nothing_is_refused(case, tmp_path, capsys):
    assert_run_refused(*NO_OPS[case], tmp_path, capsys)


# -- models -----------------------------------------------------------------------------------

class NaNLogits(torch.nn.Module):
    """A classifier whose every logit is NaN (argmax: class 0; NaN ≠ NaN: "randomized")."""

    def __init__(self, base: torch.nn.Module | None = None) -> None:
        super().__init__()
        self.base = base or torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) * float("nan")


def test_a_model_with_nan_logits_is_refused():
    with pytest.raises(UsageError, match=r"run_matrix\(model=NaNLogits\): returns NaN logits"):
        evaluate_model(NaNLogits(), preset="smoke", attacks="fgsm", n_eval=20)


def test_a_defense_with_nan_logits_fails_with_the_reason(cache):
    registry = load_registry(extra=[sys.modules[__name__]])
    frame = run_matrix(preset="smoke", attacks="fgsm", defenses="nan-logits", n_train=500,
                       n_eval=20, cache_dir=cache, registry=registry)
    assert frame["status"].tolist() == ["error"]
    assert "returns NaN logits on evaluation images" in frame["invalid_reason"].iloc[0]
    assert frame["clean_accuracy"].isna().all()


def test_a_model_of_other_classes_is_refused():
    three = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 3))
    with pytest.raises(UsageError, match=r"returns \(2, 3\) for 2 images, not logits of shape "
                                         r"\(2, 10\)"):
        evaluate_model(three, preset="smoke", attacks="fgsm", n_eval=20)


def test_a_model_of_other_inputs_is_refused():
    linear = torch.nn.Linear(2, 2).train()
    with pytest.raises(UsageError, match=r"run_matrix\(model=Linear\): running it on 2 "
                                         r"1×28×28 images of fashion-mnist failed"):
        run_matrix(model=linear, preset="smoke", attacks="fgsm", defenses="none", n_eval=20)
    assert linear.training  # the check leaves the user's module as it found it


def test_eps_of_the_wrong_type_names_the_type():
    with pytest.raises(UsageError, match=r"--eps: expected a mapping from strings to lists of "
                                         r"numbers or null, got \{'linf': 0.1\}"):
        run_matrix(preset="smoke", attacks="fgsm", defenses="none", eps={"linf": 0.1})


# -- runs: resume, SIGTERM --------------------------------------------------------------------

def test_resume_with_another_out_prints_the_path(tmp_path, cache, capsys):
    run = tmp_path / "run"
    assert main(small_run(tmp_path, cache)) == 0
    capsys.readouterr()
    code = main(["run", "--resume", str(run), "--out", str(tmp_path / "elsewhere")])
    assert_one_line_error(capsys, code, f"--out would change the recorded run (out={run})")


def test_sigterm_leaves_the_resume_hint(tmp_path, capsys, monkeypatch):
    def terminated(config, **kwargs):  # a run begun (its manifest written), then killed
        config.out.mkdir()
        (config.out / "manifest.json").write_text("{}")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)  # the handler interrupts this
        raise AssertionError("SIGTERM was not delivered")

    def unhandled(signum, frame):
        raise AssertionError("bench left SIGTERM to its default: the process would die")

    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        monkeypatch.setattr("advbench.running.driver.run_matrix", terminated)
        out = tmp_path / "run"
        code = main([*RUN, "--out", str(out)])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 143
    assert f"finish the run with: bench run --resume {out}" in capsys.readouterr().out
    assert signal.getsignal(signal.SIGTERM) is previous


# -- output streams ---------------------------------------------------------------------------

class DevFull(io.StringIO):
    """stdout on a full device (``> /dev/full``): every flush fails."""

    def flush(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")


STREAMS = {
    "ascii": lambda: io.TextIOWrapper(io.BytesIO(), encoding="ascii"),
    "closed": lambda: None,
    "closed file": lambda: io.StringIO() if (s := io.StringIO()).close() else s,
    "full device": DevFull,
}


@pytest.mark.parametrize("kind", list(STREAMS), ids=list(STREAMS))
def test_the_results_are_complete_whatever_stdout_does(kind, tmp_path, cache, capsys,
                                                         monkeypatch):
    monkeypatch.setattr("sys.stdout", STREAMS[kind]())
    code = main(small_run(tmp_path, cache))
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err
    assert_complete(tmp_path / "run")


def test_the_results_are_written_in_utf8_under_an_ascii_locale(tmp_path, cache):
    """``LC_ALL=C`` (Python's locale encoding then ASCII; was: UnicodeEncodeError writing
    leaderboard.md's "·", a traceback and no leaderboard.md nor index.html): every file
    bench writes is UTF-8, whatever the locale."""
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0",
           "PYTHONIOENCODING": "", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", "from advbench.cli import main; "
                          "raise SystemExit(main())", *small_run(tmp_path, cache)],
                         env=env, capture_output=True, text=True, errors="replace")
    assert run.returncode == 0 and "Traceback" not in run.stderr, run.stderr
    assert_complete(tmp_path / "run")
    assert "·" in (tmp_path / "run" / "leaderboard.md").read_text(encoding="utf-8")


def no_space(path: Path):
    def fail(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    return fail


def test_a_full_disk_while_drawing_figures_loses_no_result(tmp_path, cache, capsys,
                                                            monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr("advbench.running.driver.eps_sweep_figures",
                        no_space(out / "figures" / "eps_sweep.png"))
    assert main(small_run(tmp_path, cache)) == 0
    assert_complete(out)
    assert "No space left on device" in (out / "errors.log").read_text()


def test_a_full_disk_is_one_line_naming_the_folder(tmp_path, cache, capsys, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setattr("advbench.running.driver.write_site", no_space(out / "index.html"))
    code = main(small_run(tmp_path, cache))
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err == (f"bench: error: no space left on the device holding {out}: free some space, "
                   f"then finish the run with: bench run --resume {out}")
    monkeypatch.undo()
    assert main(["run", "--resume", str(out)]) == 0  # as the message says
    assert_complete(out)


# -- leaderboard.md ---------------------------------------------------------------------------


def test_the_leaderboard_on_an_ascii_terminal(tmp_path, cache, monkeypatch):
    stdout = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    monkeypatch.setattr("sys.stdout", stdout)
    assert main(["leaderboard", str(cache / "first")]) == 0
    stdout.flush()
    text = stdout.buffer.getvalue().decode("ascii")
    assert "linf \\u03b5=0.1" in text and "| none" in text
