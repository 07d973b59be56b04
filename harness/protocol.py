"""The evaluation protocol of a run, as one frozen value.

``prepare`` builds it once from the run configuration, the loaded data and the device, after every count
is checked against the real pools; everything else derives from it: what a unit of work carries
(:class:`harness.work.RunSpec` holds it), the ``protocol`` of the run header, the protocol part of every
source model's cache key, and what a resumed run directory must match (the fields marked ``resume``, both
against the header of the directory and against the options given with ``--resume``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


def _resume(default: Any = dataclasses.MISSING) -> Any:
    """A field a resumed run must match (else exit 2 naming the recorded and the given values)."""
    return field(default=default, metadata={"resume": True})


@dataclass(frozen=True)
class Protocol:
    """What makes two runs' numbers comparable: the episodes (dataset, ways, shots, queries, count, seed) and how
    the models are trained and run (preset, replicates, precision, device type, backbone, determinism)."""

    preset: str = _resume()
    dataset: str = _resume()  # the dataset's name (a TOML dataset: its [dataset] name)
    ways: int = _resume()
    queries: int = _resume()  # per class, settled (``--queries auto`` resolved against the pools)
    episodes: int = _resume()  # per shot setting
    seed: int = _resume()  # of the episodes; the first training seed
    replicates: int = _resume()  # training seeds per source model
    precision: str = _resume()
    device_type: str = _resume()  # cpu or cuda
    data_fingerprint: str = _resume()  # of the pixels, labels and pools (harness/datasets/base.py)
    backbone: str | None = _resume(None)  # --backbone (None: each phase's own)
    #: what a resume may add to (new shot settings, budget scales, tuning) or may change (determinism)
    shots: tuple[int, ...] = (1, 5)
    budget_scales: tuple[float, ...] = (1.0,)  # --budget-scale, each once, in the order given
    tune: int = 0  # --tune N (0: untuned)
    tune_episodes: int = 0  # --tune-episodes V (0 when untuned)
    deterministic: bool = True

    @classmethod
    def of(cls, config: Any, data: Any, device_type: str) -> Protocol:
        """From the run's :class:`harness.runconfig.RunConfig` (counts settled and checked), its loaded
        :class:`harness.datasets.base.FewShotData` and the device type."""
        c = config
        return cls(preset=c.preset, dataset=data.name, ways=c.ways, queries=c.queries, episodes=c.episodes,
                   seed=c.seed, replicates=c.replicates, precision=c.precision, device_type=device_type,
                   data_fingerprint=data.fingerprint, backbone=c.backbone, shots=tuple(c.shots),
                   budget_scales=tuple(dict.fromkeys(map(float, c.budget_scale))), tune=c.tune or 0,
                   tune_episodes=c.tune_episodes if c.tune else 0, deterministic=c.deterministic)

    @staticmethod
    def resume_keys() -> tuple[str, ...]:
        """The fields a resumed run directory must match."""
        return tuple(f.name for f in dataclasses.fields(Protocol) if f.metadata.get("resume"))

    def header(self) -> dict[str, Any]:
        """The run header's ``protocol`` (config.json): the fields a resume must match."""
        return {k: getattr(self, k) for k in self.resume_keys()}

    def differences(self, recorded: dict[str, Any], run: dict[str, Any] | None = None) -> list[str]:
        """The resume fields on which a run directory's header ``recorded`` (its ``protocol``; ``run``: its
        resolved settings, for headers written before the backbone was part of the protocol) differs."""
        old = {**({"backbone": (run or {}).get("backbone")} if "backbone" not in recorded else {}), **recorded}
        return [k for k in self.resume_keys() if old.get(k) != getattr(self, k)]


def check_pools(protocol: Protocol, data: Any) -> None:
    """Every count of ``protocol`` against the loaded pools, once, before anything is trained: each shot setting's
    episodes on the novel pool and, with ``--tune``, on the validation pool (one line and exit 2 otherwise)."""
    from harness.episodes import validate_protocol
    from harness.tuning import validate_validation

    p = protocol
    for shots in p.shots:
        validate_protocol(data.novel.class_sizes(), p.ways, shots, p.queries, p.episodes)
        if p.tune:
            validate_validation(data, p.ways, shots, p.queries, p.tune_episodes)
