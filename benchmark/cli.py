"""The ``bench`` command: a thin layer over the Python API. Usage errors exit 2 in one line."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import errno
import json
import math
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from advbench.errors import BenchError, UsageError, path_problem
from advbench.plugin_system.options import parse_set, shown
from advbench.plugin_system.presets import PRESETS
from advbench.running.config import SPLIT_CHOICES, RunConfig
from advbench.running.config import defaults as run_defaults

MIN_WIDTH = 100  # columns: narrower, rich would fold the leaderboard's numbers away
# What --resume may change: where the cells run, not what they compute.
RESUME_MAY_CHANGE = {"resume", "executor", "workers", "ray_address", "strict_plugins"}


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the fix, not the usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def path_arg(text: str) -> Path:
    """A path flag's value, refused at once when :func:`~advbench.errors.path_problem` finds
    one (empty, too long, a symlink loop)."""
    problem = path_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return Path(text)


def parse_eps(values: list[str]) -> dict[str, list[float]] | None:
    """``["linf=0,0.05,0.1", "l2=1.5"]`` → ``{"linf": [0, 0.05, 0.1], "l2": [1.5]}``."""
    if not values:
        return None
    parsed: dict[str, list[float]] = {}
    for value in values:
        norm, sep, numbers = value.partition("=")
        if not sep or not norm.strip():
            raise UsageError(f"--eps {value!r}: expected NORM=VALUE[,VALUE...], "
                             "e.g. --eps linf=0.1 --eps l2=1.5")
        try:  # float() reads "0_1" as 1.0: a typo of 0.1 must not run at ε = 1
            if "_" in numbers:
                raise ValueError(numbers)
            floats = [float(number) + 0.0 for number in numbers.split(",")]  # no -0.0
        except ValueError:
            raise UsageError(f"--eps {shown(value)}: {shown(numbers)} is not a comma list of "
                             "numbers") from None
        if any(not math.isfinite(v) or v < 0 for v in floats):
            raise UsageError(f"--eps {shown(value)}: ε must be finite numbers >= 0")
        parsed.setdefault(norm.strip().lower(), []).extend(floats)
    return parsed


def format_eps(eps: dict[str, list[float]]) -> list[str]:
    """The ``--eps`` arguments that give ``eps`` back (what ``parse_eps`` reads)."""
    return [f"{norm}={','.join(repr(v) for v in values)}" for norm, values in eps.items()]


def choices_help(choices: tuple[str, ...] | list[str], default: str) -> str:
    """``smoke, cpu (default) or paper``: the choices, the default marked."""
    named = [f"{choice} (default)" if choice == default else choice for choice in choices]
    return f"{', '.join(named[:-1])} or {named[-1]}" if len(named) > 1 else named[0]


def build_parser() -> Parser:
    # Every `bench run` default is RunConfig's (--out's default_out() aside): one source.
    default = run_defaults()
    parser = Parser(prog="bench", description="Run every adversarial attack against every "
                    "defense on real data; every number checked by the harness.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", parser_class=Parser)

    run = sub.add_parser("run", help="run the attack × defense matrix")
    run.add_argument("--attacks", default=default["attacks"],
                     help="'all' or a comma list (default: %(default)s)")
    run.add_argument("--defenses", default=default["defenses"],
                     help="'all' or a comma list (default: %(default)s)")
    run.add_argument("--dataset", default=default["dataset"], help="dataset plugin name")
    run.add_argument("--model", default=default["model"],
                     help="model plugin name, or package.module:factory")
    run.add_argument("--eps", action="append", default=[], metavar="NORM=V[,V...]",
                     help="ε per norm, repeatable; runs only the norms given (default: the "
                     "dataset's ε for every norm an attack supports)")
    run.add_argument("--preset", default=default["preset"],
                     help=choices_help(list(PRESETS), default["preset"]))
    run.add_argument("--set", action="append", default=[], dest="options",
                     metavar="PLUGIN.KEY=V[,V...]",
                     help="a plugin argument, repeatable; several values run one variant each "
                     "(e.g. gaussian-smoothing.sigma=0.25,0.5)")
    run.add_argument("--n-eval", type=int, default=default["n_eval"],
                     help="evaluation samples per split")
    run.add_argument("--n-train", type=int, default=default["n_train"], help="training samples")
    run.add_argument("--epochs", type=int, default=default["epochs"], help="training epochs")
    run.add_argument("--batch-size", type=int, default=default["batch_size"],
                     help="attack batch size")
    run.add_argument("--seed", type=int, default=default["seed"])
    run.add_argument("--device", default=default["device"], choices=("auto", "cpu", "cuda"))
    # the choices are checked with the other settings (running.plan.check_config), as they
    # always were: argparse's message would differ
    run.add_argument("--split", default=default["split"],
                     help=choices_help(SPLIT_CHOICES, default["split"]))
    run.add_argument("--out", type=path_arg, default=default["out"],
                     help="run folder (default: runs/<timestamp>)")
    run.add_argument("--data-root", type=path_arg, default=default["data_root"],
                     help="folder holding the dataset files")
    run.add_argument("--cache-dir", type=path_arg, default=default["cache_dir"],
                     help="cache folder: trained models, and "
                     "finished cells in its cells/ (default: the user cache folder)")
    run.add_argument("--fresh", action="store_true", default=default["fresh"],
                     help="compute every cell and train every model again, reading no cache "
                     "(the new results are still cached)")
    run.add_argument("--eot-samples", type=int, default=default["eot_samples"],
                     help="against a randomized defense: gradient draws per step (EOT), and "
                     "draws whose mean softmax grades each prediction, clean and adversarial")
    run.add_argument("--resume", type=path_arg, metavar="DIR",
                     help="finish an interrupted run in DIR with its recorded configuration")
    run.add_argument("--cascade", action=argparse.BooleanOptionalAction,
                     default=default["cascade"],
                     help="AutoAttack's cascade: per defense and threat model, attacks run "
                     "cheapest first, each on the samples every earlier one failed on (one "
                     "trustworthy worst case, faster; per-attack columns are then cumulative). "
                     "Default: the preset's (cpu and paper cascade, smoke does not); "
                     "--no-cascade gives every attack its own full-matrix row")
    run.add_argument("--targeted", default=default["targeted"], metavar="random|least-likely|CLASS",
                     help="run the targeted-capable attacks toward these targets")
    run.add_argument("--strict-plugins", action="store_true", default=default["strict_plugins"],
                     help="fail if any plugin fails to load")
    run.add_argument("--isolation", default=default["isolation"], choices=("auto", "all", "none"),
                     help="where attacks run: auto (default) runs every attack not shipped with "
                     "bench in a process of its own, which cannot reach the model, the data, the "
                     "tally or the gate; all isolates bench's own too; none runs every attack "
                     "in this process (faster; you vouch for the plugins' code)")
    run.add_argument("--cell-timeout", type=float, default=default["cell_timeout"],
                     metavar="SECONDS", help="an isolated attack's time per cell: past it the "
                     "cell is an error row and its process is replaced (default "
                     f"{default['cell_timeout']:g}; 0: no limit)")
    run.add_argument("--attack-memory", type=float, default=default["attack_memory"],
                     metavar="GIB", help="address space of the isolated attacks' process, in "
                     f"GiB (default {default['attack_memory']:g}; 0: no limit; not applied "
                     "where CUDA is available)")
    run.add_argument("--executor", default="local", choices=("local", "processes", "ray"),
                     help="where cells run: this process (default), a process pool, or Ray")
    run.add_argument("--workers", type=int, help="processes of --executor processes "
                     "(default: one per CPU core)")
    run.add_argument("--ray-address", metavar="ADDR",
                     help="Ray cluster to join (default: start Ray on this machine)")

    listing = sub.add_parser("list", help="list every plugin and its capabilities")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.add_argument("--strict-plugins", action="store_true")

    board = sub.add_parser("leaderboard", help="render the Markdown leaderboard of results files")
    board.add_argument("files", nargs="+", type=path_arg,
                       help="results.csv, results.parquet or a run folder")
    board.add_argument("--manifest", type=path_arg, help="a run's manifest.json, rendered under "
                       "the tables (default: that of a lone run folder)")
    board.add_argument("--out", type=path_arg, help="write to this file instead of stdout")
    board.add_argument("--prefer", choices=("first", "last"),
                       help="a cell in several files with different numbers: take the first or "
                       "last file's row (default: refuse)")
    board.add_argument("--html", type=path_arg, metavar="DIR",
                       help="also write the leaderboard web page (index.html) into DIR")

    cache = sub.add_parser("cache", help="list or empty the model and cell caches")
    actions = cache.add_subparsers(dest="action", metavar="list|clear", required=True,
                                   parser_class=Parser)
    where = Parser(add_help=False)
    where.add_argument("--cache-dir", type=path_arg,
                       help="the --cache-dir given to bench run (default: the user cache folder)")
    actions.add_parser("list", parents=[where], help="each cache's folder, entries and size")
    clear = actions.add_parser("clear", parents=[where], help="empty both caches, or one")
    which = clear.add_mutually_exclusive_group()
    which.add_argument("--models", action="store_true", help="only the trained models")
    which.add_argument("--cells", action="store_true", help="only the finished cells")
    return parser


def given_options(argv: list[str] | None) -> set[str]:
    """The ``bench run`` options written on the command line, defaults aside (a flag given
    its default value counts as given)."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for action in commands.choices["run"]._actions:
        action.default = argparse.SUPPRESS
    return set(vars(parser.parse_args(argv))) - {"command", "version"}


