"""The protocol is one value: the run header's ``protocol``, the resume checks (of ``--out`` and of the options
given with ``--resume``), what units carry and the cache keys' protocol part all derive from it. The tests try to
resume a run directory under another protocol, one field at a time, by every door."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from protocols import protocol

from harness.cli import main
from harness.errors import UsageError
from harness.protocol import Protocol
from harness.resolve import check_out, source_key
from harness.runconfig import RunConfig, settings
from harness.schema import RunHeader

OTHER = {"preset": "paper", "dataset": "other", "ways": 3, "queries": 10, "episodes": 7, "seed": 1, "replicates": 2,
         "precision": "bf16", "device_type": "cuda", "data_fingerprint": "fp2", "backbone": "resnet12"}


def write_header(run_dir: Path, p: Protocol, run: dict | None = None, drop: tuple[str, ...] = ()) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    recorded = {k: v for k, v in p.header().items() if k not in drop}
    (run_dir / "config.json").write_text(json.dumps(RunHeader(protocol=recorded, run=run or {}).to_json()))
    return run_dir


def test_every_resume_field_is_in_the_header_and_nothing_else_is():
    assert set(Protocol.resume_keys()) == set(OTHER)  # a new field must be classified: resumable or not
    assert list(protocol().header()) == list(Protocol.resume_keys())
    config_fields = {f.name for f in settings()}
    assert {"device_type", "data_fingerprint"} == set(Protocol.resume_keys()) - config_fields  # derived, not given


@pytest.mark.parametrize("key", sorted(OTHER))
def test_a_run_directory_of_another_protocol_is_refused_naming_the_field(tmp_path, key):
    run_dir = write_header(tmp_path / "run", protocol())
    check_out(run_dir, protocol())  # the same protocol resumes
    other = dataclasses.replace(protocol(), **{key: OTHER[key]})
    with pytest.raises(UsageError, match=f"different {key} .*{key} .* there, {OTHER[key]!r} now"):
        check_out(run_dir, other)


def test_what_a_resume_may_add_is_not_part_of_the_check(tmp_path):
    run_dir = write_header(tmp_path / "run", protocol())
    check_out(run_dir, dataclasses.replace(protocol(), shots=(1, 5, 10), budget_scales=(0.5, 1.0), tune=4,
                                           tune_episodes=20, deterministic=False))


def test_a_header_from_before_the_backbone_was_in_the_protocol_reads_it_from_the_run_settings(tmp_path):
    old = write_header(tmp_path / "old", protocol(backbone="resnet12"), run={"backbone": "resnet12"},
                       drop=("backbone",))
    check_out(old, protocol(backbone="resnet12"))
    with pytest.raises(UsageError, match="different backbone"):
        check_out(old, protocol())


def test_resume_options_that_contradict_the_recorded_protocol_are_refused(tmp_path, capsys):
    """``--resume DIR --backbone X`` (a protocol field given as an option) is refused before anything loads."""
    run_dir = write_header(tmp_path / "run", protocol(), run={"backbone": None, "ways": 5, "preset": "quick"})
    assert main(["run", "--resume", str(run_dir), "--backbone", "resnet12"]) == 2
    err = capsys.readouterr().err
    assert "the run recorded backbone None, the command gives 'resnet12'" in err and err.count("\n") == 1
    assert main(["run", "--resume", str(run_dir), "--ways", "3"]) == 2
    assert "recorded ways 5" in capsys.readouterr().err


def test_budget_scales_are_normalised_once_and_counts_come_settled():
    config = RunConfig(budget_scale=[0.5, 1, 0.5], queries=10, episodes=20)
    data = type("Data", (), {"name": "d", "fingerprint": "f"})()
    p = Protocol.of(config, data, "cpu")
    assert p.budget_scales == (0.5, 1.0) and all(isinstance(s, float) for s in p.budget_scales)
    assert (p.queries, p.episodes, p.tune, p.tune_episodes) == (10, 20, 0, 0)  # tune off: no validation episodes


def test_the_cache_key_follows_the_protocol_fields_a_model_depends_on():
    from types import SimpleNamespace

    from strategies.maml import MamlMetaTraining
    from strategies.supervised import SupervisedPretraining

    data = SimpleNamespace(fingerprint="fp")

    def key(phase, p):
        return source_key(phase, 0, data, p, 1000)

    sup, maml = SupervisedPretraining(), MamlMetaTraining(shots=1)
    assert key(sup, protocol()) == key(sup, protocol(ways=3, queries=5, episodes=9))  # not per ways: one model
    assert key(maml, protocol()) != key(maml, protocol(ways=3))  # a ways-way head
    assert key(maml, protocol()) != key(maml, protocol(queries=5))  # trained on 15-query tasks
    assert key(maml, protocol()) != key(MamlMetaTraining(shots=5), protocol())  # per shots: the phase's own field
    for field, value in (("precision", "bf16"), ("device_type", "cuda"), ("deterministic", False)):
        assert key(sup, protocol()) != key(sup, protocol(**{field: value})), field


def test_a_per_shots_phase_trains_one_model_per_shot_setting_unless_its_shots_are_given():
    """``shots`` reaches a per-shots source phase as its own field, set by the planner (no SourceData.shots)."""
    from harness.suite import get_row
    from harness.units import Budget, plan_units

    def plan(strategies):
        return plan_units(strategies, [1, 5], [1.0], [0], lambda s, scale: Budget(100),
                          lambda s, seed, images: source_key(s.source, seed, SimpleNamespace(fingerprint="fp"),
                                                             protocol(), images))

    from types import SimpleNamespace

    maml, frozen = get_row("maml").build(), get_row("frozen-features").build()
    planned = plan([maml, frozen])
    trained = sorted((u.strategy.name, getattr(u.strategy.source, "shots", None)) for u in planned.sources.values())
    assert trained == [("frozen-features", None), ("maml", 1), ("maml", 5)]  # one supervised model for both
    for e in planned.evaluations:  # the evaluation unit carries the phase as trained (its record's source_params)
        assert e.strategy.source.params().get("shots") == (e.shots if e.strategy.name == "maml" else None)
    fixed = dataclasses.replace(maml, source=dataclasses.replace(maml.source, shots=5))  # --set maml.source.shots=5
    assert [u.strategy.source.shots for u in plan([fixed]).sources.values()] == [5]
