"""The header lines that name the domains (config.json ``domains``, harness/datasets/domains.py): source ->
target with their image counts, how the images were prepared, the queries rule, a warning when the episodes
reuse their few images so often that the interval describes this pool rather than the classes, and the
leak guard's findings. Runs written before ``domains`` existed get no such lines."""

from __future__ import annotations

from typing import Any

import pandas as pd

from harness.report.cells import missing

#: average episodes per novel image above which the header warns that the CI describes the pool
REUSE_WARNING = 10.0


def _counts(per_class: dict[str, int]) -> str:
    sizes = sorted(set(per_class.values()))
    if len(sizes) == 1:
        return f"{sizes[0]:,} images each"
    return ", ".join(f"{c} {n:,}" for c, n in per_class.items()) + " images"


def _span(values: list, fmt: str) -> str:
    low, high = format(min(values), fmt), format(max(values), fmt)
    return low if low == high else f"{low} to {high}"


def domain_lines(domains: dict[str, Any], frame: pd.DataFrame) -> list[str]:
    """The header lines of config.json's ``domains`` (source -> target, preparation, warnings); [] when empty."""
    d = domains or {}
    if not d:
        return []
    per_class = d.get("novel_images_per_class", {})
    target = (f"`{d['target']}` ({len(per_class)} novel classes: {', '.join(per_class)}; {_counts(per_class)})")
    if d.get("source") == "none":
        source = "no source (no base pool: only rows whose source phase trains nothing ran)"
    else:
        label = d.get("source_label") or d["source"]
        source = (f"`{d['source']}` ({label}; base pool of {d['source_classes']} classes, "
                  f"{d['source_images']:,} images)")
    kind = "cross-domain" if d.get("cross_domain") else "in-domain" if d.get("source") != "none" else "novel only"
    stats = ", ".join(f"{m:.3f}" for m in d.get("mean", []))
    spread = ", ".join(f"{s:.3f}" for s in d.get("std", []))
    lines = [f"- **Source → target** ({kind}): {source} → {target}. Images converted to RGB, resized to "
             f"{d['image_size']}x{d['image_size']} and normalised with {d['normalisation']} (mean {stats}; std "
             f"{spread})." + (f" Queries: {d['queries']} per class ({d['queries_rule']})."
                              if d.get("queries_rule", "given") != "given" else "")]
    ok = frame[frame["status"] == "ok"]
    reuse = [float(v) for v in ok["image_reuse"] if not missing(v)] if "image_reuse" in ok else []
    if reuse and max(reuse) > REUSE_WARNING:
        images = [int(v) for v in ok["novel_images"] if not missing(v)]
        lines.append(f"- **Warning: a small pool.** The episodes reuse each of their {_span(images, ',')} distinct "
                     f"novel images in {_span(reuse, '.0f')} episodes on average, so the intervals describe this "
                     f"pool of images rather than the classes: another handful of images of the same classes can "
                     f"score outside them.")
    leaks = d.get("leaks") or {}
    if leaks.get("images") or leaks.get("classes"):
        parts = []
        if leaks.get("images"):
            more = ", ..." if leaks["images"] > len(leaks.get("image_examples", [])) else ""
            parts.append(f"{leaks['images']} target image(s) are identical to source images "
                         f"({', '.join(leaks.get('image_examples', []))}{more})")
        if leaks.get("classes"):
            parts.append(f"class(es) {', '.join(leaks['classes'])} are in both the source's base pool and the "
                         f"target")
        lines.append(f"- **Warning: possible leak from source to target.** {'; '.join(parts)}. Source phases may "
                     f"have seen these images or classes, which flatters them; `--strict-leaks` makes this an "
                     f"error.")
    return lines
