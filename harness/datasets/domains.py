"""Source and target: what a run trains on and what it is evaluated on.

A run's **target** is ``--dataset``: its novel pool feeds the episodes. Its **source** is the dataset whose
base pool every source phase trains on: the target itself (in-domain, the registered splits and a TOML file
with ``base`` classes; nothing changes for them), or another dataset named by ``--source-dataset NAME|FILE.toml``
or by ``source = ...`` in the target's TOML ``[dataset]`` table (cross-domain, as in BSCD-FSL, Guo et al.
2020). A novel-only TOML file naming no source has no base pool: only rows whose source phase trains nothing
run (harness/resolve.py ``without_base_pool``).

In a cross-domain run the target's images are decoded at the source's input size and normalised with the
source's channel statistics (what its models were trained on), and source models are keyed by the source's
own fingerprint (:attr:`FewShotData.source_fingerprint`), so they are the cache entries of every other run
of the same source. ``--data-dir`` names the source's files; a TOML target names its own images.

Also here: ``--queries auto`` (:func:`auto_queries`) and the leak guard (:func:`leaks`: target images equal
to a source image after decoding, class names in both).

This module imports no torch.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from harness.datasets.base import Dataset, FewShotData, Pool
from harness.errors import UsageError

#: queries per class that ``--queries auto`` never exceeds (the protocol's usual 15)
MAX_AUTO_QUERIES = 15
#: leak examples named in the header
LEAK_EXAMPLES = 3


def _same(a: Dataset, b: Dataset) -> bool:
    spec_a, spec_b = getattr(a, "spec", None), getattr(b, "spec", None)
    if spec_a is not None or spec_b is not None:
        return spec_a is not None and spec_b is not None and spec_a.path.resolve() == spec_b.path.resolve()
    return a.name == b.name


def load_data(dataset: str, source: str | None, data_dir: str | os.PathLike | None, cache_dir: Path,
              strict_leaks: bool = False) -> FewShotData:
    """The run's data: the target's novel pool with the source's base pool (UsageError, one line, on bad
    input). ``source``: ``--source-dataset`` (else the target TOML's ``source``, else the target itself)."""
    from harness.datasets import get_dataset

    target = get_dataset(dataset)
    if not target.can_be_target:
        raise UsageError(f"dataset {target.name!r} can only be a source (its novel classes are its base classes); "
                         f"pass it as --source-dataset {target.name} with a target --dataset, e.g. a TOML file")
    spec = getattr(target, "spec", None)  # a TOML file (harness/datasets/imagefolder.py)
    named = source or (spec.source if spec is not None else "")
    src = get_dataset(named) if named else None  # a TOML file's source is already an absolute path
    if src is not None and not src.can_be_source:
        raise UsageError(f"dataset {named!r} has no base pool, so it cannot be a source; name a registered "
                         f"dataset that can (`python -m harness list datasets`) or a TOML file with base classes")
    toml_target = spec is not None
    if src is None or (_same(src, target) and target.can_be_source):
        data = target.load(data_dir, cache_dir)  # in-domain (or no source at all)
        return replace(data, domains=describe(data, None, data))
    source_data = src.load(data_dir, cache_dir)
    size = source_data.image_size
    if toml_target:
        if spec.image_size_given and spec.image_size != size:
            raise UsageError(f"dataset file {spec.path}: image_size {spec.image_size} differs from the source "
                             f"{src.name}'s {size}x{size} input size; drop image_size (the source's is used)")
        target_data = target.load(None, cache_dir, image_size=size)  # type: ignore[call-arg]
    else:
        target_data = target.load(data_dir, cache_dir)
        if target_data.image_size != size:
            raise UsageError(f"target {target.name} has {target_data.image_size}x{target_data.image_size} images, "
                             f"the source {src.name} {size}x{size}; pick a source of the same image size")
    found = leaks(source_data, target_data, target)
    if strict_leaks and (found["images"] or found["classes"]):
        raise UsageError(f"--strict-leaks: {leak_text(found, source_data.name, target_data.name)}; remove them "
                         f"from the target, or drop --strict-leaks")
    return cross_domain(source_data, target_data, found)


def cross_domain(source: FewShotData, target: FewShotData, found: dict[str, Any] | None = None) -> FewShotData:
    """The source's base pool, normalisation and model fingerprint with the target's novel (and validation)
    pools."""
    fingerprint = hashlib.sha256(f"source {source.fingerprint}|target {target.fingerprint}".encode()).hexdigest()[:16]
    data = replace(target, base=source.base, mean=source.mean, std=source.std, fingerprint=fingerprint,
                   description=f"source {source.name}: {source.description.split('; novel')[0]}; target "
                               f"{target.name}: {target.description}",
                   source_name=source.name, source_fingerprint=source.model_fingerprint)
    return replace(data, domains=describe(data, source, target, found))


def describe(data: FewShotData, source: FewShotData | None, target: FewShotData,
             found: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the report header says about the domains (RunHeader.domains)."""
    src = source or (None if not len(data.base.labels) else data)
    return {
        "cross_domain": source is not None,
        "source": "none" if src is None else src.name,
        "source_label": "" if src is None else (src.label or src.name),
        "source_classes": len(data.base.classes), "source_images": int(len(data.base.labels)),
        "target": target.name, "target_label": target.label or target.name,
        "novel_images_per_class": dict(zip(data.novel.classes, data.novel.class_sizes(), strict=True)),
        "image_size": data.image_size, "mean": list(data.mean), "std": list(data.std),
        "normalisation": ("the source's channel statistics" if source is not None else
                          "the dataset's channel statistics" if src is not None else
                          "the target's own novel images' channel statistics (no source)"),
        "leaks": found or {"images": 0, "image_examples": [], "classes": []},
    }


def content_hashes(images: np.ndarray) -> list[bytes]:
    """A 16-byte hash of each decoded image's pixels."""
    rows = np.ascontiguousarray(images).reshape(len(images), -1)
    return [hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in rows]


def leaks(source: FewShotData, target: FewShotData, dataset: Dataset | None = None) -> dict[str, Any]:
    """Target novel images identical to a source base image after decoding (same pixels at the same size)
    and class names in both pools (case-insensitive); the first few leaked files by name when the target
    is an image folder."""
    known = set(content_hashes(source.base.images))
    hit = [i for i, h in enumerate(content_hashes(target.novel.images)) if h in known]
    names: list[str] = []
    files = dataset.files() if dataset is not None and hasattr(dataset, "files") else None
    if hit:
        if files is not None:
            flat = [p for c in target.novel.classes for p in files[c]]  # the novel pool's order
            names = [str(flat[i]) for i in hit[:LEAK_EXAMPLES]]
        else:
            names = [f"{target.novel.classes[target.novel.labels[i]]} image {i}" for i in hit[:LEAK_EXAMPLES]]
    base = {c.lower() for c in source.base.classes}
    classes = [c for c in target.novel.classes if c.lower() in base]
    return {"images": len(hit), "image_examples": names, "classes": classes}


def leak_text(found: dict[str, Any], source: str, target: str) -> str:
    parts = []
    if found["images"]:
        parts.append(f"{found['images']} target image(s) of {target} are identical to images of the source {source} "
                     f"({', '.join(found['image_examples'])}{', ...' if found['images'] > LEAK_EXAMPLES else ''})")
    if found["classes"]:
        parts.append(f"class(es) {', '.join(found['classes'])} of {target} are also base classes of {source}")
    return "; ".join(parts)


def wants_auto_queries(config: Any) -> bool:
    """``--queries auto``, or no ``--queries`` at all with a TOML dataset (RunConfig.origins says which)."""
    if config.queries == "auto":
        return True
    toml = str(config.dataset).endswith(".toml") or Path(str(config.dataset)).expanduser().is_file()
    return toml and config.origins.get("queries", "default") == "default"


def settle_queries(config: Any, data: FewShotData) -> FewShotData:
    """Set ``config.queries`` to a number (``--queries auto``: :func:`auto_queries`) and record the rule in
    ``data.domains`` for the report header."""
    auto = wants_auto_queries(config)
    if auto:
        config.queries = auto_queries(data.novel, config.shots)
    smallest = min(data.novel.class_sizes())
    rule = (f"auto: min({MAX_AUTO_QUERIES}, smallest novel class {smallest} - largest shots {max(config.shots)})"
            if auto else "given")
    return replace(data, domains={**data.domains, "queries": config.queries, "queries_rule": rule})


def auto_queries(novel: Pool, shots: Sequence[int]) -> int:
    """``--queries auto``: min(15, smallest novel class - largest shots); a class below shots + 1 images is
    a one-line error naming it."""
    sizes = novel.class_sizes()
    most = max(shots)
    small = [(c, n) for c, n in zip(novel.classes, sizes, strict=True) if n < most + 1]
    if small:
        c, n = min(small, key=lambda x: x[1])
        raise UsageError(f"class {c!r} has {n} image(s); {most}-shot episodes need at least {most + 1} per class "
                         f"({most} support + 1 query); add images to it or lower --shots")
    return min(MAX_AUTO_QUERIES, min(sizes) - most)
