"""The registries: one decorator, names from objects, duplicates are errors, did-you-mean, lazy targets,
entry points; and the strategy table of (pretrainer, adapter) rows."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from harness import registry
from harness.errors import UsageError
from harness.registry import ADAPTERS, BACKBONES, DATASETS, EXECUTORS, PRETRAINERS, STRATEGIES, Registry
from harness.suite import get_row

ROOT = Path(__file__).resolve().parents[2]


def test_builtins_registered_with_family_and_description():
    assert {"frozen-features", "partial-finetune", "maml", "protonet"} <= set(STRATEGIES.names())
    row = get_row("frozen-features")
    assert (row.source, row.adapter, row.family) == ("supervised", "linear-probe", "transfer")
    assert get_row("ssl-rotation").family == "self-supervised" and get_row("maml").family == "meta-learning"
    assert row.description and get_row("fomaml").source_params == {"first_order": True}
    assert {"conv4", "resnet12"} <= set(BACKBONES.names()) and "local" in EXECUTORS.names()
    assert {"cifar10-5-5", "cifar10-5-5-swapped", "cifar-fs", "fc100"} <= set(DATASETS.names())


def test_name_defaults_to_kebab_case_and_duplicates_are_errors():
    reg: Registry = Registry("widget")

    @reg.register
    class MyNewProbe:
        """A widget."""

    assert reg.load("my-new-probe") is MyNewProbe and reg.get("my-new-probe").description == "A widget."
    with pytest.raises(ValueError, match="widget 'my-new-probe' is already registered"):
        reg.register(MyNewProbe)

    @reg.register(name="explicit")
    class Other(MyNewProbe):  # a subclass gets its own entry and name, never its parent's
        pass

    assert reg.load("explicit") is Other and reg.load("my-new-probe") is MyNewProbe


def test_unknown_name_suggests_the_closest():
    with pytest.raises(UsageError, match="unknown strategy 'frozen-feature' \\(did you mean 'frozen-features'") as e:
        STRATEGIES.get("frozen-feature")
    assert "partial-finetune" in str(e.value)


def test_lazy_entry_imports_only_when_loaded():
    reg: Registry = Registry("widget")
    reg.register_lazy("lazy", "strategies.probe:LinearProbe", description="lazy")
    entry = reg.get("lazy")
    assert isinstance(entry.target, str) and entry.description == "lazy"
    assert entry.load().__name__ == "LinearProbe" and not isinstance(entry.target, str)


def test_missing_requirement_gives_install_hint():
    reg: Registry = Registry("pretrainer")
    reg.register_lazy("needs-missing", "nowhere:Nothing", requires="surely_not_installed_pkg")
    entry = reg.get("needs-missing")
    assert not entry.available()
    hint = r"needs surely_not_installed_pkg.*pip install -e \"\.\[surely_not_installed_pkg\]\""
    with pytest.raises(UsageError, match=hint):
        entry.load()


def test_third_party_entry_points_register_rows(monkeypatch, tmp_path):
    """A plugin module registers its adapter and row with @register(source=...); the entry point names it."""
    (tmp_path / "my_plugin.py").write_text(
        "from dataclasses import dataclass\n"
        "import torch\n"
        "from harness.phases import EpisodeAdapter\n"
        "from harness.suite import register\n\n"
        "@register(source='supervised', name='plugin-probe')\n"
        "@dataclass\n"
        "class PluginProbe(EpisodeAdapter):\n"
        "    '''A plugin.'''\n"
        "    def adapt_episode(self, model, task, source):\n"
        "        return torch.zeros(len(task.query_images), task.ways)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = EntryPoint("plugin-probe", "my_plugin:PluginProbe", "harness.strategies")
    monkeypatch.setattr(registry, "entry_points", lambda group: [ep] if group == "harness.strategies" else [])
    entries = dict(STRATEGIES._entries)
    monkeypatch.setattr(STRATEGIES, "_entries", entries)
    monkeypatch.setattr(STRATEGIES, "_loaded", False)
    adapters = dict(ADAPTERS._entries)
    monkeypatch.setattr(ADAPTERS, "_entries", adapters)
    assert "plugin-probe" in STRATEGIES.names()
    row = get_row("plugin-probe")
    strategy = row.build()
    assert (row.source, row.family, type(strategy.adapter).__name__) == ("supervised", "transfer", "PluginProbe")


def test_pretrainer_and_adapter_tables_name_existing_classes():
    for reg in (PRETRAINERS, ADAPTERS):
        for name, entry in reg.entries().items():
            if entry.available():
                assert isinstance(reg.load(name), type), name


def test_list_imports_no_torch_and_lists_every_registry():
    code = ("import sys\nfrom harness.cli import main\n"
            "for what in (None, 'datasets', 'backbones', 'executors', 'presets'):\n"
            "    assert main(['list'] + ([what] if what else [])) == 0\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow', 'keras', 'pandas'))\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("HEAVY []")
    for name in ("frozen-features", "resnet12", "cifar-fs", "local", "quick"):
        assert name in out.stdout
