"""Cluster sizing (harness/estimate.py): the list schedule on synthetic unit times, unit times from records,
and ``python -m harness plan``."""

from __future__ import annotations

import dataclasses
import itertools

import pytest
from reportdata import fixed_records, record, write_run

from harness.cli import main
from harness.estimate import TimedUnit, duration, path_lengths, schedule, units_of, wall_time_table
from harness.schema import RunHeader


def ev(name: str, seconds: float, *needs: str) -> TimedUnit:
    return TimedUnit(f"eval:{name}", seconds, tuple(f"source:{n}" for n in needs))


def src(name: str, seconds: float, cached: bool = False) -> TimedUnit:
    return TimedUnit(f"source:{name}", seconds, (), cached)


def check_valid(units: list[TimedUnit], s) -> None:
    """Every unit runs once, after everything it needs, and no worker runs two units at once."""
    by_id = {u.id: u for u in units}
    assert set(s.starts) == set(by_id)
    for u in units:
        for need in u.needs:
            assert s.starts[u.id] >= s.starts[need] + by_id[need].seconds - 1e-9, (u.id, need)
    for w in range(s.workers):
        spans = sorted((s.starts[i], s.starts[i] + by_id[i].seconds) for i in s.starts if s.worker_of[i] == w)
        assert all(a[1] <= b[0] + 1e-9 for a, b in itertools.pairwise(spans))
    assert s.makespan == pytest.approx(max(s.starts[i] + by_id[i].seconds for i in s.starts))


def test_independent_units_are_longest_first():
    units = [TimedUnit(f"u{i}", t) for i, t in enumerate([3, 5, 3, 4, 3])]
    s = schedule(units, 2)
    check_valid(units, s)
    assert s.makespan == 10  # LPT: 5 | 4, then 3, 3, 3 (the optimum would be 9)
    assert s.starts["u1"] == s.starts["u3"] == 0
    assert schedule(units, 1).makespan == 18 and schedule(units, 5).makespan == 5


def test_sources_run_before_their_evaluations_and_the_long_chain_first():
    # s: a long source with four short evaluations; t: a short source whose evaluation is long
    units = [src("s", 10), src("t", 1), *[ev(f"e{i}", 2, "s") for i in range(4)], ev("f", 20, "t")]
    assert path_lengths(units)["source:t"] == 21 and path_lengths(units)["source:s"] == 12
    one = schedule(units, 1)
    check_valid(units, one)
    assert one.makespan == sum(u.seconds for u in units)  # one worker never idles
    two = schedule(units, 2)
    check_valid(units, two)
    assert two.starts["eval:f"] == 1 and two.makespan == 21  # the critical path t -> f
    many = schedule(units, 16)
    check_valid(units, many)
    assert many.makespan == 21  # the critical path bounds any cluster


def test_a_shared_source_is_trained_once_and_replicates_split_its_time():
    units = units_of([
        record("a", 1, [0.5], "fp", source_keys=["k1"], source_seconds=100.0, episode_seconds=4.0),
        record("b", 1, [0.5], "fp", source_keys=["k1"], source_seconds=100.0, episode_seconds=6.0,
               source_cached=True),  # equal keys: the same source unit
        record("c", 1, [0.5], "fp", source_keys=["k2", "k3"], source_seconds=60.0, episode_seconds=2.0,
               source_cached=True),  # two replicates from the cache
        record("d", 1, None, "fp", status="failed", reason="x"),  # no times: left out
    ])
    times = {u.id: u.seconds for u in units}
    assert times == {"source:k1": 100.0, "source:k2": 30.0, "source:k3": 30.0, "eval:a:1:1": 4.0,
                     "eval:b:1:1": 6.0, "eval:c:1:1": 2.0}
    assert [u.cached for u in units[:3]] == [False, True, True]  # k1 was trained in that run (row a)
    assert next(u for u in units if u.id == "eval:c:1:1").needs == ("source:k2", "source:k3")
    warm = {u.id: u.seconds for u in units_of([
        record("c", 1, [0.5], "fp", source_keys=["k2"], source_seconds=60.0, source_cached=True)], warm_cache=True)}
    assert warm["source:k2"] == 0.0


