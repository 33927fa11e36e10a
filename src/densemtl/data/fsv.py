"""FSV — Free Supervision from Video games (GTA V frames): semseg (3 classes), albedo, and
disparity under the ``depth`` label key (SPEC §5, ASTMT Tables 4b, 5b, 6c).

Layout (as read by the ASTMT reference loader)::

    FSV/gt_sets/gta_{train,test}.txt       frame ids (223 197 / 50 080, ASTMT Table 1)
    FSV/gta_<split>/<id>_final.webp        the rendered frame (RGB)
    FSV/gta_<split>/<id>_object_id.png     semantic class in the red channel
    FSV/gta_<split>/<id>_albedo.webp       albedo, v / 255
    FSV/gta_<split>/<id>_disparity.webp    disparity = (B·65536 + G·256 + R) / 8192

Segmentation: the rare classes 1, 4, 5, 6, 7 become 0, then every id v -> max(v − 1, 0), which
leaves 3 classes (0; 2 -> 1; 3 -> 2). ``mini_test`` keeps every ⌊N/5000⌋-th test frame, the
≈5 000-frame test subset ASTMT reports.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from densemtl.data.datamodule import register_dataset
from densemtl.data.formats import (
    BenchmarkDataset,
    check_classes,
    check_size,
    class_map,
    dense_map,
    read_rgb,
    write_image,
    write_lines,
)

NUM_CLASSES = 3
PRUNED_CLASSES = (1, 4, 5, 6, 7)
SUFFIXES = {"semseg": "_object_id.png", "albedo": "_albedo.webp", "depth": "_disparity.webp"}


def decode_semseg(red: np.ndarray) -> np.ndarray:
    """FSV object ids (red channel) -> the 3 classes of ASTMT (see the module docstring)."""
    ids = np.where(np.isin(red, PRUNED_CLASSES), 0, red.astype(np.int64))
    return np.maximum(ids - 1, 0)


def decode_disparity(rgb: np.ndarray) -> np.ndarray:
    """24-bit disparity packed in the channels: (B·65536 + G·256 + R) / 8192."""
    rgb = rgb.astype(np.float64)
    return ((rgb[..., 2] * 65536 + rgb[..., 1] * 256 + rgb[..., 0]) / 8192).astype(np.float32)


def encode_disparity(disparity: np.ndarray) -> np.ndarray:
    """Inverse of :func:`decode_disparity` (fixtures), ``uint8 H×W×3``."""
    v = np.rint(disparity.astype(np.float64) * 8192).astype(np.int64)
    return np.stack([v % 256, (v // 256) % 256, v // 65536], axis=-1).astype(np.uint8)


@register_dataset("fsv")
class FSV(BenchmarkDataset):
    """A split of FSV (see the module docstring)."""

    NAME = "fsv"
    TASKS = ("semseg", "albedo", "depth")
    SPLITS = ("train", "test")
    PUBLISHED_COUNTS = {"train": 223197, "test": 50080}

    def __init__(self, root: str | os.PathLike, split: str, tasks: Sequence[str],
                 mini_test: bool = True, **kwargs: Any) -> None:
        self.mini_test = bool(mini_test)
        super().__init__(root, split, tasks, **kwargs)

    def split_file(self, split: str) -> Path:
        """``gt_sets/gta_<split>.txt``."""
        return self.root / "gt_sets" / f"gta_{split}.txt"

    def prepare_ids(self) -> None:
        """Apply the ASTMT test subsampling (``mini_test``)."""
        if self.split == "test" and self.mini_test:
            self.ids = self.ids[::max(1, len(self.ids) // 5000)]

    def _frame(self, sample_id: str, suffix: str) -> Path:
        return self.root / f"gta_{self.split}" / f"{sample_id}{suffix}"

    def image_path(self, sample_id: str) -> Path:
        """``gta_<split>/<id>_final.webp``."""
        return self._frame(sample_id, "_final.webp")

    def label_files(self, sample_id: str, task: str) -> list[Path]:
        """One file per task."""
        return [self._frame(sample_id, SUFFIXES[task])]

    def meta(self) -> dict[str, Any]:
        """Whether the test split is ASTMT's ≈5 000-frame subset."""
        return {"mini_test": self.mini_test}

    def load_label(self, sample_id: str, task: str, size: tuple[int, int] | None) -> np.ndarray:
        """One task's label in the numpy convention (see the module docstring)."""
        path = self.label_files(sample_id, task)[0]
        rgb = read_rgb(path)
        check_size(rgb, size, path)
        if task == "semseg":
            ids = decode_semseg(rgb[..., 0])
            check_classes(ids, NUM_CLASSES, path)
            return class_map(ids)
        if task == "albedo":
            return dense_map(rgb.astype(np.float32) / 255.0)
        return dense_map(decode_disparity(rgb))


def write_fixture(root: str | os.PathLike) -> Path:
    """An FSV tree of 4 frames of 24×32 (2 train, 2 test) in the published encodings.

    Hand-known contents (every frame): object ids in column blocks 0 | 1 | 2 | 3 (cols 0–7,
    8–15, 16–23, 24–31) -> classes 0 | 0 | 1 | 2; albedo (51, 102, 204); disparity 1.5 with
    row 0 = 0.
    """
    root = Path(root)
    h, w = 24, 32
    rng = np.random.default_rng(3)
    objects = np.zeros((h, w, 3), dtype=np.uint8)
    for k in range(4):
        objects[:, 8 * k: 8 * (k + 1), 0] = k
    disparity = np.full((h, w), 1.5, dtype=np.float32)
    disparity[0] = 0
    albedo = np.broadcast_to(np.array([51, 102, 204], np.uint8), (h, w, 3)).copy()
    splits = {"train": ["0000_00001", "0000_00002"], "test": ["0001_00001", "0001_00002"]}
    for split, ids in splits.items():
        for sample_id in ids:
            frame = root / f"gta_{split}" / sample_id
            write_image(f"{frame}_final.webp", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
            write_image(f"{frame}_object_id.png", objects)
            write_image(f"{frame}_albedo.webp", albedo)
            write_image(f"{frame}_disparity.webp", encode_disparity(disparity))
        write_lines(root / "gt_sets" / f"gta_{split}.txt", ids)
    return root
