"""The report names the domains (config.json ``domains``: harness/datasets/domains.py) and says whether
transfer beats the no-transfer baselines (harness/report/summary.py), on fixed records in the real format."""

from __future__ import annotations

import json
from pathlib import Path

from reportdata import episodes, record, render_page, write_run

DOMAINS = {
    "cross_domain": True, "source": "cifar10-5-5", "source_label": "CIFAR-10 (JPEG q75 copy)", "source_classes": 5,
    "source_images": 25000, "target": "my-birds", "target_label": "my-birds (ImageFolder images)",
    "novel_images_per_class": {"owl": 20, "wren": 20, "heron": 20, "kite": 20, "robin": 20}, "image_size": 32,
    "mean": [0.4914, 0.4822, 0.4465], "std": [0.247, 0.2435, 0.2616],
    "normalisation": "the source's channel statistics", "queries": 15,
    "queries_rule": "auto: min(15, smallest novel class 20 - largest shots 5)",
    "leaks": {"images": 4, "image_examples": ["images/owl/a.png", "images/owl/b.png", "images/wren/c.png"],
              "classes": ["kite"]},
}


def _with_domains(run: Path, domains: dict) -> Path:
    config = json.loads((run / "config.json").read_text())
    config["domains"] = domains
    (run / "config.json").write_text(json.dumps(config))
    return run


def test_header_names_source_and_target_the_queries_rule_and_warns(tmp_path: Path) -> None:
    recs = [record("frozen-features", 1, episodes(2, [1, 0]), "fp", novel_images=100, image_reuse=12.0),
            record("pixels-probe", 1, episodes(0, [0, 1]), "fp", family="no-transfer", novel_images=100,
                   image_reuse=12.0)]
    text = render_page([_with_domains(write_run(tmp_path / "r", recs), DOMAINS)])
    assert ("- **Source → target** (cross-domain): `cifar10-5-5` (CIFAR-10 (JPEG q75 copy); base pool of 5 classes, "
            "25,000 images) → `my-birds` (5 novel classes: owl, wren, heron, kite, robin; 20 images each). Images "
            "converted to RGB, resized to 32x32 and normalised with the source's channel statistics (mean 0.491, "
            "0.482, 0.447; std 0.247, 0.243, 0.262). Queries: 15 per class (auto: min(15, smallest novel class 20 - "
            "largest shots 5)).") in text
    assert "- **Warning: a small pool.** The episodes reuse each of their 100 distinct novel images in 12 " \
           "episodes on average" in text
    assert ("- **Warning: possible leak from source to target.** 4 target image(s) are identical to source images "
            "(images/owl/a.png, images/owl/b.png, images/wren/c.png, ...); class(es) kite are in both") in text
    # a run written before domains existed: no such lines; little reuse: no warning
    plain = render_page([write_run(tmp_path / "p", [record("frozen-features", 1, episodes(2, [1, 0]), "fp",
                                                            novel_images=5000, image_reuse=6.0)])])
    assert "Source → target" not in plain and "small pool" not in plain


def test_summary_gives_transfers_gain_over_the_best_no_transfer_row(tmp_path: Path) -> None:
    baseline = dict(family="no-transfer", source_keys=["RawPixels-k"])
    recs = [record("frozen-features", 1, episodes(3, [1, 0, 2]), "fp"),
            record("pixels-probe", 1, episodes(0, [0, 1]), "fp", **baseline),
            record("random-probe", 1, episodes(-2, [1, 0]), "fp", family="no-transfer", source_keys=["RandomInit-k"])]
    summary = render_page([write_run(tmp_path / "a", recs)]).split("\n\n")[1]
    assert "Transfer's gain over the best no-transfer row, pixels-probe, is +" in summary
    assert "% CI +" in summary and ", paired)." in summary and "not significant" not in summary
    tied = [record("frozen-features", 1, episodes(0, [1, 0, 0, 1]), "fp"),
            record("pixels-probe", 1, episodes(0, [1, -1, 2, -2, 0]), "fp", **baseline)]
    summary = render_page([write_run(tmp_path / "b", tied)]).split("\n\n")[1]
    assert "not significant, so here transfer is not shown to beat no transfer." in summary
    best = [record("frozen-features", 1, episodes(-3, [1, 0]), "fp"),
            record("pixels-probe", 1, episodes(2, [0, 1]), "fp", **baseline)]
    summary = render_page([write_run(tmp_path / "c", best)]).split("\n\n")[1]
    assert "No strategy that transfers from the source beats the no-transfer baseline pixels-probe here" in summary
    none = render_page([write_run(tmp_path / "d", [record("frozen-features", 1, episodes(0, [1, 0]), "fp")])])
    assert "no-transfer" not in none.split("\n\n")[1]
