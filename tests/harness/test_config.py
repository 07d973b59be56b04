from dataclasses import dataclass, field
from typing import Literal

import pytest

from harness.config import apply_overrides, parse_set, read_toml
from harness.errors import UsageError


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
    table = read_toml(good)
    assert table == {"s": {"C": 3, "mode": "transductive", "source.steps": 7}}
    assert apply_overrides(Outer(), table["s"], "s") == Outer(source=Inner(steps=7), C=3.0, mode="transductive")
    bad = tmp_path / "bad.toml"
    bad.write_text("[s\nC = 3\n")
    with pytest.raises(UsageError, match="is not valid TOML"):
        read_toml(bad)
    with pytest.raises(UsageError, match="does not exist"):
        read_toml(tmp_path / "missing.toml")
    with pytest.raises(UsageError, match="expected a value of type int"):
        apply_overrides(Outer(), {"iters": "ten"}, "s")
