"""Per-query predictions: every calibration and per-class number in a record is recomputed here, by plain loops,
from the predictions file the run wrote beside it; the file is byte-stable, exported one row per query, and a
missing or altered file is never silently used."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from rundirs import heavy_modules_of_report, records

from harness.predictions import BINS, PROBABILITY_FLOOR, QueryPredictions, digest, summarise
from harness.stats import accuracy_interval

ROOT = Path(__file__).resolve().parents[2]


def random_predictions(replicates: int = 2, episodes: int = 30, queries: int = 10, ways: int = 5,
                       classes: int = 8, seed: int = 0, scale: float = 3.0) -> QueryPredictions:
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(replicates, episodes, queries, ways)) * scale
    labels = rng.integers(0, ways, (episodes, queries))
    logits[..., 0] += 2.0 * (labels == 0)  # some signal, so accuracy is not chance
    episode_classes = np.stack([rng.permutation(classes)[:ways] for _ in range(episodes)])
    return QueryPredictions.from_outputs(logits, labels, episode_classes, [f"c{i}" for i in range(classes)],
                                         range(replicates))


def loop_metrics(p: QueryPredictions) -> dict:
    """The metrics by definition, one query at a time (independent of harness/predictions.py's array code)."""
    r_n, e_n, q_n, w_n = p.probabilities.shape
    nll, brier, conf = (np.zeros((r_n, e_n)) for _ in range(3))
    bins = [[0, 0.0, 0.0] for _ in range(BINS)]
    confusion: dict[tuple[str, str], int] = {}
    per_class: dict[str, list[list[float]]] = {}
    for r in range(r_n):
        for e in range(e_n):
            hits: dict[str, list[bool]] = {}
            for q in range(q_n):
                probs = [float(x) for x in p.probabilities[r, e, q]]
                y, guess = int(p.labels[e, q]), int(p.predicted[r, e, q])
                nll[r, e] += -math.log(max(probs[y], PROBABILITY_FLOOR)) / q_n
                brier[r, e] += sum((probs[k] - (k == y)) ** 2 for k in range(w_n)) / q_n
                top = max(probs)
                conf[r, e] += top / q_n
                b = min(BINS - 1, max(0, math.ceil(top * BINS) - 1))
                bins[b][0] += 1
                bins[b][1] += top
                bins[b][2] += guess == y
                true, said = (p.class_names[int(p.episode_classes[e, k])] for k in (y, guess))
                confusion[(true, said)] = confusion.get((true, said), 0) + 1
                hits.setdefault(true, []).append(guess == y)
            for name, h in hits.items():
                per_class.setdefault(name, [[] for _ in range(r_n)])[r].append(sum(h) / len(h))
    ece = sum(abs(c - s) for _, s, c in bins) / (r_n * e_n * q_n)
    return {"nll": nll, "brier": brier, "confidence": conf, "ece": ece, "bins": bins, "confusion": confusion,
            "per_class": per_class}


def check_record_against_file(record: dict, p: QueryPredictions) -> None:
    """Every prediction-derived field of ``record`` (6-decimal rounding) equals its loop recomputation."""
    ref = loop_metrics(p)
    accuracies = (p.predicted == p.labels[None]).mean(-1)  # (R, E)
    assert np.allclose(accuracies.mean(0), record["episode_accuracies"], atol=1e-6)
    for name in ("nll", "brier", "confidence"):
        matrix = ref[name]
        interval = accuracy_interval(matrix if len(matrix) > 1 else matrix[0])
        assert record[name] == pytest.approx(interval.estimate, abs=2e-6), name
        assert record[f"{name}_ci95"] == pytest.approx(interval.half_width, abs=2e-6), name
    assert np.allclose(record["episode_nll"], ref["nll"], atol=2e-6)
    assert np.allclose(record["episode_brier"], ref["brier"], atol=2e-6)
    assert record["ece"] == pytest.approx(ref["ece"], abs=2e-6)
    assert record["ece_ci_low"] <= record["ece"] <= record["ece_ci_high"]
    assert record["reliability"]["count"] == [b[0] for b in ref["bins"]]
    names = record["confusion"]["classes"]
    counts = {(t, s): n for t, row in zip(names, record["confusion"]["counts"], strict=True)
              for s, n in zip(names, row, strict=True) if n}
    assert counts == ref["confusion"]
    for name, rows in ref["per_class"].items():
        got = record["class_accuracy"][name]
        assert got["episodes"] == len(rows[0])
        assert got["accuracy"] == pytest.approx(float(np.mean(rows)), abs=2e-6)


@pytest.mark.parametrize("replicates", [1, 2])
def test_summary_equals_the_definitions_computed_query_by_query(replicates):
    p = random_predictions(replicates=replicates)
    record = summarise(p)
    record["episode_accuracies"] = (p.predicted == p.labels[None]).mean(-1).mean(0).tolist()
    check_record_against_file(record, p)


def test_calibrated_predictions_have_zero_ece_and_overconfident_ones_do_not():
    episodes, queries = 40, 10
    top = np.log(0.9) - np.log(0.025)  # softmax of [top, 0, 0, 0, 0] puts 0.9 on label 0
    logits = np.zeros((1, episodes, queries, 5))
    logits[..., 0] = top
    labels = np.zeros((episodes, queries), dtype=int)
    labels[:, 0] = 1  # 9 of 10 queries right at confidence 0.9: perfectly calibrated
    classes = np.tile(np.arange(5), (episodes, 1))
    calibrated = summarise(QueryPredictions.from_outputs(logits, labels, classes, list("abcde"), [0]))
    assert calibrated["ece"] == pytest.approx(0.0, abs=1e-6)
    assert calibrated["confidence"] == pytest.approx(0.9, abs=1e-6)
    labels[:, :5] = 1  # now half right at confidence 0.9: ECE = |0.5 - 0.9|
    over = summarise(QueryPredictions.from_outputs(logits, labels, classes, list("abcde"), [0]))
    assert over["ece"] == pytest.approx(0.4, abs=1e-6)
    assert over["ece_ci_low"] == pytest.approx(0.4, abs=1e-6)  # every episode alike: no sampling spread


def test_nll_of_a_confidently_wrong_query_is_capped_at_the_floor():
    logits = np.zeros((1, 2, 2, 2))
    logits[..., 0] = 1e4  # label 1's probability underflows to 0
    labels = np.ones((2, 2), dtype=int)
    out = summarise(QueryPredictions.from_outputs(logits, labels, np.tile([0, 1], (2, 1)), ["a", "b"], [0]))
    assert out["nll"] == pytest.approx(-math.log(PROBABILITY_FLOOR), rel=1e-6)
    assert out["brier"] == pytest.approx(2.0)


def test_file_is_byte_stable_and_round_trips(tmp_path):
    p = random_predictions()
    data = p.to_bytes()
    assert data == random_predictions().to_bytes()  # same predictions, same bytes (no time stamps)
    assert data != random_predictions(seed=1).to_bytes()
    (tmp_path / "p.npz").write_bytes(data)
    back = QueryPredictions.load(tmp_path / "p.npz")
    assert np.array_equal(back.probabilities, p.probabilities) and np.array_equal(back.predicted, p.predicted)
    assert back.class_names == p.class_names and back.replicate_seeds == (0, 1)
    with np.load(tmp_path / "p.npz", allow_pickle=False) as plain:  # what any numpy reads
        assert plain["probabilities"].dtype == np.float32 and plain["labels"].shape == (30, 10)


def harness(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=600, env=env)


@pytest.fixture(scope="module")
def predicted_run(imagefolder_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("predictions")
    out = base / "run"
    done = harness("run", "pixels-probe", "random-probe", "--preset", "smoke", "--episodes", "6", "--data-dir",
                   str(imagefolder_dir), "--cache-dir", str(base / "cache"), "--out", str(out), "--quiet")
    assert done.returncode == 0, done.stderr
    return out


def test_every_record_field_is_recomputed_from_its_predictions_file(predicted_run):
    recs = records(predicted_run)
    assert len(recs) == 4
    for r in recs.values():
        path = predicted_run / r["predictions"]
        assert digest(path.read_bytes()) == r["predictions_sha256"]
        p = QueryPredictions.load(path)
        assert p.probabilities.shape == (1, r["episodes"], r["ways"] * r["queries"], r["ways"])
        check_record_against_file(r, p)
        assert r["scores_as"] == "logits"


def test_report_shows_calibration_and_exports_one_row_per_query(predicted_run, tmp_path):
    page = (predicted_run / "leaderboard.md").read_text()
    assert "## Calibration" in page and "Confusion, 1-shot" in page and "Class accuracy (%)" in page
    assert (predicted_run / "run-reliability-1shot.png").is_file()
    assert (predicted_run / "run-per-class-5shot.png").is_file()
    done = harness("report", str(predicted_run), "--format", "csv", "--predictions", "--out", str(tmp_path / "p.csv"))
    assert done.returncode == 0, done.stderr
    import pandas as pd

    rows = pd.read_csv(tmp_path / "p.csv")
    recs = records(predicted_run)
    assert len(rows) == sum(r["episodes"] * r["ways"] * r["queries"] for r in recs.values())
    for (strategy, shots), r in recs.items():
        mine = rows[(rows["strategy"] == strategy) & (rows["shots"] == shots)]
        by_episode = mine.groupby("episode")["correct"].mean().to_numpy()
        assert np.allclose(by_episode, r["episode_accuracies"], atol=1e-6)
        probs = mine[[f"p{k}" for k in range(r["ways"])]].to_numpy()
        assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
        assert (mine["label_class"] == mine.apply(lambda x: x[f"class{x['label']}"], axis=1)).all()
    done = harness("report", str(predicted_run), "--format", "json", "--predictions", "--out",
                   str(tmp_path / "p.json"))
    assert done.returncode == 0, done.stderr
    assert len(json.loads((tmp_path / "p.json").read_text())) == len(rows)


def test_md_predictions_and_an_altered_file_are_one_line_errors(predicted_run, tmp_path):
    done = harness("report", str(predicted_run), "--predictions")
    assert done.returncode == 2 and "--format csv" in done.stderr and "Traceback" not in done.stderr
    copy = tmp_path / "run"
    subprocess.run(["cp", "-r", str(predicted_run), str(copy)], check=True)
    victim = next((copy / "predictions").glob("*.npz"))
    victim.write_bytes(victim.read_bytes()[:-10] + b"0123456789")
    done = harness("report", str(copy), "--format", "csv", "--predictions")
    assert done.returncode == 2 and "sha256" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (copy / "predictions.csv").exists()


def test_resume_reruns_a_unit_whose_predictions_file_is_gone(predicted_run, imagefolder_dir, tmp_path):
    copy = tmp_path / "run"
    subprocess.run(["cp", "-r", str(predicted_run), str(copy)], check=True)
    before = records(copy)
    (copy / before[("pixels-probe", 1)]["predictions"]).unlink()
    done = harness("run", "--resume", str(copy), "--quiet")
    assert done.returncode == 0, done.stderr
    after = records(copy)
    assert (copy / after[("pixels-probe", 1)]["predictions"]).is_file()
    assert after[("pixels-probe", 1)]["predictions_sha256"] == before[("pixels-probe", 1)]["predictions_sha256"]
    assert after[("pixels-probe", 1)]["episode_seconds"] != before[("pixels-probe", 1)]["episode_seconds"]  # rerun
    assert after[("random-probe", 5)]["episode_seconds"] == before[("random-probe", 5)]["episode_seconds"]  # kept


def test_runs_written_before_predictions_render_as_before_and_say_so(tmp_path):
    from reportdata import fixed_records, render_page, write_run

    from harness.report.calibration import ABSENT

    run = write_run(tmp_path / "old", fixed_records())
    page = render_page([run])
    assert ABSENT in page and "## Calibration" not in page and "Confusion" not in page
    assert "NLL" not in page.replace(ABSENT, "")  # no empty columns
    done = harness("report", str(run), "--format", "csv", "--predictions")
    assert done.returncode == 2 and "no per-query predictions" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_nll_and_brier_differences_are_paired_on_the_episodes(predicted_run):
    from harness.report import leaderboard_frame
    from harness.results import load_run

    frame = leaderboard_frame([load_run(predicted_run)])
    recs = records(predicted_run)
    for shots in (1, 5):
        group = frame[frame["shots"] == shots].set_index("strategy")
        best = group.index[group["rank"] == 1][0]
        other = next(s for s in group.index if s != best)
        for name in ("nll", "brier"):
            a = np.asarray(recs[(other, shots)][f"episode_{name}"][0])
            b = np.asarray(recs[(best, shots)][f"episode_{name}"][0])
            d = a - b  # the same episodes: paired
            half = float(np.std(d, ddof=1) / np.sqrt(len(d)) * scipy.stats.t.ppf(0.975, len(d) - 1))
            assert group.loc[other, f"{name}_delta"] == pytest.approx(d.mean(), abs=1e-9)
            assert group.loc[other, f"{name}_ci_high"] - group.loc[other, f"{name}_delta"] == pytest.approx(half)


@pytest.mark.parametrize("extra", [[], ["--format", "csv", "--predictions"]])
def test_report_of_predictions_imports_no_torch(predicted_run, tmp_path, extra):
    argv = [str(predicted_run), "--out", str(tmp_path / "out"), *extra]
    assert heavy_modules_of_report(argv, ROOT) == (0, [])
    assert (tmp_path / "out").is_file()
