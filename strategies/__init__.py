"""Built-in strategies: importing this package registers them (one module per strategy).

The Keras strategies are registered lazily: TensorFlow is imported only when one of them runs.
"""

from harness.registry import register_lazy
from strategies import (  # noqa: F401
    adversarial,
    frozen_features,
    maml,
    partial_finetune,
    protonet,
    reptile,
    rotation,
    simclr,
)

register_lazy("keras-frozen-features", "strategies.keras_transfer:KerasFrozenFeatures", family="transfer",
              description="Keras Dense softmax head (Adam) on frozen features of a Keras-pretrained Conv-4",
              requires="tensorflow")
register_lazy("keras-partial-finetune", "strategies.keras_transfer:KerasPartialFinetune", family="transfer",
              description="Keras Dense head + last Conv-4 block fine-tuned (Adam), earlier blocks frozen",
              requires="tensorflow")
