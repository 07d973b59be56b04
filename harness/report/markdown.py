"""The Markdown leaderboard page: a one-paragraph summary, the header (data, protocol, machine, how to read
the tables), a compact ranking per shot setting and budget scale, the accuracy at each budget scale, the
per-strategy details, plots, and the command that reproduces the run. A pure function of the run
directories' files."""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from harness.report.calibration import calibration_section
from harness.report.cells import cell, scale_text, sig
from harness.report.details import strategy_details
from harness.report.domains import domain_lines
from harness.report.expected import unit_label
from harness.report.frame import EXTERNAL, ci_coverage, ci_scope, leaderboard_frame, replicate_ci_text
from harness.report.scales import NOT_CONVERGED
from harness.report.summary import summary_paragraph
from harness.report.tables import (
    external_table,
    framework_tables,
    link_definitions,
    link_targets,
    not_ranked,
    ranking_table,
    scale_tables,
    twin_tables,
)
from harness.results import RunResults
from harness.schema import Environment, RunHeader
from harness.stats import ALPHA

SMOKE_BANNER = ("> **Smoke preset: these numbers are meaningless.** The `smoke` preset trains on a token budget and "
                "scores a handful of episodes to check that everything runs; rank strategies with `--preset quick` "
                "or `paper`.")


def _distinct(values: list[str]) -> str:
    return ", ".join(dict.fromkeys(values))


def env_value(env: Environment | None, name: str, absent: Any = "?") -> Any:
    """A field of a run's environment.json; ``absent`` for a run without one."""
    return absent if env is None else getattr(env, name)


def versions(env: Environment | None) -> str:
    """Device and versions of one environment.json ("?" where the run has none)."""
    def value(name: str) -> Any:
        return env_value(env, name)

    return (f"{value('device')}; Python {value('python')}, torch {value('torch')}, "
            f"torchvision {value('torchvision')}, numpy {value('numpy')}, "
            f"harness {value('harness_version')}; code {env_value(env, 'code_version', None) or 'unknown'}")


def _flag(value: Any) -> str:
    return "unset" if value is None else ("on" if value else "off") if isinstance(value, bool) else str(value)


def machine(env: Environment | None) -> str:
    """Device, versions, code version, precision and determinism flags of one environment.json."""
    determinism = env_value(env, "determinism", None) or {}
    flags = ", ".join(f"{k.replace('_', ' ')} {_flag(v)}" for k, v in determinism.items())
    precision = env_value(env, "precision", None) or "?"
    return f"{versions(env)}; precision {precision}; determinism: {flags or 'not recorded'}"


def _budgets(headers: list[RunHeader], frame: pd.DataFrame) -> str:
    budgets = ", ".join(f"{group} {n:,}" for group, n in (headers[0].preset_budgets or {}).items()) or "-"
    scales = sorted(frame["budget_scale"].dropna().unique().tolist())
    text = f"- **Source budgets** (FLOP budgets in supervised-image equivalents, by budget group): {budgets}"
    if scales != [1.0]:
        text += f"; run at budget scales {', '.join(scale_text(s) for s in scales)} of these"
    matched = [h.matched_flops for h in headers if h.matched_flops]
    if matched:
        text += (f"; compute matched (`--match-compute`): every source phase was given "
                 f"{_distinct([sig(m / 1e12) for m in matched])} TFLOP")
    return text + "."


