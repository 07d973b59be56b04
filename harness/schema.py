"""The one written schema of a run directory: records, config.json and environment.json.

    RUN_DIR/
      config.json        RunHeader: the resolved run configuration, protocol and every strategy's settings
      environment.json   Environment: versions, device, code version, data provenance, the command
      records/<strategy>-<shots>shot.json   one Record per (strategy, shots)
      run.log            tracebacks of failed units
      leaderboard.md     the report (default location)

The runner writes these dataclasses, ``load_run`` validates against them, the report reads them, the
README's field table is tested against :data:`RECORD_DOCS`, and the test fixtures build them. This module
imports no torch.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from harness.errors import UsageError

#: version of the on-disk layout; a run directory of another version is refused with a clear message
SCHEMA_VERSION = 4
#: versions whose files still load: fields added since (``metadata["added"]``) take their defaults
READABLE_VERSIONS = (3, 4)


#: Record field -> the settings entry through which records written before the field named the related row
LEGACY_RELATIONS = {"twin_of": "PyTorch twin", "check_of": "episode phase of"}


def scale_value(value: Any) -> float:
    """A budget scale as a comparable number: a float rounded to 9 decimals, 1.0 when absent (None, NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return 1.0
    return round(float(value), 9)


def doc(text: str, default: Any = None, added: int = 3, **kwargs: Any) -> Any:
    """A field with a meaning (``metadata["doc"]``), a default and the schema version that added it (files of
    earlier versions load with the default)."""
    if isinstance(default, (dict, list)):
        return field(default_factory=type(default), metadata={"doc": text, "added": added}, **kwargs)
    return field(default=default, metadata={"doc": text, "added": added}, **kwargs)


class _Json:
    """JSON round trip of a schema dataclass; ``from_json`` refuses missing or unknown fields."""

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "record") -> Any:
        return _from_json(cls, data, where)