def test_times_scale_to_another_presets_budgets_and_episodes(tmp_path, capsys):
    from harness.presets import get_preset

    paper = get_preset("paper")
    rec = record("a", 1, [0.5], "fp", source_keys=["k"], budget_group="meta", source_budget_images=20_000,
                 source_seconds=20.0, episode_seconds=30.0, episodes=300, budget_scale=0.5)
    times = {u.id: u.seconds for u in units_of([rec], preset=paper)}
    # meta: 20,000,000 x 0.5 / 20,000 images = 500x the source time; 2,000 / 300 episodes
    assert times == {"source:k": pytest.approx(20.0 * 500), "eval:a:1:0.5": pytest.approx(30.0 * 2000 / 300)}
    assert {u.id: u.seconds for u in units_of([rec])} == {"source:k": 20.0, "eval:a:1:0.5": 30.0}
    run = write_run(tmp_path / "run", fixed_records())
    assert main(["plan", str(run), "--workers", "4", "--preset", "paper"]) == 0
    assert "scaled to the paper preset (2,000 episodes" in capsys.readouterr().out
    assert main(["plan", str(run), "--preset", "papr"]) == 2
    assert "unknown preset 'papr' (did you mean 'paper'?)" in capsys.readouterr().err


def test_random_plans_are_valid_and_never_beat_the_bounds():
    import random

    rng = random.Random(0)
    for _ in range(30):
        sources = [src(f"s{i}", rng.uniform(0, 50)) for i in range(rng.randint(1, 6))]
        names = [s.id.removeprefix("source:") for s in sources]
        evals = [ev(f"e{i}", rng.uniform(0, 10), *rng.sample(names, min(len(names), rng.randint(1, 2))))
                 for i in range(rng.randint(1, 15))]
        units = [*sources, *evals]
        total, critical = sum(u.seconds for u in units), max(path_lengths(units).values())
        for n in (1, 2, 3, 8):
            s = schedule(units, n)
            check_valid(units, s)
            assert max(total / n, critical) - 1e-9 <= s.makespan <= total / n + critical + 1e-9  # Graham's bound


def test_plan_command_prints_the_estimates(tmp_path, capsys):
    run = write_run(tmp_path / "run", fixed_records())
    assert main(["plan", str(run), "--workers", "1,2", "4"]) == 0
    out = capsys.readouterr().out
    assert "estimated wall time" in out and "4 failed or skipped rows without measured times" in out
    lines = [line.split() for line in out.splitlines() if line.startswith(" ") and line.strip()[:1].isdigit()]
    assert [int(line[0]) for line in lines] == [1, 2, 4]
    text = wall_time_table(run, [1, 64])  # one source key (300 s), 6 ok evaluations of 2 s
    assert "1 source unit and 6 evaluation units, 5m12s" in text
    assert text.count("5m12s") == 3 and "5m02s" in text  # 1 worker: the sum; 64: the critical path
    assert duration(300.0) == "5m00s" and duration(7300) == "2h01m" and duration(2.25) == "2.2 s"


def test_plan_bad_input_exits_2_with_one_line(tmp_path, capsys):
    assert main(["plan", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "is not a run directory" in err and err.count("\n") == 1
    run = write_run(tmp_path / "run", fixed_records())
    with pytest.raises(SystemExit) as e:
        main(["plan", str(run), "--workers", "0"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "positive integers" in err and err.count("\n") == 1
    failed_only = write_run(tmp_path / "failed", [r for r in fixed_records() if r.status != "ok"])
    assert main(["plan", str(failed_only)]) == 2
    assert "no finished (ok) record" in capsys.readouterr().err


def test_times_scale_by_flop_budgets_in_supervised_image_equivalents():
    from harness.estimate import run_budgets
    from harness.presets import get_preset

    paper, matched = get_preset("paper"), get_preset("quick-matched")
    # a second-order MAML row: its 20,000-image FLOP budget bought it only 14,300 of its own images
    rec = record("a", 1, [0.5], "fp", source_keys=["k"], budget_group="meta", source_budget_images=14_300,
                 matched_flops=20_000 * 8.14e7, source_seconds=20.0, episode_seconds=30.0, episodes=300)
    header = RunHeader(preset_budgets={"pretrain": 100_000, "meta": 20_000, "ssl": 40_000, "adversarial": 40_000},
                       run={"budget": ["meta=10000"], "match_compute": False})
    budgets = run_budgets(header)
    assert budgets["meta"] == 10_000 and budgets["pretrain"] == 100_000
    times = {u.id: u.seconds for u in units_of([rec], preset=paper, budgets=budgets)}
    assert times["source:k"] == pytest.approx(20.0 * 20_000_000 / 10_000)  # FLOP budgets, not images
    # to a matched preset: every group at the pretrain group's budget; from a matched run likewise
    assert units_of([rec], preset=matched, budgets=budgets)[0].seconds == pytest.approx(20.0 * 40_000 / 10_000)
    from_matched = run_budgets(dataclasses.replace(header, run={"match_compute": True}))
    assert from_matched["meta"] == 100_000
    assert units_of([rec], preset=paper, budgets=from_matched)[0].seconds == pytest.approx(20.0 * 200)
