"""Built-in strategies: importing this package registers them (one module per strategy)."""

from strategies import frozen_features, partial_finetune  # noqa: F401
