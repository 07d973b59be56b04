"""Built-in datasets, registered lazily (``python -m harness list datasets`` decodes nothing).

Contract: harness/datasets/base.py. ``--dataset NAME`` picks a registered one; ``--dataset FILE.toml``
describes a user's own ImageFolder (harness/datasets/imagefolder.py). A dataset's base pool can be another
dataset's source (``--source-dataset NAME|FILE.toml``, or ``source =`` in a TOML file:
harness/datasets/domains.py); ``roles`` says which a registered dataset can be.
"""

from harness.registry import DATASETS

DATASETS.register_lazy("cifar10-5-5", "harness.datasets.cifar10:CIFAR10_5_5", roles="source, target",
                       description="CIFAR-10: base airplane..deer (train images), novel dog..truck (test images)")
DATASETS.register_lazy("cifar10-5-5-swapped", "harness.datasets.cifar10:CIFAR10_5_5_SWAPPED", roles="source, target",
                       description="CIFAR-10: base dog..truck (train images), novel airplane..deer (test images)")
DATASETS.register_lazy("cifar10", "harness.datasets.cifar10:CIFAR10_ALL", roles="source",
                       description="CIFAR-10, a source only: base all ten classes (the 50,000 train images)")
DATASETS.register_lazy("cifar-fs", "harness.datasets.cifar100:CIFAR_FS", roles="source, target",
                       description="CIFAR-FS (Bertinetto et al. 2019): CIFAR-100, 64 base / 16 val / 20 novel classes")
DATASETS.register_lazy("fc100", "harness.datasets.cifar100:FC100", roles="source, target",
                       description="FC100 (Oreshkin et al. 2018): CIFAR-100 by superclass, 60 / 20 / 20 classes")


def get_dataset(spec: str):  # -> harness.datasets.base.Dataset
    """A registered dataset by name, or a user's ImageFolder described by a TOML file (``*.toml``)."""
    from pathlib import Path

    if spec.endswith(".toml") or Path(spec).is_file():
        from harness.datasets.imagefolder import from_toml

        return from_toml(spec)
    return DATASETS.load(spec)
