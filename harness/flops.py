"""Floating-point operations, counted with ``torch.utils.flop_counter.FlopCounterMode``.

- A source phase's FLOPs per image processed come from ONE training step run under the counter (budget 1:
  every phase then runs exactly one step; the model it makes is thrown away), divided by the images that
  step processed. ``source_flops`` = that ratio x the images the real training processed. Steps of a
  phase all have the same shapes, so one step is representative. A phase computed by another framework
  (Keras) names a PyTorch twin of the same architecture and schedule (``Pretrainer.flop_twin``).
- An episode phase's FLOPs are counted over the untimed warm-up episode (a batch of one episode: the
  count of a batched ``vmap`` over several episodes is not per-episode exact).

The counter sees the matrix multiplications and convolutions (forward, backward, double backward) of
PyTorch; element-wise work and other frameworks' operations are not counted.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from harness.phases import Pretrainer, SourceData, counted  # the counter lives with the phases it counts


def flops_per_image(phase: Pretrainer, data: SourceData) -> tuple[float, str]:
    """(FLOPs per image processed, how it was measured) for a source phase on this data."""
    per_image, method, _ = flops_per_step(phase, data)
    return per_image, method


def flops_per_step(phase: Pretrainer, data: SourceData) -> tuple[float, str, int]:
    """(FLOPs per image processed, how it was measured, images one training step processed) for a source
    phase on this data: the step size is what budgets round to (harness/budgets.py)."""
    if not type(phase).trains:
        return 0.0, "none: the phase trains nothing (a model pretrained elsewhere, or a no-transfer baseline)", 0
    twin = phase.flop_twin()
    processed: list[int] = []
    counting = dataclasses.replace(data, progress=processed.append, metrics={})
    _, flops = counted(lambda: twin.train(counting, 1))
    images = max(1, sum(processed))
    what = "" if twin is phase else f" of its PyTorch twin ({twin.phase_name})"
    return (flops / images, f"FlopCounterMode over one training step{what} ({images} images), x images processed",
            images)


def pretrainer_variants() -> list[tuple[str, dict[str, Any]]]:
    """(pretrainer name, source params) of every registered pretrainer at its defaults, plus the distinct
    non-default source params the registered rows give it (e.g. maml with first_order=True for fomaml)."""
    from harness import registry
    from harness.suite import get_row

    variants: list[tuple[str, dict[str, Any]]] = [(name, {}) for name in registry.PRETRAINERS.names()]
    for row in (get_row(name) for name in registry.STRATEGIES.names()):
        if row.source_params and (row.source, dict(row.source_params)) not in variants:
            variants.append((row.source, dict(row.source_params)))
    return variants


def synthetic_source(device: Any = None, classes: int = 5, per_class: int = 40, size: int = 32, ways: int = 5,
                     queries: int = 15) -> SourceData:
    """A random base pool of the default protocol's shapes (5-way, 15 queries, 32x32; a per-shots phase's shots are
    its own field): enough to count one training step of any phase (FLOPs do not depend on pixel values)."""
    import torch

    device = torch.device(device or "cpu")
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (classes * per_class, 3, size, size), dtype=torch.uint8, generator=g)
    labels = torch.arange(classes).repeat_interleave(per_class)
    return SourceData(images.to(device), labels.to(device), classes, device, 0, ways=ways, queries=queries,
                      mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))  # any statistics: FLOPs do not depend on them


def pretrainer_flops(backbone: str = "conv4", cache_dir: Any = None) -> list[dict[str, Any]]:
    """Each registered pretrainer's (and row variant's) measured FLOPs per image on ``backbone`` (one counted
    training step on :func:`synthetic_source`, CPU), relative to the supervised phase's; cached on disk under the
    phase's class, params and code. Entries: name, params, phase, flops_per_image, relative, step_images, note
    (why nothing was measured: unavailable, trains nothing, runs on another backbone only)."""
    import dataclasses

    import torch

    from harness import registry
    from harness.cache import cache_key
    from harness.datasets.base import default_cache_dir
    from harness.io import atomic_write_json, read_json
    from harness.provenance import code_hash

    root = (cache_dir or default_cache_dir()) / "flops"
    data = synthetic_source()
    rows: list[dict[str, Any]] = []
    for name, params in pretrainer_variants():
        entry = registry.PRETRAINERS.get(name)
        row = {"name": name, "params": params, "phase": None, "flops_per_image": None, "relative": None,
               "step_images": None, "note": ""}
        rows.append(row)
        if not entry.available():
            row["note"] = f"unavailable ({entry.install_hint()})"
            continue
        cls = registry.PRETRAINERS.load(name)
        phase = cls(**params)
        row["phase"] = phase.phase_name
        if not cls.trains:
            row["note"] = "trains nothing (a model pretrained elsewhere, or a no-transfer baseline)"
            continue
        if cls.any_backbone and "backbone" in {f.name for f in dataclasses.fields(phase)}:
            phase = dataclasses.replace(phase, backbone=backbone)
        elif phase.backbone != backbone:
            row["note"] = f"runs on {phase.backbone} only"
            continue
        twin = phase.flop_twin()
        key = cache_key(f"list-{phase.phase_name}", {
            "phase": f"{type(phase).__module__}.{type(phase).__qualname__}", "params": phase.params(),
            "twin": twin.params(), "code": code_hash(type(phase).__module__, type(twin).__module__),
            "torch": ".".join(torch.__version__.split(".")[:2])})
        path = root / f"{key}.json"
        try:
            measured = read_json(path) if path.is_file() else None
            per_image, step = float(measured["flops_per_image"]), int(measured["step_images"])
        except Exception:  # noqa: BLE001 - absent or damaged: measure
            per_image, _, step = flops_per_step(phase, data)
            atomic_write_json(path, {"flops_per_image": per_image, "step_images": step})
        row.update(flops_per_image=per_image, step_images=step)
    reference = next((r["flops_per_image"] for r in rows if r["name"] == "supervised" and not r["params"]), None)
    for r in rows:
        if r["flops_per_image"] and reference:
            r["relative"] = r["flops_per_image"] / reference
    return rows
