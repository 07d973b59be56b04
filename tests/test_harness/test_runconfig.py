"""One RunConfig: options generated from its fields, precedence defaults < preset < TOML [run] < CLI."""

from __future__ import annotations

import dataclasses

import pytest

from harness.cli import build_parser
from harness.errors import UsageError
from harness.runconfig import RunConfig, from_layers, settings


def given(argv: list[str]) -> dict:
    args = build_parser().parse_args(["run", *argv])
    return {k: v for k, v in vars(args).items() if k not in ("handler", "command")}


def test_every_field_is_an_option_with_help():
    run = next(a for a in build_parser()._subparsers._group_actions[0].choices.items() if a[0] == "run")[1]
    dests = {a.dest for a in run._actions}
    for f in settings():
        assert f.name in dests and f.metadata["help"], f.name


def test_defaults_then_preset_then_toml_then_cli(tmp_path):
    config, _ = from_layers(given([]))
    assert config == RunConfig(episodes=300) and config.origins["episodes"] == "preset"
    config, _ = from_layers(given(["--preset", "smoke"]))
    assert config.episodes == 8 and config.origins["preset"] == "command line"
    toml = tmp_path / "c.toml"
    toml.write_text('[run]\npreset = "smoke"\nepisodes = 20\nshots = [1, 10]\ndata_dir = "data"\n'
                    '[frozen-features]\nC = 2.0\n')
    config, tables = from_layers(given(["--config", str(toml)]))
    assert (config.preset, config.episodes, config.shots) == ("smoke", 20, [1, 10])
    assert config.data_dir == str(tmp_path / "data")  # relative to the TOML file
    assert tables == {"frozen-features": {"C": 2.0}} and config.origins["episodes"] == "config"
    config, _ = from_layers(given(["--config", str(toml), "--episodes", "5", "--shots", "1,5"]))
    assert (config.episodes, config.shots, config.preset) == (5, [1, 5], "smoke")


def test_aliases_and_lists():
    config, _ = from_layers(given(["--split", "cifar10-5-5-swapped", "--shots", "1", "5", "--set", "a.b=1",
                                   "--set", "c.d=2"]))
    assert config.dataset == "cifar10-5-5-swapped" and config.shots == [1, 5] and config.set == ["a.b=1", "c.d=2"]


@pytest.mark.parametrize("text, message", [
    ("[run]\nepsiodes = 3\n", "unknown [run] setting 'epsiodes' (did you mean 'episodes'?)"),
    ("[run]\nresume = 'x'\n", "unknown [run] setting 'resume'"),
    ("[run]\nways = 'five'\n", "[run] ways: expected a value of type int"),
    ("[run]\nways = 0\n", "[run] ways must be positive, got 0"),
    ("run = 3\n", "'run' must be a [run] table"),
])
def test_bad_run_tables(tmp_path, text, message):
    (tmp_path / "c.toml").write_text(text)
    with pytest.raises(UsageError) as e:
        from_layers(given(["--config", str(tmp_path / "c.toml")]))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_recorded_settings_sit_below_the_command_line():
    config, _ = from_layers(given(["--quiet"]), recorded={"preset": "smoke", "episodes": 8, "strategies": ["maml"]})
    assert (config.preset, config.episodes, config.strategies, config.quiet) == ("smoke", 8, ["maml"], True)
    assert config.origins["episodes"] == "run directory"


def test_to_json_round_trips():
    config = RunConfig(strategies=["maml"], shots=[1], episodes=5)
    assert RunConfig(**config.to_json()) == config
    assert "origins" not in config.to_json() and dataclasses.is_dataclass(config)


def test_queries_auto_and_the_source_dataset(tmp_path):
    from harness.datasets.domains import wants_auto_queries

    config, _ = from_layers(given(["--queries", "auto", "--source-dataset", "cifar10", "--strict-leaks"]))
    assert (config.queries, config.source_dataset, config.strict_leaks) == ("auto", "cifar10", True)
    assert wants_auto_queries(config)
    (tmp_path / "c.toml").write_text('[run]\nqueries = "AUTO"\n')
    assert from_layers(given(["--config", str(tmp_path / "c.toml")]))[0].queries == "auto"
    (tmp_path / "c.toml").write_text("[run]\nqueries = 7\n")
    assert from_layers(given(["--config", str(tmp_path / "c.toml")]))[0].queries == 7
    (tmp_path / "c.toml").write_text('[run]\nqueries = "many"\n')
    with pytest.raises(UsageError, match=r"\[run\] queries: expected a value of type int"):
        from_layers(given(["--config", str(tmp_path / "c.toml")]))
    # the default: 15, and auto for a TOML dataset unless --queries is given
    toml = tmp_path / "mine.toml"
    toml.write_text("")
    assert not wants_auto_queries(from_layers(given([]))[0]) and from_layers(given([]))[0].queries == 15
    assert wants_auto_queries(from_layers(given(["--dataset", str(toml)]))[0])
    assert not wants_auto_queries(from_layers(given(["--dataset", str(toml), "--queries", "15"]))[0])
