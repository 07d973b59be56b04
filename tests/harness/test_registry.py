from dataclasses import dataclass, field
from importlib.metadata import EntryPoint

import pytest

from harness import registry
from harness.errors import UsageError
from harness.strategy import Strategy
from strategies.supervised import SupervisedPretraining


def test_builtins_registered_with_family_and_description():
    entries = registry.load_all()
    assert {"frozen-features", "partial-finetune"} <= set(entries)
    assert entries["frozen-features"].family == "transfer"
    assert entries["frozen-features"].description


def test_name_defaults_to_kebab_case_and_duplicates_are_errors():
    @dataclass
    class MyNewProbe(Strategy):
        source: SupervisedPretraining = field(default_factory=SupervisedPretraining)

        def run_episode(self, model, task):
            raise NotImplementedError

    try:
        registry.register(MyNewProbe)
        assert registry.get("my-new-probe").load() is MyNewProbe
        with pytest.raises(ValueError, match="already registered"):
            registry.register(MyNewProbe)
    finally:
        registry.unregister("my-new-probe")


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UsageError, match="did you mean 'frozen-features'") as e:
        registry.get("frozen-feature")
    assert "partial-finetune" in str(e.value)


def test_lazy_entry_imports_only_when_loaded():
    registry.register_lazy("lazy-probe", "strategies.frozen_features:FrozenFeatures", family="transfer",
                           description="lazy")
    try:
        entry = registry.get("lazy-probe")
        assert isinstance(entry.target, str)
        assert entry.load().__name__ == "FrozenFeatures"
    finally:
        registry.unregister("lazy-probe")


def test_missing_requirement_gives_install_hint():
    registry.register_lazy("needs-missing", "nowhere:Nothing", family="transfer", description="x",
                           requires="surely_not_installed_pkg")
    try:
        entry = registry.get("needs-missing")
        assert not entry.available()
        with pytest.raises(UsageError, match=r"pip install -e \"\.\[surely_not_installed_pkg\]\""):
            entry.load()
    finally:
        registry.unregister("needs-missing")


def test_third_party_entry_points_are_registered(monkeypatch):
    ep = EntryPoint("third-party-probe", "strategies.frozen_features:FrozenFeatures", registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep] if group == registry.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(registry, "_loaded", False)
    try:
        assert registry.get("third-party-probe").load().__name__ == "FrozenFeatures"
    finally:
        registry.unregister("third-party-probe")
