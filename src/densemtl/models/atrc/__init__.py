"""ATRC: adaptive task-relational context (Bruggemann et al. 2021; SPEC §4)."""

from .context import (
    CONTEXT_TYPES,
    ContextSearchBlock,
    global_linear_attention,
    label_region_attention,
    local_attention,
    local_attention_unfold,
    region_descriptors,
)
from .genotype import (
    GENOTYPE_PRESETS,
    agreement,
    cohen_kappa,
    lights_kappa,
    load_genotype,
    majority_vote,
    resolve_genotype,
    write_genotype,
)
from .labels import DepthBins, NormalsCodebook, build_label_space
from .net import HRNET_BACKBONES, ATRCNet, HRNetBackbone

__all__ = [
    "CONTEXT_TYPES",
    "GENOTYPE_PRESETS",
    "HRNET_BACKBONES",
    "ATRCNet",
    "ContextSearchBlock",
    "DepthBins",
    "HRNetBackbone",
    "NormalsCodebook",
    "agreement",
    "build_label_space",
    "cohen_kappa",
    "global_linear_attention",
    "label_region_attention",
    "lights_kappa",
    "load_genotype",
    "local_attention",
    "local_attention_unfold",
    "majority_vote",
    "region_descriptors",
    "resolve_genotype",
    "write_genotype",
]
