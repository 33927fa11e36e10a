"""Encoders built by configuring timm models: SE-ResNet (R-26/50/101) and (SE-)MobileNet-V2.

Each backbone is split into a ``stem`` (never task-conditioned, so the stacked execution mode can
run it once per minibatch) and a ``body`` that returns the stride-4 low-level features (for the
DeepLab-v3+ skip connection) and the final features. Every backbone lists its
``conditioning_slots()``: the blocks whose SE / BN / 3×3 conv the task conditioning converts.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import timm
import torch
from timm.layers import SEModule
from timm.models.resnet import Bottleneck, ResNet
from torch import Tensor, nn

from densemtl.registry import Registry

__all__ = [
    "BACKBONES",
    "Backbone",
    "BlockSlots",
    "MobileNetV2Backbone",
    "SEResNetBackbone",
    "build_backbone",
    "load_state_dict_file",
]

SERESNET_DEPTHS: dict[str, tuple[int, int, int, int]] = {
    "seresnet26": (2, 2, 2, 2),
    "seresnet50": (3, 4, 6, 3),
    "seresnet101": (3, 4, 23, 3),
}
MOBILENETV2_WIDTHS: dict[float, str] = {
    0.35: "mobilenetv2_035",
    0.5: "mobilenetv2_050",
    0.75: "mobilenetv2_075",
    1.0: "mobilenetv2_100",
    1.4: "mobilenetv2_140",
}
OUTPUT_STRIDES = (8, 16)


@dataclass(frozen=True)
class BlockSlots:
    """Names of a block's submodules that task conditioning may replace.

    ``se``: the squeeze-excitation module (None: the block has none); ``norms``: batch norms
    (dotted paths allowed, e.g. ``downsample.1``); ``conv``: the conv a residual adapter is put
    beside (None: no adapter in this block).
    """

    se: str | None
    norms: tuple[str, ...]
    conv: str | None


class Backbone(nn.Module, ABC):
    """Encoder interface: ``forward_stem`` then ``forward_body`` -> (stride-4 low, final) features.

    Attributes ``low_channels``, ``high_channels``, ``output_stride`` and ``mobile`` (MobileNet:
    the decoder then uses depthwise-separable convs and ReLU6, ASTMT appendix C) describe it.
    """

    stem: nn.Module
    low_channels: int
    high_channels: int
    output_stride: int
    mobile: bool = False

    def forward_stem(self, x: Tensor) -> Tensor:
        """Shared stem (conv + BN + act [+ pool]); never task-conditioned."""
        return self.stem(x)

    @abstractmethod
    def forward_body(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Blocks after the stem: returns (stride-4 features, final features)."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Stem then body: (stride-4 low-level features, final features)."""
        return self.forward_body(self.forward_stem(x))

    @abstractmethod
    def conditioning_slots(self) -> Iterator[tuple[nn.Module, BlockSlots]]:
        """Blocks whose SE / BN / conv the task conditioning converts (stem excluded)."""


