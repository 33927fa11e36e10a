"""ATRC's context-pooling blocks (ATRC §3.2, supplement §C; SPEC §4).

One block per ordered (target, source) pair. Queries come from the target task's features, keys
and values from the source task's features (or from the source features' label-region
descriptors). Types: ``none``, ``global`` (linear attention), ``local`` (softmax over the 9×9
window), ``t_label`` / ``s_label`` (attention over region descriptors from the target's / the
source's auxiliary prediction; ``s_label`` is not defined for self-pairs).

The attention functions are plain tensor code (no custom kernel, any device, any dtype); each
block's output has the attention width d channels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "CONTEXT_TYPES",
    "LABEL_TYPES",
    "SIMILARITY_SCALES",
    "ContextSearchBlock",
    "GlobalContext",
    "LabelContext",
    "LocalContext",
    "build_context",
    "global_linear_attention",
    "label_region_attention",
    "local_attention",
    "local_attention_unfold",
    "region_descriptors",
    "similarity_scale",
]

#: the five context types, in the order of the reference code's integer codes 0–4
CONTEXT_TYPES = ("none", "global", "local", "t_label", "s_label")
LABEL_TYPES = ("t_label", "s_label")
#: paper text: sim = exp(q·k / d_k); reference code: exp(q·k / √d)
SIMILARITY_SCALES = ("inv_d", "inv_sqrt_d")
#: global attention's q/k feature map: paper, conv-BN-ReLU (sim = q·k); code, conv-BN-softplus
GLOBAL_FEATURE_MAPS = ("relu", "softplus")


def similarity_scale(kind: str, width: int) -> float:
    """The factor s of the softmax similarity exp(s·q·k): 1/d (paper) or 1/√d (code)."""
    if kind not in SIMILARITY_SCALES:
        raise ValueError(f"similarity_scale={kind!r} is not one of {SIMILARITY_SCALES}")
    return 1.0 / width if kind == "inv_d" else 1.0 / math.sqrt(width)


# -- attention functions -------------------------------------------------------------------------
def local_attention(q: Tensor, k: Tensor, v: Tensor, window: int = 9, scale: float = 1.0) -> Tensor:
    """Softmax attention of each pixel over the ``window``×``window`` neighbourhood around it.

    ``q``, ``k``: ``B×d×H×W``; ``v``: ``B×c×H×W``. Neighbours outside the map take logit 0 and value
    0 and stay in the softmax (zero-padded unfold semantics, as the reference kernel). Memory-lean:
    a loop over the window's offsets of a zero-padded map keeps ``window²`` logits per pixel
    instead of ``window²`` copies of k and v (``local_attention_unfold``).
    """
    if window % 2 != 1:
        raise ValueError(f"local attention window must be odd, got {window}")
    h, w = q.shape[2:]
    r = window // 2
    kp, vp = F.pad(k, (r, r, r, r)), F.pad(v, (r, r, r, r))
    offsets = [(dy, dx) for dy in range(window) for dx in range(window)]
    logits = torch.stack(
        [(q * kp[:, :, dy:dy + h, dx:dx + w]).sum(1) for dy, dx in offsets], 1
    )
    attn = (logits * scale).softmax(1)
    out = v.new_zeros(v.shape)
    for i, (dy, dx) in enumerate(offsets):
        out = out + attn[:, i:i + 1] * vp[:, :, dy:dy + h, dx:dx + w]
    return out


def local_attention_unfold(
    q: Tensor, k: Tensor, v: Tensor, window: int = 9, scale: float = 1.0
) -> Tensor:
    """``local_attention`` by ``F.unfold`` (materialises window² copies of k and v): the
    reference implementation for tests and benchmarks."""
    b, d, h, w = q.shape
    r, n = window // 2, window * window
    ku = F.unfold(k, window, padding=r).view(b, d, n, h, w)
    vu = F.unfold(v, window, padding=r).view(b, v.shape[1], n, h, w)
    attn = ((q.unsqueeze(2) * ku).sum(1) * scale).softmax(1)
    return (attn.unsqueeze(1) * vu).sum(2)


def global_linear_attention(q: Tensor, k: Tensor, v: Tensor, eps: float = 1e-6) -> Tensor:
    """out_i = Σ_j (q_i·k_j) v_j / max(Σ_j q_i·k_j, eps), computed as (v kᵀ) q (linear in pixels).

    ``q``: ``B×d×N``, ``k``: ``B×d×M``, ``v``: ``B×c×M`` with non-negative q, k.
    """
    kv = torch.bmm(v, k.transpose(1, 2))  # B×c×d
    numerator = torch.bmm(kv, q)  # B×c×N
    denominator = torch.bmm(k.sum(2, keepdim=True).transpose(1, 2), q)  # B×1×N
    return numerator / denominator.clamp_min(eps)


def region_descriptors(region_weights: Tensor, features: Tensor) -> Tensor:
    """R_k = Σ_i P_k(i) f_i: ``region_weights`` ``B×K×N`` (each row sums to 1 over pixels),
    ``features`` ``B×C×N`` -> ``B×C×K``."""
    return torch.bmm(features, region_weights.transpose(1, 2))


def label_region_attention(q: Tensor, k: Tensor, v: Tensor, scale: float = 1.0) -> Tensor:
    """Each pixel's softmax attention over K region descriptors: ``q`` ``B×d×N``, ``k`` ``B×d×K``,
    ``v`` ``B×c×K`` -> ``B×c×N``."""
    attn = (torch.bmm(k.transpose(1, 2), q) * scale).softmax(1)  # B×K×N
    return torch.bmm(v, attn)


# -- modules ------------------------------------------------------------------------------------
def conv_bn_act(cin: int, cout: int, act: str = "relu", affine: bool = True) -> nn.Sequential:
    """1×1 conv (no bias) + BN (+ ReLU / softplus / nothing)."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 1, bias=False),
                               nn.BatchNorm2d(cout, affine=affine)]
    if act == "relu":
        layers.append(nn.ReLU(inplace=True))
    elif act == "softplus":
        layers.append(nn.Softplus())
    return nn.Sequential(*layers)


