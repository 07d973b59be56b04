"""The leaderboard plots: valid PNGs of fixed pixel size, byte-for-byte deterministic, stable and distinct
styles for many strategies, the Pareto front, the accuracy-vs-compute plot of budget scales."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from reportdata import episodes, fixed_records, record, scaled_records, write_run

from harness.report import leaderboard_frame
from harness.report.plot_style import DPI, OKABE_ITO, PER_SHOT_SIZES, SIZES, pareto_front, strategy_styles
from harness.report.plots import render_plots
from harness.results import load_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SINGLE_SCALE = [k for k in SIZES if k != "accuracy-vs-compute"]  # the compute plot needs several budget scales
STRATEGIES_14 = ["adversarial-finetune", "adversarial-probe", "fomaml", "frozen-features", "keras-frozen-features",
                 "keras-partial-finetune", "maml", "partial-finetune", "protonet", "reptile", "ssl-rotation",
                 "ssl-rotation-finetune", "ssl-simclr", "ssl-simclr-finetune"]


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def frame_of(tmp_path, records):
    results = load_run(write_run(tmp_path / "run", records))
    return leaderboard_frame([results]), results.header.protocol


def test_valid_pngs_of_fixed_size_and_deterministic(tmp_path):
    frame, protocol = frame_of(tmp_path, fixed_records())
    images = render_plots(frame, protocol, "stem")
    assert sorted(images) == sorted(f"stem-{k}.png" for k in SINGLE_SCALE)
    for kind in SINGLE_SCALE:
        w, h = SIZES[kind]
        assert png_size(images[f"stem-{kind}.png"]) == (round(w * DPI), round(h * DPI))
    assert render_plots(frame, protocol, "stem") == images  # byte for byte


def test_budget_scales_add_the_compute_plot(tmp_path):
    frame, protocol = frame_of(tmp_path, scaled_records())
    images = render_plots(frame, protocol, "s")
    assert sorted(images) == sorted(f"s-{k}.png" for k in SIZES)
    for kind, (w, h) in SIZES.items():
        assert png_size(images[f"s-{kind}.png"]) == (round(w * DPI), round(h * DPI))
    assert render_plots(frame, protocol, "s") == images


@pytest.mark.parametrize("count", [1, 14])
def test_size_does_not_depend_on_the_data(tmp_path, count):
    records = [record(f"strategy-{i:02d}", s, episodes(-(i % 5) + s // 5, [0, 1, i % 3]), f"fp{s}",
                      ms_per_episode=10.0 * (i + 1) * s, source_images_per_second=300.0 + 97 * i,
                      source_phase=f"Phase{i % 6}") for i in range(count) for s in (1, 5)]
    frame, protocol = frame_of(tmp_path, records)
    images = render_plots(frame, protocol, "s")
    for kind in SINGLE_SCALE:
        w, h = SIZES[kind]
        assert png_size(images[f"s-{kind}.png"]) == (round(w * DPI), round(h * DPI))


def test_flops_in_some_rows_only_still_plot(tmp_path):
    records = fixed_records()
    records[0] = record("frozen-features", 1, episodes(0, [1, 0, 0, 1]), records[0].episode_fingerprint,
                        source_flops=5e12, episode_flops=1e9)
    frame, protocol = frame_of(tmp_path, records)
    assert len(render_plots(frame, protocol, "s")) == len(SINGLE_SCALE)


def test_nothing_to_plot_without_successful_rows(tmp_path):
    failed = record("frozen-features", 1, None, "fp", status="failed", reason="ValueError: x")
    frame, protocol = frame_of(tmp_path, [failed])
    assert render_plots(frame, protocol, "s") == {}


def test_styles_are_stable_distinct_and_colour_blind_safe():
    names = [f"s{i:02d}" for i in range(24)]
    styles = strategy_styles(names)
    assert strategy_styles(list(reversed(names))) == styles  # order of appearance does not matter
    assert all(s["color"] in OKABE_ITO for s in styles.values())
    assert len({styles[n]["color"] for n in names[:8]}) == 8  # up to 8 strategies: distinct colours
    looks = [(s["color"], s["marker"], s["linestyle"], s["markerfacecolor"] == "white") for s in styles.values()]
    assert len(set(looks)) == 24
    for a in range(24):  # two strategies of one colour differ in marker, line style and fill, all three
        for b in range(a + 1, 24):
            if looks[a][0] == looks[b][0]:
                assert all(looks[a][k] != looks[b][k] for k in (1, 2)), (a, b)
                assert looks[a][3] != looks[b][3] or abs(a - b) >= 16


def test_fourteen_strategies_have_fourteen_looks():
    styles = strategy_styles(STRATEGIES_14)
    assert len({(s["color"], s["marker"], s["linestyle"], s["markerfacecolor"]) for s in styles.values()}) == 14
    assert len({(s["color"], s["linestyle"]) for s in styles.values()}) == 14  # even the lines alone differ


def test_pareto_front_hand_example():
    # (ms per episode, accuracy): 0 is cheapest; 1 is dearer and better; 2 is dominated by 1; 3 is best
    points = [(10.0, 50.0), (20.0, 60.0), (30.0, 55.0), (100.0, 70.0), (100.0, 65.0)]
    assert pareto_front(points) == [0, 1, 3]
    assert pareto_front([]) == []


def with_calibration(r, shift: float):
    """A record with the prediction-derived fields the calibration plots read."""
    bins = 15
    count = [0] * 10 + [5, 10, 20, 40, 25]
    return dataclasses.replace(
        r, reliability={"bins": bins, "count": count,
                        "confidence": [None] * 10 + [0.7, 0.77, 0.83, 0.9, 0.97],
                        "accuracy": [None] * 10 + [max(0.0, a - shift) for a in (0.6, 0.7, 0.8, 0.85, 0.95)]},
        class_accuracy={c: {"accuracy": 0.5 + 0.05 * i - shift, "ci95": 0.02, "episodes": 20, "queries": 60}
                        for i, c in enumerate(["dog", "frog", "horse", "ship", "truck"])})


def test_calibration_plots_per_shot_setting_of_fixed_size_and_deterministic(tmp_path):
    records = [with_calibration(r, 0.01 * i) if r.status == "ok" else r for i, r in enumerate(fixed_records())]
    frame, protocol = frame_of(tmp_path, records)
    images = render_plots(frame, protocol, "stem")
    shots = sorted({r.shots for r in records if r.status == "ok"})
    per_shot = [f"stem-{kind}-{k}shot.png" for kind in PER_SHOT_SIZES for k in shots]
    assert sorted(images) == sorted([f"stem-{k}.png" for k in SINGLE_SCALE] + per_shot)
    for name in per_shot:
        w, h = PER_SHOT_SIZES[name.split("-", 1)[1].rsplit("-", 1)[0]]
        assert png_size(images[name]) == (round(w * DPI), round(h * DPI))
    assert render_plots(frame, protocol, "stem") == images  # byte for byte
