"""Taskonomy, the sampled split of the loss-scale-balancing study (SPEC §5, LSB supplement §2).

The LSB study samples 1/100 of Taskonomy's *tiny* split: 2 762 train / 548 test images, used
at 256×256. The sampled id lists were not published, so the split files here are the user's
(``splits/{train,test}.txt``); ``verify`` compares their lengths with the published counts.

Layout — the official per-building archives (``<building>_<domain>.tar``) extracted into one
folder per building::

    <root>/splits/{train,test}.txt            lines "<building>/point_<p>_view_<v>"
    <root>/<building>/<folder>/point_<p>_view_<v>_domain_<domain>.png

Domains (folder / file suffix) and decoding into the suite's label keys:

=================  ====================  =============================================
label key          folder (suffix)       decoding
=================  ====================  =============================================
image              rgb                   8-bit RGB
depth              depth_zbuffer         16-bit, metres = v / 512; 65535 -> 0 (invalid)
normals            normal                8-bit RGB, n = 2v/255 − 1
semseg             segment_semantic      8-bit class ids as stored (segmentsemantic)
curvature          principal_curvature   8-bit RGB, first two channels, v / 255
reshading          reshading             8-bit, first channel, v / 255
edge2d             edge_texture          16-bit, v / 65535
edge3d             edge_occlusion        16-bit, v / 65535
keypoints2d        keypoints2d           16-bit, v / 65535
keypoints3d        keypoints3d           16-bit, v / 65535
=================  ====================  =============================================

``resize`` (default 256, the study's input) resamples the image bilinearly and every label by
nearest neighbour (so invalid depth never blends into valid depth).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from densemtl.data import formats
from densemtl.data.datamodule import register_dataset
from densemtl.data.formats import (
    BenchmarkDataset,
    DataFormatError,
    check_size,
    class_map,
    dense_map,
    read_png,
    read_rgb,
    resize_image,
    resize_nearest,
    write_image,
    write_lines,
)

#: label key -> (folder, file-name domain suffix, channels read, divisor)
DOMAINS: dict[str, tuple[str, str, int, float]] = {
    "depth": ("depth_zbuffer", "depth_zbuffer", 1, 512.0),
    "normals": ("normal", "normal", 3, 255.0),
    "semseg": ("segment_semantic", "segmentsemantic", 1, 1.0),
    "curvature": ("principal_curvature", "principal_curvature", 3, 255.0),
    "reshading": ("reshading", "reshading", 1, 255.0),
    "edge2d": ("edge_texture", "edge_texture", 1, 65535.0),
    "edge3d": ("edge_occlusion", "edge_occlusion", 1, 65535.0),
    "keypoints2d": ("keypoints2d", "keypoints2d", 1, 65535.0),
    "keypoints3d": ("keypoints3d", "keypoints3d", 1, 65535.0),
}
DEPTH_INVALID = 65535


@register_dataset("taskonomy")
class Taskonomy(BenchmarkDataset):
    """The LSB study's Taskonomy sample (see the module docstring); ``num_classes`` bounds the
    stored segmentation ids."""

    NAME = "taskonomy"
    TASKS = tuple(DOMAINS)
    SPLITS = ("train", "test")
    PUBLISHED_COUNTS = {"train": 2762, "test": 548}
    PUBLISHED_SIZE = (512, 512)

    def __init__(self, root: str | os.PathLike, split: str, tasks: Sequence[str],
                 resize: int | Sequence[int] | None = 256, num_classes: int = 18,
                 **kwargs: Any) -> None:
        if resize is None:
            self.resize = None
        else:
            pair = (resize, resize) if isinstance(resize, int) else tuple(resize)
            if len(pair) != 2 or min(pair) < 1:
                raise ValueError(f"taskonomy: resize must be a size or (H, W), got {resize!r}")
            self.resize = (int(pair[0]), int(pair[1]))
        self.num_classes = int(num_classes)
        super().__init__(root, split, tasks, **kwargs)

    def split_file(self, split: str) -> Path:
        """``splits/<split>.txt``."""
        return self.root / "splits" / f"{split}.txt"

    def _path(self, sample_id: str, folder: str, domain: str) -> Path:
        if sample_id.count("/") != 1:
            raise DataFormatError(self.split_file(self.split),
                                  f"id {sample_id!r} is not '<building>/point_<p>_view_<v>'")
        building, view = sample_id.split("/")
        return self.root / building / folder / f"{view}_domain_{domain}.png"

    def image_path(self, sample_id: str) -> Path:
        """``<building>/rgb/<view>_domain_rgb.png``."""
        return self._path(sample_id, "rgb", "rgb")

    def label_files(self, sample_id: str, task: str) -> list[Path]:
        """One PNG per task."""
        folder, domain, _, _ = DOMAINS[task]
        return [self._path(sample_id, folder, domain)]

    def load_image(self, sample_id: str) -> np.ndarray:
        """The RGB image, resized to ``resize``."""
        image = read_rgb(self.image_path(sample_id))
        return image if self.resize is None else resize_image(image, self.resize)

    def load_label(self, sample_id: str, task: str, size: tuple[int, int] | None) -> np.ndarray:
        """One task's label in the numpy convention (see the module docstring)."""
        path = self.label_files(sample_id, task)[0]
        _, _, channels, divisor = DOMAINS[task]
        raw = read_png(path, channels=channels)
        if self.resize is not None:
            raw = resize_nearest(raw, self.resize)
        check_size(raw, size, path)
        if task == "semseg":
            formats.check_classes(raw, self.num_classes, path)
            return class_map(raw)
        if task == "depth":
            return dense_map(np.where(raw == DEPTH_INVALID, 0.0, raw / divisor))
        value = raw.astype(np.float32) / divisor
        if task == "normals":
            value = 2.0 * value - 1.0
        elif task == "curvature":
            value = value[..., :2]
        return dense_map(value)


