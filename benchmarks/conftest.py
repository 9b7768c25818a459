"""Benchmarks load only bench's own plugins, like the tests."""

import os

os.environ["BENCH_DISABLE_PLUGIN_AUTOLOAD"] = "1"
