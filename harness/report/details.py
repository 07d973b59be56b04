"""Per-strategy details, in collapsible blocks below the rankings: what the strategy does (phases,
settings, backbone, code), where it ran, and every measurement of each (shots, budget scale) row
(throughput, memory, FLOPs, replicates). Rows of measurements whose values are all absent are left out."""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from harness.report.calibration import class_table, confusion_tables
from harness.report.cells import cell, clean, code_link, num, pct, scale_text, sig

MAX_COLUMNS = 6  # (shots, scale) columns per details table; more are split into several tables


def _flops(value: Any, unit: float) -> str:
    return "-" if value is None else sig(value / unit)


def _cached(value: Any) -> str:
    return "-" if value is None else "yes (measurements of the run that trained it)" if value else "no"


#: (label, value of a row); a label says what the number is, in its unit
MEASUREMENTS: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
    ("Accuracy (%)", lambda r: pct(r["accuracy"], r["ci95"]) if r["status"] == "ok" else r["status"]),
    ("Clean-and-robust acc. (%)", lambda r: "-" if r["clean_and_robust_accuracy"] is None else
     pct(r["clean_and_robust_accuracy"], r["clean_and_robust_ci95"])),
    ("Replicates (training seeds)", lambda r: num(r["replicates"], ".0f")),
    ("Source images processed", lambda r: num(r["source_images_processed"], ",.0f")),
    ("Source budget (images)", lambda r: num(r["source_budget_images"], ",.0f")),
    ("Source TFLOP per model", lambda r: _flops(r["source_flops"], 1e12)),
    ("Source img/s (after warm-up)", lambda r: num(r["source_images_per_second"], ",.0f")),
    ("Source time, all replicates (s)", lambda r: num(r["source_seconds"], ",.1f")),
    ("Source peak memory (MB)", lambda r: num(r["source_peak_memory_mb"], ",.0f")),
    ("Source from cache", lambda r: _cached(r["source_cached"])),
    ("ms / episode", lambda r: num(r["ms_per_episode"], ",.2f")),
    ("Episode GFLOP (per episode)", lambda r: _flops(r["episode_flops"], 1e9)),
    ("Total TFLOP per model", lambda r: _flops(r["total_flops"], 1e12)),
    ("Query img/s", lambda r: num(r["query_images_per_second"], ",.0f")),
    ("NLL", lambda r: "-" if r["nll"] is None else f"{r['nll']:.3f} ± {r['nll_ci95']:.3f}"),
    ("Brier score", lambda r: "-" if r["brier"] is None else f"{r['brier']:.3f} ± {r['brier_ci95']:.3f}"),
    ("ECE (%) [95% CI]", lambda r: "-" if r["ece"] is None else
     f"{100 * r['ece']:.2f} [{100 * r['ece_ci_low']:.2f}, {100 * r['ece_ci_high']:.2f}]"),
    ("Top-1 confidence (%)", lambda r: pct(r["confidence"], r["confidence_ci95"])),
    ("Episode peak memory (MB)", lambda r: num(r["episode_peak_memory_mb"], ",.0f")),
    ("Tuning: validation acc. (%), chosen", lambda r: _tried(r, r["tuning"]["chosen"]) if r["tuning"] else "-"),
    ("Tuning: validation acc. (%), defaults", lambda r: _tried(r, 0) if r["tuning"] else "-"),
    ("Tuning TFLOP (all configurations)", lambda r: _flops(r["tuning_flops"], 1e12)),
    ("Tuning time (s)", lambda r: num(r["tuning_seconds"], ",.1f")),
]


def _tried(row: dict[str, Any], index: int) -> str:
    trial = row["tuning"]["tried"][index]
    return pct(trial["accuracy"], trial["ci95"])


def _value(value: Any) -> str:
    return "the source phase's" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _values(params: dict[str, Any]) -> str:
    return ", ".join(f"{k} = {_value(v)}" for k, v in params.items()) or "nothing to tune"


def tuning_bullets(rows: list[dict[str, Any]]) -> list[str]:
    """Per shot setting of a tuned row: the chosen values beside the defaults, and the search space."""
    lines = []
    for r in rows:
        t = r["tuning"]
        if not t:
            continue
        chosen, first = t["tried"][t["chosen"]]["params"], t["tried"][0]["params"]
        scale = f" {scale_text(r['budget_scale'])}" if r["budget_scale"] != 1 else ""
        lines.append(f"- **Tuned, {r['shots']}-shot{scale}:** {_values(chosen)} (defaults: {_values(first)}); "
                     f"configuration {t['chosen'] + 1} of {len(t['tried'])}" + (
                         f"; search space: {t['space_text']}" if t.get("space_text") else ""))
    return lines


