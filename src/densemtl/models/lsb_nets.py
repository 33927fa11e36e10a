"""The loss-scale-balancing study's networks (SPEC §3, LSB supplement §1).

Three architectures over one encoder type (timm MobileNet-V2 or PNASNet, ``features_only``, the
stride-32 output) and one decoder type (12 3×3 convs with ReLU, 5 bilinear ×2 upsamplings):

* ``lsb_full_sharing``: one encoder, one decoder emitting every task's channels (c₀ = Σ_t C_t);
* ``lsb_multi_decoder``: one encoder, one decoder per task;
* ``lsb_cross_stitch``: one encoder column per task, a cross-stitch unit mixing the column
  outputs (x_k^in = Σ_j α_kj x_j^out), one decoder per task.

They implement the network contract (:class:`densemtl.models.base.MultiTaskNet`), so the training
loops and weighting strategies drive them unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbones import MOBILENETV2_WIDTHS
from .base import ARCHITECTURES, MultiTaskNet

__all__ = [
    "LSB_ARCHITECTURES",
    "LSB_ENCODERS",
    "CrossStitchNet",
    "CrossStitchUnit",
    "FullSharingNet",
    "LsbDecoder",
    "LsbEncoder",
    "MultiDecoderNet",
    "build_lsb_net",
    "cross_stitch_init",
]

LSB_ENCODERS = ("mobilenetv2", "pnasnet")
LSB_ARCHITECTURES = ("lsb_full_sharing", "lsb_multi_decoder", "lsb_cross_stitch")
DECODER_LEVELS = 6  # input stride 32, then 5 ×2 upsamplings back to stride 1
CONVS_PER_LEVEL = 2  # 6 levels × 2 = the 12 convs of supplement Fig. S-1


def _timm_name(encoder: str, width: float) -> str:
    """The timm model name of an LSB encoder at a width multiplier."""
    if encoder == "mobilenetv2":
        if width not in MOBILENETV2_WIDTHS:
            raise ValueError(
                f"model.encoder_width={width} is not a MobileNet-V2 width timm registers; "
                f"choose one of {sorted(MOBILENETV2_WIDTHS)}"
            )
        return MOBILENETV2_WIDTHS[width]
    if encoder == "pnasnet":
        if width != 1.0:
            raise ValueError(f"model.encoder_width must be 1.0 for pnasnet, got {width}")
        return "pnasnet5large"
    raise ValueError(f"model.encoder={encoder!r} is not one of {', '.join(LSB_ENCODERS)}")


class LsbEncoder(nn.Module):
    """A timm classification network without its classifier, as ``features_only``: the
    stride-32 feature map (MobileNet-V2: the last inverted-residual block; PNASNet: the last
    cell, 4320 channels).

    ``pretrained_path`` loads a local state dict of the full timm model (its classifier keys are
    dropped by timm), so nothing is downloaded.
    """

    def __init__(
        self,
        encoder: str = "mobilenetv2",
        width: float = 1.0,
        pretrained_path: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        name = _timm_name(encoder, width)
        options: dict = {}
        if pretrained_path is not None:
            if not Path(pretrained_path).is_file():
                raise FileNotFoundError(
                    f"model.pretrained_path={str(pretrained_path)!r}: no such file (a state dict "
                    f"of timm's {name})"
                )
            options["pretrained_cfg_overlay"] = dict(file=str(pretrained_path))
        self.model = timm.create_model(
            name,
            pretrained=pretrained_path is not None,
            features_only=True,
            out_indices=(-1,),
            **options,
        )
        self.out_channels = int(self.model.feature_info.channels()[-1])
        self.reduction = int(self.model.feature_info.reduction()[-1])

    def forward(self, images: Tensor) -> Tensor:
        """The last (stride-32) feature map."""
        return self.model(images)[-1]

    def last_layer_weight(self) -> nn.Parameter:
        """Weight of the last registered conv (MobileNet-V2: the last block's 1×1 projection)."""
        convs = [m for m in self.model.modules() if isinstance(m, nn.Conv2d)]
        return convs[-1].weight


def decoder_widths(width: int, min_width: int = 16) -> list[int]:
    """Channels at each of the decoder's 6 resolutions: ``width`` halved per upsampling, floored
    at ``min(min_width, width)`` (Fig. S-1's numbers are not in the supplement's text)."""
    floor = min(min_width, width)
    return [max(width >> level, floor) for level in range(DECODER_LEVELS)]


class LsbDecoder(nn.Module):
    """12 3×3 convs with ReLU and 5 bilinear ×2 upsamplings (supplement Fig. S-1).

    Two convs per resolution from stride 32 up to stride 1; the last conv is the linear
    estimation layer (no ReLU) with ``out_channels`` = c₀. Xavier-initialised (supplement §3).
    ``width`` is the first level's channel count (512 at paper size; small for CPU work).
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 512) -> None:
        super().__init__()
        if not isinstance(width, int) or width < 1:
            raise ValueError(f"model.decoder_width must be a positive integer, got {width!r}")
        widths = decoder_widths(width)
        convs, channels = [], in_channels
        for level_width in widths:
            for _ in range(CONVS_PER_LEVEL):
                convs.append(nn.Conv2d(channels, level_width, 3, padding=1))
                channels = level_width
        convs[-1] = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.convs = nn.ModuleList(convs)
        for conv in self.convs:
            nn.init.xavier_uniform_(conv.weight)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        """Estimate at 32× the input's resolution."""
        last = len(self.convs) - 1
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < last:
                x = F.relu(x, inplace=True)
            if i % CONVS_PER_LEVEL == CONVS_PER_LEVEL - 1 and i < last:
                x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return x


def cross_stitch_init(num_tasks: int, init: Sequence[float] | None = None) -> Tensor:
    """The K×K cross-stitch matrix at initialisation: ``init = (α_ii, α_ij)`` or, if None, the
    supplement's values: 0.9 / 0.05 for 3 tasks, 1/K everywhere for 4 and 8 tasks.

    Other K follow the same two rules: K ≤ 3 keeps α_ii = 0.9 with the rest of each row split
    evenly over the other columns (rows sum to 1, as in both of the paper's settings), K ≥ 4
    uses 1/K.
    """
    if init is None:
        if num_tasks == 1:
            diagonal, other = 1.0, 0.0
        elif num_tasks <= 3:
            diagonal, other = 0.9, 0.1 / (num_tasks - 1)
        else:
            diagonal = other = 1.0 / num_tasks
    else:
        values = list(init)
        if len(values) != 2 or not all(isinstance(v, int | float) for v in values):
            raise ValueError(
                f"model.stitch_init must be null or [alpha_self, alpha_other], got {init!r}"
            )
        diagonal, other = map(float, values)
    alpha = torch.full((num_tasks, num_tasks), other)
    alpha.fill_diagonal_(diagonal)
    return alpha


class CrossStitchUnit(nn.Module):
    """Learned K×K mixing of the K columns' feature maps (supplement Eq. 1)."""

    def __init__(self, num_tasks: int, init: Sequence[float] | None = None) -> None:
        super().__init__()
        self.alpha = nn.Parameter(cross_stitch_init(num_tasks, init))

    def forward(self, columns: Tensor) -> Tensor:
        """``columns``: K × B × C × H × W encoder outputs -> the K decoder inputs."""
        return torch.einsum("kj,jbchw->kbchw", self.alpha, columns)


class FullSharingNet(MultiTaskNet):
    """One encoder and one decoder whose c₀ = Σ C_t output channels are split per task.

    ``shared_representation`` is the decoder output before the split (everything up to it is
    shared). The last layer's weight rows are each read by one task only, so GradNorm's last
    shared layer is the decoder's second-to-last conv, the last one every loss reaches whole.
    """

    per_task_features = False  # one decoder output for all tasks
    output_stride = 2 ** (DECODER_LEVELS - 1)  # the encoder's stride-32 map

    def __init__(
        self, tasks: Mapping[str, int], encoder: LsbEncoder, decoder_width: int = 512
    ) -> None:
        super().__init__(tasks)
        self.encoder = encoder
        self.decoder = LsbDecoder(encoder.out_channels, sum(self.channels.values()), decoder_width)

    @property
    def feature_width(self) -> int:
        """The decoder's c₀ = Σ C_t output channels (every task's features)."""
        return sum(self.channels.values())

    def _predict(self, images: Tensor, tasks: tuple[str, ...]) -> dict[str, Tensor]:
        out = self.decoder(self.encoder(images))
        self.shared_representation = out
        split = dict(zip(self.tasks, out.split(list(self.channels.values()), dim=1)))
        self.features = dict.fromkeys(tasks, out)
        return {t: split[t] for t in tasks}

    def task_modules(self, task: str) -> list[nn.Module]:
        return []

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [self.decoder.convs[-2].weight]


class MultiDecoderNet(MultiTaskNet):
    """One shared encoder, one decoder per task.

    ``shared_representation`` is the encoder output as one view per task (``{task: z_t}``, each
    read only by that task's decoder): representation-space gradient methods then get every
    ∂L_t/∂z from one backward through the decoders instead of T batched passes through all of
    them. GradNorm's last shared layer is the encoder's last conv.
    """

    per_task_features = False  # views of the one shared encoder output
    output_stride = 2 ** (DECODER_LEVELS - 1)  # the encoder's stride-32 map

    def __init__(
        self, tasks: Mapping[str, int], encoder: LsbEncoder, decoder_width: int = 512
    ) -> None:
        super().__init__(tasks)
        self.encoder = encoder
        self.decoders = nn.ModuleDict(
            {t: LsbDecoder(encoder.out_channels, c, decoder_width) for t, c in tasks.items()}
        )

    @property
    def feature_width(self) -> int:
        """The encoder's output channels."""
        return self.encoder.out_channels

    def _predict(self, images: Tensor, tasks: tuple[str, ...]) -> dict[str, Tensor]:
        z = self.encoder(images)
        self.features = {t: z.view_as(z) for t in tasks}
        self.shared_representation = dict(self.features)
        return {t: self.decoders[t](self.features[t]) for t in tasks}

    def task_modules(self, task: str) -> list[nn.Module]:
        return [self.decoders[task]]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [self.encoder.last_layer_weight()]


class CrossStitchNet(MultiTaskNet):
    """Multi-column network: one encoder per task, a cross-stitch unit, one decoder per task.

    Every column feeds every task through α, so the encoders and α are shared parameters and
    only the decoders are task-specific; no single tensor separates shared from task-specific
    modules, so ``shared_representation`` is None. GradNorm's last shared layer is α.
    """

    per_task_features = True  # each task's own mix of the columns
    has_shared_representation = False
    output_stride = 2 ** (DECODER_LEVELS - 1)  # the encoder's stride-32 map

    def __init__(
        self,
        tasks: Mapping[str, int],
        encoders: Mapping[str, LsbEncoder],
        decoder_width: int = 512,
        stitch_init: Sequence[float] | None = None,
    ) -> None:
        super().__init__(tasks)
        if list(encoders) != list(self.tasks):
            raise ValueError(f"need one encoder per task {list(self.tasks)}, got {list(encoders)}")
        self.encoders = nn.ModuleDict(encoders)
        widths = {e.out_channels for e in encoders.values()}
        if len(widths) != 1:
            raise ValueError(f"cross-stitch columns must have equal widths, got {sorted(widths)}")
        width = self.stitch_width = widths.pop()
        self.stitch = CrossStitchUnit(len(self.tasks), stitch_init)
        self.decoders = nn.ModuleDict(
            {t: LsbDecoder(width, c, decoder_width) for t, c in tasks.items()}
        )

    @property
    def feature_width(self) -> int:
        """The columns' (equal) output channels."""
        return self.stitch_width

    def _predict(self, images: Tensor, tasks: tuple[str, ...]) -> dict[str, Tensor]:
        columns = torch.stack([self.encoders[t](images) for t in self.tasks])
        mixed = dict(zip(self.tasks, self.stitch(columns).unbind(0)))
        self.features = {t: mixed[t] for t in tasks}
        return {t: self.decoders[t](mixed[t]) for t in tasks}

    def task_modules(self, task: str) -> list[nn.Module]:
        return [self.decoders[task]]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return [self.stitch.alpha]


def build_lsb_net(
    arch: str,
    tasks: Mapping[str, int],
    encoder: str = "mobilenetv2",
    encoder_width: float = 1.0,
    decoder_width: int = 512,
    pretrained_path: str | os.PathLike | None = None,
    stitch_init: Sequence[float] | None = None,
) -> MultiTaskNet:
    """An LSB architecture by name for ``tasks`` (name -> output channels).

    Paper size: ``encoder_width=1.0`` (timm ``mobilenetv2_100``) or ``encoder="pnasnet"``
    (``pnasnet5large``), ``decoder_width=512``; CPU work uses narrow widths. ``stitch_init``
    applies to the cross-stitch network only (see ``cross_stitch_init``).
    """
    if stitch_init is not None and arch != "lsb_cross_stitch":
        raise ValueError(f"model.stitch_init applies to lsb_cross_stitch only, not {arch!r}")
    enc = dict(encoder=encoder, width=encoder_width, pretrained_path=pretrained_path)
    if arch == "lsb_cross_stitch":
        columns = {t: LsbEncoder(**enc) for t in tasks}
        return CrossStitchNet(tasks, columns, decoder_width, stitch_init)
    single_encoder = {"lsb_full_sharing": FullSharingNet, "lsb_multi_decoder": MultiDecoderNet}
    return single_encoder[arch](tasks, LsbEncoder(**enc), decoder_width)


for _arch in LSB_ARCHITECTURES:
    ARCHITECTURES.register(_arch)(partial(build_lsb_net, _arch))
