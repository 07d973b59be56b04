"""The README's example strategy and the template module work as printed, and the README's tables agree
with the code (record fields, CLI options)."""

from __future__ import annotations

import importlib
import re
import sys
import types
from pathlib import Path

import torch
from synthetic import MEAN, SOURCE_PROTOCOL, STD, index_keys, make_images

from harness.episodes import EpisodeSet
from harness.phases import SourceData
from harness.registry import ADAPTERS, STRATEGIES
from harness.schema import RECORD_DOCS
from harness.suite import get_row

README = Path(__file__).resolve().parents[1] / "README.md"


def _score(name: str) -> float:
    from harness.augment import to_float

    strategy = get_row(name).build()
    images, labels = make_images(20, seed=5)
    nchw = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    base = labels < 5
    data = SourceData(nchw[base], torch.from_numpy(labels[base]), 5, torch.device("cpu"), 0, **SOURCE_PROTOCOL)
    model = strategy.source.train(data, 256).eval()
    es = EpisodeSet.draw(labels[~base], (5, 6, 7, 8, 9), 5, 1, 5, 4, seed=0, data_fingerprint="",
                         content=index_keys(int((~base).sum())))
    logits = strategy.run_episodes(model, es.batch(to_float(nchw[~base], MEAN, STD), MEAN, STD))
    return float(es.accuracies([lg.argmax(1) for lg in logits]).mean())


def _unregister(name: str) -> None:
    STRATEGIES.unregister(name)
    ADAPTERS.unregister(name)


def test_readme_example_strategy_runs():
    text = README.read_text().split("## Adding a strategy", 1)[1]
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    module = types.ModuleType("readme_example")
    sys.modules["readme_example"] = module
    try:
        exec(compile(code, "README.md", "exec"), module.__dict__)
        assert ADAPTERS.load("nearest-centroid").__name__ == "NearestCentroid"
        assert get_row("nearest-centroid").source == "supervised"
        assert _score("nearest-centroid") > 0.6
    finally:
        _unregister("nearest-centroid")
        sys.modules.pop("readme_example")


def test_template_module_runs():
    try:
        importlib.import_module("strategies._template")
        assert _score("my-strategy") > 0.6
    finally:
        _unregister("my-strategy")
        sys.modules.pop("strategies._template", None)


def test_readme_record_table_is_the_schema():
    section = README.read_text().split("## Results schema", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    documented = {}
    for line in rows:
        names, meaning = line.strip("|").split("|")[:2]
        for name in re.findall(r"`([a-z0-9_]+)`", names):
            documented[name] = meaning.strip()
    assert set(documented) == set(RECORD_DOCS), set(documented) ^ set(RECORD_DOCS)
    for name, meaning in documented.items():
        assert meaning == RECORD_DOCS[name], name
