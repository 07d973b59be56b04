"""The built-in strategies: pretrainers, adapters and the leaderboard rows pairing them.

Everything is registered lazily as ``"module:attr"``: listing imports no torch or TensorFlow, and a
module is imported only when a row using it runs. A row is a (pretrainer, adapter) pair plus default
overrides; a new adapter over every pretraining is one module and one ``register_row`` line per row.
"""

from harness.registry import ADAPTERS, PRETRAINERS
from harness.suite import register_row

# --- source phases: family and budget group belong here ------------------------------------------
PRETRAINERS.register_lazy("supervised", "strategies.supervised:SupervisedPretraining", family="transfer",
                          description="supervised pretraining on the base classes")
PRETRAINERS.register_lazy("rotation", "strategies.rotation:RotationPretraining", family="self-supervised",
                          description="rotation prediction (Gidaris et al. 2018), no base labels")
PRETRAINERS.register_lazy("simclr", "strategies.simclr:SimclrPretraining", family="self-supervised",
                          description="SimCLR (Chen et al. 2020), no base labels")
PRETRAINERS.register_lazy("adversarial", "strategies.adversarial:AdversarialPretraining", family="adversarial",
                          description="PGD adversarial pretraining (Madry et al. 2018)")
PRETRAINERS.register_lazy("maml", "strategies.maml:MamlMetaTraining", family="meta-learning",
                          description="MAML meta-training (Finn et al. 2017)")
PRETRAINERS.register_lazy("reptile", "strategies.reptile:ReptileMetaTraining", family="meta-learning",
                          description="Reptile meta-training (Nichol et al. 2018)")
PRETRAINERS.register_lazy("protonet", "strategies.protonet:ProtonetTraining", family="meta-learning",
                          description="prototypical-network training (Snell et al. 2017)")
PRETRAINERS.register_lazy("keras-supervised", "strategies.keras_backbone:KerasSupervisedPretraining",
                          family="transfer", requires="tensorflow",
                          description="supervised Keras Conv-4 pretraining (TensorFlow)")
PRETRAINERS.register_lazy("keras-pretrained", "strategies.keras_pretrained:KerasPretrained", family="external",
                          requires="tensorflow", description="your Keras model file (.keras/.h5), pretrained elsewhere")
PRETRAINERS.register_lazy("torch-pretrained", "strategies.torch_pretrained:TorchPretrained", family="external",
                          description="your torchvision architecture + state-dict file, pretrained elsewhere")
PRETRAINERS.register_lazy("pixels", "strategies.pixels:RawPixels", family="no-transfer",
                          description="no source phase: the raw normalised pixels as features")
PRETRAINERS.register_lazy("random-init", "strategies.random_init:RandomInit", family="no-transfer",
                          description="no source phase: a randomly initialised, untrained backbone")

# --- episode phases ------------------------------------------------------------------------------
ADAPTERS.register_lazy("linear-probe", "strategies.probe:LinearProbe",
                       description="logistic regression on L2-normalised frozen features")
ADAPTERS.register_lazy("partial-finetune", "strategies.finetune:PartialFinetune",
                       description="head (LP-FT) + last block(s) fine-tuned with Adam")
ADAPTERS.register_lazy("sgd-inner-loop", "strategies.maml:SgdInnerLoop",
                       description="SGD on the support set from a meta-learned init")
ADAPTERS.register_lazy("adam-inner-loop", "strategies.reptile:AdamInnerLoop",
                       description="Adam on support mini-batches from a meta-learned init")
ADAPTERS.register_lazy("prototypes", "strategies.protonet:Prototypes",
                       description="nearest class mean, squared Euclidean distance")
ADAPTERS.register_lazy("keras-probe", "strategies.keras_transfer:KerasProbe", requires="tensorflow",
                       description="linear-probe in TensorFlow: the same optimum")
ADAPTERS.register_lazy("keras-finetune", "strategies.keras_transfer:KerasFinetune", requires="tensorflow",
                       description="partial-finetune in TensorFlow: LP-FT head + last block(s), Adam")
ADAPTERS.register_lazy("torch-probe-on-keras", "strategies.keras_check:TorchProbeOnKeras", requires="tensorflow",
                       description="linear-probe (PyTorch) on the PyTorch copy of a Keras Conv-4")
