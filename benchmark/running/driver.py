"""The driver of a run: plan it, run it, write the run folder's files.

``run_matrix`` is the Python API behind ``bench run``. It validates everything before writing
anything (``advbench.running.plan``); a :class:`~advbench.running.scheduler.Scheduler` hands the
work to an executor (``advbench.running.executors``: in-process by default, or a pool of
processes, or Ray) that prepares each defended model once and runs its cells
(``advbench.running.worker``); the driver's :class:`~advbench.running.store.ResultStore` alone
records each result as it arrives and rewrites the results files, so an interrupted run can be
resumed whatever ran it. The run folder itself (creating, resuming, the manifest) is
``advbench.running.run_folder``; the manifest, leaderboard and site are written here at the end.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from torch import nn

from advbench._util import write_atomic
from advbench.plugin_system.loader import load_registry
from advbench.plugin_system.registry import Registry
from advbench.reporting.curves import record_curves
from advbench.reporting.figures import eps_sweep_figures
from advbench.reporting.leaderboard import to_markdown
from advbench.reporting.results import write_json
from advbench.reporting.site import write_site
from advbench.running.executors import Executor, get_executor
from advbench.running.isolation import check_isolation
from advbench.running.plan import RunConfig, build_plan, check_user_model
from advbench.running.progress import RunProgress, Stopwatch
from advbench.running.run_folder import earlier_figures, load_previous, manifest, prepare_out
from advbench.running.scheduler import Scheduler
from advbench.running.store import ResultStore
from advbench.running.user_model import registry_with_user_model
from advbench.running.worker import Worker


def run_matrix(
    config: RunConfig | None = None,
    *,
    model: nn.Module | str | None = None,
    registry: Registry | None = None,
    progress: bool = False,
    console: Console | None = None,
    executor: Executor | str = "local",
    **overrides: Any,
) -> pd.DataFrame:
    """Run the attack × defense matrix and return one row per cell as a DataFrame.

    ``model``: your own trained ``nn.Module`` (logits out, inputs in [0, 1]) for ``dataset``;
    the defense ``none`` evaluates it as it is, training-time defenses fine-tune a copy.
    ``model`` may also be a model plugin name or ``package.module:factory`` string.
    ``executor``: ``"local"`` (this process), ``"processes"``, ``"ray"``, or an
    :class:`~advbench.running.executors.Executor` (internal, not a stable interface); the results
    are the same whichever runs the cells.
    Keyword ``overrides`` set fields of :class:`RunConfig`, e.g. ``attacks="fgsm"``.
    Files are written only when ``out`` is given.
    """
    if isinstance(model, str):
        overrides["model"], model = model, None
    config = dataclasses.replace(config or RunConfig(), **overrides)
    check_isolation(config.isolation, config.cell_timeout, config.attack_memory)
    if model is not None and config.model == RunConfig.model:
        config = dataclasses.replace(config, model=type(model).__name__)
    registry = registry or load_registry(strict=config.strict_plugins,
                                         catalog=config.isolation != "none")
    if model is not None:
        registry = registry_with_user_model(registry, config.model)
    stopwatch, begun = Stopwatch(), time.perf_counter()
    with stopwatch.phase("data"):  # resolving the plan loads and checks the data
        plan = build_plan(config, registry)
        config = plan.config  # with the preset's decisions (cascade)
        if model is not None:
            check_user_model(model, plan.dataset)
    if isinstance(executor, str):
        executor = get_executor(executor)
    out = Path(config.out) if config.out is not None else None
    resuming = out is not None and prepare_out(out, config)
    previous = load_previous(out) if out is not None and resuming and not config.fresh else {}
    earlier = earlier_figures(out) if out is not None and resuming else []
    started = datetime.now(UTC).isoformat(timespec="seconds")
    run_manifest = manifest(plan, registry, started)
    run_manifest["executor"] = executor.name
    run_manifest["figures"] = earlier
    if out is not None:
        write_json(out / "manifest.json", run_manifest)
    wall = time.perf_counter()
    with RunProgress(progress, console) as bars:
        worker = Worker(plan, model, bars)
        store = ResultStore(plan, worker.keys, bars, out, previous, stopwatch)
        scheduler = Scheduler(plan, worker, executor, store, stopwatch)
        frame = scheduler.run()
    run_manifest["wall_seconds"] = round(time.perf_counter() - wall, 1)
    run_manifest["resumed_cells"] = store.resumed_cells
    run_manifest["reused_cells"] = len(store.reused_keys)  # from the cell cache
    run_manifest["reused_cell_keys"] = store.reused_keys
    if out is not None:
        figures = out / "figures"
        figures.mkdir(exist_ok=True)
        certified = {name: group.state.certified if group.state is not None else group.certified
                     for name, group in scheduler.groups.items()}
        with stopwatch.phase("curves"):
            try:  # rewrites the results files with the median radii and the curves' flags
                frame, curves = record_curves(frame, out, certified)
            except Exception as exc:  # the curves never cost the results already written
                store.log_error("curves", "".join(traceback.format_exception(exc)))
                curves = []
        with stopwatch.phase("figures"):
            try:
                written = (curves + eps_sweep_figures(frame, figures)
                           + store.figures.written(figures))
            except Exception as exc:  # a figure never costs the results files written next
                store.log_error("figures", "".join(traceback.format_exception(exc)))
                written = list(store.figures.attack_pictures)
        run_manifest["figures"] = list(dict.fromkeys(
            earlier + [str(p.relative_to(out)) for p in written]))
        with stopwatch.phase("writing"):
            run_manifest["phases"] = stopwatch.record()
            write_json(out / "manifest.json", run_manifest)
            text = to_markdown(frame, run_manifest)
            write_atomic(out / "leaderboard.md", lambda p: p.write_text(text, encoding="utf-8"))
            write_site(frame, out, run_manifest)  # index.html, the same tables as a web page
    run_manifest["phases"] = stopwatch.record()
    # wall_seconds: the matrix (as leaderboard.md shows it); total_seconds: data to last file
    run_manifest["total_seconds"] = round(time.perf_counter() - begun, 1)
    if out is not None:
        write_json(out / "manifest.json", run_manifest)
    frame.attrs["manifest"] = run_manifest
    return frame


def evaluate_model(model: nn.Module, dataset: str = "fashion-mnist", **overrides: Any
                   ) -> pd.DataFrame:
    """Evaluate your own trained model against every attack (no defense): the commonest ask."""
    overrides.setdefault("defenses", "none")
    return run_matrix(model=model, dataset=dataset, **overrides)
