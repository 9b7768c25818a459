"""Every bad input gets one clear line on stderr, exit code 2, and nothing written."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

from helpers import RUN, assert_one_line_error

from advbench.cli import main

DEBIAN = Path("/usr/share/datasets/fashion-mnist")


def truncated_fashion(root: Path) -> Path:
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copy(DEBIAN / name, root / name)
    data = gzip.decompress((root / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (root / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(data[:-100]))
    return root


def test_out_unwritable(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = main([*RUN, "--out", str(blocker / "run")])
    assert_one_line_error(capsys, code, "cannot write there")


def test_truncated_dataset(tmp_path, capsys):
    root = truncated_fashion(tmp_path)
    code = main([*RUN, "--data-root", str(root), "--out", str(tmp_path / "out")])
    assert_one_line_error(capsys, code, "truncated or corrupt")


def test_bench_help_imports_no_torch():
    """``bench --help`` reads RunConfig's defaults without importing torch."""
    import subprocess
    import sys

    code = ("import sys; from advbench.cli import build_parser; build_parser(); "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