def header(runs: list[RunResults], names: list[str], frame: pd.DataFrame) -> list[str]:
    config, env = runs[0].header, runs[0].environment
    p = config.protocol
    shots = sorted(frame["shots"].unique().tolist())
    ok = frame[frame["status"] == "ok"]
    fps = {s: _distinct(sorted(ok.loc[ok["shots"] == s, "episode_fingerprint"].dropna())) for s in shots}
    fp_text = "; ".join(f"{s}-shot {fp}" for s, fp in fps.items() if fp) or "-"
    envs = [run.environment for run in runs]
    if len({machine(e) for e in envs}) == 1:
        machines = [f"- **Machine:** {machine(env)}"]
    else:
        machines = ["- **Machines:**"] + [f"  - `{n}`: {machine(e)}" for n, e in zip(names, envs, strict=True)]
    presets = _distinct(["`" + run.header.protocol["preset"] + "`" for run in runs])
    lines = [
        f"- **Dataset:** {_distinct([env_value(e, 'dataset') for e in envs])} "
        f"(data fingerprint {_distinct([str(env_value(e, 'data_fingerprint'))[:12] for e in envs])})",
        f"- **Pools:** `{p['dataset']}`: {config.dataset_description}",
        *domain_lines(config.domains, frame),
        f"- **Protocol:** {p['ways']}-way {', '.join(map(str, shots))}-shot, {p['queries']} queries per class, "
        f"{p['episodes']} episodes, seed {p['seed']}, preset {presets}; the same episodes for every "
        f"strategy (fingerprints: {fp_text})",
        *machines,
        _budgets([run.header for run in runs], frame),
        f"- **Accuracy** is the mean query accuracy over episodes ± the half-width of its 95% t interval; the CI "
        f"covers {ci_coverage(frame)}." + (
            f" With {config.novel_classes} novel classes and {p['ways']}-way episodes, every episode has "
            "the same class set, so episode sampling is the sampling of images only."
            if config.novel_classes == p["ways"] else "") + f" {ci_scope(frame)}" + (
            f" {replicate_ci_text(frame)}" if replicate_ci_text(frame) else ""),
        "- **Ties:** every ranked row is compared with the best row of its table on the same episodes (paired "
        "t-test of the per-episode accuracy differences; across training seeds too when both have replicates: "
        "paired by seed when both rows used the same source models seed by seed, else as independent seeds). "
        "Its Δ to best has a CI at the Bonferroni level 1 − 0.05 / m (m: the comparisons with the best in that "
        "table; the level is in the column header) and p (adj.) is the Bonferroni-adjusted p-value from the same "
        f"t statistic, so a row is tied with the best, rank `=1`, exactly when its CI holds 0 (p (adj.) ≥ {ALPHA}). "
        "The other rows are numbered by accuracy.",
        "- **Costs** are per trained model. Source cost: the source phase's floating-point operations in TFLOP "
        "when recorded, else the images it processed (`img`: forward and backward passes of the backbone), and "
        "its wall seconds on the source phase's device; a cached source phase costs what training it cost. Δ to "
        "best is in percentage points. Total compute (summary and plots): source FLOPs + "
        "episodes × episode FLOPs when recorded for every strategy compared, else source images processed (the "
        "episode phase left out).",
        "- **Throughput** is measured on the named device and is not part of the ranking: source img/s leaves out "
        "the source phase's first (warm-up) step; ms / episode leaves out one untimed warm-up episode and covers "
        "all adaptation and scoring work, synchronised; peak memory is each phase's own, above what was allocated "
        "when it started (CUDA max allocated; on a CPU the process's sampled peak resident set). A cached source "
        "phase repeats the measurements of the run that trained it.",
    ]
    lines += tuning_lines(frame)
    if frame["clean_and_robust_accuracy"].notna().any():
        lines.append("- **Clean-and-robust acc.** (in the details) counts a query when both its clean and its "
                     "attacked (PGD) prediction are right, ± its 95% CI.")
    return lines


def tuning_lines(frame: pd.DataFrame) -> list[str]:
    """What ``--tune`` did, when any row was tuned (harness/tuning.py)."""
    tuned = [t for t in frame["tuning"].tolist() if isinstance(t, dict)]
    if not tuned:
        return []
    ok = frame[frame["status"] == "ok"]
    untuned = sorted(set(ok.loc[[not isinstance(t, dict) for t in ok["tuning"]], "strategy"]))
    plans = _distinct([(f"{t['trials']} configurations (the defaults plus {t['trials'] - 1} drawn at random from "
                        f"each adapter's search space)" if t["trials"] > 1 else "its defaults only (`--tune 1`: the "
                        "untuned control)") + f" on {t['episodes']} validation episodes of {t['pool']}"
                       for t in tuned])
    return [f"- **Tuning** (`--tune`): each tuned row's adapter was evaluated at {plans}, with the first training "
            "seed's source model, through the same sealed processes as the scored episodes; the configuration with "
            "the best mean validation accuracy (the defaults on a tie) was scored. No scored episode reaches the "
            "tuning. Source-phase hyperparameters are not tuned (each configuration would retrain the source "
            "model). The details list the chosen values beside the defaults; the tuning's FLOPs count in total "
            "compute, its time is in the details." + (f" Not tuned: {', '.join(untuned)}." if untuned else "")]


def _groups(frame: pd.DataFrame) -> list[tuple[int, float, pd.DataFrame]]:
    keys = list(dict.fromkeys(zip(frame["shots"], frame["budget_scale"], strict=True)))
    return [(s, c, frame[(frame["shots"] == s) & (frame["budget_scale"] == c)]) for s, c in keys]