def config_from_args(args: argparse.Namespace):
    """The run's configuration: from the flags, or from the manifest of the run to resume."""
    if args.resume is not None:
        if args.fresh:
            raise UsageError(f"--resume {args.resume} reuses the run's finished cells and "
                             "--fresh recomputes them: drop one of the two")
        config = resumed_config(args.resume)
        check_resume_flags(args, config)
        return config
    return flag_config(args)


def flag_config(args: argparse.Namespace) -> RunConfig:
    """The configuration the flags give."""
    from advbench.running.run_folder import default_out

    return RunConfig(
        attacks=args.attacks, defenses=args.defenses, dataset=args.dataset, model=args.model,
        eps=parse_eps(args.eps), preset=args.preset, n_eval=args.n_eval, n_train=args.n_train,
        epochs=args.epochs, seed=args.seed, device=args.device, split=args.split,
        data_root=args.data_root, out=args.out or default_out(), cache_dir=args.cache_dir,
        batch_size=args.batch_size, strict_plugins=args.strict_plugins, targeted=args.targeted,
        eot_samples=args.eot_samples, options=parse_set(args.options) or None,
        fresh=args.fresh, cascade=args.cascade, isolation=args.isolation,
        cell_timeout=args.cell_timeout, attack_memory=args.attack_memory)