def write_fixture(root: str | os.PathLike) -> Path:
    """A Taskonomy sample of 4 views of 32×32 in the published encodings (3 train, 1 test).

    Hand-known contents (every view): depth v = 1024 (2 m) with row 0 = 65535 (invalid);
    normals (255, 128, 0); semseg left half 0, right half 3; curvature (51, 102, 0); reshading
    v = 255·0.5 rounded (128); edge2d v = 65535 on column 5, else 0; edge3d, keypoints2d and
    keypoints3d v = 13107 (0.2).
    """
    root = Path(root)
    h = w = 32
    rng = np.random.default_rng(2)
    semseg = np.zeros((h, w), dtype=np.uint8)
    semseg[:, w // 2:] = 3
    depth = np.full((h, w), 1024, dtype=np.uint16)
    depth[0] = DEPTH_INVALID
    edge2d = np.zeros((h, w), dtype=np.uint16)
    edge2d[:, 5] = 65535
    constant16 = np.full((h, w), 13107, dtype=np.uint16)
    labels = {
        "depth": depth,
        "normals": np.broadcast_to(np.array([255, 128, 0], np.uint8), (h, w, 3)).copy(),
        "semseg": semseg,
        "curvature": np.broadcast_to(np.array([51, 102, 0], np.uint8), (h, w, 3)).copy(),
        "reshading": np.full((h, w), 128, dtype=np.uint8),
        "edge2d": edge2d,
        "edge3d": constant16,
        "keypoints2d": constant16,
        "keypoints3d": constant16,
    }
    ids = ["allensville/point_0_view_0", "allensville/point_0_view_1",
           "allensville/point_1_view_0", "beechwood/point_0_view_0"]
    for sample_id in ids:
        building, view = sample_id.split("/")
        write_image(root / building / "rgb" / f"{view}_domain_rgb.png",
                    rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        for task, label in labels.items():
            folder, domain, _, _ = DOMAINS[task]
            write_image(root / building / folder / f"{view}_domain_{domain}.png", label)
    write_lines(root / "splits" / "train.txt", ids[:3])
    write_lines(root / "splits" / "test.txt", ids[3:])
    return root
