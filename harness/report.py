"""Markdown leaderboards: a pure function of the results files (config, environment, records)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from harness.results import load_run

COLUMNS = ["#", "Strategy", "Family", "Source phase", "Episode phase", "Settings", "Accuracy (%)",
           "Source budget (img)", "Source img/s", "Source time (s)", "ms / episode", "Query img/s",
           "Peak mem (MB)", "Device"]


def _settings(rec: dict[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in (rec.get("settings") or {}).items()) or "-"


def _num(value: Any, fmt: str) -> str:
    return "-" if value is None or pd.isna(value) else format(value, fmt)


def _row(rank: str, r: dict[str, Any]) -> list[str]:
    ok = r.get("status") == "ok"
    accuracy = (f"{100 * r['accuracy']:.2f} ± {100 * r['ci95']:.2f}" if ok
                else f"{r.get('status', '?')}: {r.get('reason') or ''}")
    peak = max(r.get("source_peak_memory_mb") or 0, r.get("episode_peak_memory_mb") or 0) or None
    return [rank, r["strategy"], r.get("family") or "-", r.get("source_phase") or "-",
            r.get("episode_phase") or "-", _settings(r), accuracy,
            _num(r.get("source_budget_images"), ",.0f"), _num(r.get("source_images_per_second"), ",.0f"),
            _num(r.get("source_seconds"), ".1f"), _num(r.get("ms_per_episode"), ".2f"),
            _num(r.get("query_images_per_second"), ",.0f"), _num(peak, ",.0f"), r.get("device") or "-"]


def shot_table(records: list[dict[str, Any]]) -> str:
    """One pipe table, sorted by accuracy; failed and skipped rows last, with their reason."""
    frame = pd.DataFrame(records)
    frame["_ok"] = frame["status"].eq("ok")
    frame["_acc"] = frame["accuracy"] if "accuracy" in frame else float("nan")
    frame = frame.sort_values(["_ok", "_acc", "strategy"], ascending=[False, False, True], kind="stable")
    rows, rank = [], 0
    for _, r in frame.iterrows():
        rec = {k: v for k, v in r.items() if not (isinstance(v, float) and pd.isna(v))}
        rank += rec["_ok"]
        rows.append(_row(str(rank) if rec["_ok"] else "-", rec))
    return tabulate(rows, headers=COLUMNS, tablefmt="pipe", disable_numparse=True)


def render_markdown(runs: list[tuple[dict, dict, list[dict]]]) -> str:
    config, env, _ = runs[0]
    records = [r for _, _, recs in runs for r in recs]
    p = config["protocol"]
    shots = sorted({r["shots"] for r in records})
    fingerprints = {}
    for r in records:
        if r.get("episode_fingerprint"):
            fingerprints.setdefault(r["shots"], set()).add(r["episode_fingerprint"])
    fp_text = "; ".join(f"{s}-shot {', '.join(sorted(fingerprints[s]))}" for s in sorted(fingerprints))
    lines = [
        f"# Few-shot transfer leaderboard: {p['split']}, {p['ways']}-way",
        "",
        f"- **Dataset:** {env.get('dataset', '?')}",
        f"- **Split:** `{p['split']}`: {config.get('split_description', '')}",
        f"- **Protocol:** {p['ways']}-way {', '.join(map(str, shots))}-shot, {p['queries']} queries per class, "
        f"{p['episodes']} episodes, seed {p['seed']}, preset `{p['preset']}`; the same episodes for every "
        f"strategy (fingerprints: {fp_text or '-'})",
        f"- **Machine:** {env.get('device', '?')}; torch {env.get('torch', '?')}, "
        f"harness {env.get('harness_version', '?')}, commit {env.get('git_commit') or 'unknown'}",
        "- **Accuracy** is the mean over episodes ± the 95% CI (1.96 · std / √episodes)." + (
            f" With {config['novel_classes']} novel classes and {p['ways']}-way episodes, every episode has "
            "the same class set, so the CI reflects the sampling of images only."
            if config.get("novel_classes") == p["ways"] else ""),
        "- **Throughput:** source time and img/s are the source phase's (shared and cached across strategies "
        "with equal source phases); ms / episode covers all adaptation and scoring work, synchronised; peak "
        "memory is CUDA max allocated, or the process's peak RSS on a CPU.",
    ]
    for s in shots:
        lines += ["", f"## {s}-shot", "", shot_table([r for r in records if r["shots"] == s])]
    if len(runs) > 1:
        lines += ["", f"Combined from {len(runs)} run directories."]
    if env.get("command"):
        lines += ["", "Reproduce with:", "", "```", env["command"], "```"]
    return "\n".join(lines) + "\n"


def render_runs(run_dirs: list[str | Path]) -> str:
    return render_markdown([load_run(d) for d in run_dirs])