class SEResNetBackbone(Backbone):
    """timm SE-ResNet (bottleneck blocks with SE, reduction 16) split into stem and 4 stages."""

    def __init__(self, model: ResNet, output_stride: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool)
        self.stages = nn.ModuleList([model.layer1, model.layer2, model.layer3, model.layer4])
        self.low_channels = model.layer1[-1].conv3.out_channels
        self.high_channels = model.num_features
        self.output_stride = output_stride

    def forward_body(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Stage 1 output (stride 4) and stage 4 output (stride = output_stride)."""
        low = self.stages[0](x)
        x = low
        for stage in self.stages[1:]:
            x = stage(x)
        return low, x

    def conditioning_slots(self) -> Iterator[tuple[nn.Module, BlockSlots]]:
        """Every bottleneck: its SE, its three BNs (+ the projection BN) and its 3×3 conv."""
        for stage in self.stages:
            for block in stage:
                norms = ("bn1", "bn2", "bn3")
                if block.downsample is not None:
                    norms += ("downsample.1",)
                yield block, BlockSlots(se="se", norms=norms, conv="conv2")


class MobileNetV2Backbone(Backbone):
    """timm MobileNet-V2 features (stride 4 and last block; the 1280-channel head is dropped)."""

    mobile = True

    def __init__(self, model: nn.Module, output_stride: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(model.conv_stem, model.bn1)
        self.blocks = nn.ModuleList(model.blocks)
        low = [info for info in model.feature_info if info["reduction"] == 4][-1]
        self.low_index = int(low["module"].split(".")[1])
        self.low_channels = low["num_chs"]
        self.high_channels = model.feature_info[-1]["num_chs"]
        self.output_stride = output_stride

    def forward_body(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Output of the last stride-4 stage and of the last block."""
        low = x
        for index, stage in enumerate(self.blocks):
            x = stage(x)
            if index == self.low_index:
                low = x
        return low, x

    def conditioning_slots(self) -> Iterator[tuple[nn.Module, BlockSlots]]:
        """Every (inverted-)residual block: its SE, its BNs and its depthwise 3×3 conv."""
        for stage in self.blocks:
            for block in stage:
                norms = tuple(n for n in ("bn1", "bn2", "bn3") if hasattr(block, n))
                yield block, BlockSlots(se="se", norms=norms, conv="conv_dw")


def load_state_dict_file(
    model: nn.Module, path: str | os.PathLike, ignore_prefixes: tuple[str, ...] = ()
) -> None:
    """Load a local state-dict file into ``model``; any key or shape mismatch is an error.

    Keys starting with one of ``ignore_prefixes`` (an ImageNet checkpoint's classifier head, which
    the backbone does not use) are left out on both sides. The error names the file and the
    missing / unexpected / mis-shaped keys, so a wrong depth or width shows at once instead of as
    a silently half-initialised network.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"pretrained weights file not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt or non-tensor files
        raise ValueError(f"could not read a state dict from {path}: {err}") from err
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    ignored = tuple(ignore_prefixes)
    state = {k: v for k, v in state.items() if not k.startswith(ignored)}
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(ignored)}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    if missing or unexpected or mis_shaped:

        def listing(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")

        raise ValueError(
            f"state dict in {path} does not match the backbone: "
            f"missing keys [{listing(missing)}]; unexpected keys [{listing(unexpected)}]; "
            f"shape mismatches [{listing(mis_shaped)}]"
        )
    model.load_state_dict(state, strict=not ignored)


def _check_output_stride(output_stride: int) -> None:
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride}")


def _set_stem_width(model: ResNet, stem_width: int) -> None:
    """Give timm's plain 7×7 stem ``stem_width`` channels (timm fixes it at 64 for that stem).

    The stem conv/BN and the input side of the first bottleneck (its 1×1 conv and projection
    shortcut) are rebuilt with timm's own initialisation.
    """
    model.conv1 = nn.Conv2d(model.conv1.in_channels, stem_width, 7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(stem_width)
    block = model.layer1[0]
    block.conv1 = nn.Conv2d(stem_width, block.conv1.out_channels, 1, bias=False)
    outplanes = block.conv3.out_channels
    block.downsample = nn.Sequential(
        nn.Conv2d(stem_width, outplanes, 1, bias=False), nn.BatchNorm2d(outplanes)
    )
    for conv in (model.conv1, block.conv1, block.downsample[0]):
        nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")


def build_seresnet(
    layers: tuple[int, ...],
    output_stride: int = 16,
    channels: tuple[int, ...] = (64, 128, 256, 512),
    stem_width: int = 64,
    pretrained_path: str | os.PathLike | None = None,
    zero_init_last: bool = False,
    squeeze_excite: bool = True,
) -> SEResNetBackbone:
    """SE-ResNet with bottleneck blocks; the last stage(s) dilated for output stride 16 / 8.

    ``channels`` / ``stem_width`` give narrow variants for CPU work. ``zero_init_last`` defaults
    to False (the reference networks use the standard BN init; timm zeroes each block's last BN,
    which would also hide the task-specific SE of a fresh network). Weights load from a local
    state-dict file of the matching timm model (keys ``conv1.*``, ``layer1.*``, ...; ``fc.*``
    ignored), before any task conditioning, so all per-task copies start from them.
    ``squeeze_excite=False`` gives the plain ResNet of ASTMT Table 3a (no SE to make per-task).
    """
    _check_output_stride(output_stride)
    model = ResNet(
        block=Bottleneck,
        layers=tuple(layers),
        block_args=dict(attn_layer="se" if squeeze_excite else None),
        output_stride=output_stride,
        channels=tuple(channels),
        stem_width=stem_width,
        num_classes=0,
        global_pool="",
        zero_init_last=zero_init_last,
    )
    if stem_width != model.conv1.out_channels:
        _set_stem_width(model, stem_width)
    if pretrained_path is not None:
        load_state_dict_file(model, pretrained_path, ignore_prefixes=("fc.",))
    return SEResNetBackbone(model, output_stride)


def build_mobilenetv2(
    output_stride: int = 16,
    width: float = 1.0,
    squeeze_excite: bool = True,
    pretrained_path: str | os.PathLike | None = None,
) -> MobileNetV2Backbone:
    """MobileNet-V2 (timm ``mobilenetv2_<width>``, ReLU6), optionally with SE in every block.

    ``squeeze_excite`` inserts a shared SE module (reduction 4) after each block's depthwise conv
    (the SE-MobileNet of ASTMT appendix C), so the per-task SE conversion has a module to copy.
    ``width`` is the channel multiplier (one of the widths timm registers).
    """
    _check_output_stride(output_stride)
    if width not in MOBILENETV2_WIDTHS:
        raise ValueError(
            f"unknown MobileNet-V2 width {width}; choose one of {sorted(MOBILENETV2_WIDTHS)}"
        )
    model = timm.create_model(
        MOBILENETV2_WIDTHS[width], pretrained=False, output_stride=output_stride, num_classes=0
    )
    if squeeze_excite:
        for stage in model.blocks:
            for block in stage:
                block.se = SEModule(block.conv_dw.out_channels, rd_ratio=0.25)
    if pretrained_path is not None:
        load_state_dict_file(
            model, pretrained_path, ignore_prefixes=("conv_head.", "bn2.", "classifier.")
        )
    return MobileNetV2Backbone(model, output_stride)


#: every backbone, by ``backbone.name``; discovered from the modules of ``densemtl.models``.
BACKBONES: Registry[Callable[..., Backbone]] = Registry("backbone", "backbone", ["densemtl.models"])
for _name, _depths in SERESNET_DEPTHS.items():
    BACKBONES.register(_name)(partial(build_seresnet, _depths))
BACKBONES.register("mobilenetv2")(build_mobilenetv2)


def build_backbone(name: str = "seresnet26", **options: Any) -> Backbone:
    """Build a backbone by registry name; ``options`` (checked against its builder) go to it.

    SE-ResNet options: ``output_stride``, ``channels``, ``stem_width``, ``pretrained_path``,
    ``zero_init_last``, ``squeeze_excite``. MobileNet-V2 options: ``output_stride``, ``width``,
    ``squeeze_excite``, ``pretrained_path``.
    """
    return BACKBONES.build(name, **options)
