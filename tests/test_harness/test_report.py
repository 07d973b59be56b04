"""The leaderboard and the run comparison, on a small fixed results set written here (reportdata.py).

The Markdown is compared exactly with files under tests/test_harness/data/; after a deliberate change,
regenerate them with ``HARNESS_REGENERATE=1 pytest tests/test_harness/test_report.py`` and read the diff.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shlex
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from reportdata import EPISODES, SCALES, episodes, fixed_records, record, render_page, scaled_records, write_run
from rundirs import heavy_modules_of_report

from harness.cli import main
from harness.registry import REPORT_FORMATS
from harness.report import FRAME_COLUMNS, compare_frame, leaderboard_frame
from harness.report.cells import code_link
from harness.report.formats import Renderer
from harness.report.plots import render_plots
from harness.results import load_run
from harness.stats import accuracy_interval, difference

ROOT = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"
KINDS = ["accuracy-vs-shots", "accuracy-vs-cost", "source-throughput"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def expect(name: str, text: str) -> None:
    path = DATA / name
    if os.environ.get("HARNESS_REGENERATE"):
        path.write_text(text)
    assert text == path.read_text()


def run_code(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own errors
        return int(e.code)


@pytest.fixture
def fixed_run(tmp_path: Path) -> Path:
    return write_run(tmp_path / "fixed-run", fixed_records())


def test_leaderboard_matches_expected_markdown(fixed_run):
    # links are relative to where the report would be written: reports/ of this checkout
    text = render_page([fixed_run], out=ROOT / "reports" / "fixed-run.md",
                       plot_files=[f"fixed-run-{k}.png" for k in KINDS])
    expect("expected_leaderboard.md", text)
    assert "[frozen-features]: ../strategies/probe.py" in text and "| =1  | [frozen-features] " in text
    assert "[adapter](../strategies/finetune.py)" in text
    assert "| third-party-probe " in text and "[third-party-probe]" not in text  # not in this checkout: no link
    assert "- broken-strategy: failed: RuntimeError: out of memory" in text and "skipped: needs tensorflow" in text
    assert "BN: transductive, order: second, inner steps: 10" in text and "Clean-and-robust acc. (%)" in text


def test_ranks_ties_and_pvalues(fixed_run):
    records = {(r.strategy, r.shots): r.to_json() for r in fixed_records()}
    frame = leaderboard_frame([load_run(fixed_run)], ["fixed-run"])
    assert list(frame.columns) == FRAME_COLUMNS
    one = frame[frame["shots"] == 1].reset_index(drop=True)
    assert one["strategy"].tolist() == ["frozen-features", "partial-finetune", "third-party-probe",
                                        "broken-strategy", "keras-thing"]
    assert one["rank_label"].tolist() == ["=1", "=1", "3", "-", "-"]
    assert one["tied_with_best"].tolist() == [True, True, False, False, False]
    best = records[("frozen-features", 1)]["episode_accuracies"]
    raw = [scipy.stats.ttest_rel(records[(n, 1)]["episode_accuracies"], best).pvalue
           for n in ("partial-finetune", "third-party-probe")]
    assert np.allclose(one["p_value"][1:3], raw, rtol=0, atol=1e-10)
    assert np.allclose(one["p_adjusted"][1:3], np.minimum(1, 2 * np.array(raw)), rtol=0, atol=1e-10)  # Bonferroni
    assert one["p_adjusted"][1] >= 0.05 > one["p_adjusted"][2]
    assert math.isclose(one["delta_vs_best"][2], -0.2)
    assert one["delta_ci_low"][2] < -0.2 < one["delta_ci_high"][2] < 0  # its CI excludes 0: not tied
    assert one["delta_ci_low"][1] < 0 < one["delta_ci_high"][1]  # tied: its CI holds 0
    assert one["delta_ci_level"][1] == pytest.approx(1 - 0.05 / 2)
    five = frame[frame["shots"] == 5]
    assert five["strategy"].tolist() == ["partial-finetune", "third-party-probe", "frozen-features", "broken-strategy",
                                         "keras-thing"]
    assert five["rank_label"].tolist() == ["=1", "=1", "3", "-", "-"]
    assert set(frame["budget_scale"]) == {1.0} and frame["total_flops"].isna().all()  # FLOPs null: coped with


def test_every_record_field_is_placed_in_the_frame_layout(monkeypatch):
    """FRAME_COLUMNS comes from one declared layout: a record field neither copied into the frame nor listed as
    not copied (e.g. one just added to the schema) is refused when the module loads."""
    from harness.report import frame

    frame.check_layout()
    assert FRAME_COLUMNS[:6] == ["shots", "budget_scale", "rank", "rank_label", "tied_with_best", "strategy"]
    assert FRAME_COLUMNS[-3:] == ["reliability", "class_accuracy", "confusion"] and len(set(FRAME_COLUMNS)) == 95
    monkeypatch.setattr(frame, "NOT_COPIED", frame.NOT_COPIED - {"twin_of"})
    with pytest.raises(TypeError, match="placed nowhere \\['twin_of'\\]"):
        frame.check_layout()


@pytest.mark.parametrize("seed", range(20))
def test_ties_and_intervals_never_disagree(seed, tmp_path):
    """Random leaderboards: a row is tied with the best exactly when its CI holds 0, and ranks follow accuracy."""
    rng = np.random.default_rng(seed)
    records = [record(f"s{i}", 1, [round(float(a), 6) for a in rng.binomial(15, rng.uniform(0.3, 0.7), EPISODES) / 15],
                      "fp") for i in range(6)]
    frame = leaderboard_frame([load_run(write_run(tmp_path / "r", records))])
    assert frame["accuracy"].is_monotonic_decreasing
    for _, row in frame.iloc[1:].iterrows():
        holds_zero = row["delta_ci_low"] <= 0 <= row["delta_ci_high"]
        assert holds_zero == row["tied_with_best"] == (row["p_adjusted"] >= 0.05), row["strategy"]


def test_a_clear_winner_has_rank_1_alone(tmp_path):
    fp = "same-episodes"
    run = write_run(tmp_path / "r", [record("frozen-features", 1, episodes(3, [0, 1]), fp),
                                     record("partial-finetune", 1, episodes(0, [0, -1]), fp)])
    frame = leaderboard_frame([load_run(run)])
    assert frame["rank_label"].tolist() == ["1", "2"]


def test_cli_report_writes_markdown_and_plots(fixed_run, tmp_path, capsys):
    out = tmp_path / "reports" / "board.md"
    assert run_code(["report", str(fixed_run), "--out", str(out)]) == 0
    text = out.read_text()
    plots = [f"fixed-run-{k}.png" for k in KINDS]
    assert text == render_page([fixed_run], out=out, plot_files=plots)  # a pure function of the results
    for name in plots:
        data = (out.parent / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and f"]({name})" in text
    links = re.findall(r"\]\(([^)]+\.py)\)", text) + re.findall(r"^\[[^]]+\]: (\S+)$", text, re.M)
    assert len(links) >= 5
    for link in links:
        assert (out.parent / link).resolve().is_file()  # strategy links point at the source files
    first = {p.name: p.read_bytes() for p in out.parent.iterdir()}
    assert run_code(["report", str(fixed_run), "--out", str(out)]) == 0
    assert {p.name: p.read_bytes() for p in out.parent.iterdir()} == first  # deterministic, plots included
    assert "leaderboard:" in capsys.readouterr().out


def test_no_plots(fixed_run, tmp_path):
    out = tmp_path / "board.md"
    assert run_code(["report", str(fixed_run), "--out", str(out), "--no-plots"]) == 0
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["board.md"]
    assert "## Plots" not in out.read_text() and "## 1-shot" in out.read_text()


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_csv_and_json_load_with_pandas(fixed_run, tmp_path, fmt):
    out = tmp_path / f"board.{fmt}"
    assert run_code(["report", str(fixed_run), "--out", str(out), "--format", fmt, "--no-plots"]) == 0
    frame = pd.read_csv(out) if fmt == "csv" else pd.read_json(out, orient="records")
    assert list(frame.columns) == FRAME_COLUMNS and len(frame) == len(fixed_records())
    best = frame[(frame["shots"] == 1) & (frame["strategy"] == "frozen-features")].iloc[0]
    assert best["rank"] == 1 and math.isclose(best["accuracy"], np.mean(episodes(0, [1, 0, 0, 1])))
    assert frame[frame["strategy"] == "broken-strategy"]["reason"].iloc[0] == "RuntimeError: out of memory"


def test_mismatched_episodes_exit_2_nothing_written(tmp_path, capsys):
    a = write_run(tmp_path / "a", fixed_records("one"))
    b = write_run(tmp_path / "b", [record("other-strategy", 1, episodes(0, [0]), "two-1shot")], seed=1)
    out = tmp_path / "out" / "board.md"
    assert run_code(["report", str(a), str(b), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "did not use the same 1-shot episodes" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()


def test_same_strategy_in_two_runs_exit_2(tmp_path, capsys):
    a = write_run(tmp_path / "a", fixed_records())
    b = write_run(tmp_path / "b", fixed_records())
    assert run_code(["report", str(a), str(b), "--out", str(tmp_path / "x.md")]) == 2
    assert "--compare" in capsys.readouterr().err and not (tmp_path / "x.md").exists()


def test_combined_runs_on_the_same_episodes(tmp_path):
    records = fixed_records()
    a = write_run(tmp_path / "run-a", [r for r in records if r.strategy != "third-party-probe"])
    b = write_run(tmp_path / "run-b", [r for r in records if r.strategy == "third-party-probe"],
                  command=("python", "-m", "harness", "run", "third-party-probe"))
    text = render_page([a, b], out=tmp_path / "board.md")
    assert "Combined from 2 run directories: `run-a`, `run-b`." in text and "| Run " in text
    assert "# run-b\npython -m harness run third-party-probe\n" in text
    single = leaderboard_frame([load_run(write_run(tmp_path / "one", records))])
    both = leaderboard_frame([load_run(a), load_run(b)])
    key = ["shots", "strategy", "rank_label", "p_adjusted"]
    pd.testing.assert_frame_equal(single[key].sort_values(key[:2]).reset_index(drop=True),
                                  both[key].sort_values(key[:2]).reset_index(drop=True))


def comparison_runs(tmp_path: Path, seed_b: int = 0) -> tuple[Path, Path]:
    fp = "fp" if seed_b == 0 else "other"
    a = write_run(tmp_path / "run-a", fixed_records())
    changed = []
    for r in fixed_records(fp):
        if r.strategy == "frozen-features" and r.shots == 1:  # clearly better in B
            r = record("frozen-features", 1, episodes(3, [1, 0, 1, 1]), r.episode_fingerprint,
                       ms_per_episode=20.0, source_images_per_second=1000.0)
        if r.strategy == "partial-finetune":  # slower episode phase, same accuracy
            r = dataclasses.replace(r, ms_per_episode=3 * r.ms_per_episode)
        changed.append(r)
    return a, write_run(tmp_path / "run-b", changed, seed=seed_b)


def test_compare_matches_expected_markdown(tmp_path):
    a, b = comparison_runs(tmp_path)
    out = tmp_path / "cmp.md"
    assert run_code(["report", str(a), str(b), "--compare", "--out", str(out)]) == 0
    text = out.read_text()
    expect("expected_compare.md", text)
    assert "▲ better" in text and "3.00× (slower)" in text and "0.50× (faster)" in text
    frame = compare_frame(load_run(a), load_run(b))
    row = frame[(frame["strategy"] == "frozen-features") & (frame["shots"] == 1)].iloc[0]
    ra = next(r.to_json() for r in fixed_records() if r.strategy == "frozen-features" and r.shots == 1)
    xb = episodes(3, [1, 0, 1, 1])
    assert row["test"] == "paired t"
    assert abs(row["p_value"] - scipy.stats.ttest_rel(xb, ra["episode_accuracies"]).pvalue) <= 1e-10
    family = int(frame["p_value"].notna().sum())
    expected = [p if math.isnan(p) else min(1, family * p) for p in frame["p_value"]]
    assert list(frame["p_adjusted"]) == pytest.approx(expected, nan_ok=True)


def test_compare_different_episodes_is_unpaired_welch(tmp_path):
    a, b = comparison_runs(tmp_path, seed_b=1)
    frame = compare_frame(load_run(a), load_run(b))
    ok = frame[frame["test"].notna()]
    assert set(ok["test"]) == {"Welch t (unpaired)"}
    recs_a = {(r.strategy, r.shots): r for r in load_run(a).records}
    recs_b = {(r.strategy, r.shots): r for r in load_run(b).records}
    for _, row in ok.iterrows():
        key = (row["strategy"], row["shots"])
        expected = scipy.stats.ttest_ind(recs_b[key].episode_accuracies, recs_a[key].episode_accuracies,
                                         equal_var=False).pvalue
        assert abs(row["p_value"] - expected) <= 1e-10
    out = tmp_path / "cmp.json"
    assert run_code(["report", str(a), str(b), "--compare", "--format", "json", "--out", str(out)]) == 0
    assert {r["test"] for r in json.loads(out.read_text()) if r["test"]} == {"Welch t (unpaired)"}


@pytest.mark.parametrize("dirs, message", [
    (1, "--compare takes exactly two run directories"),
    (3, "--compare takes exactly two run directories"),
    ("ways", "different protocols (ways 5 vs 4)"),
])
def test_compare_refusals_exit_2(tmp_path, capsys, dirs, message):
    a = write_run(tmp_path / "a", fixed_records())
    if dirs == "ways":
        paths = [a, write_run(tmp_path / "b", fixed_records(), ways=4)]
    else:
        paths = [a] * dirs
    out = tmp_path / "cmp.md"
    assert run_code(["report", *map(str, paths), "--compare", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not out.exists()


def test_bad_format_and_missing_run_exit_2(tmp_path, capsys):
    assert run_code(["report", str(tmp_path), "--format", "jsn"]) == 2
    assert "unknown report format 'jsn' (did you mean 'json'?)" in capsys.readouterr().err
    assert run_code(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "x.md")]) == 2
    assert "is not a run directory" in capsys.readouterr().err and not (tmp_path / "x.md").exists()


def test_code_links_only_for_files_of_this_checkout(tmp_path):
    link = code_link("strategies/probe.py", tmp_path / "a" / "b" / "board.md")
    assert (tmp_path / "a" / "b" / link).resolve() == (ROOT / "strategies" / "probe.py").resolve()
    assert code_link("strategies/not_a_module.py", tmp_path / "x.md") is None
    assert code_link(None, tmp_path / "x.md") is None
    text = render_page([write_run(tmp_path / "r", fixed_records())], out=tmp_path / "board.md")
    assert "| third-party-probe " in text  # its code lies outside this checkout: no link


def test_records_without_episode_accuracies_are_not_tied(tmp_path):
    best = record("frozen-features", 1, episodes(0, [0]), "fp")
    old = dataclasses.replace(record("partial-finetune", 1, episodes(0, [0, -1]), "fp"), episode_accuracies=None)
    frame = leaderboard_frame([load_run(write_run(tmp_path / "r", [best, old]))])
    assert frame["rank_label"].tolist() == ["1", "2"] and frame["p_adjusted"].isna().all()
    assert EPISODES == len(best.episode_accuracies)


def tables(text: str) -> list[list[str]]:
    """The Markdown tables of a page, each as its lines."""
    found, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            found, current = found + [current], []
    return found


def test_pipes_and_newlines_in_cells_do_not_break_the_table(tmp_path):
    ok = record("frozen-features", 1, episodes(0, [0]), "fp", settings={"mode": "a|b"})
    bad = record("partial-finetune", 1, None, "fp", status="failed", reason="ValueError: x | y\nz")
    text = render_page([write_run(tmp_path / "r", [ok, bad])], out=tmp_path / "b.md")
    assert "mode: a\\|b" in text and "failed: ValueError: x \\| y z" in text
    for table in tables(text):
        assert len({line.replace("\\|", "").count("|") for line in table}) == 1


# --- the page people read -------------------------------------------------------------------------------------

LONG = "ssl-simclr-partial-finetune-with-a-rather-long-name"


def test_leaderboard_fits_a_laptop_screen(tmp_path):
    """Every table line (ranking, details, not-ranked) is under 160 characters, with long names and links."""
    fps = {1: "fp-1shot-0123456789abcdef", 5: "fp-5shot-fedcba9876543210"}
    extra = [record(LONG, s, episodes(-1, [0, 1]), fps[s],
                    code={"source": "strategies/simclr.py", "adapter": "strategies/keras_transfer.py"},
                    source_flops=12.345e12, episode_flops=3.2e9, ms_per_episode=12345.678,
                    settings={"unfrozen blocks": 2, "steps": 50, "BN": "inductive", "XLA": False},
                    source_device="NVIDIA H200", device=f"CPU ({'x' * 40}, 16 threads)") for s in (1, 5)]
    text = render_page([write_run(tmp_path / "r", fixed_records() + extra)], out=ROOT / "reports" / "x.md")
    assert f"[{LONG}]" in text and f"[{LONG}]: ../strategies/keras_transfer.py" in text
    widest = max(len(line) for table in tables(text) for line in table)
    assert widest < 160, widest
    ranking = next(t for t in tables(text) if t[0].startswith("| #"))
    assert [c.strip() for c in ranking[0].strip("|").split("|")] == [
        "#", "Strategy", "Accuracy (%)", "Δ to best [98.3% CI]", "p (adj.)", "Source cost, time",
        "ms/episode"]
    assert "| 12.3 TFLOP, " in text and "| 150,016 img, " in text  # TFLOP when recorded, else images processed
    assert "the source phase ran on NVIDIA H200" in text  # only where it differs from the evaluation device
    assert text.count("the source phase ran on") == 1
    assert text.count("<details>") == text.count("</details>") == 6  # one block per strategy


def test_summary_names_the_best_the_ties_and_the_cost_ratio(fixed_run, tmp_path):
    text = render_page([fixed_run])
    summary = text.split("\n\n")[1]
    assert summary.startswith("**Summary.** 1-shot: **frozen-features** is best with 63.33 ± 4.80% accuracy; "
                              "partial-finetune is statistically tied with it.")
    assert ("5-shot: **partial-finetune** is best with 75.67 ± 4.88% accuracy; third-party-probe is statistically "
            "tied with it. The cheapest tied strategy, third-party-probe, costs 0.40× as much as the best: 60,000 "
            "vs 150,016 source images processed (FLOPs not recorded") in summary
    # with FLOPs recorded: total compute = source FLOPs + episodes x episode FLOPs
    flops = dict(source_flops=8e12, episode_flops=1e9)
    recs = [record("big", 1, episodes(1, [0, 1]), "fp", **flops),
            record("small", 1, episodes(1, [1, 0]), "fp", source_flops=1e12, episode_flops=4e9),
            record("worse", 1, episodes(-3, [0, 1]), "fp", **flops)]
    summary = render_page([write_run(tmp_path / "f", recs)]).split("\n\n")[1]
    ratio = (1e12 + EPISODES * 4e9) / (8e12 + EPISODES * 1e9)
    assert f"costs {ratio:.2f}× as much as the best: 1.08 vs 8.02 TFLOP of total compute" in summary
    assert "**big** is best" in summary and "small is statistically tied" in summary and "worse" not in summary


def test_header_states_machine_coverage_ties_and_throughput(fixed_run, tmp_path):
    text = render_page([fixed_run])
    assert "precision fp32; determinism: deterministic algorithms on, tf32 matmul off" in text
    assert "the CI covers episode sampling only, for one trained model per strategy" in text
    assert "tied with the best, rank `=1`, exactly when its CI holds 0" in text
    assert "source img/s leaves out the source phase's first (warm-up) step" in text
    assert "ms / episode leaves out one untimed warm-up episode" in text
    assert "peak memory is each phase's own, above what was allocated when it started" in text
    assert "meaningless" not in text
    smoke = render_page([write_run(tmp_path / "s", fixed_records(), preset="smoke")])
    assert smoke.split("\n\n")[1].startswith("> **Smoke preset: these numbers are meaningless.**")
    replicated = [dataclasses.replace(r, replicate_accuracies=[0.5, 0.6], ci_covers="training seeds and episode "
                                      "sampling") if r.status == "ok" else r for r in fixed_records()]
    assert "the CI covers training seeds and episode sampling." in render_page([write_run(tmp_path / "x", replicated)])


def test_reproduce_command_round_trips_through_the_shell(tmp_path):
    command = ["python", "-m", "harness", "run", "--all", "--data-label", "CIFAR-10 (JPEG q75 copy)", "--set",
               "maml.note=it's \"quoted\"", "--out", "runs/a b"]
    text = render_page([write_run(tmp_path / "r", fixed_records(), command=command)])
    block = text.split("Reproduce with:\n\n```\n")[1].split("\n```")[0]
    assert shlex.split(block) == command


# --- partial and damaged runs -----------------------------------------------------------------------------------

def report_stderr(run: Path, out: Path, capsys) -> tuple[int, list[str]]:
    code = run_code(["report", str(run), "--out", str(out), "--no-plots"])
    return code, capsys.readouterr().err.strip().splitlines()


def test_a_run_still_going_reports_what_exists_and_names_the_missing_units(tmp_path, capsys):
    done = [r for r in fixed_records() if r.shots == 1]  # the 5-shot units have not run yet
    run = write_run(tmp_path / "r", done, shots=[1, 5])
    out = tmp_path / "board.md"
    code, err = report_stderr(run, out, capsys)
    assert code == 0 and len(err) == 1
    assert "5 unit(s) named in config.json have no record" in err[0]
    for name in ("frozen-features", "partial-finetune", "third-party-probe", "broken-strategy", "keras-thing"):
        assert f"{name} 5-shot" in err[0]
    text = out.read_text()
    assert "> **Incomplete run:** 5 unit(s)" in text and "- frozen-features: missing: no record yet" in text
    assert "| =1  | [frozen-features] " in text  # the 1-shot ranking is there
    frame = leaderboard_frame([load_run(run)])
    assert (frame[frame["shots"] == 5]["status"] == "missing").all()


def test_a_deleted_record_is_reported_missing(fixed_run, tmp_path, capsys):
    (fixed_run / "records" / "partial-finetune-1shot.json").unlink()
    out = tmp_path / "board.md"
    code, err = report_stderr(fixed_run, out, capsys)
    assert code == 0 and len(err) == 1 and err[0].endswith("reported as missing: partial-finetune 1-shot")
    text = out.read_text()
    assert "- partial-finetune: missing: no record yet" in text and "1 strategy has no record yet." in text
    assert "| 1   | [frozen-features] " in text  # ranked without it


def test_emptied_records_exit_1_and_write_nothing(fixed_run, tmp_path, capsys):
    for path in (fixed_run / "records").iterdir():
        path.unlink()
    out = tmp_path / "out" / "board.md"
    code, err = report_stderr(fixed_run, out, capsys)
    assert code == 1 and len(err) == 1 and "no record in" in err[0] and "nothing to report" in err[0]
    assert not (tmp_path / "out").exists()
    (fixed_run / "records").rmdir()  # a run that has not written anything yet
    assert report_stderr(fixed_run, out, capsys)[0] == 1 and not (tmp_path / "out").exists()


def test_a_skipped_strategy_is_not_missing_at_other_budget_scales(tmp_path):
    recs = [record("a", 1, episodes(0, [0, 1]), "fp", budget_scale=s) for s in (0.5, 1.0)]
    recs.append(record("keras-thing", 1, None, "fp", status="skipped", reason="needs tensorflow"))
    frame = leaderboard_frame([load_run(write_run(tmp_path / "r", recs, scales=[0.5, 1.0]))])
    assert "missing" not in set(frame["status"])


def test_report_imports_no_torch_and_no_strategy(fixed_run, tmp_path):
    assert heavy_modules_of_report([str(fixed_run), "--out", str(tmp_path / "b.md")], ROOT) == (0, [])
    assert (tmp_path / "b.md").is_file()


# --- budget scales --------------------------------------------------------------------------------------------

def test_budget_scales_rank_within_each_scale_and_flag_rising_curves(tmp_path):
    run = write_run(tmp_path / "scaled", scaled_records())
    assert (run / "records" / "frozen-features-1shot-x0.25.json").is_file()
    results = load_run(run)
    frame = leaderboard_frame([results], ["scaled"])
    assert list(zip(frame["shots"], frame["budget_scale"], strict=True))[:3] == [(1, 1.0)] * 3
    for _, group in frame.groupby(["shots", "budget_scale"]):
        assert group["rank"].tolist() == [1, 2, 3] and group["accuracy"].is_monotonic_decreasing
    top = frame[frame["budget_scale"] == 1.0].set_index(["strategy", "shots"])
    assert top.loc[("frozen-features", 1), "not_converged"] and not top.loc[("partial-finetune", 1), "not_converged"]
    assert frame[frame["budget_scale"] < 1]["not_converged"].isna().all()  # only the largest scale carries it
    by_key = {(r.strategy, r.shots, r.budget_scale): r for r in results.records}
    d = difference(by_key[("frozen-features", 1, 1.0)].episode_accuracies,
                   by_key[("frozen-features", 1, 0.5)].episode_accuracies)
    row = top.loc[("frozen-features", 1)]
    gain = (row["scale_gain"], row["scale_gain_ci_low"], row["scale_gain_p"])
    assert gain == pytest.approx((d.delta, d.low, d.p_raw))
    assert d.delta > 0 and d.p_raw < 0.05
    text = render_page([run], out=ROOT / "reports" / "scaled.md")  # links as from reports/ of this checkout
    expect("expected_budget_scales.md", text)
    for s in (1, 5):
        for scale in SCALES:
            assert f"## {s}-shot, source budget ×{scale:g}\n" in text
    assert "| frozen-features  |" in text and "not converged at this budget |" in text
    assert "Still rising at the largest budget (not converged at this budget): frozen-features." in text
    images = render_plots(frame, results.header.protocol, "scaled")
    assert "scaled-accuracy-vs-compute.png" in images


class CountRenderer(Renderer):
    """A plugin's format: one line per shot setting with the number of rows."""

    def render(self, runs, names, frame, out, plot_files) -> str:
        return "".join(f"{shots}-shot: {len(rows)} rows\n" for shots, rows in frame.groupby("shots"))


