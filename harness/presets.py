"""Presets: source-phase budgets per budget group, the number of episodes and of training seeds. A preset
is the second layer of a run's configuration: defaults < preset < TOML < CLI.

Budgets are FLOP budgets in the harness's one cost unit, supervised-image equivalents: a group's budget N
is N x the FLOPs per image of the supervised phase (counted with FlopCounterMode on the run's backbone), and
each phase trains on the images that buy that many of its own measured FLOPs (harness/budgets.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.errors import unknown


@dataclass(frozen=True)
class Preset:
    name: str
    episodes: int
    # FLOP budget of each budget group of source phases (see Pretrainer.budget_group), in supervised-image
    # equivalents
    source_images: dict[str, int] = field(default_factory=dict)
    description: str = ""
    match_compute: bool = False  # every source phase gets the pretrain group's FLOP budget
    replicates: int = 1  # training seeds per source phase (--replicates)


PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        Preset("smoke", 8, {"pretrain": 1_024, "meta": 1_024, "ssl": 1_024, "adversarial": 1_024},
               "seconds on a CPU; for tests and CI, numbers are meaningless"),
        Preset("quick", 300, {"pretrain": 100_000, "meta": 20_000, "ssl": 40_000, "adversarial": 40_000},
               "the default: a meaningful ranking; run --all within 20 minutes on a 2-core CPU"),
        Preset("quick-matched", 300, {"pretrain": 40_000, "meta": 40_000, "ssl": 40_000, "adversarial": 40_000},
               "every source phase at the FLOPs of 40,000 supervised images: a ranking at equal compute, run --all "
               "within about 20 minutes on a 2-core CPU", match_compute=True),
        Preset("paper", 2000, {"pretrain": 5_000_000, "meta": 20_000_000, "ssl": 20_000_000,
                               "adversarial": 20_000_000},
               "published-scale budgets (200 epochs of the base split), 5 training seeds; for a GPU", replicates=5),
    )
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise unknown("preset", name, PRESETS)
    return PRESETS[name]
