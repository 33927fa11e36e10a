"""Label spaces of ATRC's auxiliary heads (ATRC supplement §A, §D; SPEC §4).

Label context needs every task as a classification: class tasks as they are, binary maps
(edges, saliency) as 2 classes, depth as 40 log-spaced bins over [0.7 m, 10 m] decoded by a
soft-weighted sum in log space, normals as 40 k-means codewords on the sphere decoded by
triangular coding (the paper, after Zeisl et al.) or as the nearest codeword (the reference code).

``encode`` turns a batch label into either an ``int64`` class map (``IGNORE`` where unlabelled)
or a ``float`` ``B×K×H×W`` soft target (zeros where unlabelled); ``loss`` is the cross-entropy
against either; ``region_maps`` gives the one-hot / soft maps the ground-truth-region variants
(supplement Table E-1) use in place of the auxiliary prediction.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from densemtl.tasks.base import TASK_REGISTRY

__all__ = [
    "IGNORE",
    "NORMALS_DECODINGS",
    "BinaryLabels",
    "ClassLabels",
    "DepthBins",
    "LabelSpace",
    "NormalsCodebook",
    "build_label_space",
    "fibonacci_sphere",
    "spherical_kmeans",
]

IGNORE = -100  # F.cross_entropy's default ignore_index
NORMALS_DECODINGS = ("triangular", "nearest")


class LabelSpace(nn.Module, ABC):
    """A task's label space as ``num_classes`` classes (an auxiliary head's output)."""

    num_classes: int

    def __init__(self, class_weights: list[float] | None = None) -> None:
        super().__init__()
        weights = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float)
        self.register_buffer("class_weights", weights, persistent=False)

    @abstractmethod
    def encode(self, target: Tensor) -> Tensor:
        """Batch label -> ``int64`` ``B×H×W`` class map (``IGNORE`` = unlabelled) or soft
        ``B×K×H×W`` targets (all-zero = unlabelled)."""

    def loss(self, logits: Tensor, target: Tensor) -> Tensor:
        """Cross-entropy of ``logits`` (``B×K×H×W``, label resolution) averaged over labelled
        pixels (class weights, if any, multiply each pixel's term; the divisor is the pixel count,
        as in the suite's weighted BCE); 0 on the graph when nothing is labelled."""
        code = self.encode(target)
        if code.dtype == torch.int64:
            code = F.one_hot(code.clamp_min(0), self.num_classes).permute(0, 3, 1, 2).to(
                logits.dtype
            ) * (code != IGNORE).unsqueeze(1)
        valid = code.sum(1) > 0
        weighted = code if self.class_weights is None else code * self.class_weights.view(
            1, -1, 1, 1
        ).to(code)
        per_pixel = -(weighted * F.log_softmax(logits, dim=1)).sum(1)
        return (per_pixel * valid).sum() / valid.sum().clamp_min(1)

    def region_maps(self, target: Tensor) -> Tensor:
        """``B×K×H×W`` per-class membership of the ground truth (soft for triangular normals)."""
        code = self.encode(target)
        if code.dtype != torch.int64:
            return code
        one_hot = F.one_hot(code.clamp_min(0), self.num_classes).permute(0, 3, 1, 2).float()
        return one_hot * (code != IGNORE).unsqueeze(1)

    @abstractmethod
    def decode(self, logits: Tensor) -> Tensor:
        """Logits -> the task's prediction space."""


class ClassLabels(LabelSpace):
    """A class-map task (semseg, human parts) as it is; its ignore value becomes ``IGNORE``."""

    def __init__(self, num_classes: int, ignore_value: int = 255) -> None:
        super().__init__()
        self.num_classes = int(num_classes)
        self.ignore_value = int(ignore_value)

    def encode(self, target: Tensor) -> Tensor:
        return torch.where(target == self.ignore_value, IGNORE, target)

    def decode(self, logits: Tensor) -> Tensor:
        return logits.argmax(1)


class BinaryLabels(LabelSpace):
    """A {0, 1} map (edges, saliency) as 2 classes; ``class_weights`` [w₀, w₁] (edges on NYUD:
    [0.2, 0.8], as the task's positive weight)."""

    num_classes = 2

    def __init__(self, class_weights: list[float] | None = None, ignore_value: int = 255) -> None:
        super().__init__(class_weights)
        self.ignore_value = ignore_value

    def encode(self, target: Tensor) -> Tensor:
        label = target[:, 0]
        return torch.where(label == self.ignore_value, IGNORE, (label > 0.5).long())

    def decode(self, logits: Tensor) -> Tensor:
        return logits.softmax(1)[:, 1:]


class DepthBins(LabelSpace):
    """Depth as ``bins`` log-spaced bins over [``d_min``, ``d_max``] (Li et al. 2018).

    bin = ⌊K·ln(d/d_min)/ln(d_max/d_min)⌋ clipped to [0, K−1]; depth ≤ 0 is unlabelled. Each bin
    is represented by its mean in log space (the midpoint of its log edges); decoding is the
    soft-weighted sum in log space, d̂ = exp(Σ_k p_k μ_k).
    """

    def __init__(self, bins: int = 40, d_min: float = 0.7, d_max: float = 10.0) -> None:
        super().__init__()
        if not 0 < d_min < d_max or bins < 2:
            raise ValueError(f"depth bins need 0 < d_min < d_max and bins ≥ 2, got "
                             f"{d_min}, {d_max}, {bins}")
        self.num_classes, self.d_min, self.d_max = int(bins), float(d_min), float(d_max)
        log_edges = torch.linspace(math.log(d_min), math.log(d_max), bins + 1, dtype=torch.float64)
        self.register_buffer("edges", log_edges.exp().float(), persistent=False)
        self.register_buffer("log_means", ((log_edges[1:] + log_edges[:-1]) / 2).float(),
                             persistent=False)

    def encode(self, target: Tensor) -> Tensor:
        d = target[:, 0]
        ratio = math.log(self.d_max / self.d_min)
        index = torch.floor(self.num_classes * torch.log(d.clamp_min(1e-12) / self.d_min) / ratio)
        index = index.clamp(0, self.num_classes - 1).long()
        return torch.where(d > 0, index, IGNORE)

    def decode(self, logits: Tensor) -> Tensor:
        log_depth = (logits.softmax(1) * self.log_means.view(1, -1, 1, 1).to(logits)).sum(1)
        return log_depth.exp().unsqueeze(1)


def fibonacci_sphere(n: int) -> Tensor:
    """``n`` unit vectors spread evenly over the sphere (the codebook before k-means)."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (3 - math.sqrt(5)) * i
    r = (1 - z * z).sqrt()
    return torch.stack([r * phi.cos(), r * phi.sin(), z], 1).float()


def spherical_kmeans(normals: Tensor, k: int, iterations: int = 30, seed: int = 0) -> Tensor:
    """k-means of unit vectors ``normals`` (``P×3``) with cosine similarity; centroids renormalised.

    k-means++ seeding (each next seed drawn with probability ∝ its cosine distance 1 − cos to the
    nearest seed; fixed ``seed``); an emptied cluster takes the sample farthest from its centroid.
    """
    x = F.normalize(normals.double(), dim=1)
    if x.shape[0] < k:
        raise ValueError(f"k-means over {x.shape[0]} normals cannot give {k} codewords")
    gen = torch.Generator().manual_seed(seed)
    seeds = [int(torch.randint(x.shape[0], (1,), generator=gen))]
    distance = 1 - x @ x[seeds[0]]
    for _ in range(1, k):
        weights = distance.clamp_min(0)
        pick = torch.multinomial(weights if weights.sum() > 0 else torch.ones_like(weights), 1,
                                 generator=gen)
        seeds.append(int(pick))
        distance = torch.minimum(distance, 1 - x @ x[seeds[-1]])
    centroids = x[seeds].clone()
    for _ in range(iterations):
        sim = x @ centroids.T
        assign = sim.argmax(1)
        sums = torch.zeros_like(centroids).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k)
        for j in torch.nonzero(counts == 0).flatten().tolist():
            far = sim.max(1).values.argmin()
            sums[j] = x[far]
            sim[far] = 1.0
        centroids = F.normalize(sums, dim=1)
    return centroids.float()


class NormalsCodebook(LabelSpace):
    """Normals as ``codewords`` unit vectors (k-means over training normals, ``fit``).

    ``decoding="triangular"`` (paper): the codewords' Delaunay triangulation of the sphere (their
    convex hull); a normal is coded by the conical barycentric weights of the triangle whose cone
    holds it (normalised to sum 1; a normal outside every triangle's cone — possible when the
    codewords cover only part of the sphere — takes its nearest codeword); decoding takes the
    triangle of maximum total probability and rebuilds n = normalise(Σ p_i c_i) from its three
    codewords. ``decoding="nearest"`` (reference code): the nearest codeword's class, decoded as
    the most probable codeword.
    """

    def __init__(self, codewords: int = 40, decoding: str = "triangular") -> None:
        super().__init__()
        if decoding not in NORMALS_DECODINGS:
            raise ValueError(f"normals decoding {decoding!r} is not one of {NORMALS_DECODINGS}")
        self.num_classes, self.decoding = int(codewords), decoding
        self.register_buffer("codebook", fibonacci_sphere(self.num_classes))
        #: True once ``fit`` set the codebook (checkpoints keep it, so a resumed run does not refit)
        self.register_buffer("fitted", torch.tensor(False))
        self._triangles_key: bytes | None = None
        self._triangles: Tensor | None = None

    def fit(self, normals: Tensor, iterations: int = 30, seed: int = 0) -> None:
        """Set the codebook to the k-means centroids of ``normals`` (``P×3``, valid pixels)."""
        self.codebook.copy_(spherical_kmeans(normals, self.num_classes, iterations, seed))
        self.fitted.fill_(True)

    def triangles(self) -> Tensor:
        """``T×3`` codeword indices of the convex-hull (spherical Delaunay) triangles."""
        key = self.codebook.detach().cpu().numpy().tobytes()
        if key != self._triangles_key:
            from scipy.spatial import ConvexHull

            hull = ConvexHull(self.codebook.detach().double().cpu().numpy())
            self._triangles = torch.from_numpy(np.asarray(hull.simplices, dtype=np.int64))
            self._triangles_key = key
        return self._triangles.to(self.codebook.device)

    def encode(self, target: Tensor) -> Tensor:
        valid = (target != 0).any(1)
        n = F.normalize(target, dim=1)
        code = self.codebook.to(n)
        nearest = torch.einsum("bchw,kc->bkhw", n, code).argmax(1)
        if self.decoding == "nearest":
            return torch.where(valid, nearest, IGNORE)
        b, _, h, w = n.shape
        flat = n.permute(0, 2, 3, 1).reshape(-1, 3)
        weights = flat.new_zeros(flat.shape[0], 3)
        index = torch.full((flat.shape[0],), -1, dtype=torch.long, device=flat.device)
        tri = self.triangles()
        inverse = torch.linalg.inv(code[tri].transpose(1, 2).double()).to(flat)  # T×3×3
        for t in range(tri.shape[0]):  # one triangle at a time: memory O(pixels)
            w_t = flat @ inverse[t].T
            inside = (index < 0) & (w_t >= -1e-6).all(1) & (w_t.sum(1) > 1e-6)
            weights[inside] = w_t[inside].clamp_min(0)
            index[inside] = t
        soft = flat.new_zeros(flat.shape[0], self.num_classes)
        found = index >= 0
        w_found = weights[found] / weights[found].sum(1, keepdim=True)
        soft[found] = soft[found].scatter(1, tri[index[found]], w_found)
        near = nearest.reshape(-1)[~found]
        soft[~found] = F.one_hot(near, self.num_classes).to(soft)
        soft = soft.view(b, h, w, -1).permute(0, 3, 1, 2)
        return soft * valid.unsqueeze(1)

    def decode(self, logits: Tensor) -> Tensor:
        p = logits.softmax(1)
        code = self.codebook.to(p)
        if self.decoding == "nearest":
            return code[p.argmax(1)].permute(0, 3, 1, 2)
        tri = self.triangles()
        best = p[:, tri].sum(2).argmax(1)  # B×H×W index of the most probable triangle
        corners = tri[best]  # B×H×W×3
        probs = p.gather(1, corners.permute(0, 3, 1, 2))  # B×3×H×W
        normal = torch.einsum("bjhw,bhwjc->bchw", probs, code[corners])
        return F.normalize(normal, dim=1)


def build_label_space(
    task: str, channels: int, depth_bins: int = 40,
    depth_range: tuple[float, float] = (0.7, 10.0), normals_codewords: int = 40,
    normals_decoding: str = "triangular",
    binary_class_weights: Mapping[str, Sequence[float]] | None = None,
) -> LabelSpace:
    """The auxiliary label space of registered task ``task`` with ``channels`` network outputs
    (by the task's kind / name); ``binary_class_weights``: per binary task [w₀, w₁] (ATRC edges:
    [0.2, 0.8] NYUD, [0.05, 0.95] PASCAL). A clear error for a task without one."""
    spec = TASK_REGISTRY.get(task)
    if spec.kind == "class":
        return ClassLabels(channels, int(spec.ignore_value))
    if spec.kind == "binary":
        weights = (binary_class_weights or {}).get(task)
        return BinaryLabels(None if weights is None else [float(w) for w in weights],
                            int(spec.ignore_value))
    if task == "depth":
        return DepthBins(depth_bins, *depth_range)
    if task == "normals":
        return NormalsCodebook(normals_codewords, normals_decoding)
    raise ValueError(
        f"task {task!r} has no ATRC label space (label context needs class, binary, depth or "
        "normals tasks); use it only with the none / global / local context types"
    )