def test_a_registered_format_is_one_renderer_and_one_line(fixed_run, tmp_path):
    REPORT_FORMATS.add("count", CountRenderer("count", False), description="rows per shot setting (tests only)")
    try:
        out = tmp_path / "board.txt"
        assert run_code(["report", str(fixed_run), "--out", str(out), "--format", "count"]) == 0
        assert out.read_text() == "".join(f"{k}-shot: {v} rows\n" for k, v in
                                          sorted(Counter(r.shots for r in fixed_records()).items()))
        assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["board.txt"]  # no plots for this format
    finally:
        REPORT_FORMATS.unregister("count")


# --- training-seed replicates ---------------------------------------------------------------------------------

SEED_EFFECTS = np.array([0.06, -0.05, 0.0])
SHARED = {"frozen-features", "partial-finetune"}  # the same supervised models, seed by seed


def replicated_records(matrix: bool = True, shift: float = 0.0) -> list:
    """fixed_records with 3 training seeds on the same episodes: frozen-features and partial-finetune share
    their supervised models (equal source keys, a shared seed effect), third-party-probe has its own models.
    ``matrix=False``: as schema 3 wrote them, without the replicate x episode matrix, df or image counts."""
    out = []
    for r in fixed_records():
        if r.status != "ok":
            out.append(r)
            continue
        shared = r.strategy in SHARED
        rng = np.random.default_rng(len(r.strategy) * 10 + r.shots)
        effects = SEED_EFFECTS if shared else SEED_EFFECTS[::-1] * 0.5
        m = np.asarray(r.episode_accuracies)[None, :] + effects[:, None] + rng.normal(0, 0.01, (3, EPISODES)) + shift
        keys = [f"{'SupervisedPretraining' if shared else 'MetaTraining'}-seed{i}" for i in range(3)]
        interval = accuracy_interval(m) if matrix else accuracy_interval(m.mean(axis=0), m.mean(axis=1))
        new = dict(accuracy=interval.estimate, ci95=interval.half_width, ci_covers=interval.covers,
                   episode_accuracies=m.mean(axis=0).tolist(), replicate_seeds=[0, 1, 2],
                   replicate_accuracies=m.mean(axis=1).tolist(), source_keys=keys)
        if matrix:
            new.update(ci_df=interval.df, ci_seed_df=interval.seed_df, replicate_episode_accuracies=m.tolist(),
                       novel_images=100 if r.shots == 1 else 160, image_reuse=2.0 if r.shots == 1 else 2.5)
        out.append(dataclasses.replace(r, **new))
    return out


