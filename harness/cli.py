"""Command line: ``python -m harness {run,report,list,plan}``. One handler per subcommand; heavy imports
(torch, pandas) happen inside the handlers, so ``--help`` and ``list`` stay fast.

Exit status: 0 success, 1 some strategy failed, 2 bad input (one line on stderr), 130 interrupted.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from harness.errors import UsageError

LISTS = ("strategies", "pretrainers", "datasets", "backbones", "executors", "presets")


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line ("harness run: error: ...") with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def cmd_list(args: argparse.Namespace) -> int:
    """Registry metadata only: nothing heavy is imported."""
    from harness import registry

    what = args.what or "strategies"
    if what == "strategies":
        from harness.suite import get_row

        rows = {name: get_row(name) for name in registry.STRATEGIES.names()}
        width = max(map(len, rows), default=0)
        if args.tunable:
            return _list_tunable(rows, width)
        for name, row in rows.items():
            note = "" if row.available() else f"  [unavailable: pip install -e \".[{row.requires}]\"]"
            print(f"{name:<{width}}  {row.family or '-':<16} {row.description}{note}")
        return 0
    if what == "pretrainers":
        return _list_pretrainers()
    if what == "presets":
        from harness.presets import PRESETS

        for name, p in PRESETS.items():
            budgets = ", ".join(f"{g} {n:,}" for g, n in p.source_images.items())
            print(f"{name:<8} {p.episodes:>5} episodes; FLOP budgets in supervised-image equivalents: {budgets}; "
                  f"{p.description}")
        return 0
    reg = {"datasets": registry.DATASETS, "backbones": registry.BACKBONES, "executors": registry.EXECUTORS}[what]
    entries = reg.entries()
    width = max(map(len, entries), default=0)
    if what == "datasets":  # which can be a source (--source-dataset) and which a target (--dataset)
        width = max(width, len("FILE.toml"))
        print(f"{'dataset':<{width}}  {'can be':<16} description")
    for name in sorted(entries):
        e = entries[name]
        note = "" if e.available() else f"  [unavailable: {e.install_hint()}]"
        roles = f"{e.meta.get('roles', 'source, target'):<16} " if what == "datasets" else ""
        print(f"{name:<{width}}  {roles}{e.description}{note}")
    if what == "datasets":
        print(f"{'FILE.toml':<{width}}  {'source, target':<16} your ImageFolder: a source when it lists base classes; "
              f"a novel-only one is a target only (with source = NAME, --source-dataset, or none: then only rows that "
              f"train nothing run)")
    return 0


def _list_tunable(rows: dict, width: int) -> int:
    """What ``run --tune`` searches, per row: its adapter's tunable fields and their ranges (imports the adapters;
    a row whose framework is not installed says so)."""
    from harness.tuning import describe_spaces

    for name, row in rows.items():
        if not row.available():
            text = f"[unavailable: pip install -e \".[{row.requires}]\"]"
        else:
            text = describe_spaces(row.build().adapter) or "nothing to tune"
        print(f"{name:<{width}}  {text}")
    print("source-phase hyperparameters are not tuned (each configuration would retrain the source model)")
    return 0


def _list_pretrainers() -> int:
    """Each pretrainer's measured FLOPs per image on the default backbone, relative to the supervised phase's:
    the price of one of its images in the budgets' unit (supervised-image equivalents). Counted once (one
    training step each, on the CPU) and cached; this imports torch."""
    from harness.flops import pretrainer_flops

    rows = pretrainer_flops()
    labels = [r["name"] + "".join(f" {k}={v}" for k, v in r["params"].items()) for r in rows]
    width = max(map(len, labels), default=0)
    print("FLOPs per image processed (FlopCounterMode, one training step, conv4, 5-way 1-shot tasks), relative to "
          "supervised")
    for label, r in zip(labels, rows, strict=True):
        if r["flops_per_image"] is None:
            print(f"{label:<{width}}  {'-':>7}  {r['note']}")
        else:
            relative = f"{r['relative']:.3f}x" if r["relative"] else "-"
            print(f"{label:<{width}}  {relative:>7}  {r['flops_per_image'] / 1e6:,.1f} MFLOP/image, "
                  f"{r['step_images']:,} images per step")
    return 0


def _log(quiet: bool):
    def log(message: str) -> None:
        print(message, file=sys.stderr if quiet else sys.stdout, flush=True)

    return log


def cmd_run(args: argparse.Namespace) -> int:
    from harness.runconfig import from_layers
    from harness.runner import prepare
    from harness.session import FailFast, Interrupted

    given = {k: v for k, v in vars(args).items() if k not in ("handler", "command", "argv")}
    recorded = None
    if given.get("resume") is not None:
        recorded = _recorded_settings(Path(given["resume"]), given)
    config, tables = from_layers(given, recorded)
    log = _log(config.quiet)
    run = prepare(config, tables, log, ["python", "-m", "harness", "run", *(args.argv or [])])
    log(f"run directory: {run.out}")

    def graceful(signum: int, frame: object) -> None:
        session = run.session
        if session is None or session.stop_requested:  # the second Ctrl-C stops at once
            raise KeyboardInterrupt
        session.stop_requested = True
        print("\nCtrl-C: stopping after the current unit of work is saved (Ctrl-C again to stop now)",
              file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, graceful)
    try:
        records = run.execute(_progress_factory(config.quiet))
    except (KeyboardInterrupt, Interrupted):
        done = ", ".join(run.session.completed) if run.session and run.session.completed else "nothing new"
        print(f"interrupted; completed in this invocation: {done}. Records are in {run.out / 'records'}; "
              f"resume with: {run.resume_command()}", file=sys.stderr)
        return 130
    except FailFast as e:
        print(f"stopped at the first failure (--fail-fast): {e}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, previous)
    from harness.report import write_report

    report = Path(config.report) if config.report else run.out / "leaderboard.md"
    write_report([run.out], report)  # the same leaderboard and plots as `report RUN_DIR --out REPORT`
    _summary(records)
    _wall_times(run.session)
    print(f"leaderboard: {report}")
    return 1 if any(r.status == "failed" for r in records) else 0


def _recorded_settings(run_dir: Path, given: dict) -> dict:
    """A resumed run's recorded settings; a given setting that contradicts them is an error naming both."""
    from harness.protocol import Protocol
    from harness.results import read_header

    if not (run_dir / "config.json").is_file():
        raise UsageError(f"--resume {run_dir} is not a run directory (no config.json); pass a folder written by "
                         f"`python -m harness run`")
    if given.get("out") is not None and Path(given["out"]) != run_dir:
        raise UsageError("--resume and --out name different directories; pass one of them")
    recorded = dict(read_header(run_dir).run)
    recorded["out"] = str(run_dir)
    for key in (k for k in Protocol.resume_keys() if k in recorded):  # the protocol's run settings
        if key in given and key in recorded and given[key] != recorded[key]:
            raise UsageError(f"--resume {run_dir}: the run recorded {key} {recorded[key]!r}, the command gives "
                             f"{given[key]!r}; drop --{key.replace('_', '-')} to resume, or pass a new --out")
    if given.get("strategies") or given.get("all"):  # naming strategies adds to the recorded ones
        recorded.pop("strategies", None)
        recorded.pop("all", None)
    return recorded