ADAPTERS.register_lazy("torch-finetune-on-keras", "strategies.keras_check:TorchFinetuneOnKeras", requires="tensorflow",
                       description="partial-finetune (PyTorch) on the PyTorch copy of a Keras Conv-4")
ADAPTERS.register_lazy("keras-pretrained-probe", "strategies.keras_pretrained:KerasPretrainedProbe",
                       requires="tensorflow", description="linear probe on a Keras model file's features")
ADAPTERS.register_lazy("keras-pretrained-finetune", "strategies.keras_pretrained:KerasPretrainedFinetune",
                       requires="tensorflow", description="Keras layers[k:] unfrozen + new Dense head, Adam")
ADAPTERS.register_lazy("torch-pretrained-finetune", "strategies.torch_pretrained:TorchPretrainedFinetune",
                       description="top-level layers[k:] unfrozen + new linear head, Adam")

# --- the leaderboard rows ------------------------------------------------------------------------
register_row("frozen-features", "supervised", "linear-probe",
             description="Linear probe (logistic regression) on L2-normalised frozen features of a supervised backbone")
register_row("partial-finetune", "supervised", "partial-finetune",
             description="New head plus the last block(s) fine-tuned on the support set, the rest frozen")
register_row("ssl-rotation", "rotation", "linear-probe",
             description="Linear probe on features learned by rotation prediction (no base labels)")
register_row("ssl-rotation-finetune", "rotation", "partial-finetune",
             description="Partial fine-tuning of the rotation-prediction backbone (no base labels)")
register_row("ssl-simclr", "simclr", "linear-probe",
             description="Linear probe on features learned by SimCLR (no base labels)")
register_row("ssl-simclr-finetune", "simclr", "partial-finetune",
             description="Partial fine-tuning of the SimCLR backbone (no base labels)")
register_row("adversarial-probe", "adversarial", "linear-probe",
             description="Linear probe on an adversarially (PGD) pretrained backbone")
register_row("adversarial-finetune", "adversarial", "partial-finetune",
             description="Partial fine-tuning of an adversarially (PGD) pretrained backbone")
register_row("maml", "maml", "sgd-inner-loop",
             description="MAML (Finn et al. 2017), second order: SGD inner loop from a meta-learned init")
register_row("fomaml", "maml", "sgd-inner-loop", source_params={"first_order": True},
             description="First-order MAML (Finn et al. 2017): no gradient through the inner loop")
register_row("reptile", "reptile", "adam-inner-loop",
             description="Reptile (Nichol et al. 2018): Adam fine-tuning on the support set from a learned init")
register_row("protonet", "protonet", "prototypes",
             description="Prototypical Networks (Snell et al. 2017): nearest class mean in an episodic embedding")
register_row("keras-frozen-features", "keras-supervised", "keras-probe",
             description="frozen-features in Keras/TensorFlow: the same probe on a Keras-pretrained Conv-4")
register_row("keras-partial-finetune", "keras-supervised", "keras-finetune",
             description="partial-finetune in Keras/TensorFlow: LP-FT head + last Conv-4 block, Adam")
register_row("torch-probe-on-keras", "keras-supervised", "torch-probe-on-keras",
             description="Framework check: the PyTorch probe on keras-frozen-features' Keras-pretrained Conv-4")
register_row("torch-finetune-on-keras", "keras-supervised", "torch-finetune-on-keras",
             description="Framework check: PyTorch partial-finetune on keras-partial-finetune's Keras Conv-4")
register_row("keras-pretrained", "keras-pretrained", "keras-pretrained-probe",
             description="Linear probe on your Keras model's frozen features (external pretraining, not ranked)")
register_row("keras-pretrained-finetune", "keras-pretrained", "keras-pretrained-finetune",
             description="Your Keras model, top layers unfrozen + new Dense head, Adam (external, not ranked)")
register_row("torch-pretrained", "torch-pretrained", "linear-probe",
             description="Linear probe on your torchvision model's frozen features (external pretraining, not ranked)")
register_row("torch-pretrained-finetune", "torch-pretrained", "torch-pretrained-finetune",
             description="Your torchvision model, top layers unfrozen + new linear head, Adam (external, not ranked)")
register_row("pixels-probe", "pixels", "linear-probe",
             description="No-transfer baseline: linear probe on the raw normalised pixels (no source phase)")
register_row("random-probe", "random-init", "linear-probe",
             description="No-transfer baseline: linear probe on a randomly initialised backbone (no source phase)")
