"""Per-query predictions, and what they tell beyond accuracy: proper scores, calibration and per-class results.

The driver, which holds the query labels, turns each evaluation unit's outputs into a
:class:`QueryPredictions` (softmax probabilities as float32, predicted labels, true labels and the pool class
of each label) and computes the record's fields from it with :func:`summarise`; the run directory keeps it
as ``predictions/<strategy>-<shots>shot[-x<scale>].npz`` beside the record, so every number here can be
recomputed from that file (tests/test_predictions.py does).

Why ``.npz``: numpy (already required, no pyarrow) reads it with ``np.load`` in any Python, compressed,
each array with its own dtype; ``report RUN --predictions --format csv|json`` flattens it to one row per query
for anything else (pandas, R, a spreadsheet).

Metrics (each over the queries of an episode, then averaged over episodes; intervals as for accuracy,
harness/stats.py ``accuracy_interval``: over episodes, and training seeds with replicates):

- **NLL**: -log p(true class), a probability below :data:`PROBABILITY_FLOOR` counted as the floor (as
  scikit-learn's ``log_loss`` clips), so one query adds at most 27.6;
- **Brier score**: sum over the ways of (p_k - [k is the true class])^2 (Brier 1950; 0 is perfect, 2 worst);
- **confidence**: the top-1 probability;
- **ECE** (Guo et al. 2017, "On Calibration of Modern Neural Networks"): the queries of all episodes in 15
  equal-width confidence bins ((m-1)/15, m/15], sum over bins of (queries in bin / all queries) x
  |accuracy in bin - mean confidence in bin|; its 95% interval is a percentile bootstrap over episodes
  (:data:`BOOTSTRAP` resamples of whole episodes, every replicate's queries of an episode together; seeded, so
  the same predictions give the same interval).

Probabilities are the softmax of each strategy's outputs as given, without temperature scaling: for
ProtoNet these are negative squared distances, for MAML and the probes logits (a record's ``scores_as``).
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from harness.stats import accuracy_interval

BINS = 15  # ECE's equal-width confidence bins (Guo et al. 2017)
BOOTSTRAP = 2000  # resamples of episodes for ECE's interval
PROBABILITY_FLOOR = 1e-12  # NLL counts a smaller probability of the true class as this (at most 27.6 per query)
FORMAT = 1  # version of the .npz layout


@dataclass(frozen=True)
class QueryPredictions:
    """One evaluation unit's per-query outputs: R replicates (training seeds), E episodes, Q queries each
    (episode order; queries in the order the strategy received them), W ways."""

    probabilities: np.ndarray  # (R, E, Q, W) float32: softmax of the strategy's outputs
    predicted: np.ndarray  # (R, E, Q) int8: the argmax of the outputs (what accuracy counts)
    labels: np.ndarray  # (E, Q) int8: true labels, 0..W-1
    episode_classes: np.ndarray  # (E, W) int16: the pool class of each label of each episode
    class_names: tuple[str, ...]  # names of the pool classes
    replicate_seeds: tuple[int, ...]  # the training seed of each replicate

    @classmethod
    def from_outputs(cls, logits: Any, labels: np.ndarray, episode_classes: np.ndarray, class_names: Any,
                     seeds: Any) -> QueryPredictions:
        """From a float array of outputs (R, E, Q, W) (any array numpy can read, e.g. a CPU tensor)."""
        x = np.asarray(logits, dtype=np.float64)
        x = x - x.max(axis=-1, keepdims=True)
        p = np.exp(x)
        p /= p.sum(axis=-1, keepdims=True)
        return cls(p.astype(np.float32), np.asarray(logits).argmax(-1).astype(np.int8),
                   np.asarray(labels, dtype=np.int8), np.asarray(episode_classes, dtype=np.int16),
                   tuple(str(c) for c in class_names), tuple(int(s) for s in seeds))

    def to_bytes(self) -> bytes:
        """A compressed ``.npz`` (what ``np.load`` reads), byte for byte the same for the same predictions (no
        time stamps, unlike ``np.savez_compressed``), so equal predictions have equal sha256."""
        arrays = {"format": np.int32(FORMAT), "probabilities": self.probabilities, "predicted": self.predicted,
                  "labels": self.labels, "episode_classes": self.episode_classes,
                  "class_names": np.asarray(self.class_names, dtype=str),
                  "replicate_seeds": np.asarray(self.replicate_seeds, dtype=np.int64)}
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, array in arrays.items():
                member = io.BytesIO()
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, member.getvalue())
        return buffer.getvalue()

    @classmethod
    def load(cls, path: Any) -> QueryPredictions:
        with np.load(path, allow_pickle=False) as f:
            if int(f["format"]) != FORMAT:
                raise ValueError(f"{path}: predictions format {int(f['format'])}, this harness reads {FORMAT}")
            return cls(f["probabilities"], f["predicted"], f["labels"], f["episode_classes"],
                       tuple(str(c) for c in f["class_names"]), tuple(int(s) for s in f["replicate_seeds"]))

    @property
    def correct(self) -> np.ndarray:
        return self.predicted == self.labels[None]

    def rows(self) -> dict[str, np.ndarray]:
        """One row per (replicate, episode, query): the columns of ``report --predictions``."""
        r, e, q, w = self.probabilities.shape
        rep, ep, qu = (a.ravel() for a in np.meshgrid(np.arange(r), np.arange(e), np.arange(q), indexing="ij"))
        names = np.asarray(self.class_names, dtype=object)
        label, predicted = self.labels[ep, qu], self.predicted.ravel()
        cols = {"replicate": rep, "training_seed": np.asarray(self.replicate_seeds)[rep], "episode": ep, "query": qu,
                "label": label, "label_class": names[self.episode_classes[ep, label]], "predicted": predicted,
                "predicted_class": names[self.episode_classes[ep, predicted]],
                "correct": predicted == label}
        probabilities = self.probabilities.reshape(-1, w)
        cols.update({f"p{k}": probabilities[:, k] for k in range(w)})
        cols.update({f"class{k}": names[self.episode_classes[ep, k]] for k in range(w)})
        return cols


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _interval(matrix: np.ndarray) -> tuple[float, float]:
    it = accuracy_interval(matrix if len(matrix) > 1 else matrix[0])
    return round(float(it.estimate), 6), round(float(it.half_width), 6)


def query_scores(p: QueryPredictions) -> dict[str, np.ndarray]:
    """Per query (R, E, Q): NLL, Brier score, top-1 confidence (float64)."""
    probs = p.probabilities.astype(np.float64)
    onehot = np.eye(probs.shape[-1])[p.labels.astype(np.int64)][None]  # (1, E, Q, W)
    true = np.take_along_axis(probs, p.labels.astype(np.int64)[None, ..., None], axis=-1)[..., 0]
    return {"nll": -np.log(np.maximum(true, PROBABILITY_FLOOR)), "brier": ((probs - onehot) ** 2).sum(-1),
            "confidence": probs.max(-1)}


def bin_totals(p: QueryPredictions) -> np.ndarray:
    """(E, 3, BINS): per episode and confidence bin, queries (all replicates), summed confidence, summed correct."""
    confidence = p.probabilities.astype(np.float64).max(-1)
    index = np.clip(np.ceil(confidence * BINS).astype(np.int64) - 1, 0, BINS - 1)  # bins ((m-1)/M, m/M]
    e = confidence.shape[1]
    out = np.zeros((e, 3, BINS))
    episode = np.broadcast_to(np.arange(e)[None, :, None], confidence.shape)
    for k, values in enumerate((np.ones_like(confidence), confidence, p.correct.astype(np.float64))):
        np.add.at(out[:, k], (episode.ravel(), index.ravel()), values.ravel())
    return out


def expected_calibration_error(totals: np.ndarray) -> float:
    """ECE from per-episode bin totals (E, 3, BINS) or their sum (3, BINS)."""
    count, confidence, correct = totals.sum(0) if totals.ndim == 3 else totals
    return float(np.abs(correct - confidence).sum() / count.sum())


def ece_interval(totals: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """The percentile-bootstrap 95% interval of ECE over episodes (whole episodes resampled)."""
    e = len(totals)
    weights = np.random.default_rng(seed).multinomial(e, np.full(e, 1 / e), size=BOOTSTRAP).astype(np.float64)
    count, confidence, correct = (weights @ totals[:, k] for k in range(3))  # (BOOTSTRAP, BINS)
    values = np.abs(correct - confidence).sum(1) / count.sum(1)
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def summarise(p: QueryPredictions) -> dict[str, Any]:
    """The record's fields computed from the predictions (harness/schema.py documents each)."""
    scores = {k: v.mean(-1) for k, v in query_scores(p).items()}  # (R, E) per-episode means
    out: dict[str, Any] = {}
    for name in ("nll", "brier", "confidence"):
        out[name], out[f"{name}_ci95"] = _interval(scores[name])
    out["episode_nll"] = [[round(float(v), 6) for v in row] for row in scores["nll"]]
    out["episode_brier"] = [[round(float(v), 6) for v in row] for row in scores["brier"]]
    totals = bin_totals(p)
    out["ece"] = round(expected_calibration_error(totals), 6)
    low, high = ece_interval(totals)
    out["ece_ci_low"], out["ece_ci_high"] = round(low, 6), round(high, 6)
    count, confidence, correct = totals.sum(0)
    def per_bin(total: np.ndarray) -> list[float | None]:
        return [round(float(t / c), 6) if c else None for t, c in zip(total, count, strict=True)]

    out["reliability"] = {"bins": BINS, "count": [int(c) for c in count], "confidence": per_bin(confidence),
                          "accuracy": per_bin(correct)}
    out["class_accuracy"], out["confusion"] = per_class(p)
    return out


