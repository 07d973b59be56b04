"""The leaderboard's tables: the compact ranking of one (shots, budget scale) group, the rows of external
pretraining (listed apart, never ranked), the rows that were not ranked (failed, skipped, missing) with their
reason, the accuracy at each budget scale, and each Keras row against its PyTorch twin."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from tabulate import tabulate

from harness.report.cells import (
    cell,
    clean,
    code_link,
    level_text,
    num,
    p_text,
    pct,
    pp,
    scale_text,
    source_cost_time,
)
from harness.report.frame import EXTERNAL
from harness.report.scales import NOT_CONVERGED


def link_targets(frame: pd.DataFrame, out: str | Path | None) -> dict[str, str]:
    """{strategy: relative link to its adapter's code} for the strategies whose code is in this checkout."""
    links = {}
    for row in frame.to_dict("records"):
        link = code_link(clean(row)["code"], out)
        if link and row["strategy"] not in links:
            links[row["strategy"]] = link
    return links


def link_definitions(links: dict[str, str]) -> list[str]:
    """Markdown reference definitions, so a table cell links with ``[name]`` alone (narrow tables)."""
    return [f"[{name}]: {target}" for name, target in sorted(links.items())]


def strategy_cell(name: str, links: dict[str, str], tuning: dict | None = None) -> str:
    text = f"[{name}]" if name in links else name
    if tuning and tuning["trials"] == 1:  # --tune (harness/tuning.py): marked in every table that ranks it
        text += f" (untuned control, validated on {tuning['episodes']} episodes)"
    elif tuning and len(tuning["tried"]) == 1:
        text += " (nothing to tune: defaults)"
    elif tuning:
        text += f" (tuned, {tuning['trials']} trials on {tuning['episodes']} validation episodes)"
    return text


def ranking_table(group: pd.DataFrame, links: dict[str, str], multi_run: bool) -> str:
    """Rank, strategy, accuracy ± CI, Δ to best [CI], p (adj.), source cost (compute and device seconds of one
    trained model), ms / episode: the ranked rows."""
    rows = [clean(r) for r in group[(group["status"] == "ok") & (group["family"] != EXTERNAL)].to_dict("records")]
    levels = {r["delta_ci_level"] for r in rows if r["delta_ci_level"] is not None}
    level = f"{level_text(levels.pop())} CI" if len(levels) == 1 else "CI"
    headers = ["#", "Strategy", "Accuracy (%)", f"Δ to best [{level}]", "p (adj.)", "Source cost, time",
               "ms/episode"] + (["Run"] if multi_run else [])
    lines = []
    for r in rows:
        if r["delta_vs_best"] is None:
            delta = "best"
        elif r["delta_ci_low"] is None:
            delta = pp(r["delta_vs_best"])
        else:
            delta = f"{pp(r['delta_vs_best'])} [{pp(r['delta_ci_low'])}, {pp(r['delta_ci_high'])}]"
        cells = [r["rank_label"], strategy_cell(r["strategy"], links, r.get("tuning")), pct(r["accuracy"], r["ci95"]),
                 delta, p_text(r["p_adjusted"]), source_cost_time(r), num(r["ms_per_episode"], ",.2f")]
        lines.append([cell(c) for c in cells + ([r["run"]] if multi_run else [])])
    return tabulate(lines, headers=headers, tablefmt="pipe", disable_numparse=True)


def not_ranked(group: pd.DataFrame, multi_run: bool) -> list[str]:
    """'Not ranked:' and one bullet per failed, skipped or missing row, with its reason."""
    rows = [clean(r) for r in group[group["status"] != "ok"].to_dict("records")]
    if not rows:
        return []
    lines = ["Not ranked:", ""]
    for r in rows:
        run = f" (run `{r['run']}`)" if multi_run else ""
        lines.append(cell(f"- {r['strategy']}{run}: {r['status']}: {r['reason'] or 'no reason recorded'}"))
    return lines


def scale_tables(frame: pd.DataFrame) -> list[str]:
    """Per shot setting: each strategy's accuracy at every budget scale, and the gain of its largest scale
    over the second largest, tested; only for runs with several budget scales."""
    if frame["budget_scale"].nunique() < 2:
        return []
    lines = []
    for shots in sorted(frame["shots"].unique().tolist()):
        rows = frame[(frame["shots"] == shots) & (frame["status"] == "ok")]
        scales = sorted(rows["budget_scale"].unique().tolist())
        headers = ["Strategy", *[f"{scale_text(s)} (%)" for s in scales], "Gain (pp) [95% CI]", "p",
                   "Verdict"]
        table = []
        for name in sorted(rows["strategy"].unique().tolist()):
            curve = {r["budget_scale"]: clean(r) for r in rows[rows["strategy"] == name].to_dict("records")}
            top = curve[max(curve)]
            gain = "-" if top["scale_gain"] is None else pp(top["scale_gain"])
            if top["scale_gain_ci_low"] is not None:
                gain += f" [{pp(top['scale_gain_ci_low'])}, {pp(top['scale_gain_ci_high'])}]"
            verdict = "-" if top["not_converged"] is None else NOT_CONVERGED if top["not_converged"] else \
                "no significant gain"
            if len(curve) < 2:
                verdict = "one scale only"
            accs = [pct(curve[s]["accuracy"], curve[s]["ci95"]) if s in curve else "-" for s in scales]
            table.append([cell(c) for c in [name, *accs, gain, p_text(top["scale_gain_p"]), verdict]])
        lines += ["", f"### {shots}-shot", "", tabulate(table, headers=headers, tablefmt="pipe",
                                                        disable_numparse=True)]
    return lines



def _delta(r: dict, key: str, low: str, high: str) -> str:
    if r[key] is None:
        return "-"
    return pp(r[key]) + (f" [{pp(r[low])}, {pp(r[high])}]" if r[low] is not None else "")


def external_table(group: pd.DataFrame, links: dict[str, str], multi_run: bool) -> list[str]:
    """The group's rows of external pretraining (a model pretrained elsewhere): accuracy and the paired
    difference to the best ranked row, not ranked; [] when there are none."""
    rows = [clean(r) for r in group[(group["status"] == "ok") & (group["family"] == EXTERNAL)].to_dict("records")]
    if not rows:
        return []
    ranked = group[(group["status"] == "ok") & (group["family"] != EXTERNAL)].sort_values("rank")
    best = f"Δ to {ranked.iloc[0]['strategy']} (pp) [95% CI]" if len(ranked) else "Δ to best (pp)"
    headers = ["Strategy", "Pretraining", "Accuracy (%)", best, "p", "ms / episode"] + (["Run"] if multi_run else [])
    lines = []
    for r in rows:
        cells = [strategy_cell(r["strategy"], links), "external", pct(r["accuracy"], r["ci95"]),
                 _delta(r, "delta_vs_best", "delta_ci_low", "delta_ci_high"), p_text(r["p_value"]),
                 num(r["ms_per_episode"], ",.2f")]
        lines.append([cell(c) for c in cells + ([r["run"]] if multi_run else [])])
    return ["### External pretraining (not ranked)", "",
            "Models pretrained elsewhere (`keras-pretrained`, `torch-pretrained` rows): their pretraining data may "
            "hold the novel classes, so they are not ranked against strategies that saw only the base classes. "
            "Δ: against the best ranked row on the same episodes (paired; one comparison, so no Bonferroni).", "",
            tabulate(lines, headers=headers, tablefmt="pipe", disable_numparse=True)]


def twin_tables(frame: pd.DataFrame) -> list[str]:
    """Per shot setting (at the largest budget scale): each row naming a PyTorch twin (the same algorithm in
    another framework), its twin's accuracy and the paired difference; [] when no row has a twin."""
    rows = frame[(frame["status"] == "ok") & frame["twin"].notna()]
    if rows.empty:
        return []
    rows = rows[rows["budget_scale"] == rows["budget_scale"].max()]
    done = {(r["strategy"], r["shots"]): clean(r) for r in frame[frame["status"] == "ok"].to_dict("records")
            if r["budget_scale"] == rows["budget_scale"].max()}
    headers = ["Shots", "Row", "Accuracy (%)", "PyTorch twin", "Twin accuracy (%)", "Δ (pp) [95% CI]", "p"]
    lines = []
    for r in sorted((clean(r) for r in rows.to_dict("records")), key=lambda r: (r["shots"], r["strategy"])):
        twin = done.get((r["twin"], r["shots"]))
        cells = [r["shots"], r["strategy"], pct(r["accuracy"], r["ci95"]), r["twin"],
                 pct(twin["accuracy"], twin["ci95"]) if twin else "not in this run",
                 _delta(r, "twin_delta", "twin_ci_low", "twin_ci_high"), p_text(r["twin_p"])]
        lines.append([cell(c) for c in cells])
    return [tabulate(lines, headers=headers, tablefmt="pipe", disable_numparse=True)]


def framework_tables(frame: pd.DataFrame) -> list[str]:
    """Per shot setting: each Keras row's difference to its PyTorch twin split into the episode phase's
    framework and the pretraining's (rows that have a framework-check row); [] when none has one."""
    rows = frame[(frame["status"] == "ok") & frame["check"].notna()]
    if rows.empty:
        return []
    rows = rows[rows["budget_scale"] == rows["budget_scale"].max()]
    headers = ["Shots", "Row", "Δ to PyTorch twin (pp)", "Episode phase: Δ to check row", "Check row",
               "Pretraining: check row − twin"]
    lines = []
    for r in sorted((clean(r) for r in rows.to_dict("records")), key=lambda r: (r["shots"], r["strategy"])):
        cells = [r["shots"], r["strategy"], _delta(r, "twin_delta", "twin_ci_low", "twin_ci_high"),
                 _delta(r, "check_delta", "check_ci_low", "check_ci_high"), r["check"],
                 _delta(r, "pretraining_delta", "pretraining_ci_low", "pretraining_ci_high")]
        lines.append([cell(c) for c in cells])
    return [tabulate(lines, headers=headers, tablefmt="pipe", disable_numparse=True)]