def resumed_config(folder: Path) -> RunConfig:
    """The recorded configuration of the run in ``folder``, every key and type checked."""
    from advbench.running.plan import check_config

    path = folder / "manifest.json"
    try:
        if not path.is_file():  # a device or a pipe would be read forever
            raise FileNotFoundError(path)
        recorded = json.loads(path.read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError) as exc:
        raise UsageError(f"--resume {folder}: not a bench run folder with a readable "
                         f"manifest.json ({type(exc).__name__})") from exc
    if not isinstance(recorded, dict):
        raise UsageError(f"--resume {folder}: {path}: 'config' is not an object")
    known = {f.name for f in dataclasses.fields(RunConfig)} - {"out", "resume"}
    unknown = sorted(set(recorded) - known)
    if unknown:
        raise UsageError(f"--resume {folder}: {path}: unknown key {shown(repr(unknown[0]))} in "
                         "'config'; restore the run's own manifest")
    config = RunConfig(**recorded)
    check_config(config, where=f"--resume {folder}: {path}")
    paths: dict[str, Any] = {key: Path(value) for key in ("data_root", "cache_dir")
             if (value := recorded.get(key)) is not None}
    return dataclasses.replace(config, out=folder, resume=True, **paths)


def check_resume_flags(args: argparse.Namespace, resumed: Any) -> None:
    """A flag given with --resume that would change the recorded run is refused, by name:
    the resumed run keeps its configuration, and silence would hide that."""
    from advbench.running.plan import flag
    from advbench.running.run_folder import config_record

    wanted = config_record(flag_config(args))
    recorded = config_record(resumed)
    given: set[str] = getattr(args, "given", set()) - RESUME_MAY_CHANGE
    conflicts = [key for key in sorted(given & set(wanted)) if wanted[key] != recorded[key]]
    if "out" in given and Path(args.out).resolve() != Path(args.resume).resolve():
        conflicts.append("out")
    if conflicts:
        names = ", ".join(flag(key) for key in conflicts)
        held = ", ".join(f"{key}={args.resume}" if key == "out" else
                         f"{key}={shown(recorded.get(key))}" for key in conflicts)
        raise UsageError(f"--resume {args.resume}: {names} would change the recorded run "
                         f"({held}); drop them to finish it, or start a new run with --out")