def per_class(p: QueryPredictions) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Per pool class (in pool order, classes that appear in some episode): its queries' accuracy over the
    episodes it appears in (interval as for accuracy), and the confusion matrix of pool classes (rows: true,
    columns: predicted; queries of all replicates)."""
    correct = p.correct
    true_class = np.take_along_axis(p.episode_classes, p.labels.astype(np.int64), axis=1)  # (E, Q)
    predicted_class = np.stack([np.take_along_axis(p.episode_classes, r.astype(np.int64), axis=1)
                                for r in p.predicted])  # (R, E, Q)
    present = sorted(set(np.unique(p.episode_classes).tolist()))
    accuracy: dict[str, dict[str, Any]] = {}
    for c in np.unique(true_class).tolist():  # classes with queries
        mask = true_class == c  # (E, Q)
        episodes = np.flatnonzero(mask.any(1))
        matrix = np.stack([[correct[r, e][mask[e]].mean() for e in episodes] for r in range(len(correct))])
        acc, ci = _interval(matrix) if matrix.shape[1] > 1 else (round(float(matrix.mean()), 6), None)
        accuracy[p.class_names[c]] = {"accuracy": acc, "ci95": ci, "episodes": int(len(episodes)),
                                      "queries": int(mask.sum()) * len(correct)}
    position = np.full(int(p.episode_classes.max()) + 1, -1, dtype=np.int64)
    position[present] = np.arange(len(present))
    counts = np.zeros((len(present), len(present)), dtype=np.int64)
    rows = position[np.broadcast_to(true_class, predicted_class.shape)]
    np.add.at(counts, (rows.ravel(), position[predicted_class].ravel()), 1)
    return accuracy, {"classes": [p.class_names[c] for c in present], "counts": counts.tolist()}
