"""A synthetic cache whose label values break their conventions is refused when a dataset opens
it, naming the cache, the array, the image, pixel and value and what is expected; the cache is
never rendered over (it may be someone's own data in the cache format)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from densemtl.data.synthetic import SyntheticCacheError, SyntheticScenes, write_cache

KW = dict(n=5, size=16, seed=4, val_fraction=0.4, workers=1, progress=False)


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    return write_cache(tmp_path, KW["n"], KW["size"], KW["seed"], workers=1, progress=False)


def edit(cache: Path, key: str, index: tuple, value) -> None:
    arr = np.load(cache / f"{key}.npy", mmap_mode="r+")
    arr[index] = value
    arr.flush()


@pytest.mark.parametrize(("key", "value", "shown", "expected"), [
    ("semseg", 8, "8", "class ids 0..7 or 255 (ignore)"),
    ("human_parts", 7, "7", "class ids 0..6 or 255 (ignore)"),
    ("edge", 0.5, "0.5", "0 or 1"),
    ("normals", [0.0, 0.0, 0.5], "[0, 0, 0.5]", "unit vectors (norm 1 ± 1e-3)"),
    ("depth", -1.0, "-1", "finite depths > 0 (metres)"),
    ("depth", np.nan, "nan", "finite depths > 0 (metres)"),
    ("albedo", [0.2, 1.5, 0.2], "[0.2, 1.5, 0.2]", "values in [0, 1]"),
])
def test_out_of_range_labels_are_named_with_the_cache_and_value(cache, key, value, shown,
                                                                expected):
    before = np.load(cache / "image.npy").copy()
    edit(cache, key, (1, 3, 5), value)
    with pytest.raises(SyntheticCacheError) as err:
        SyntheticScenes(cache.parent, split="train", **KW)
    message = str(err.value)
    assert message.startswith(f"synthetic cache {cache}: {key}.npy image 1 pixel (3, 5) holds "
                              f"{shown}; expected {expected}; delete it and run `densemtl-data")
    assert np.array_equal(np.load(cache / "image.npy"), before)  # left as it was: not rebuilt
    assert SyntheticScenes(cache.parent, split="val", **KW).path == cache  # the other split


def test_only_the_split_and_tasks_a_dataset_reads_are_checked(cache):
    edit(cache, "semseg", (4, 0, 0), 200)  # image 4 is in the val split (the last 2 of 5)
    assert len(SyntheticScenes(cache.parent, split="train", **KW)) == 3
    assert len(SyntheticScenes(cache.parent, split="val", tasks=["depth"], **KW)) == 2
    with pytest.raises(SyntheticCacheError, match=re.escape("semseg.npy image 4 pixel (0, 0) "
                                                            "holds 200; expected class ids")):
        SyntheticScenes(cache.parent, split="val", **KW)