class PipeSafe:
    """The console's stdout. Output never stops a run: once stdout cannot be written (its
    reader has gone, ``bench run | head -1``; it is closed; ``>/dev/full``) output is dropped, so
    the run still ends and writes every file; a character its encoding lacks is escaped
    (``PYTHONIOENCODING=ascii``)."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.broken = stream, False

    def write(self, text: str) -> int:
        if not self.broken:
            try:
                return self.stream.write(text)
            except UnicodeEncodeError:
                encoding = getattr(self.stream, "encoding", None) or "ascii"
                return self.write(text.encode(encoding, "backslashreplace").decode(encoding))
            except (OSError, ValueError) as exc:  # ValueError: a closed file
                self.close_pipe(exc)
        return len(text)

    def flush(self) -> None:
        if not self.broken:
            try:
                self.stream.flush()
            except (OSError, ValueError) as exc:
                self.close_pipe(exc)

    def close_pipe(self, reason: BaseException | None = None) -> None:
        """Point stdout at /dev/null: the interpreter's last flush must not complain. Said on
        stderr unless the reader simply left (a broken pipe)."""
        self.broken = True
        if reason is not None and not isinstance(reason, BrokenPipeError):
            print(f"bench: warning: stdout cannot be written ({reason}); the rest of the "
                  "output is dropped (files are still written)", file=sys.stderr)
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())
        except (OSError, ValueError, AttributeError):
            pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def terminal(stream: Any) -> Any:
    """A rich console on ``stream``, never narrower than ``MIN_WIDTH`` (``COLUMNS=10``)."""
    from rich.console import Console

    console = Console(file=stream)
    if console.width < MIN_WIDTH:
        console.width = MIN_WIDTH
    return console


def warn_plugin_failures(registry: Any) -> None:
    """Plugins that failed to load (or have no hook), said on the terminal as ``bench list``
    does, not only in the manifest."""
    for failure in registry.failures:
        print(f"bench: warning: plugin {failure.source.plugin} ({failure.source.distribution} "
              f"{failure.source.version}) failed to load: {failure.error}; the others run "
              "(--strict-plugins makes this fatal)", file=sys.stderr)


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's time limit), ending the run as Ctrl-C does."""


class DiskFull(BenchError):
    """The disk filled up while the run wrote: a failed run, not a usage error."""

    exit_code = 1


@contextlib.contextmanager
def terminated_as_interrupt() -> Iterator[None]:
    """While the run goes, SIGTERM raises :class:`Terminated`: the finished cells are kept
    and the resume hint printed, instead of a silent death."""
    def terminate(signum: int, frame: Any) -> None:
        raise Terminated()

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def folder_of(exc: OSError, default: Path | None) -> Path | str:
    """The folder an OSError happened in (the file's parent), else ``default``."""
    return Path(os.fsdecode(exc.filename)).parent if exc.filename else (default or "?")


