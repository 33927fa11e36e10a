"""The ATRC network (ATRC §3, supplement §A; SPEC §4): HRNet backbone, per-task features,
auxiliary label heads, N² context-pooling blocks and a fusion head per target task.

Two head modes: ``genotype`` given (a fixed type per block; retraining and the fixed-type rows)
or ``genotype=None`` (the context-type search: every block a ``ContextSearchBlock``).
The network follows the suite's network API (docs/architecture.md "Models").
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.models.hrnet import HighResolutionNetFeatures
from torch import Tensor, nn

from densemtl.models.backbones import load_state_dict_file
from densemtl.models.base import ARCHITECTURES, MultiTaskNet

from .context import ContextSearchBlock, build_context
from .genotype import Genotype, resolve_genotype, validate_genotype
from .labels import LabelSpace, build_label_space

__all__ = ["HRNET_BACKBONES", "ATRCNet", "HRNetBackbone", "TargetHead", "build_atrc_net",
           "search_candidates"]

#: a from-scratch HRNet small enough for CPU work (branches 8/16/32/64 → 120 channels)
HRNET_TINY_CFG: dict[str, Any] = dict(
    stem_width=16,
    stage1=dict(num_modules=1, num_branches=1, block_type="BOTTLENECK", num_blocks=(1,),
                num_channels=(16,), fuse_method="SUM"),
    stage2=dict(num_modules=1, num_branches=2, block_type="BASIC", num_blocks=(1, 1),
                num_channels=(8, 16), fuse_method="SUM"),
    stage3=dict(num_modules=1, num_branches=3, block_type="BASIC", num_blocks=(1, 1, 1),
                num_channels=(8, 16, 32), fuse_method="SUM"),
    stage4=dict(num_modules=1, num_branches=4, block_type="BASIC", num_blocks=(1, 1, 1, 1),
                num_channels=(8, 16, 32, 64), fuse_method="SUM"),
)
HRNET_BACKBONES = ("hrnet_w18_small_v2", "hrnet_w48", "hrnet_tiny")
#: keys of a full timm HRNet checkpoint that the features-only model does not have
HRNET_CLASSIFIER_PREFIXES = ("incre_modules.", "downsamp_modules.", "final_layer.", "classifier.")


class HRNetBackbone(nn.Module):
    """timm HRNet's four raw branch outputs (strides 4/8/16/32, ``feature_location=''``),
    upsampled bilinearly to stride 4 and concatenated (270 channels for W18-small-v2, 720 for
    W48, 120 for ``hrnet_tiny``).

    ``pretrained_path``: a local state dict of the full timm model (its classification-only keys
    are ignored); nothing is downloaded.
    """

    def __init__(self, name: str = "hrnet_w18_small_v2",
                 pretrained_path: str | os.PathLike | None = None) -> None:
        super().__init__()
        if name not in HRNET_BACKBONES:
            raise ValueError(f"model.backbone={name!r} is not one of {', '.join(HRNET_BACKBONES)}")
        options = dict(feature_location="", out_indices=(1, 2, 3, 4))
        if name == "hrnet_tiny":
            self.body = HighResolutionNetFeatures(HRNET_TINY_CFG, **options)
        else:
            self.body = timm.create_model(name, pretrained=False, features_only=True, **options)
        if pretrained_path is not None:
            load_state_dict_file(self.body, pretrained_path, HRNET_CLASSIFIER_PREFIXES)
        self.branch_channels = list(self.body.feature_info.channels())
        self.out_channels = sum(self.branch_channels)

    def forward(self, images: Tensor) -> Tensor:
        """``B×out_channels×⌈H/4⌉×⌈W/4⌉``.

        timm's HRNet fuses branches with fixed ×2ᵏ upsampling, so it needs sides divisible by 32
        (425×560 is not): the input is zero-padded at the bottom/right to the next multiple of
        32 and the stride-4 map cropped back to ⌈H/4⌉×⌈W/4⌉ (the reference HRNet resizes
        inside its fuse layers instead).
        """
        h, w = images.shape[2:]
        pad_h, pad_w = -h % 32, -w % 32
        if pad_h or pad_w:
            images = F.pad(images, (0, pad_w, 0, pad_h))
        branches = self.body(images)
        size = branches[0].shape[2:]
        x = torch.cat([branches[0]] + [
            F.interpolate(b, size=size, mode="bilinear", align_corners=False) for b in branches[1:]
        ], 1)
        return x[:, :, :-(-h // 4), :-(-w // 4)]

    def last_layer_weight(self) -> nn.Parameter:
        """The last registered conv's weight (in stage 4's last fuse layer)."""
        return [m for m in self.body.modules() if isinstance(m, nn.Conv2d)][-1].weight


def conv_bn_relu(cin: int, cout: int, kernel: int = 1) -> nn.Sequential:
    """conv (no bias) + BN + ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TargetHead(nn.Module):
    """One target task's distillation and prediction: its blocks (source -> block), the block
    outputs concatenated → 1×1 conv + BN with γ = β = 0 (the network starts without
    distillation) → concatenated with the task feature → 1×1 conv-BN-ReLU (2C → C) →
    Dropout2d → 1×1 logits (init N(0, 0.01), bias 0)."""

    def __init__(self, blocks: Mapping[str, nn.Module], channels: int, width: int,
                 out_channels: int, dropout: float = 0.05) -> None:
        super().__init__()
        self.blocks = nn.ModuleDict(blocks)
        if self.blocks:
            self.distill = nn.Sequential(
                nn.Conv2d(len(self.blocks) * width, channels, 1, bias=False),
                nn.BatchNorm2d(channels),
            )
            nn.init.zeros_(self.distill[1].weight)
            nn.init.zeros_(self.distill[1].bias)
        self.fuse = conv_bn_relu(2 * channels, channels)
        self.dropout = nn.Dropout2d(dropout)
        self.logits = nn.Conv2d(channels, out_channels, 1)
        nn.init.normal_(self.logits.weight, 0.0, 0.01)
        nn.init.zeros_(self.logits.bias)

    def forward(self, target: Tensor, sources: Mapping[str, Tensor],
                regions: Mapping[str, Mapping[str, Tensor]]) -> tuple[Tensor, Tensor]:
        """(logits, the tensor the logits conv consumed)."""
        if self.blocks:
            outs = [block(target, sources[s], regions[s]) for s, block in self.blocks.items()]
            distilled = self.distill(torch.cat(outs, 1))
        else:
            distilled = torch.zeros_like(target)
        feature = self.dropout(self.fuse(torch.cat([target, distilled], 1)))
        return self.logits(feature), feature


