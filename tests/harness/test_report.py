"""The leaderboard and the run comparison, on a small fixed results set written here (reportdata.py).

The Markdown is compared exactly with files under tests/harness/data/; after a deliberate change,
regenerate them with ``HARNESS_REGENERATE=1 pytest tests/harness/test_report.py`` and read the diff.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats
from reportdata import EPISODES, episodes, fixed_records, record, write_run

from harness.cli import main
from harness.report import FRAME_COLUMNS, compare_frame, leaderboard_frame, render_runs
from harness.report.cells import code_link
from harness.results import load_run

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
    text = render_runs([fixed_run], out=ROOT / "reports" / "fixed-run.md",
                       plot_files=[f"fixed-run-{k}.png" for k in KINDS])
    expect("expected_leaderboard.md", text)
    assert "[code](../strategies/probe.py)" in text
    assert "| third-party-probe " in text  # not registered: no link
    assert "failed: RuntimeError: out of memory" in text and "skipped: needs tensorflow" in text
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
    assert five["strategy"].tolist() == ["partial-finetune", "third-party-probe", "frozen-features"]
    assert five["rank_label"].tolist() == ["=1", "=1", "3"]


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
    assert text == render_runs([fixed_run], out=out, plot_files=plots)  # a pure function of the results
    for name in plots:
        data = (out.parent / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and f"]({name})" in text
    for link in [line.split("[code](")[1].split(")")[0] for line in text.splitlines() if "[code](" in line]:
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
    text = render_runs([a, b], out=tmp_path / "board.md")
    assert "Combined from 2 run directories: `run-a`, `run-b`." in text and "| Run " in text
    assert "python -m harness run third-party-probe  # run-b" in text
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
    recs_a = {(r["strategy"], r["shots"]): r for r in load_run(a)[2]}
    recs_b = {(r["strategy"], r["shots"]): r for r in load_run(b)[2]}
    for _, row in ok.iterrows():
        key = (row["strategy"], row["shots"])
        expected = scipy.stats.ttest_ind(recs_b[key]["episode_accuracies"], recs_a[key]["episode_accuracies"],
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
    assert run_code(["report", str(tmp_path), "--format", "xlsx"]) == 2
    assert run_code(["report", str(tmp_path / "nope"), "--out", str(tmp_path / "x.md")]) == 2
    assert "is not a run directory" in capsys.readouterr().err and not (tmp_path / "x.md").exists()


def test_code_links_only_for_files_of_this_checkout(tmp_path):
    link = code_link("strategies/probe.py", tmp_path / "a" / "b" / "board.md")
    assert (tmp_path / "a" / "b" / link).resolve() == (ROOT / "strategies" / "probe.py").resolve()
    assert code_link("strategies/not_a_module.py", tmp_path / "x.md") is None
    assert code_link(None, tmp_path / "x.md") is None
    text = render_runs([write_run(tmp_path / "r", fixed_records())], out=tmp_path / "board.md")
    assert "| third-party-probe " in text  # its code lies outside this checkout: no link


def test_records_without_episode_accuracies_are_not_tied(tmp_path):
    best = record("frozen-features", 1, episodes(0, [0]), "fp")
    old = dataclasses.replace(record("partial-finetune", 1, episodes(0, [0, -1]), "fp"), episode_accuracies=None)
    frame = leaderboard_frame([load_run(write_run(tmp_path / "r", [best, old]))])
    assert frame["rank_label"].tolist() == ["1", "2"] and frame["p_adjusted"].isna().all()
    assert EPISODES == len(best.episode_accuracies)


def test_pipes_and_newlines_in_cells_do_not_break_the_table(tmp_path):
    ok = record("frozen-features", 1, episodes(0, [0]), "fp", settings={"mode": "a|b"})
    bad = record("partial-finetune", 1, None, "fp", status="failed", reason="ValueError: x | y\nz")
    text = render_runs([write_run(tmp_path / "r", [ok, bad])], out=tmp_path / "b.md")
    assert "mode: a\\|b" in text and "failed: ValueError: x \\| y z" in text
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len({line.replace("\\|", "").count("|") for line in table}) == 1