def render_markdown(runs: list[RunResults], out: str | Path | None = None, plot_files: Sequence[str] = (),
                    names: list[str] | None = None, frame: pd.DataFrame | None = None) -> str:
    """The leaderboard page. ``out`` is where it will be written (code links are relative to it);
    ``plot_files`` are PNG names next to it, linked in a Plots section."""
    names = names or [f"run{i + 1}" for i in range(len(runs))]
    frame = leaderboard_frame(runs, names) if frame is None else frame
    p = runs[0].header.protocol
    multi_run, multi_scale = len(runs) > 1, frame["budget_scale"].nunique() > 1
    links = link_targets(frame, out)
    lines = [f"# Few-shot transfer leaderboard: {p['dataset']}, {p['ways']}-way", ""]
    if any(run.header.protocol.get("preset") == "smoke" for run in runs):
        lines += [SMOKE_BANNER, ""]
    absent = frame[frame["status"] == "missing"]
    if not absent.empty:
        units = ", ".join(unit_label(r["strategy"], r["shots"], r["budget_scale"]) for r in absent.to_dict("records"))
        lines += [cell(f"> **Incomplete run:** {len(absent)} unit(s) that config.json names have no record yet and "
                       f"are listed as missing: {units}."), ""]
    summary = summary_paragraph(frame)
    lines += [summary, ""] if summary else []
    lines += header(runs, names, frame)
    for shots, scale, group in _groups(frame):
        title = f"## {shots}-shot" + (f", source budget {scale_text(scale)}" if multi_scale else "")
        lines += ["", title, ""]
        ranked = (group["status"] == "ok") & (group["family"] != EXTERNAL)
        if ranked.any():
            lines += [ranking_table(group, links, multi_run)]
        external = external_table(group, links, multi_run)
        lines += ([""] if ranked.any() and external else []) + external
        rest = not_ranked(group, multi_run)
        lines += ([""] if (group["status"] == "ok").any() and rest else []) + rest
    scales = scale_tables(frame)
    if scales:
        lines += ["", "## Accuracy vs source budget", "",
                  "Each strategy's accuracy at every budget scale. Gain: its accuracy at its largest scale minus that "
                  "at its second largest, tested paired on the episodes (95% CI; training seeds too with "
                  f"replicates); a positive gain with p < {ALPHA} means the curve is still rising: "
                  f"\"{NOT_CONVERGED}\"."] + scales
    twins = twin_tables(frame)
    if twins:
        lines += ["", "## Same algorithm, two frameworks", "",
                  "Each Keras row runs the algorithm of a PyTorch row (its twin: the same probe, optimiser, steps and "
                  "BatchNorm handling); they differ in the framework, including the framework's own pretraining "
                  "(initialisers, numerics). Δ: the row minus its twin on the same episodes (paired, 95% CI).",
                  "", *twins]
        split = framework_tables(frame)
        if split:
            lines += ["", "Where the difference comes from: a framework-check row (`torch-probe-on-keras`, "
                      "`torch-finetune-on-keras`) runs the PyTorch twin's episode phase on the Keras row's own "
                      "pretrained model, so Δ to the twin = (Keras row − check row: the episode phase's framework) + "
                      "(check row − twin: the pretraining's framework), each paired on the episodes (95% CI).", "",
                      *split]
    lines += calibration_section(_groups(frame), multi_scale)
    lines += strategy_details(frame, out, multi_run)
    if plot_files:
        lines += ["", "## Plots", ""]
        lines += "\n\n".join(f"![{_plot_title(f)}]({f})" for f in plot_files).split("\n")
    if multi_run:
        lines += ["", f"Combined from {len(runs)} run directories: {', '.join(f'`{n}`' for n in names)}."]
    commands = [(n, shlex.join(run.environment.command)) for n, run in zip(names, runs, strict=True)
                if run.environment and run.environment.command]
    if commands:
        lines += ["", "## Reproduce", "", "Reproduce with:", "", "```"]
        for n, c in commands:
            lines += [f"# {n}", c] if multi_run else [c]
        lines += ["```"]
    if links:
        lines += ["", *link_definitions(links)]
    return "\n".join(lines) + "\n"


_PLOT_TITLES = {"accuracy-vs-shots": "Accuracy vs shots", "accuracy-vs-cost": "Accuracy vs cost",
                "accuracy-vs-compute": "Accuracy vs source compute", "source-throughput": "Source-phase throughput"}


_PER_SHOT_PLOTS = {"reliability": "Reliability diagram", "per-class": "Per-class accuracy"}


def _plot_title(filename: str) -> str:
    for kind, title in _PER_SHOT_PLOTS.items():
        match = re.search(rf"-{kind}-(\d+)shot\.png$", filename)
        if match:
            return f"{title}, {match.group(1)}-shot"
    return next((t for k, t in _PLOT_TITLES.items() if filename.endswith(f"{k}.png")), filename)
