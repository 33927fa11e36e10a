"""The DataModule: registry, loaders over a tiny synthetic cache, batches in the torch layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from densemtl.data import (
    DATASET_REGISTRY,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MultiTaskDataModule,
    SyntheticScenes,
    register_dataset,
)
from densemtl.data.synthetic import SYNTHETIC_CLASSES
from densemtl.tasks import build_task

SIZE = 32


@pytest.fixture(scope="module")
def synthetic_kwargs(tmp_path_factory) -> dict:
    """A 10-image cache (7 train / 3 val), rendered once for the module."""
    return {"root": str(tmp_path_factory.mktemp("synthetic")), "n": 10, "size": SIZE,
            "seed": 0, "val_fraction": 0.3, "workers": 1, "progress": False}


def make_tasks() -> dict:
    return {"semseg": build_task("semseg", num_classes=len(SYNTHETIC_CLASSES)),
            "normals": build_task("normals")}


def test_loaders_yield_augmented_train_and_plain_val_batches(synthetic_kwargs):
    dm = MultiTaskDataModule(make_tasks(), dataset="synthetic", dataset_kwargs=synthetic_kwargs,
                             batch_size=3, crop_size=24, rotate_deg=10.0, aug_seed=0)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.label_keys == ["semseg", "normals"]
    train = list(dm.train_dataloader())
    assert len(train) == 2  # 7 images, batches of 3, the incomplete last batch is dropped
    for batch in train:
        assert set(batch) == {"image", "semseg", "normals", "meta"}
        assert batch["image"].dtype == torch.float32 and batch["image"].shape == (3, 3, 24, 24)
        assert batch["semseg"].dtype == torch.int64 and batch["semseg"].shape == (3, 24, 24)
        assert batch["normals"].dtype == torch.float32 and batch["normals"].shape == (3, 3, 24, 24)
        labels = set(batch["semseg"].unique().tolist())
        assert labels <= set(range(len(SYNTHETIC_CLASSES))) | {255}
        norms = batch["normals"].norm(dim=1)
        assert torch.all(((norms - 1).abs() < 1e-5) | (norms == 0))
        assert len(batch["meta"]) == 3 and all(m["split"] == "train" for m in batch["meta"])
        assert all(0.5 <= m["aug"]["scale"] <= 2.0 for m in batch["meta"])
    seen = [m["index"] for b in train for m in b["meta"]]
    assert len(set(seen)) == 6 and set(seen) <= set(range(7))  # 6 distinct train-range images

    (val,) = list(dm.val_dataloader())
    assert val["image"].shape == (3, 3, SIZE, SIZE) and val["semseg"].shape == (3, SIZE, SIZE)
    assert [m["index"] for m in val["meta"]] == [7, 8, 9]  # in order, after the train range
    raw = SyntheticScenes(split="val", tasks=["semseg", "normals"], **synthetic_kwargs)[0]
    expected = (raw["image"] / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    torch.testing.assert_close(val["image"][0], torch.from_numpy(
        expected.transpose(2, 0, 1).astype(np.float32)), atol=1e-5, rtol=0)
    assert torch.equal(val["semseg"][0], torch.from_numpy(raw["semseg"][..., 0]).long())
    assert torch.equal(val["normals"][0], torch.from_numpy(raw["normals"].transpose(2, 0, 1)))
    assert val["meta"][0]["aug"] == {"scale": 1.0, "hflip": False, "angle": 0.0,
                                     "input_size": (SIZE, SIZE)}


def test_tasks_sharing_a_label_load_it_once(synthetic_kwargs):
    tasks = {"depth": build_task("depth"), "lsb_depth": build_task("lsb_depth")}
    dm = MultiTaskDataModule(tasks, dataset_kwargs=synthetic_kwargs, batch_size=2,
                             scale_range=None, hflip=False, color_jitter=False)
    dm.setup("fit")
    assert dm.label_keys == ["depth"]
    batch = next(iter(dm.train_dataloader()))
    assert batch["depth"].shape == (2, 1, SIZE, SIZE)
    assert torch.equal(batch["depth"], batch["lsb_depth"]) and batch["depth"].min() > 0


def test_from_config_reads_the_data_config(synthetic_kwargs):
    cfg = {"name": "synthetic", **synthetic_kwargs, "batch_size": 2, "num_workers": 0,
           "crop_size": None, "task_args": {"semseg": {"num_classes": 8}},
           "augment": {"scale_range": [0.75, 1.5], "hflip": True, "rotate_deg": 0,
                       "color_jitter": True}}
    dm = MultiTaskDataModule.from_config(cfg, make_tasks())
    assert dm.dataset_kwargs == synthetic_kwargs and dm.batch_size == 2
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, SIZE, SIZE)  # crop_size null -> the dataset's size
    assert all(0.75 <= m["aug"]["scale"] <= 1.5 for m in batch["meta"])
    with pytest.raises(ValueError, match=r"data\.augment: unknown option\(s\) \['rotate'\]"):
        MultiTaskDataModule.from_config(cfg | {"augment": {"rotate": 5}}, make_tasks())


def test_unknown_dataset_and_bad_options_fail_clearly(synthetic_kwargs):
    with pytest.raises(KeyError, match=r"unknown dataset 'pascal'.*valid datasets: .*synthetic"):
        MultiTaskDataModule(make_tasks(), dataset="pascal")
    with pytest.raises(ValueError, match="set crop_size, or disable random scaling"):
        MultiTaskDataModule(make_tasks(), dataset_kwargs=synthetic_kwargs)
    with pytest.raises(ValueError, match="tasks is empty"):
        MultiTaskDataModule({}, dataset_kwargs=synthetic_kwargs)
    with pytest.raises(ValueError, match="registered twice"):
        register_dataset("synthetic")(lambda split, tasks: None)


class SameScene(Dataset):
    """Four copies of one sample: any difference between outputs comes from the augmentation."""

    def __init__(self, split: str, tasks: list[str]) -> None:
        rng = np.random.default_rng(0)
        self.sample = {"image": rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
                       "semseg": rng.integers(0, 4, (16, 16, 1)).astype(np.uint8)}

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> dict:
        return {**self.sample, "meta": {"index": index}}


def test_registered_dataset_and_workers_draw_different_augmentations():
    if "same_scene" not in DATASET_REGISTRY:
        register_dataset("same_scene")(SameScene)
    tasks = {"semseg": build_task("semseg", num_classes=4)}
    dm = MultiTaskDataModule(tasks, dataset="same_scene", batch_size=1, num_workers=2,
                             crop_size=12, aug_seed=0)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.persistent_workers and loader.drop_last
    scales = [b["meta"][0]["aug"]["scale"] for b in loader]
    # forked workers inherit one random state; without reseeding, worker 0's and worker 1's
    # first draws would be equal
    assert len(scales) == 4 and len(set(scales)) == 4
