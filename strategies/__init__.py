"""Built-in strategies: importing this package registers them (one module per strategy)."""

from strategies import frozen_features, maml, partial_finetune, protonet, reptile  # noqa: F401