def command_run(args: argparse.Namespace) -> int:
    from advbench.plugin_system.loader import load_registry
    from advbench.reporting.leaderboard import to_rich
    from advbench.running.driver import run_matrix
    from advbench.running.executors import get_executor
    from advbench.running.progress import phase_summary

    config = config_from_args(args)
    if args.workers is not None and args.executor != "processes":
        raise UsageError("--workers goes with --executor processes")
    if args.ray_address is not None and args.executor != "ray":
        raise UsageError("--ray-address goes with --executor ray")
    executor = get_executor(args.executor, args.workers, args.ray_address)
    registry = load_registry(strict=config.strict_plugins, catalog=config.isolation != "none")
    warn_plugin_failures(registry)
    console = terminal(sys.stdout)
    try:
        with terminated_as_interrupt():
            frame = run_matrix(config, registry=registry, progress=True, console=console,
                               executor=executor)
    except KeyboardInterrupt as exc:
        if not (config.out / "manifest.json").is_file():  # stopped while checking the inputs
            print("bench: interrupted before the run began: nothing was written",
                  file=sys.stderr)
            return 130
        console.print(f"{'terminated' if isinstance(exc, Terminated) else 'interrupted'}: every "
                      f"finished cell is saved in {config.out}; finish the run with: bench run "
                      f"--resume {config.out}", soft_wrap=True)  # one line to copy
        return 143 if isinstance(exc, Terminated) else 130
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise DiskFull(f"no space left on the device holding {folder_of(exc, config.out)}: "
                       f"free some space, then finish the run with: bench run --resume "
                       f"{config.out}") from exc
    for table in to_rich(frame):
        console.print(table)
    seconds = frame.attrs["manifest"]["wall_seconds"]
    console.print(f"wrote {config.out}/ (results.csv, results.parquet, leaderboard.md, "
                  f"manifest.json) in {seconds:.0f} s")
    console.print(phase_summary(frame.attrs["manifest"]["phases"],
                                frame.attrs["manifest"]["total_seconds"]))
    reused = frame.attrs["manifest"]["reused_cells"]
    if reused:
        console.print(f"{reused} cells reused from the cache (--fresh computes them again)")
    failed = int((frame["status"] == "error").sum())
    if failed:
        console.print(f"[red]{failed} cell(s) failed: see {config.out}/errors.log[/red]")
    return 1 if failed else 0


def describe_capabilities(capabilities: dict) -> str:
    """'linf,l2 · gradient · targeted' rather than a dict dump, for the terminal table."""
    parts = []
    if "norms" in capabilities:
        parts.append(",".join(capabilities["norms"]))
    if "access" in capabilities:
        parts.append(capabilities["access"])
    if "shape" in capabilities:
        parts.append("×".join(map(str, capabilities["shape"])))
    parts += [flag for flag in ("targeted", "randomized") if capabilities.get(flag)]
    return " · ".join(parts)


def command_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from advbench.plugin_system.loader import load_registry

    registry = load_registry(strict=args.strict_plugins)
    entries = [entry for kind in registry.entries.values() for entry in kind.values()]
    records = [{"name": e.name, "kind": e.kind, "distribution": e.source.distribution,
                "version": e.source.version, "plugin": e.source.plugin,
                "capabilities": e.capabilities(), "description": e.cls.description}
               for e in sorted(entries, key=lambda e: (e.kind, e.name))]
    failures, unavailable = ([{"plugin": f.source.plugin, "distribution": f.source.distribution,
                               "version": f.source.version, "error": f.error} for f in found]
                             for found in (registry.failures, registry.unavailable))
    if args.json:
        print(json.dumps({"plugins": records, "failures": failures,
                          "unavailable": unavailable}, indent=2))
        return 0
    table = Table(title="bench plugins")
    for column in ("kind", "name", "distribution", "capabilities", "description"):
        table.add_column(column, overflow="fold")  # folded on a narrow terminal, never cut
    for record in records:
        capabilities = describe_capabilities(record["capabilities"])
        table.add_row(record["kind"], record["name"],
                      f"{record['distribution']} {record['version']}", capabilities,
                      record["description"])
    # Piped or redirected, nothing is cut to a guessed width: each row on one whole line.
    console = Console() if sys.stdout.isatty() else Console(width=100_000)
    console.print(table)
    for failure in failures:
        console.print(f"[red]failed to load[/red] {escape(failure['plugin'])} "
                      f"({escape(failure['distribution'])} {escape(failure['version'])}): "
                      f"{escape(failure['error'])}")
    for missing in unavailable:
        console.print(f"[dim]unavailable[/dim] {escape(missing['plugin'])}: "
                      f"{escape(missing['error'])}")
    return 0


