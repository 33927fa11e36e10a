"""``SyntheticScenes``: train/val splits of a cache as a torch ``Dataset``."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from densemtl.data.datamodule import register_dataset
from densemtl.data.synthetic.cache import check_labels, load_cache, write_cache
from densemtl.data.synthetic.render import BASE_KEYS, EXTRA_KEYS

ASTMT_TASKS: tuple[str, ...] = (
    "semseg", "human_parts", "edge", "normals", "sal", "depth", "albedo",
)


@register_dataset("synthetic")
class SyntheticScenes(Dataset):
    """A split of the cached synthetic scenes as numpy samples (the cache is made on first use).

    Splits are disjoint index ranges: ``train`` is the first ``n - round(n·val_fraction)``
    images, ``val`` the rest. Arrays are memory-mapped lazily in each process (DataLoader workers
    open their own maps rather than receiving pickled copies) and copied per item, so transforms
    may write to them.
    """

    def __init__(self, root: str | os.PathLike, n: int = 2000, size: int | Sequence[int] = 96,
                 seed: int = 0, split: str = "train", val_fraction: float = 0.2,
                 tasks: Sequence[str] = ASTMT_TASKS, extras: bool = False,
                 workers: int | None = None, progress: bool = True) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
        n_val = int(round(n * val_fraction))
        if n_val < 1 or n_val >= n:
            raise ValueError(f"n={n} with val_fraction={val_fraction} leaves an empty split")
        available = [k for k in BASE_KEYS + (EXTRA_KEYS if extras else ()) if k != "image"]
        unknown = [t for t in tasks if t not in available]
        if unknown:
            hint = "" if extras else " (the LSB extras need extras=True)"
            raise ValueError(f"unknown synthetic label(s) {unknown}; available: "
                             f"{', '.join(available)}{hint}")
        self.tasks = list(tasks)
        self.split = split
        self.offset = 0 if split == "train" else n - n_val
        self.length = n - n_val if split == "train" else n_val
        self.path = write_cache(root, n, size, seed, extras=extras, workers=workers,
                                progress=progress)
        self._arrays: dict[str, np.ndarray] | None = None
        # fail now, not in a worker, if the cache is unusable or the split's labels break their
        # conventions (a foreign or edited cache: reported, never rebuilt over)
        check_labels(self.path, load_cache(self.path), self.tasks,
                     range(self.offset, self.offset + self.length))

    def __len__(self) -> int:
        return self.length

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = None
        return state

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for the {self.split} split "
                             f"of {self.length} images")
        index = int(index) % self.length
        if self._arrays is None:
            self._arrays = load_cache(self.path)
        i = self.offset + index
        sample: dict[str, Any] = {"image": np.array(self._arrays["image"][i])}
        for task in self.tasks:
            sample[task] = np.array(self._arrays[task][i])
        sample["meta"] = {"index": i, "split": self.split}
        return sample
