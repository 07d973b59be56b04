"""The README's example strategy and the template module work as printed."""

from __future__ import annotations

import importlib
import re
import sys
import types
from pathlib import Path

import torch
from synthetic import make_images

from harness import registry
from harness.augment import to_float
from harness.episodes import EpisodeSet
from harness.strategy import SourceData

README = Path(__file__).resolve().parents[1] / "README.md"


def _score(name: str) -> float:
    strategy = registry.get(name).load()()
    images, labels = make_images(20, seed=5)
    nchw = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    base = labels < 5
    data = SourceData(nchw[base], torch.from_numpy(labels[base]), 5, torch.device("cpu"), 0, lambda n: None)
    model = strategy.source.train(data, 256).eval()
    es = EpisodeSet.draw(labels[~base], (5, 6, 7, 8, 9), 5, 1, 5, 4, seed=0)
    logits = strategy.run_episodes(model, es.tasks(to_float(nchw[~base])))
    return float(es.accuracies([lg.argmax(1) for lg in logits]).mean())


def test_readme_example_strategy_runs():
    text = README.read_text().split("## Adding a strategy", 1)[1]
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    module = types.ModuleType("readme_example")
    sys.modules["readme_example"] = module
    try:
        exec(compile(code, "README.md", "exec"), module.__dict__)
        assert registry.get("nearest-centroid").load().__name__ == "NearestCentroid"
        assert _score("nearest-centroid") > 0.6
    finally:
        registry.unregister("nearest-centroid")
        sys.modules.pop("readme_example")


def test_template_module_runs():
    try:
        importlib.import_module("strategies._template")
        assert _score("my-strategy") > 0.6
    finally:
        registry.unregister("my-strategy")
        sys.modules.pop("strategies._template", None)