@dataclass
class Record(_Json):
    """One (strategy, shots) result. Failed and skipped records carry every field (measurements None).

    In memory, a record fresh from its evaluation unit carries the bytes of its predictions file (``attach``;
    not a field, so not in the JSON): they travel with it from any executor to the writer
    (harness/results.py ``write_record``), which writes them to ``predictions`` before the record."""

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str = "record") -> Record:
        """A record from its JSON, upgraded: ``budget_scale`` as a float (1.0 when absent), and ``twin_of`` /
        ``check_of`` of a record written before those fields taken from its settings (:data:`LEGACY_RELATIONS`)."""
        record: Record = _from_json(cls, data, where)
        record.budget_scale = scale_value(record.budget_scale)
        settings = record.settings or {}
        for name, entry in LEGACY_RELATIONS.items():
            if name not in data and isinstance(settings.get(entry), str):
                setattr(record, name, settings[entry])
        return record

    def attach(self, data: bytes) -> Record:
        self.__dict__["_predictions_data"] = data
        return self

    def attached(self) -> bytes | None:
        return self.__dict__.get("_predictions_data")

    schema_version: int = doc("version of this layout", SCHEMA_VERSION)
    strategy: str = doc("registered strategy name", "")
    family: str = doc("transfer / meta-learning / self-supervised / adversarial / no-transfer (a baseline without a "
                      "source phase) / external (pretrained elsewhere, not ranked)", "")
    status: str = doc("`ok`, `failed` or `skipped`", "ok")
    reason: str | None = doc("one-line reason when not ok, else null")
    shots: int = doc("K: support images per class", 0)
    ways: int = doc("N: classes per episode", 0)
    queries: int = doc("query images per class", 0)
    episodes: int = doc("number of episodes E", 0)
    dataset: str = doc("registered dataset name (or the TOML dataset's name)", "")
    seed: int = doc("run seed; episodes depend on (seed, shots, index) only", 0)
    episode_fingerprint: str | None = doc("sha256 of the data fingerprint and all episode indices and labels "
                                          "(equal => same episodes of the same images)")
    accuracy: float | None = doc("mean query accuracy (0..1): over episodes, averaged over training seeds")
    ci95: float | None = doc("half-width of the 95% CI of `accuracy` (0..1); `ci_covers` says what it covers")
    ci_covers: str | None = doc("what `ci95` covers: episode sampling only (one trained model), or training seeds "
                                "and episode sampling")
    episode_accuracies: list[float] | None = doc("accuracy of each episode (averaged over training seeds), in "
                                                 "episode order")
    replicate_seeds: list[int] | None = doc("the training seed of each replicate (`--replicates`)")
    replicate_accuracies: list[float] | None = doc("mean accuracy of each replicate, on the same episodes")
    replicate_episode_accuracies: list[list[float]] | None = doc(
        "accuracy of each episode for each replicate (replicates x episodes, episode order): the full crossed "
        "matrix behind `accuracy`, `ci95` and the paired differences", added=4)
    ci_df: float | None = doc("degrees of freedom of the t interval `ci95` (Satterthwaite when it covers training "
                              "seeds)", added=4)
    ci_seed_df: int | None = doc("degrees of freedom of the training-seed term (replicates - 1), null for one model",
                                 added=4)
    novel_images: int | None = doc("distinct novel images behind the episodes (supports and queries)", added=4)
    image_reuse: float | None = doc("average number of episodes each of those images appears in", added=4)
    sealed_batches: int | None = doc("sealed batches the episodes were adapted in, per replicate: each a fresh "
                                     "process holding no label, no image twice (README, Reliability)", added=4)
    independence_check: dict[str, Any] | None = doc(
        "the secretly chosen episodes adapted alone in fresh processes before the batches: `episodes`, `queries` "
        "compared, `ties` left aside, `agreed`", added=4)
    seal_seconds: float | None = doc("episode-phase wall time outside the timed adapters (process forks, transfers, "
                                     "each batch's untimed first episode, the independence check, the "
                                     "frozen-features processes' start and warm-up), all replicates", added=4)
    metrics: dict[str, Any] = doc("further scored outputs, e.g. `clean_and_robust_accuracy` / "
                                  "`clean_and_robust_ci95` (0..1)", {})
    scores_as: str | None = doc("what the strategy's outputs are (logits; ProtoNet: negative squared distances): the "
                                "probabilities below are their softmax as given, without temperature scaling", added=5)
    predictions: str | None = doc("the per-query predictions file (`predictions/<unit>.npz`: probabilities, predicted "
                                  "and true labels, pool classes; harness/predictions.py), relative to the run "
                                  "directory; null in runs written before it was kept", added=5)
    predictions_sha256: str | None = doc("sha256 of that file", added=5)
    nll: float | None = doc("mean negative log-likelihood of the true class (per episode, then over episodes; a "
                            "probability below 1e-12 counts as 1e-12)", added=5)
    nll_ci95: float | None = doc("half-width of the 95% CI of `nll` (as `ci95`)", added=5)
    brier: float | None = doc("mean Brier score: sum over the ways of (probability - true indicator)^2, 0..2", added=5)
    brier_ci95: float | None = doc("half-width of the 95% CI of `brier` (as `ci95`)", added=5)
    confidence: float | None = doc("mean top-1 probability (0..1)", added=5)
    confidence_ci95: float | None = doc("half-width of the 95% CI of `confidence` (as `ci95`)", added=5)
    ece: float | None = doc("expected calibration error (0..1): 15 equal-width confidence bins over all queries "
                            "(Guo et al. 2017)", added=5)
    ece_ci_low: float | None = doc("lower end of the 95% percentile-bootstrap interval of `ece` (episodes "
                                   "resampled)", added=5)
    ece_ci_high: float | None = doc("upper end of that interval", added=5)
    episode_nll: list[list[float]] | None = doc("`nll` of each episode for each replicate (replicates x episodes): "
                                                "paired comparisons between rows", added=5)
    episode_brier: list[list[float]] | None = doc("`brier` of each episode for each replicate (replicates x "
                                                  "episodes)", added=5)
    reliability: dict[str, Any] | None = doc("the reliability diagram: per confidence bin, `count` (queries, all "
                                             "replicates), mean `confidence` and `accuracy` (null when empty)",
                                             added=5)
    class_accuracy: dict[str, Any] | None = doc("per novel class (by name): `accuracy` of its queries and `ci95` over "
                                                "the `episodes` it appears in, `queries` (all replicates)", added=5)
    confusion: dict[str, Any] | None = doc("confusion matrix of novel classes: `classes` (names) and `counts` (rows: "
                                           "true class, columns: predicted; queries of all replicates)", added=5)
    backbone: str | None = doc("the source phase's backbone")
    source_phase: str | None = doc("source phase class name")
    source_description: str | None = doc("what the source phase does, from its settings")
    source_params: dict[str, Any] | None = doc("source phase hyperparameters")
    source_keys: list[str] | None = doc("cache key of the source model of each replicate")
    budget_group: str | None = doc("the preset budget group of the source phase (pretrain, meta, ssl, adversarial)")
    budget_scale: float = doc("the --budget-scale this record was run at (1: the preset's budgets)", 1.0)
    matched_flops: float | None = doc("the source phase's FLOP budget (its group's budget in supervised-image "
                                      "equivalents x the supervised phase's FLOPs per image, x budget_scale; with "
                                      "--match-compute the pretrain group's); null for phases that train nothing")
    source_budget_images: int | None = doc("the source phase's budget in its own images processed, per replicate: "
                                           "its FLOP budget / its measured FLOPs per image, rounded to whole "
                                           "training steps")
    source_images_processed: int | None = doc("images processed (forward+backward passes) by the source phase, per "
                                              "replicate, as counted")
    source_flops: float | None = doc("floating-point operations of the source phase, per replicate")
    source_flops_method: str | None = doc("how `source_flops` was measured")
    source_seconds: float | None = doc("source phase wall time, all replicates (when trained; cached rows repeat the "
                                       "original)")
    source_images_per_second: float | None = doc("source phase throughput after its first (warm-up) step")
    source_peak_memory_mb: float | None = doc("peak memory of the source phase above what was allocated when it "
                                              "started (see README)")
    source_device: str | None = doc("device the source phase ran on")
    source_cached: bool | None = doc("true when every source model came from the disk cache, none trained in this "
                                     "run")
    source_metrics: dict[str, Any] = doc("measurements the source phase reported (e.g. peak memory of a meta-step)",
                                         {})
    episode_phase: str | None = doc("what the strategy does per support set, from its settings")
    params: dict[str, Any] | None = doc("episode-phase hyperparameters (with --tune: the chosen configuration's)")
    tuning: dict[str, Any] | None = doc("with --tune (harness/tuning.py), else null: `trials` (N) and `episodes` (V) "
                                        "of the validation protocol, `pool` (the validation pool), "
                                        "`validation_fingerprint`, `replicate_seed` (the model tuned), `space` (each "
                                        "tunable field's range), `untuned` (every hyperparameter before tuning), "
                                        "`tried` (per configuration: `params`, mean validation `accuracy` and `ci95`, "
                                        "`seconds`, `flops`, `reused` from an interrupted run), `chosen` (its index)",
                                        added=5)
    tuning_seconds: float | None = doc("wall time of the tuning's validation episodes inside their sealed processes "
                                       "(as `episode_seconds`), all configurations; null without --tune", added=5)
    tuning_flops: float | None = doc("floating-point operations of the tuning: per configuration, its first "
                                     "validation episode's counted FLOPs x V; null without --tune or when not "
                                     "counted", added=5)
    settings: dict[str, Any] | None = doc("protocol settings shown in the leaderboard (BN mode, inner steps...)")
    twin_of: str | None = doc("the PyTorch row this row runs the same algorithm as (a Keras row's twin): the report "
                              "shows their paired difference; else null", added=5)
    check_of: str | None = doc("the Keras row whose pretraining this framework-check row shares, running the twin's "
                               "episode phase (strategies/keras_check.py); else null", added=5)
    episode_seconds: float | None = doc("wall time of all episodes of all replicates inside their sealed processes, "
                                        "each batch after one untimed warm-up episode (a batch of one episode: "
                                        "none), plus the frozen-features processes (synchronised)")
    ms_per_episode: float | None = doc("episode_seconds / (episodes * replicates) * 1000")
    episode_flops: float | None = doc("floating-point operations of the episode phase per episode (the first "
                                      "independence-check episode, counted)")
    query_images_per_second: float | None = doc("queries scored per second of episode phase")
    episode_peak_memory_mb: float | None = doc("peak memory of the episode phase above what was allocated when it "
                                               "started (see README)")
    device: str | None = doc("device name (GPU model or CPU)")
    torch_version: str | None = doc("torch.__version__")
    code: dict[str, str] = doc("source files of the source phase and adapter, relative to the project root", {})