class _Context(nn.Module):
    """q (two 1×1 conv-BN-ReLU layers) from the target; k (two layers) and v (one layer) from the
    source. ``value_affine=False`` drops the value BN's learnable affine (the candidates' last BN
    during the search, supplement §A)."""

    def __init__(self, channels: int, width: int, value_affine: bool = True,
                 key_act: str = "relu") -> None:
        super().__init__()
        self.query = nn.Sequential(conv_bn_act(channels, width), conv_bn_act(width, width, key_act))
        self.key = nn.Sequential(conv_bn_act(channels, width), conv_bn_act(width, width, key_act))
        self.value = conv_bn_act(channels, width, affine=value_affine)


class GlobalContext(_Context):
    """Global context: linear attention over all source pixels (``feature_map`` of q and k:
    ``relu`` as the paper's conv-BN-ReLU transform, ``softplus`` as the reference code)."""

    def __init__(self, channels: int, width: int, value_affine: bool = True,
                 feature_map: str = "relu") -> None:
        if feature_map not in GLOBAL_FEATURE_MAPS:
            raise ValueError(f"global_feature_map={feature_map!r} is not one of "
                             f"{GLOBAL_FEATURE_MAPS}")
        super().__init__(channels, width, value_affine, key_act=feature_map)

    def forward(self, target: Tensor, source: Tensor, regions: Tensor | None = None) -> Tensor:
        b, _, h, w = target.shape
        q = self.query(target).flatten(2)
        k, v = self.key(source).flatten(2), self.value(source).flatten(2)
        return global_linear_attention(q, k, v).view(b, -1, h, w)


class LocalContext(_Context):
    """Local context: softmax attention over the ``window``×``window`` source neighbourhood."""

    def __init__(self, channels: int, width: int, value_affine: bool = True, scale: float = 1.0,
                 window: int = 9) -> None:
        super().__init__(channels, width, value_affine)
        self.scale, self.window = scale, window

    def forward(self, target: Tensor, source: Tensor, regions: Tensor | None = None) -> Tensor:
        return local_attention(self.query(target), self.key(source), self.value(source),
                               self.window, self.scale)


class LabelContext(_Context):
    """Label context: regions R = P·F_s of the source features under spatial region weights P
    (``regions``, ``B×K×N``: the target's auxiliary prediction for T-label, the source's for
    S-label), then softmax attention of each target pixel over the K region descriptors (k and v
    are the 1×1 transforms applied to the descriptors)."""

    def __init__(self, channels: int, width: int, value_affine: bool = True,
                 scale: float = 1.0) -> None:
        super().__init__(channels, width, value_affine)
        self.scale = scale

    def forward(self, target: Tensor, source: Tensor, regions: Tensor | None = None) -> Tensor:
        if regions is None:
            raise ValueError("label context needs the region weights of its label task")
        b, _, h, w = target.shape
        desc = region_descriptors(regions, source.flatten(2)).unsqueeze(3)  # B×C×K×1
        q = self.query(target).flatten(2)
        k, v = self.key(desc).flatten(2), self.value(desc).flatten(2)
        return label_region_attention(q, k, v, self.scale).view(b, -1, h, w)