def _progress_factory(quiet: bool):
    from tqdm.auto import tqdm

    class Bar:
        def __init__(self, description: str, total: int, unit: str):
            self.bar = tqdm(total=total, unit=unit, desc=description, disable=quiet, leave=False,
                            dynamic_ncols=True)

        def __call__(self, n: int) -> None:
            self.bar.update(n)

        def close(self) -> None:
            self.bar.close()

    return Bar


def _summary(records: list) -> None:
    from tabulate import tabulate

    shots = sorted({r.shots for r in records})
    rows = []
    for name in sorted({r.strategy for r in records}):
        row = [name]
        for s in shots:
            r = next((r for r in records if r.strategy == name and r.shots == s), None)
            row.append("-" if r is None else f"{100 * r.accuracy:.2f} ± {100 * r.ci95:.2f}"
                       if r.status == "ok" else r.status)
        rows.append(row)
    print(tabulate(rows, headers=["strategy", *[f"{s}-shot acc (%)" for s in shots]], tablefmt="simple"))


def _wall_times(session: object) -> None:
    """Wall time per strategy in this invocation (a shared source phase counts for the first row that ran it)."""
    from harness.overall import clock

    overall = getattr(session, "overall", None)
    if overall is None or not overall.wall:
        return
    total = sum(overall.wall.values())
    parts = ", ".join(f"{name} {clock(seconds)}" for name, seconds in overall.summary())
    print(f"wall time {clock(total)}: {parts}")