@dataclass
class RunHeader(_Json):
    """config.json: what was asked for, resolved."""

    schema_version: int = doc("version of this layout", SCHEMA_VERSION)
    harness_version: str = doc("the harness version that wrote the run", "")
    protocol: dict[str, Any] = doc("preset, dataset, ways, queries, episodes, seed, replicates, precision, device "
                                   "type, data fingerprint, backbone (harness/protocol.py; runs written before the "
                                   "backbone was part of it have it in `run`): what must match to resume", {})
    shots: list[int] = doc("shot settings", [])
    dataset_description: str = doc("how base and novel pools are drawn", "")
    novel_classes: int = doc("number of novel classes", 0)
    preset_budgets: dict[str, int] = doc("the preset's FLOP budget of each budget group, in supervised-image "
                                         "equivalents (images of the supervised phase)", {})
    budget_scales: list[float] = doc("the budget scales run (several: accuracy-vs-compute curves)", [1.0])
    matched_flops: float | None = doc("with --match-compute: the FLOP budget of every source phase (at budget scale "
                                      "1), else null (each record carries its phase's FLOP budget)")
    strategies: dict[str, Any] = doc("every strategy's resolved hyperparameters (source under `source`)", {})
    run: dict[str, Any] = doc("the resolved run configuration (RunConfig fields)", {})
    #: added=5 (the next version): optional until then, so runs written before source and target were separate load
    domains: dict[str, Any] = doc("source and target: the source dataset (base classes, images), the target (novel "
                                  "images per class), image size and normalisation, the queries rule, leaks found "
                                  "(harness/datasets/domains.py)", {}, added=5)