class _FixedBlock(nn.Module):
    """A fixed-genotype block: one context module; ``regions`` carries its label map."""

    def __init__(self, kind: str, module: nn.Module) -> None:
        super().__init__()
        self.kind, self.context = kind, module

    def forward(self, target: Tensor, source: Tensor, regions: Mapping[str, Tensor]) -> Tensor:
        return self.context(target, source, regions.get(self.kind))


def search_candidates(target: str, source: str, label_tasks: Sequence[str]) -> tuple[str, ...]:
    """The search's candidate types of block (target, source): none, global, local, T-label (if
    the target has a label space), S-label (cross pairs whose source has one)."""
    out = ["none", "global", "local"]
    if target in label_tasks:
        out.append("t_label")
    if source != target and source in label_tasks:
        out.append("s_label")
    return tuple(out)


class ATRCNet(MultiTaskNet):
    """ATRC multi-task network over ``tasks`` (registered task name -> output channels).

    ``genotype``: ``{target: {source: type}}`` for a fixed head, None for the search.
    ``context``: options of the blocks (``similarity``: ``inv_d`` paper / ``inv_sqrt_d`` code;
    ``global_feature_map``: ``relu`` paper / ``softplus`` code; ``window``: 9).
    ``labels``: auxiliary label spaces (``depth_bins``, ``depth_range``, ``normals_codewords``,
    ``normals_decoding``: ``triangular`` paper / ``nearest`` code, ``binary_class_weights``),
    ``detach_regions`` (False:
    the final losses reach the auxiliary heads through the region maps, as in the reference
    code) and ``gt_regions`` (region maps from the ground truth, supplement Table E-1; the
    training module sets ``region_labels`` for each batch).

    After each forward: ``features[t]`` (the tensor t's logits conv consumed, C channels),
    ``aux_logits[t]`` (stride-4 auxiliary logits), ``shared_representation`` None (the per-task
    features feed every target's blocks, so no one tensor separates shared from task-specific).
    """

    per_task_features = True
    output_stride = 32  # HRNet's lowest-resolution branch
    has_shared_representation = False

    def __init__(
        self,
        tasks: Mapping[str, int],
        encoder: str = "hrnet_w18_small_v2",
        pretrained_path: str | os.PathLike | None = None,
        genotype: Mapping | None = None,
        context: Mapping[str, Any] | None = None,
        labels: Mapping[str, Any] | None = None,
        detach_regions: bool = False,
        gt_regions: bool = False,
        dropout: float = 0.05,
    ) -> None:
        super().__init__(tasks)
        self.backbone = HRNetBackbone(encoder, pretrained_path)
        channels = self.backbone.out_channels // 4
        width = channels // 2
        self.feature_width, self.attention_width = channels, width
        self.searching = genotype is None
        self.genotype: Genotype | None = (
            None if genotype is None else validate_genotype(genotype, self.tasks)
        )
        label_kwargs = dict(labels or {})
        if "depth_range" in label_kwargs:
            label_kwargs["depth_range"] = tuple(label_kwargs["depth_range"])
        spaces: dict[str, LabelSpace] = {}
        for t, c in tasks.items():
            try:
                spaces[t] = build_label_space(t, c, **label_kwargs)
            except ValueError:
                if self.genotype is not None and self._needs_labels(t):
                    raise
        label_tasks = [t for t in self.tasks if t in spaces and (
            self.genotype is None or self._needs_labels(t))]
        self.label_spaces = nn.ModuleDict({t: spaces[t] for t in label_tasks})
        self.task_convs = nn.ModuleDict(
            {t: conv_bn_relu(self.backbone.out_channels, channels, 3) for t in self.tasks}
        )
        cin = self.backbone.out_channels
        self.aux_heads = nn.ModuleDict({
            t: nn.Sequential(conv_bn_relu(cin, cin),
                             nn.Conv2d(cin, self.label_spaces[t].num_classes, 1))
            for t in label_tasks
        })
        ctx = dict(context or {})
        heads = {}
        for t, out_channels in tasks.items():
            blocks: dict[str, nn.Module] = {}
            for s in self.tasks:
                if self.genotype is None:
                    blocks[s] = ContextSearchBlock(
                        search_candidates(t, s, label_tasks), channels, width, **ctx
                    )
                elif self.genotype[t][s] != "none":
                    kind = self.genotype[t][s]
                    blocks[s] = _FixedBlock(kind, build_context(kind, channels, width, **ctx))
            heads[t] = TargetHead(blocks, channels, width, out_channels, dropout)
        self.heads = nn.ModuleDict(heads)
        self.detach_regions, self.gt_regions = bool(detach_regions), bool(gt_regions)
        #: the batch labels when ``gt_regions`` (set by the training module for each of its
        #: steps and cleared after; without labels, e.g. on images alone, the predicted maps
        #: are used)
        self.region_labels: Mapping[str, Tensor] | None = None
        self.aux_logits: dict[str, Tensor] = {}

    def _needs_labels(self, task: str) -> bool:
        """Whether the fixed genotype uses ``task``'s label map (T-label target, S-label source)."""
        assert self.genotype is not None
        return any(k == "t_label" for k in self.genotype[task].values()) or any(
            row[task] == "s_label" for t, row in self.genotype.items() if t != task
        )

    # -- forward -------------------------------------------------------------------------------
    def _region_weights(self, task: str, size: tuple[int, int]) -> Tensor:
        """``B×K×N`` spatial weights of ``task``'s regions (each class's map sums to 1)."""
        if self.gt_regions and self.region_labels is not None:
            if task not in self.region_labels:
                raise ValueError(f"gt_regions needs the {task!r} labels set in net.region_labels")
            maps = self.label_spaces[task].region_maps(self.region_labels[task])
            maps = F.adaptive_avg_pool2d(maps.float(), size).flatten(2)
            return maps / maps.sum(2, keepdim=True).clamp_min(1e-12)
        logits = self.aux_logits[task]
        if self.detach_regions:
            logits = logits.detach()
        return logits.flatten(2).softmax(2)

    def _predict(self, images: Tensor, tasks: tuple[str, ...]) -> dict[str, Tensor]:
        """Stride-4 logits of ``tasks`` (the base class resizes them to the input)."""
        x = self.backbone(images)
        size = x.shape[2:]
        feats = {t: conv(x) for t, conv in self.task_convs.items()}
        detached = x.detach()
        self.aux_logits = {t: head(detached) for t, head in self.aux_heads.items()}
        weights = {t: self._region_weights(t, size) for t in self.label_spaces}
        outputs, self.features = {}, {}
        for t in tasks:
            regions = {s: {"t_label": weights.get(t), "s_label": weights.get(s)}
                       for s in self.tasks}
            outputs[t], self.features[t] = self.heads[t](feats[t], feats, regions)
        return outputs

    # -- search state --------------------------------------------------------------------------
    def search_blocks(self) -> Iterator[tuple[str, str, ContextSearchBlock]]:
        """(target, source, block) of every search block (none for a fixed genotype)."""
        for t, head in self.heads.items():
            for s, block in head.blocks.items():
                if isinstance(block, ContextSearchBlock):
                    yield t, s, block

    def architecture_parameters(self) -> list[nn.Parameter]:
        """The search's α (one parameter per block)."""
        return [b.alpha for _, _, b in self.search_blocks()]

    def current_genotype(self) -> Genotype:
        """The search's genotype: each block's fixed choice, else its argmax α."""
        if self.genotype is not None:
            return {t: dict(row) for t, row in self.genotype.items()}
        out: Genotype = {t: {} for t in self.tasks}
        for t, s, block in self.search_blocks():
            out[t][s] = block.choice()
        return out

    # -- parameter partition (the suite's network API) -----------------------------------------
    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter except the architecture weights α."""
        alpha = {id(p) for p in self.architecture_parameters()}
        return [p for p in self.parameters() if id(p) not in alpha]

    def task_modules(self, task: str) -> list[nn.Module]:
        """Its target head (blocks, fusion, logits)."""
        return [self.heads[task]]

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """Parameters only ``task``'s loss reaches: its target head, without α."""
        alpha = {id(p) for p in self.architecture_parameters()}
        return [p for p in super().task_parameters(task) if id(p) not in alpha]

    def shared_parameters(self) -> list[nn.Parameter]:
        """Backbone, per-task feature convs (every target's blocks read them) and auxiliary
        heads: the complement of the task heads and α."""
        own = {id(p) for t in self.tasks for p in self.task_parameters(t)}
        own |= {id(p) for p in self.architecture_parameters()}
        return [p for p in self.parameters() if id(p) not in own]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """GradNorm's W: the backbone's last conv (every task's loss reaches it)."""
        return [self.backbone.last_layer_weight()]

    def label_tasks(self) -> list[str]:
        """Tasks with an auxiliary head (used as label context)."""
        return list(self.label_spaces)


@ARCHITECTURES.register("atrc")
def build_atrc_net(
    tasks: Mapping[str, int],
    encoder: str = "hrnet_w18_small_v2",
    pretrained_path: str | None = None,
    genotype: str | Mapping[str, Any] | None = None,
    drop_self: bool = False,
    context: Mapping[str, Any] | None = None,
    labels: Mapping[str, Any] | None = None,
    detach_regions: bool = False,
    gt_regions: bool = False,
    dropout: float = 0.05,
) -> ATRCNet:
    """``model.arch=atrc``: ``genotype`` null for the search, else a preset name, a JSON file or
    a mapping (``drop_self``: every self-pair none, Table G-1)."""
    if genotype is not None:
        genotype = resolve_genotype(genotype, list(tasks), drop_self=drop_self)
    elif drop_self:
        raise ValueError("model.drop_self needs a genotype (it edits a fixed one)")
    return ATRCNet(tasks, encoder=encoder, pretrained_path=pretrained_path, genotype=genotype,
                   context=context, labels=labels, detach_regions=detach_regions,
                   gt_regions=gt_regions, dropout=dropout)
