"""Models: timm backbones, task conditioning, DeepLab-v3+ / UberNet decoders, heads, the net."""

from .backbones import BACKBONES, Backbone, BlockSlots, build_backbone, load_state_dict_file
from .base import ARCHITECTURES, MultiTaskNet
from .conditioning import (
    PerTaskModule,
    TaskAdapter,
    TaskBatchNorm2d,
    TaskRouter,
    TaskSqueezeExcite,
    condition_blocks,
)
from .deeplab import ASPP, ConvBlock, DeepLabV3PlusDecoder, UberNetDecoder
from .heads import TaskHeads
from .net import DenseMTLNet

__all__ = [
    "ARCHITECTURES",
    "ASPP",
    "BACKBONES",
    "Backbone",
    "BlockSlots",
    "ConvBlock",
    "DeepLabV3PlusDecoder",
    "DenseMTLNet",
    "MultiTaskNet",
    "PerTaskModule",
    "TaskAdapter",
    "TaskBatchNorm2d",
    "TaskHeads",
    "TaskRouter",
    "TaskSqueezeExcite",
    "UberNetDecoder",
    "build_backbone",
    "condition_blocks",
    "load_state_dict_file",
]
