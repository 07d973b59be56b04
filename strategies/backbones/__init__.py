"""Built-in backbones, registered lazily (``python -m harness list backbones`` imports no torch).

Contract: harness/backbone.py. ``--backbone NAME`` sets the backbone of every source phase of a run;
``--set STRATEGY.source.backbone=NAME`` of one.
"""

from harness.registry import BACKBONES

BACKBONES.register_lazy("conv4", "strategies.backbones.conv4:Conv4",
                        description="Conv-4 (Vinyals et al. 2016): 4 x [conv3x3 64, BN, ReLU, maxpool]; 256-d at 32x32")
BACKBONES.register_lazy("resnet12", "strategies.backbones.resnet12:ResNet12",
                        description="ResNet-12 (Oreshkin et al. 2018; Lee et al. 2019; Tian et al. 2020): "
                                    "4 residual stages 64-160-320-640, avg-pooled 640-d")
