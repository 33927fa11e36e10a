"""NYUD-v2 multi-task (semseg, depth, normals, edge) in its two published variants (SPEC §5).

The variants differ in resolution and encodings, so numbers from one do not compare with the
other: the variant is a required choice (``variant``), recorded in every sample's ``meta`` and,
through ``data.variant``, in every ``metrics.json``; a tree of the other variant is refused.

``npy_480x640`` (``NYUD_MT/``, the MTI-Net / ATRC release)::

    gt_sets/{train,val}.txt    795 / 654 ids
    images/<id>.jpg
    segmentation/<id>.png      0 = ignore, 1..40 -> classes 0..39
    depth/<id>.npy             metres, 0 = invalid
    normals/<id>.npy           H×W×3 in [−1, 1], all-zero = invalid
    edge/<id>.npy              {0, 1}

``png_425x560`` (``NYUDv2/``): ``images/<id>.png``, ``normals/<id>.png`` (n = 2v/255 − 1),
``edge/<id>.png`` (v/255), the rest as above. The PNG normals have no invalid marker (2v/255 − 1
is never exactly 0), so every pixel counts, as in the public loader.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from densemtl.data.datamodule import register_dataset
from densemtl.data.formats import (
    BenchmarkDataset,
    DataFormatError,
    check_classes,
    check_finite,
    check_size,
    class_map,
    dense_map,
    read_npy,
    read_png,
    write_image,
    write_lines,
    write_npy,
)

NUM_CLASSES = 40
#: variant -> (published image size, image suffix, normals suffix, edge suffix)
VARIANTS: dict[str, tuple[tuple[int, int], str, str, str]] = {
    "npy_480x640": ((480, 640), ".jpg", ".npy", ".npy"),
    "png_425x560": ((425, 560), ".png", ".png", ".png"),
}


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown NYUD variant {variant!r}; valid: {', '.join(VARIANTS)} "
                         f"(480×640 .npy tree NYUD_MT/, or 425×560 PNG tree NYUDv2/)")


@register_dataset("nyud")
class NYUD(BenchmarkDataset):
    """A split of one NYUD-v2 variant (see the module docstring)."""

    NAME = "nyud"
    TASKS = ("semseg", "depth", "normals", "edge")
    SPLITS = ("train", "val")
    PUBLISHED_COUNTS = {"train": 795, "val": 654}

    def __init__(self, root: str | os.PathLike, split: str, tasks: list[str],
                 variant: str = "npy_480x640", **kwargs: Any) -> None:
        _check_variant(variant)
        self.variant = variant
        self.PUBLISHED_SIZE, self.image_suffix, self.normals_suffix, self.edge_suffix = \
            VARIANTS[variant]
        super().__init__(root, split, tasks, **kwargs)

    def split_file(self, split: str) -> Path:
        """``gt_sets/<split>.txt``."""
        return self.root / "gt_sets" / f"{split}.txt"

    def image_path(self, sample_id: str) -> Path:
        """``images/<id>.jpg`` (npy variant) or ``.png`` (PNG variant)."""
        return self.root / "images" / f"{sample_id}{self.image_suffix}"

    def label_files(self, sample_id: str, task: str) -> list[Path]:
        """One file per task."""
        suffix = {"semseg": ".png", "depth": ".npy", "normals": self.normals_suffix,
                  "edge": self.edge_suffix}[task]
        folder = "segmentation" if task == "semseg" else task
        return [self.root / folder / f"{sample_id}{suffix}"]

    def prepare_ids(self) -> None:
        """Refuse a tree of the other variant (never mix them silently)."""
        first = self.ids[0]
        if self.image_path(first).is_file():
            return
        for other, (_, image_suffix, _, _) in VARIANTS.items():
            other_path = self.root / "images" / f"{first}{image_suffix}"
            if other != self.variant and other_path.is_file():
                raise DataFormatError(
                    self.root, f"this tree holds the {other} NYUD variant ({other_path.name}), "
                               f"but variant={self.variant!r} was asked for; choose the matching "
                               f"config (data=nyud for npy_480x640, data=nyud_png for "
                               f"png_425x560)")

    def meta(self) -> dict[str, Any]:
        """The variant, recorded in every sample."""
        return {"variant": self.variant}

    def load_label(self, sample_id: str, task: str, size: tuple[int, int] | None) -> np.ndarray:
        """One task's label in the numpy convention (see the module docstring)."""
        path = self.label_files(sample_id, task)[0]
        if task == "semseg":
            raw = read_png(path, channels=1).astype(np.int64)
            check_classes(raw, NUM_CLASSES + 1, path, ignore=-1)
            check_size(raw, size, path)
            return class_map(np.where(raw == 0, 255, raw - 1))
        if task == "depth":
            depth = read_npy(path).astype(np.float32)
            depth = depth[..., 0] if depth.ndim == 3 and depth.shape[2] == 1 else depth
            if depth.ndim != 2:
                raise DataFormatError(path, f"depth must be H×W, got shape {depth.shape}")
            check_finite(depth, path)
            if (depth < 0).any():
                raise DataFormatError(path, "negative depth values (0 marks invalid pixels)")
            check_size(depth, size, path)
            return dense_map(depth)
        if path.suffix == ".png":
            raw = read_png(path, channels=3 if task == "normals" else 1).astype(np.float32)
            value = 2.0 * raw / 255.0 - 1.0 if task == "normals" else raw / 255.0
        else:
            value = read_npy(path).astype(np.float32)
            check_finite(value, path)
            low = -1.0 if task == "normals" else 0.0
            if value.size and (value.min() < low - 1e-3 or value.max() > 1.0 + 1e-3):
                raise DataFormatError(path, f"{task} values in [{value.min():.3g}, "
                                            f"{value.max():.3g}], expected [{low:g}, 1]")
        expected = 3 if task == "normals" else 1
        if value.ndim == 2 and expected == 1:
            value = value[..., None]
        if value.ndim != 3 or value.shape[2] != expected:
            raise DataFormatError(path, f"{task} must be H×W×{expected}, got shape {value.shape}")
        check_size(value, size, path)
        return dense_map(value)


