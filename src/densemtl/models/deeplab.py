"""Decoders: DeepLab-v3+ (ASPP + stride-4 skip, SPEC §2) and the UberNet-type light decoder.

Both return the decoder **features** map (stride 4) that the task heads and the adversarial
discriminator consume. The DeepLab decoder is built from :class:`ConvBlock` (conv → BN → act → SE,
SE after the activation as in the ASTMT reference), which the task conditioning converts in place
through :meth:`DeepLabV3PlusDecoder.conditioning_slots`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from timm.layers import SEModule
from torch import Tensor, nn

from .backbones import BlockSlots
from .conditioning import PerTaskModule

__all__ = [
    "ASPP",
    "ASPP_RATES",
    "ConvBlock",
    "DeepLabV3PlusDecoder",
    "SeparableConv2d",
    "UberNetDecoder",
]

ASPP_RATES: dict[int, tuple[int, int, int]] = {16: (6, 12, 18), 8: (12, 24, 36)}


class SeparableConv2d(nn.Module):
    """Depthwise k×k conv followed by a pointwise 1×1 conv (MobileNet decoder, appendix C).

    Exposes ``in_channels`` / ``out_channels`` / ``stride`` / ``groups`` like ``nn.Conv2d`` so a
    residual adapter can be put beside it.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int = 1):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.stride, self.groups = (1, 1), 1
        pad = dilation * (kernel_size // 2)
        self.depthwise = nn.Conv2d(
            in_channels, in_channels, kernel_size, padding=pad, dilation=dilation,
            groups=in_channels, bias=False,
        )  # fmt: skip
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """Depthwise then pointwise convolution."""
        return self.pointwise(self.depthwise(x))


class ConvBlock(nn.Module):
    """conv → BN → activation → SE (optional): the unit of both decoders.

    ``separable`` makes a k×k conv depthwise-separable; ``se_ratio`` None leaves SE out.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        dilation: int = 1,
        separable: bool = False,
        act_layer: type[nn.Module] = nn.ReLU,
        se_ratio: float | None = 1 / 16,
    ) -> None:
        super().__init__()
        if separable and kernel_size > 1:
            self.conv = SeparableConv2d(in_channels, out_channels, kernel_size, dilation)
        else:
            pad = dilation * (kernel_size // 2)
            self.conv = nn.Conv2d(
                in_channels, out_channels, kernel_size, padding=pad, dilation=dilation, bias=False
            )
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = act_layer(inplace=True)
        self.se = (
            nn.Identity()
            if se_ratio is None
            else SEModule(out_channels, rd_ratio=se_ratio, rd_divisor=1)
        )
        for module in self.conv.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        """Convolve, normalise, activate, gate."""
        return self.se(self.act(self.bn(self.conv(x))))


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1×1, three dilated 3×3, image pooling → concat → 1×1."""

    def __init__(
        self,
        in_channels: int,
        width: int,
        rates: tuple[int, ...],
        separable: bool = False,
        act_layer: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        block = dict(separable=separable, act_layer=act_layer)
        self.branches = nn.ModuleList(
            [ConvBlock(in_channels, width, 1, **block)]
            + [ConvBlock(in_channels, width, 3, rate, **block) for rate in rates]
        )
        self.pool = ConvBlock(in_channels, width, 1, **block)
        self.project = ConvBlock(width * (len(rates) + 2), width, 1, **block)

    def forward(self, x: Tensor) -> Tensor:
        """All branches on ``x``, the pooled branch broadcast back to ``x``'s size, fused by 1×1."""
        outs = [branch(x) for branch in self.branches]
        pooled = self.pool(x.mean((2, 3), keepdim=True))
        outs.append(pooled.expand(-1, -1, *x.shape[2:]))
        return self.project(torch.cat(outs, dim=1))


class DeepLabV3PlusDecoder(nn.Module):
    """DeepLab-v3+ decoder: ASPP on the final features, fused with reduced stride-4 features.

    ``width`` W is the ASPP / decoder width (reference 64, standard DeepLab 256); the low-level
    features are reduced to 48·W/256 channels (SE reduction 4 there, 16 elsewhere, as in the
    reference). ASPP rates follow the output stride: 6/12/18 at 16, 12/24/36 at 8.
    """

    def __init__(
        self,
        low_channels: int,
        high_channels: int,
        width: int = 64,
        output_stride: int = 16,
        separable: bool = False,
        act_layer: type[nn.Module] = nn.ReLU,
    ) -> None:
        super().__init__()
        if width <= 0 or width % 16:
            raise ValueError(
                f"decoder width must be a positive multiple of 16 (so the low-level reduction "
                f"48·W/256 is an integer), got {width}"
            )
        if output_stride not in ASPP_RATES:
            raise ValueError(
                f"output_stride must be one of {tuple(ASPP_RATES)} for the ASPP rates, "
                f"got {output_stride}"
            )
        low_width = 48 * width // 256
        block = dict(separable=separable, act_layer=act_layer)
        self.width = width
        self.aspp = ASPP(high_channels, width, ASPP_RATES[output_stride], **block)
        self.low_reduce = ConvBlock(low_channels, low_width, 1, se_ratio=1 / 4, **block)
        self.fuse = ConvBlock(width + low_width, width, 3, **block)
        self.refine = ConvBlock(width, width, 3, **block)

    def forward(self, low: Tensor, high: Tensor) -> Tensor:
        """Decoder features (W channels, at the stride of ``low``)."""
        low = self.low_reduce(low)
        x = F.interpolate(self.aspp(high), size=low.shape[2:], mode="bilinear", align_corners=False)
        return self.refine(self.fuse(torch.cat([x, low], dim=1)))

    def conditioning_slots(self) -> Iterator[tuple[nn.Module, BlockSlots]]:
        """Every conv block: its SE and BN; an adapter beside every conv but image pooling's."""
        for block in self.modules():
            if isinstance(block, ConvBlock):
                conv = None if block is self.aspp.pool else "conv"
                yield block, BlockSlots(se="se", norms=("bn",), conv=conv)


class _UberNetBranch(nn.Module):
    """One task's light decoder: 1×1 conv-BN-ReLU on each input, upsample, concatenate."""

    def __init__(self, low_channels: int, high_channels: int, width: int) -> None:
        super().__init__()
        self.low = ConvBlock(low_channels, width, 1, se_ratio=None)
        self.high = ConvBlock(high_channels, width, 1, se_ratio=None)

    def forward(self, low: Tensor, high: Tensor) -> Tensor:
        """Features ``[low, upsampled high]`` with 2·width channels."""
        low = self.low(low)
        high = F.interpolate(
            self.high(high), size=low.shape[2:], mode="bilinear", align_corners=False
        )
        return torch.cat([low, high], dim=1)


class UberNetDecoder(PerTaskModule):
    """UberNet-type decoder (ASTMT appendix B): a separate light decoder per task.

    ``widths`` gives each task's branch width; the reference uses the task's output channels, so
    its features have 2·C_t channels and its head is a 1×1 conv from them.
    """

    def __init__(self, low_channels: int, high_channels: int, widths: Mapping[str, int]) -> None:
        super().__init__()
        self.widths = dict(widths)
        self.per_task = nn.ModuleDict(
            {t: _UberNetBranch(low_channels, high_channels, w) for t, w in widths.items()}
        )

    def forward(self, low: Tensor, high: Tensor, task: str) -> Tensor:
        """Features of ``task`` (2·width channels, at the stride of ``low``)."""
        return self.per_task[task](low, high)