@pytest.mark.parametrize("matrix", [True, False])
def test_replicates_are_paired_by_seed_when_the_source_models_are_shared(tmp_path, matrix):
    run = write_run(tmp_path / "rep", replicated_records(matrix))
    results = load_run(run)
    frame = leaderboard_frame([results], ["rep"])
    by_key = {(r.strategy, r.shots): r for r in results.records}
    seen = Counter()
    for shots in (1, 5):
        rows = frame[(frame["shots"] == shots) & frame["rank"].notna()].sort_values("rank").to_dict("records")
        best = by_key[(rows[0]["strategy"], shots)]
        for row in rows[1:]:
            r = by_key[(row["strategy"], shots)]
            pairs = matrix and {row["strategy"], best.strategy} <= SHARED
            assert row["test"] == ("paired t, seeds paired" if pairs else "paired t, training seeds independent")
            seen[row["test"]] += 1
            kwargs = dict(a_matrix=r.replicate_episode_accuracies, b_matrix=best.replicate_episode_accuracies,
                          a_sources=r.source_keys, b_sources=best.source_keys)
            args = (r.episode_accuracies, best.episode_accuracies, r.replicate_accuracies,
                    best.replicate_accuracies, True, len(rows) - 1)
            d = difference(*args, **kwargs)
            assert (row["delta_vs_best"], row["delta_ci_low"], row["p_adjusted"]) == \
                pytest.approx((d.delta, d.low, d.p_adjusted), rel=1e-12)
            if pairs:  # the shared seed effect cancels: far narrower than with the seeds independent
                independent = difference(*args)
                assert d.high - d.low < (independent.high - independent.low) / 2
    assert seen["paired t, seeds paired"] == (2 if matrix else 0)
    text = render_page([run])
    assert "the CI covers training seeds and episode sampling." in text
    assert "seed df = replicates − 1 = 2" in text
    if matrix:
        assert ("In numbers, it covers episode sampling from 100 distinct novel images at 1-shot (each used in 2 "
                "episodes on average); 160 distinct novel images at 5-shot (each used in 2.5 episodes on average) "
                "and 3 training seeds (seed df 2); not other images of these classes.") in text
        dfs = [r.ci_df for r in results.records if r.status == "ok"]
        assert f"the intervals' df here: {min(dfs):.1f} to {max(dfs):.1f}." in text and "schema 3" not in text
    else:
        assert ("It covers episode sampling from this run's pool of novel images and 3 training seeds (seed df 2); "
                "not other images of these classes.") in text
        assert "these records (schema 3, no replicate × episode matrix) give the CI the variance" in text
        assert "crossed design" not in text