def write_fixture(root: str | os.PathLike, variant: str = "npy_480x640") -> Path:
    """A 4-image NYUD tree of 24×32 images in ``variant``'s published formats.

    Hand-known contents (every id): segmentation column blocks 0 | 1 | 40 | 7 (cols 0–7, 8–15,
    16–23, 24–31) -> 255 | 0 | 39 | 6; depth 2.5 m with rows 0–3 = 0 (invalid); normals (0, 0, 1)
    with rows 0–3 invalid (npy: zero; PNG: (128, 128, 128)); edge = 1 on row 12. Ids
    ``0001``/``0002`` train, ``0003``/``0004`` val.
    """
    _check_variant(variant)
    _, image_suffix, normals_suffix, edge_suffix = VARIANTS[variant]
    root = Path(root)
    h, w = 24, 32
    rng = np.random.default_rng(1)
    seg = np.zeros((h, w), dtype=np.uint8)
    seg[:, 8:16], seg[:, 16:24], seg[:, 24:] = 1, 40, 7
    depth = np.full((h, w), 2.5, dtype=np.float32)
    depth[:4] = 0
    edge = np.zeros((h, w), dtype=np.float32)
    edge[12] = 1
    normals = np.zeros((h, w, 3), dtype=np.float32)
    normals[4:, :, 2] = 1
    ids = ["0001", "0002", "0003", "0004"]
    for sample_id in ids:
        write_image(root / "images" / f"{sample_id}{image_suffix}",
                    rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        write_image(root / "segmentation" / f"{sample_id}.png", seg)
        write_npy(root / "depth" / f"{sample_id}.npy", depth)
        if normals_suffix == ".npy":
            write_npy(root / "normals" / f"{sample_id}.npy", normals)
            write_npy(root / "edge" / f"{sample_id}.npy", edge)
        else:
            png = np.rint((normals + 1) * 255 / 2).astype(np.uint8)
            write_image(root / "normals" / f"{sample_id}{normals_suffix}", png)
            write_image(root / "edge" / f"{sample_id}{edge_suffix}", (edge * 255).astype(np.uint8))
    write_lines(root / "gt_sets" / "train.txt", ids[:2])
    write_lines(root / "gt_sets" / "val.txt", ids[2:])
    return root
