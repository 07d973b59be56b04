"""What keeping per-query predictions costs the driver per evaluation unit at ``quick`` size (300 episodes of
75 queries, 5 ways, one replicate): the softmax, every calibration and per-class number, and the compressed
file. ``pytest tests/benchmarks/test_predictions.py --benchmark-enable`` prints the times."""

from __future__ import annotations

import numpy as np

from harness.predictions import QueryPredictions, summarise


def quick_unit() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    labels = np.tile(np.repeat(np.arange(5), 15), (300, 1))
    logits = rng.normal(size=(1, 300, 75, 5)) * 2 + 3 * np.eye(5)[labels][None]
    classes = np.tile(np.arange(5), (300, 1))
    return logits, labels, classes


def test_bench_predictions_of_a_quick_unit(benchmark):
    logits, labels, classes = quick_unit()

    def keep() -> tuple[dict, bytes]:
        p = QueryPredictions.from_outputs(logits, labels, classes, ["dog", "frog", "horse", "ship", "truck"], [0])
        return summarise(p), p.to_bytes()

    fields, data = benchmark(keep)
    assert 0.5 < fields["confidence"] < 1 and fields["ece"] >= 0
    assert len(data) < 2_000_000  # about 0.7 MB uncompressed probabilities; deflate keeps it below that