@dataclass
class Environment(_Json):
    """environment.json: where and with what the numbers were measured."""

    harness_version: str = doc("harness version", "")
    code_version: str | None = doc("git commit of the project (\"-dirty\" with local changes), or a hash of its source")
    python: str = doc("Python version", "")
    torch: str = doc("torch version", "")
    torchvision: str = doc("torchvision version", "")
    numpy: str = doc("numpy version", "")
    platform: str = doc("operating system", "")
    device: str = doc("device name", "")
    device_type: str = doc("cpu or cuda", "")
    threads: int = doc("torch CPU threads", 0)
    precision: str = doc("fp32, or bf16 (autocast) for the source phases", "fp32")
    determinism: dict[str, Any] = doc("deterministic algorithms, cuDNN and TF32 settings in force", {})
    dataset: str = doc("data label, from the data itself (known copies) or the dataset", "")
    data_source: str = doc("where the data was read from", "")
    data_layout: str = doc("on-disk layout of the data", "")
    data_fingerprint: str = doc("sha256 of the pixels, labels and pools", "")
    command: list[str] = doc("the command line, as arguments", [])


def _from_json(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise UsageError(f"{where} is not a JSON object; it is not a results file of this harness")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    names = set(fields)
    version = data.get("schema_version", SCHEMA_VERSION)
    missing = sorted(n for n in names if n not in data and n != "schema_version"
                     and fields[n].metadata.get("added", 3) <= (version if isinstance(version, int) else 0))
    unknown = sorted(k for k in data if k not in names)
    if missing or unknown:
        what = "; ".join(x for x in (f"lacks {', '.join(missing)}" if missing else "",
                                     f"has unknown fields {', '.join(unknown)}" if unknown else "") if x)
        raise UsageError(f"{where} {what}: it was written by another version of the harness; rerun it with this one")
    return cls(**{k: v for k, v in data.items() if k in names})


#: field -> meaning, for the README's table (tests/test_readme.py checks they agree)
RECORD_DOCS: dict[str, str] = {f.name: f.metadata["doc"] for f in dataclasses.fields(Record)}