def cmd_report(args: argparse.Namespace) -> int:
    """Render (or compare). Units config.json names without a record: one line on stderr, rendered as
    missing, exit 0; no record at all: one line on stderr, nothing written, exit 1."""
    from harness.registry import REPORT_FORMATS
    from harness.report import NoRecords, run_names, write_comparison, write_predictions, write_report

    REPORT_FORMATS.get(args.format)  # any registered format, built-in or a plugin's; else did-you-mean, exit 2
    names = run_names(args.run_dirs)
    if args.compare:
        if len(args.run_dirs) != 2:
            raise UsageError(f"--compare takes exactly two run directories (RUN_A RUN_B), got {len(args.run_dirs)}")
        out = args.out or Path("reports") / f"{names[1]}-vs-{names[0]}.{args.format}"
        written = write_comparison(args.run_dirs, out, args.format)
        print(f"comparison: {written[0]}")
        return 0
    if args.predictions:
        if args.compare:
            raise UsageError("--predictions exports one run's per-query rows; leave out --compare")
        out = args.out or Path(args.run_dirs[0]) / f"predictions.{args.format}"
        path, rows = write_predictions(args.run_dirs, out, args.format,
                                       warn=lambda line: print(f"harness report: warning: {line}", file=sys.stderr))
        print(f"predictions: {path} ({rows:,} queries)")
        return 0
    out = args.out or Path(args.run_dirs[0]) / f"leaderboard.{args.format}"
    try:
        written = write_report(args.run_dirs, out, args.format, plots=not args.no_plots,
                               warn=lambda line: print(f"harness report: warning: {line}", file=sys.stderr))
    except NoRecords as e:
        print(f"harness report: {e}", file=sys.stderr)
        return 1
    print(f"leaderboard: {written[0]}")
    for path in written[1:]:
        print(f"plot: {path}")
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """A finished run's estimated wall time on each number of workers (harness/estimate.py)."""
    from harness.estimate import wall_time_table

    workers = [n for counts in args.workers for n in counts]
    print(wall_time_table(args.run_dir, workers, args.warm_cache, args.preset, args.tune, args.tune_episodes))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from harness.runconfig import add_arguments

    parser = _Parser(prog="harness", description="Few-shot transfer strategies on fixed episodes.")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="{run,report,list,plan}")

    p = sub.add_parser("list", help="list registered strategies (or pretrainers with their measured FLOPs per "
                                    "image, datasets, backbones, executors, presets)")
    p.add_argument("what", nargs="?", choices=LISTS, help="what to list (default: strategies)")
    p.add_argument("--tunable", action="store_true", help="strategies: what `run --tune` searches, each adapter's "
                                                           "tunable hyperparameters and their ranges")
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("run", help="run strategies and write a results directory and a leaderboard")
    add_arguments(p)
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("report", help="render a leaderboard (or compare two runs) from run directories")
    p.add_argument("run_dirs", nargs="+", help="run directories written by `run` (combined into one leaderboard)")
    p.add_argument("--out", type=Path, default=None,
                   help="output file (default RUN_DIR/leaderboard.<format>, or reports/<B>-vs-<A>.<format> "
                        "with --compare)")
    p.add_argument("--format", default="md",
                   help="md: the leaderboard page (default); csv / json: the aggregated table, for pandas")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots written next to the report")
    p.add_argument("--predictions", action="store_true",
                   help="with --format csv|json: one row per query of every record (probabilities, predicted and "
                        "true class), to RUN_DIR/predictions.<format> unless --out")
    p.add_argument("--compare", action="store_true",
                   help="compare RUN_B with RUN_A: accuracy change (tested) and throughput ratios")
    p.set_defaults(handler=cmd_report)

    from harness.estimate import worker_counts

    p = sub.add_parser("plan", help="estimate a finished run's wall time on N workers (to size a cluster)")
    p.add_argument("run_dir", type=Path, help="a run directory written by `run` (its measured unit times)")
    p.add_argument("--workers", type=worker_counts, nargs="+", default=[[1, 2, 4, 8]], metavar="N",
                   help="numbers of workers (units running at once), e.g. 4 or 1,2,4,8 (default 1,2,4,8)")
    p.add_argument("--warm-cache", action="store_true",
                   help="count source models the run loaded from the cache as free (default: their recorded "
                        "training time counts, as for an empty cache)")
    p.add_argument("--preset", metavar="NAME",
                   help="scale the measured times to another preset's budgets and episodes (e.g. paper), assuming "
                        "the run's throughput")
    p.add_argument("--tune", type=int, metavar="N", help="add the time of `run --tune N` (N configurations per "
                                                          "evaluation unit, at the measured seconds per episode)")
    p.add_argument("--tune-episodes", type=int, default=100, metavar="V",
                   help="with --tune: validation episodes per configuration (default 100)")
    p.set_defaults(handler=cmd_plan)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    args.argv = argv[1:] if argv and argv[0] == "run" else []
    try:
        return args.handler(args)
    except UsageError as e:
        print(f"harness {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