def build_context(kind: str, channels: int, width: int, *, value_affine: bool = True,
                  similarity: str = "inv_d", global_feature_map: str = "relu",
                  window: int = 9) -> nn.Module | None:
    """The context block of type ``kind`` (None for ``none``)."""
    if kind == "none":
        return None
    if kind == "global":
        return GlobalContext(channels, width, value_affine, global_feature_map)
    scale = similarity_scale(similarity, width)
    if kind == "local":
        return LocalContext(channels, width, value_affine, scale, window)
    if kind in LABEL_TYPES:
        return LabelContext(channels, width, value_affine, scale)
    raise ValueError(f"context type {kind!r} is not one of {CONTEXT_TYPES}")


class ContextSearchBlock(nn.Module):
    """A block under search: candidates (``none`` always first), architecture weights α (init 0)
    and the fixing state.

    Output Σ_i w_i op_i with w = soft Gumbel-softmax(α, τ) resampled every training forward, the
    one-hot argmax of α in evaluation, and the one-hot fixed choice once fixed (then only that
    candidate runs). Candidates' value BN has no affine (supplement §A).
    """

    def __init__(self, candidates: Sequence[str], channels: int, width: int, **options) -> None:
        super().__init__()
        if not candidates or candidates[0] != "none":
            raise ValueError(f"search candidates must start with 'none', got {list(candidates)}")
        self.candidates = tuple(candidates)
        self.width = width
        self.ops = nn.ModuleDict({
            c: build_context(c, channels, width, value_affine=False, **options)
            for c in self.candidates[1:]
        })
        self.alpha = nn.Parameter(torch.zeros(len(self.candidates)))
        self.register_buffer("fixed", torch.tensor(-1))  # index of the fixed candidate, -1: open
        self.temperature = 1.0

    @property
    def is_fixed(self) -> bool:
        """True once the block is fixed to one candidate."""
        return int(self.fixed) >= 0

    def choice(self) -> str:
        """The fixed candidate, else the argmax of α."""
        index = int(self.fixed) if self.is_fixed else int(self.alpha.argmax())
        return self.candidates[index]

    def mixing_weights(self) -> Tensor:
        """Weights of the candidates for this forward (see the class docstring)."""
        n = len(self.candidates)
        if self.is_fixed:
            return F.one_hot(self.fixed, n).to(self.alpha)
        if self.training:
            return F.gumbel_softmax(self.alpha, tau=self.temperature, hard=False)
        return F.one_hot(self.alpha.argmax(), n).to(self.alpha)

    def entropy(self) -> Tensor:
        """H(softmax α) (0 once fixed: α is then one-hot)."""
        if self.is_fixed:
            return self.alpha.new_zeros(())
        p = self.alpha.softmax(0)
        return -(p * p.clamp_min(1e-12).log()).sum()

    def try_fix(self, threshold: float = 0.3, on: str = "alpha", strict: bool = True) -> bool:
        """Fix the block to argmax α when the top-2 gap passes ``threshold``; True if it was fixed
        now. ``on``: the gap of α itself (paper: "the difference between the two largest values
        of α_j exceeds 0.3", ``strict``) or of softmax(α) (reference code, ≥)."""
        if self.is_fixed:
            return False
        values = self.alpha.detach() if on == "alpha" else self.alpha.detach().softmax(0)
        top = values.topk(2).values
        gap = float(top[0] - top[1])
        if gap > threshold or (not strict and gap >= threshold):
            self.fixed.fill_(int(self.alpha.argmax()))
            return True
        return False

    def forward(self, target: Tensor, source: Tensor, regions: dict[str, Tensor]) -> Tensor:
        weights = self.mixing_weights()
        b, _, h, w = target.shape
        out = target.new_zeros(b, self.width, h, w)
        for i, name in enumerate(self.candidates[1:], start=1):
            if float(weights[i].detach()) == 0.0:  # one-hot (fixed, evaluation): no effect
                continue
            out = out + weights[i] * self.ops[name](target, source, regions.get(name))
        return out
