"""Command line: ``python -m harness {run,report,list}``. One handler per subcommand; heavy imports
(torch, pandas) happen inside the handlers so ``--help`` stays instant.

Exit status: 0 success, 1 some strategy failed, 2 bad input (one line on stderr), 130 interrupted.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from harness.errors import UsageError


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line ("harness run: error: ...") with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see {self.prog} --help)\n")
        sys.exit(2)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def cmd_list(args: argparse.Namespace) -> int:
    from harness import registry

    entries = registry.load_all()
    width = max(len(n) for n in entries)
    for name in sorted(entries):
        e = entries[name]
        note = "" if e.available() else f"  [unavailable: pip install -e \".[{e.requires}]\"]"
        print(f"{name:<{width}}  {e.family or '-':<16} {e.description}{note}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from harness.report import write_report
    from harness.runner import FailFast, Interrupted, Run, RunOptions, command_line

    if args.resume is not None:
        if not (args.resume / "config.json").is_file():
            raise UsageError(f"--resume {args.resume} is not a run directory (no config.json); pass a folder "
                             f"written by `python -m harness run`")
        if args.out is not None and args.out != args.resume:
            raise UsageError("--resume and --out name different directories; pass one of them")
        args.out = args.resume
    opts = RunOptions(names=args.strategies, all=args.all, preset=args.preset, split=args.split,
                      ways=args.ways, shots=args.shots, queries=args.queries, episodes=args.episodes,
                      seed=args.seed, device=args.device, data_dir=args.data_dir, cache_dir=args.cache_dir,
                      out=args.out, sets=args.set, config_file=args.config, quiet=args.quiet,
                      fail_fast=args.fail_fast, threads=args.threads, data_label=args.data_label,
                      command=command_line())

    def log(message: str) -> None:
        print(message, file=sys.stderr if args.quiet else sys.stdout, flush=True)

    run = Run(opts, log)  # validates everything and loads the data; writes nothing on bad input
    log(f"run directory: {run.out}")

    def graceful(signum: int, frame: object) -> None:
        if run.stop_requested:  # the second Ctrl-C stops at once
            raise KeyboardInterrupt
        run.stop_requested = True
        print("\nCtrl-C: stopping after the current unit of work is saved (Ctrl-C again to stop now)",
              file=sys.stderr, flush=True)

    previous = signal.signal(signal.SIGINT, graceful)
    try:
        records = run.execute()
    except (KeyboardInterrupt, Interrupted):
        done = ", ".join(run.completed) or "nothing new"
        print(f"interrupted; completed in this invocation: {done}. Records are in {run.out / 'records'}; "
              f"resume with: {run.resume_command()}", file=sys.stderr)
        return 130
    except FailFast as e:
        print(f"stopped at the first failure (--fail-fast): {e}", file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGINT, previous)
    report = args.report or Path("reports") / f"{run.out.name}.md"
    write_report([run.out], report)  # the same leaderboard and plots as `report RUN_DIR --out REPORT`
    _summary(records)
    print(f"leaderboard: {report}")
    failed = [r for r in records if r["status"] == "failed"]
    return 1 if failed else 0


def _summary(records: list[dict]) -> None:
    from tabulate import tabulate

    shots = sorted({r["shots"] for r in records})
    rows = []
    for name in sorted({r["strategy"] for r in records}):
        row = [name]
        for s in shots:
            r = next((r for r in records if r["strategy"] == name and r["shots"] == s), None)
            row.append("-" if r is None else f"{100 * r['accuracy']:.2f} ± {100 * r['ci95']:.2f}"
                       if r["status"] == "ok" else r["status"])
        rows.append(row)
    print(tabulate(rows, headers=["strategy", *[f"{s}-shot acc (%)" for s in shots]], tablefmt="simple"))


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report import run_names, write_comparison, write_report

    names = run_names(args.run_dirs)
    if args.compare:
        if len(args.run_dirs) != 2:
            raise UsageError(f"--compare takes exactly two run directories (RUN_A RUN_B), got {len(args.run_dirs)}")
        out = args.out or Path("reports") / f"{names[1]}-vs-{names[0]}.{args.format}"
        written = write_comparison(args.run_dirs, out, args.format)
        print(f"comparison: {written[0]}")
        return 0
    out = args.out or Path("reports") / f"{names[0]}.{args.format}"
    written = write_report(args.run_dirs, out, args.format, plots=not args.no_plots)
    print(f"leaderboard: {written[0]}")
    for path in written[1:]:
        print(f"plot: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="harness", description="Few-shot transfer strategies on fixed CIFAR-10 episodes.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("list", help="list registered strategies")
    p.set_defaults(handler=cmd_list)

    p = sub.add_parser("run", help="run strategies and write a results directory and a leaderboard")
    p.add_argument("strategies", nargs="*", help="strategy names (see `list`)")
    p.add_argument("--all", action="store_true", help="run every registered strategy")
    p.add_argument("--preset", default="quick", help="smoke | quick (default) | paper")
    p.add_argument("--split", default="cifar10-5-5", help="base/novel split (default cifar10-5-5)")
    p.add_argument("--ways", type=_positive_int, default=5)
    p.add_argument("--shots", type=_positive_int, nargs="+", default=[1, 5])
    p.add_argument("--queries", type=_positive_int, default=15, help="query images per class")
    p.add_argument("--episodes", type=_positive_int, default=None, help="default: the preset's")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 folder (else $HARNESS_DATA, else download)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="data and source-model cache (default $HARNESS_CACHE or ~/.cache/transfer-harness)")
    p.add_argument("--out", type=Path, default=None,
                   help="run directory (default runs/<time>-<id>); an existing one is resumed")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                   help="resume an interrupted run (same as --out RUN_DIR on an existing run)")
    p.add_argument("--set", action="append", default=[], metavar="STRATEGY.PARAM=VALUE",
                   help="override a hyperparameter, e.g. --set frozen-features.C=2.0")
    p.add_argument("--config", default=None, help="TOML file with a [strategy] table of hyperparameters")
    p.add_argument("--report", type=Path, default=None, help="leaderboard file (default reports/<run>.md)")
    p.add_argument("--data-label", default=None, help="dataset name printed in the report")
    p.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failed strategy")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("report", help="render a leaderboard (or compare two runs) from run directories")
    p.add_argument("run_dirs", nargs="+", help="run directories written by `run` (combined into one leaderboard)")
    p.add_argument("--out", type=Path, default=None,
                   help="output file (default reports/<run>.<format>, or reports/<B>-vs-<A>.<format> with --compare)")
    p.add_argument("--format", choices=["md", "csv", "json"], default="md",
                   help="md: the leaderboard page (default); csv / json: the aggregated table, for pandas")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots written next to the report")
    p.add_argument("--compare", action="store_true",
                   help="compare RUN_B with RUN_A: accuracy change (tested) and throughput ratios")
    p.set_defaults(handler=cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except UsageError as e:
        print(f"harness {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