def _distinct(values: list[Any]) -> str:
    return "; ".join(dict.fromkeys(str(v) for v in values if v not in (None, ""))) or "-"


def _bullets(rows: list[dict[str, Any]], out: str | Path | None, multi_run: bool) -> list[str]:
    first = rows[0]
    links = [f"[{what}]({link})" for what, key in (("source phase", "source_code"), ("adapter", "code"))
             if (link := code_link(first[key], out))]
    code = ", ".join(links) or ", ".join(f"`{first[k]}`" for k in ("source_code", "code") if first[k]) or "-"
    source = f"- **Source phase:** {_distinct([r['source_description'] for r in rows])}"
    phase, group = _distinct([r["source_phase"] for r in rows]), _distinct([r["budget_group"] for r in rows])
    extra = ([f"`{phase}`"] if phase != "-" else []) + ([f"budget group `{group}`"] if group != "-" else [])
    lines = [f"- **Family:** {_distinct([r['family'] for r in rows])}; **backbone:** "
             f"{_distinct([r['backbone'] for r in rows])}; **code:** {code}",
             source + (f" ({', '.join(extra)})" if extra else ""),
             f"- **Episode phase:** {_distinct([r['episode_phase'] for r in rows])}",
             f"- **Settings:** {_distinct([r['settings'] for r in rows])}"]
    device = _distinct([r["device"] for r in rows])
    source_devices = [r["source_device"] for r in rows if r["source_device"] and r["source_device"] != r["device"]]
    lines.append(f"- **Device:** {device}" + (f"; the source phase ran on {_distinct(source_devices)}"
                                             if source_devices else ""))
    methods = _distinct([r["source_flops_method"] for r in rows])
    if methods != "-":
        lines.append(f"- **Source FLOPs counted:** {methods}")
    scores = _distinct([r["scores_as"] for r in rows])
    if scores != "-":
        lines.append(f"- **Outputs scored as:** {scores} (probabilities: their softmax, no temperature scaling)")
    if multi_run:
        lines.append(f"- **Run:** {_distinct([r['run'] for r in rows])}")
    return [cell(line) for line in lines]


def _table(rows: list[dict[str, Any]], multi_scale: bool) -> list[str]:
    lines = []
    for start in range(0, len(rows), MAX_COLUMNS):
        chunk = rows[start:start + MAX_COLUMNS]
        headers = [""] + [f"{r['shots']}-shot" + (f" {scale_text(r['budget_scale'])}" if multi_scale else "")
                          for r in chunk]
        body = [[label] + [cell(value(r)) for r in chunk] for label, value in MEASUREMENTS]
        body = [row for row in body if any(v != "-" for v in row[1:])]
        lines += ["", tabulate(body, headers=headers, tablefmt="pipe", disable_numparse=True)]
    return lines


def strategy_details(frame: pd.DataFrame, out: str | Path | None, multi_run: bool = False) -> list[str]:
    """'## Strategies in detail' and one collapsible block per strategy, in name order."""
    multi_scale = frame["budget_scale"].nunique() > 1
    lines = ["", "## Strategies in detail", "",
             "Phases, settings, devices, throughput, memory, FLOPs and replicates of each strategy (click to open)."]
    for name in sorted(frame["strategy"].unique().tolist()):
        rows = [clean(r) for r in frame[frame["strategy"] == name].to_dict("records")]
        rows.sort(key=lambda r: (r["shots"], -r["budget_scale"]))
        what = " → ".join(x for x in (_distinct([r["source_description"] for r in rows]),
                                      _distinct([r["episode_phase"] for r in rows])) if x != "-")
        summary = f"<b>{html.escape(name)}</b>" + (f": {html.escape(what)}" if what else "")
        lines += ["", "<details>", f"<summary>{cell(summary)}</summary>", "", *_bullets(rows, out, multi_run),
                  *[cell(line) for line in tuning_bullets(rows)]]
        lines += _table(rows, multi_scale) + class_table(rows) + confusion_tables(rows) + ["", "</details>"]
    return lines