def test_compare_pairs_the_seeds_of_shared_source_models(tmp_path):
    a = write_run(tmp_path / "a", replicated_records())
    b = write_run(tmp_path / "b", replicated_records(shift=0.01))
    frame = compare_frame(load_run(a), load_run(b))
    assert set(frame["test"].dropna()) == {"paired t, seeds paired"}  # the same source models in both runs
    out = tmp_path / "cmp.md"
    assert run_code(["report", str(a), str(b), "--compare", "--out", str(out)]) == 0
    text = out.read_text()
    assert "**What the CI and p cover:** training seeds and episode sampling" in text and "seeds paired" in text
    old = write_run(tmp_path / "old", replicated_records(matrix=False, shift=0.01))
    assert set(compare_frame(load_run(a), load_run(old))["test"].dropna()) == {"paired t, training seeds independent"}


def test_the_header_without_replicates_has_no_seed_terms(fixed_run):
    text = render_page([fixed_run])
    assert "It covers episode sampling from this run's pool of novel images; not other images of these classes." in text
    assert "seed df" not in text and "crossed design" not in text


def test_mixed_rows_name_their_own_interval(tmp_path):
    """Rows with and without replicates, with and without the matrix, in one run: the header says which is
    which."""
    old = {(r.strategy, r.shots): r for r in replicated_records(matrix=False)}
    plain = {(r.strategy, r.shots): r for r in fixed_records()}
    recs = []
    for r in replicated_records():
        key = (r.strategy, r.shots)
        recs.append(old[key] if key == ("third-party-probe", 1) else plain[key] if key == ("frozen-features", 5) else r)
    text = render_page([write_run(tmp_path / "mixed", recs)])
    assert ("training seeds and episode sampling for rows with replicates, episode sampling only for the others"
            in text)
    assert "and, for rows with replicates, 3 training seeds (seed df 2)" in text
    assert "crossed design" in text and "Rows recorded without the replicate × episode matrix (schema 3) use" in text
    frame = leaderboard_frame([load_run(tmp_path / "mixed")], ["mixed"]).set_index(["strategy", "shots"])
    one_shot = frame.xs(1, level="shots")
    best = one_shot["rank"].idxmin()
    assert best in SHARED  # the other shared row is paired with it by seed, the matrix-less one is not
    assert one_shot.loc[next(iter(SHARED - {best})), "test"] == "paired t, seeds paired"
    assert one_shot.loc["third-party-probe", "test"] == "paired t, training seeds independent"
    tests5 = set(frame.xs(5, level="shots")["test"].dropna())
    assert "paired t" in tests5  # frozen-features at 5 shots has one model: episodes only
