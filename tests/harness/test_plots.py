"""The leaderboard plots: valid PNGs of fixed pixel size, stable colours, the Pareto front."""

from __future__ import annotations

import struct

import pytest
from reportdata import episodes, fixed_records, record, write_run

from harness.report import leaderboard_frame
from harness.report.plots import DPI, OKABE_ITO, SIZES, pareto_front, render_plots, strategy_styles
from harness.results import load_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def frame_of(tmp_path, records):
    config, env, recs = load_run(write_run(tmp_path / "run", records))
    return leaderboard_frame([(config, env, recs)]), config["protocol"]


def test_three_valid_pngs_of_fixed_size_and_deterministic(tmp_path):
    frame, protocol = frame_of(tmp_path, fixed_records())
    images = render_plots(frame, protocol, "stem")
    assert sorted(images) == sorted(f"stem-{k}.png" for k in SIZES)
    for kind, (w, h) in SIZES.items():
        assert png_size(images[f"stem-{kind}.png"]) == (round(w * DPI), round(h * DPI))
    assert render_plots(frame, protocol, "stem") == images  # byte for byte


@pytest.mark.parametrize("count", [1, 12])
def test_size_does_not_depend_on_the_data(tmp_path, count):
    records = [record(f"strategy-{i:02d}", 5, episodes(-(i % 5), [0, 1]), "fp", ms_per_episode=10.0 * (i + 1))
               for i in range(count)]
    frame, protocol = frame_of(tmp_path, records)
    images = render_plots(frame, protocol, "s")
    for kind, (w, h) in SIZES.items():
        assert png_size(images[f"s-{kind}.png"]) == (round(w * DPI), round(h * DPI))


def test_nothing_to_plot_without_successful_rows(tmp_path):
    failed = record("frozen-features", 1, None, "fp", status="failed", reason="ValueError: x")
    frame, protocol = frame_of(tmp_path, [failed])
    assert render_plots(frame, protocol, "s") == {}


def test_styles_are_stable_distinct_and_colour_blind_safe():
    names = [f"s{i:02d}" for i in range(12)]
    styles = strategy_styles(names)
    assert strategy_styles(list(reversed(names))) == styles  # order of appearance does not matter
    assert all(s["color"] in OKABE_ITO for s in styles.values())
    combos = {(s["color"], s["marker"], s["linestyle"]) for s in styles.values()}
    assert len(combos) == 12
    assert len({styles[n]["color"] for n in names[:8]}) == 8  # up to 8 strategies: distinct colours


def test_pareto_front_hand_example():
    # (ms per episode, accuracy): 0 is cheapest; 1 is dearer and better; 2 is dominated by 1; 3 is best
    points = [(10.0, 50.0), (20.0, 60.0), (30.0, 55.0), (100.0, 70.0), (100.0, 65.0)]
    assert pareto_front(points) == [0, 1, 3]
    assert pareto_front([]) == []
