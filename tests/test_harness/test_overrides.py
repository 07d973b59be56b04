from dataclasses import dataclass, field
from typing import Literal

import pytest

from harness.errors import UsageError
from harness.overrides import apply_overrides, apply_strategy_overrides, parse_set, read_toml


@dataclass
class Inner:
    lr: float = 0.1
    steps: int = 5


@dataclass
class Outer:
    source: Inner = field(default_factory=Inner)
    C: float = 1.0
    iters: int = 10
    flag: bool = False
    mode: Literal["inductive", "transductive"] = "inductive"


def test_parse_set_groups_by_strategy():
    assert parse_set(["a.C=2", "a.source.lr=0.5", "b.x=y"]) == {"a": {"C": "2", "source.lr": "0.5"}, "b": {"x": "y"}}


@pytest.mark.parametrize("item", ["a.C", "C=2", ".C=2", "a.=2"])
def test_parse_set_malformed(item):
    with pytest.raises(UsageError, match="malformed; write --set STRATEGY.PARAM=VALUE"):
        parse_set([item])


def test_overrides_typed_and_nested():
    out = apply_overrides(Outer(), {"C": "2.5", "iters": "3", "flag": "true", "mode": "transductive",
                                    "source.lr": "0.01"}, "s")
    assert out == Outer(source=Inner(lr=0.01), C=2.5, iters=3, flag=True, mode="transductive")
    assert Outer() == Outer()  # the default instance is untouched


@pytest.mark.parametrize("overrides, message", [
    ({"CC": "1"}, "unknown parameter 'CC' .*did you mean 'C'"),
    ({"iters": "1.5"}, "expected a value of type int, got '1.5'"),
    ({"C": "abc"}, "expected a value of type float"),
    ({"flag": "maybe"}, "expected a value of type bool"),
    ({"mode": "both"}, "'both' is not one of 'inductive', 'transductive'"),
    ({"source": "1"}, "is a group of parameters"),
    ({"source.nope": "1"}, r"s.source: unknown parameter 'nope'"),
    ({"C.x": "1"}, "is a single value"),
])
def test_bad_overrides(overrides, message):
    with pytest.raises(UsageError, match=message):
        apply_overrides(Outer(), overrides, "s")


def test_toml_typed_values_and_errors(tmp_path):
    good = tmp_path / "good.toml"
    good.write_text('[s]\nC = 3\nmode = "transductive"\n[s.source]\nsteps = 7\n')
    run, table = read_toml(good)
    assert run == {} and table == {"s": {"C": 3, "mode": "transductive", "source.steps": 7}}
    assert apply_overrides(Outer(), table["s"], "s") == Outer(source=Inner(steps=7), C=3.0, mode="transductive")
    bad = tmp_path / "bad.toml"
    bad.write_text("[s\nC = 3\n")
    with pytest.raises(UsageError, match="is not valid TOML"):
        read_toml(bad)
    with pytest.raises(UsageError, match="does not exist"):
        read_toml(tmp_path / "missing.toml")
    with pytest.raises(UsageError, match="expected a value of type int"):
        apply_overrides(Outer(), {"iters": "ten"}, "s")


def test_strategy_overrides_split_between_adapter_and_source():
    from harness.suite import get_row

    strategy = get_row("partial-finetune").build()
    changed = apply_strategy_overrides(strategy, {"steps": "7", "source.lr": "0.2", "source.backbone": "resnet12"},
                                       "partial-finetune")
    assert changed.adapter.steps == 7 and changed.source.lr == 0.2 and changed.source.backbone == "resnet12"
    assert strategy.adapter.steps == 50 and strategy.source.lr == 0.05  # the original is untouched
    with pytest.raises(UsageError, match=r"unknown parameter 'step' \(did you mean 'steps'\?\); parameters: .*"
                                         r"source\.lr"):
        apply_strategy_overrides(strategy, {"step": "1"}, "partial-finetune")
    with pytest.raises(UsageError, match=r"partial-finetune.source: unknown parameter 'lrr'"):
        apply_strategy_overrides(strategy, {"source.lrr": "1"}, "partial-finetune")


def test_optional_and_list_types():
    from typing import Optional

    @dataclass
    class Opt:
        width: Optional[int] = None  # noqa: UP045 - the runtime form of `int | None` in older code
        names: list[int] = field(default_factory=list)

    assert apply_overrides(Opt(), {"width": "8", "names": "1,5"}, "o") == Opt(8, [1, 5])
    assert apply_overrides(Opt(width=3), {"width": "none"}, "o") == Opt(None, [])
