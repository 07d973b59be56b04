"""Built-in strategies: importing this package registers them (one module per strategy)."""

from strategies import adversarial, frozen_features, partial_finetune, rotation, simclr  # noqa: F401