def command_leaderboard(args: argparse.Namespace) -> int:
    from advbench.reporting.leaderboard import read_manifest, run_inputs, to_markdown, write_output
    from advbench.reporting.reading import check_manifest, combine_results, read_results

    files, run_manifest = run_inputs(args.files)
    frame = combine_results([(path, read_results(path)) for path in files], args.prefer)
    manifest_path = args.manifest or run_manifest
    manifest = read_manifest(manifest_path) if manifest_path is not None else None
    if manifest is not None and manifest_path is not None:
        check_manifest(frame, manifest, manifest_path)
    text = to_markdown(frame, manifest)
    if args.html:  # figures: those of the runs the files (and the manifest) come from
        from advbench.reporting.site import write_site

        write_site(frame, args.html, manifest,
                   [path.parent for path in [manifest_path, *files] if path is not None])
    if args.out:
        write_output(args.out, text)
    else:
        sys.stdout.write(text)
    return 0


def megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


def command_cache(args: argparse.Namespace) -> int:
    from advbench.running.cell_cache import cache_usage, clear_cache
    from advbench.running.model_cache import cache_roots

    if args.cache_dir is not None and not Path(args.cache_dir).is_dir():  # a typo: say so
        raise UsageError(f"--cache-dir {args.cache_dir}: no such folder; check the name "
                         "(without --cache-dir: the user cache folder)")
    roots = dict(zip(("models", "cells"), cache_roots(args.cache_dir), strict=True))
    if args.action == "list":
        for kind, root in roots.items():
            entries, size = cache_usage(kind, root)
            print(f"{kind:<6} {entries:>6} entries {megabytes(size):>10}  {root}")
        return 0
    chosen = [kind for kind in roots if getattr(args, kind)] or list(roots)
    freed = {kind: clear_cache(kind, roots[kind]) for kind in chosen}
    print(f"freed {megabytes(sum(size for _, size in freed.values()))}: " + ", ".join(
        f"{entries} {kind}" for kind, (entries, _) in freed.items()))
    return 0


COMMANDS = {"run": command_run, "list": command_list, "leaderboard": command_leaderboard,
            "cache": command_cache}


def os_error_line(exc: OSError) -> str:
    """An OSError that reached the top, as one line naming the path (a name too long, a
    symlink loop, a full disk...)."""
    where = f": {os.fsdecode(exc.filename)}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def open_streams() -> Any:
    """stdout and stderr as the commands may use them: a closed one (``>&-``, Python's None)
    becomes /dev/null, and stdout is wrapped so that it never stops a command."""
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w"))  # lives with the process
    real = sys.stdout
    if not isinstance(real, PipeSafe):
        sys.stdout = PipeSafe(real)
    return real


def main(argv: list[str] | None = None) -> int:
    real = open_streams()
    try:
        return run_command(argv)
    finally:
        sys.stdout.flush()
        sys.stdout = real


def run_command(argv: list[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error already printed in one line
        return int(exit_.code or 0)
    if args.version:
        from advbench import __version__

        print(f"bench {__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    if args.command == "run":
        args.given = given_options(argv)
    try:
        return COMMANDS[args.command](args)
    except BenchError as exc:
        print(f"bench: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output has gone (| head): leave quietly
        return 0
    except OSError as exc:  # the file system refused something no check foresaw
        print(f"bench: error: {os_error_line(exc)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
