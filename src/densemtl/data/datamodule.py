"""The LightningDataModule: a dataset chosen by name, wrapped with the augmentation pipelines.

Datasets register a builder under a name (``@register_dataset("name")``, in any module of
``densemtl.data`` or a plugin: the registry finds them); a builder is
called as ``builder(split=..., tasks=[label keys], **dataset_kwargs)`` and returns a map-style
dataset of numpy samples ``{"image", <label key>..., "meta"}``.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate

from densemtl.data.transforms import (
    Sample,
    build_transforms,
    size_pair,
)
from densemtl.registry import Registry, check_kwargs
from densemtl.tasks.base import Task

DatasetBuilder = Callable[..., Dataset]
log = logging.getLogger(__name__)

#: every dataset, by name; discovered from the modules of ``densemtl.data`` and the plugins.
DATASET_REGISTRY: Registry[DatasetBuilder] = Registry("dataset", "data", ["densemtl.data"])

#: ``@register_dataset("name")``: make a dataset builder available to the DataModule.
register_dataset = DATASET_REGISTRY.register


def build_dataset(name: str, split: str, tasks: Sequence[str], **kwargs: Any) -> Dataset:
    """Build ``split`` of dataset ``name`` with labels ``tasks``; unknown names list valid ones."""
    return DATASET_REGISTRY.build(name, split=split, tasks=list(tasks), **kwargs)


class TransformedDataset(Dataset):
    """A dataset of numpy samples seen through a ``numpy -> torch`` transform.

    With a ``seed``, an item is asked for as ``(epoch, index)`` (what :class:`EpochSampler`
    yields) and the transform is reseeded from ``(seed, epoch, index)`` first: an image's
    augmentation depends on nothing but those three numbers, not on the worker that loads it,
    on the order of the epoch, or on where a resumed run picks up.
    """

    def __init__(self, base: Dataset, transform: Callable[[Mapping[str, Any]], Sample],
                 seed: int | None = None) -> None:
        self.base = base
        self.transform = transform
        self.seed = seed

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key: int | tuple[int, int]) -> Sample:
        if isinstance(key, tuple):
            epoch, key = key
            seed = np.random.SeedSequence([self.seed, epoch, key]).generate_state(1)[0]
            self.transform.set_seed(int(seed))  # type: ignore[attr-defined]
        return self.transform(self.base[key])


class EpochSampler(DistributedSampler):
    """Shuffled ``(epoch, index)`` pairs, the epoch's order a function of ``(seed, epoch)``,
    resumable in mid-epoch.

    A ``DistributedSampler`` (one replica outside DDP), so Lightning keeps it under DDP instead
    of replacing it. ``resume(epoch, n)`` makes the next iteration of ``epoch`` skip its first
    ``n`` indices: the ones a checkpointed run already trained on.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        distributed = dist.is_available() and dist.is_initialized()
        super().__init__(dataset, num_replicas=dist.get_world_size() if distributed else 1,
                         rank=dist.get_rank() if distributed else 0, shuffle=True, seed=seed)
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._skip = 0
        super().set_epoch(epoch)

    def resume(self, epoch: int, done: int) -> None:
        """Continue at epoch ``epoch`` after its first ``done`` indices."""
        self.epoch, self._skip = epoch, done

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        skip, self._skip = self._skip, 0
        epoch = self.epoch
        for index in list(super().__iter__())[skip:]:
            yield epoch, index


class ResumableLoader(DataLoader):
    """The training ``DataLoader``, stateful in Lightning's sense: its state is the epoch and the
    batches of it the run has trained on (read from ``position``), saved in every checkpoint and
    handed back to the :class:`EpochSampler` when a run resumes."""

    def __init__(self, *args: Any, position: Callable[[], tuple[int, int]], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.position = position

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "batches"}``: where the next training batch comes from."""
        epoch, batches = self.position()
        return {"epoch": epoch, "batches": batches}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        """Resume the sampler where :meth:`state_dict` said."""
        self.sampler.resume(int(state["epoch"]), int(state["batches"]) * self.batch_size)


def fit_position(trainer: pl.Trainer) -> tuple[int, int]:
    """(epoch, batches of it trained) of a running ``fit``; a finished epoch is (next epoch, 0)."""
    done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
    if done >= trainer.num_training_batches:
        return trainer.current_epoch + 1, 0
    return trainer.current_epoch, done


def collate_samples(samples: Sequence[Sample]) -> dict[str, Any]:
    """Stack tensors with ``default_collate``; keep ``meta`` as a list of per-sample dicts.

    Why not collate ``meta`` too: it holds per-sample odds and ends (ids, tuples of sizes, values
    that may be ``None``) that ``default_collate`` would transpose into per-key lists or reject.
    """
    batch = default_collate([{k: v for k, v in s.items() if k != "meta"} for s in samples])
    batch["meta"] = [s.get("meta", {}) for s in samples]
    return batch


#: :func:`build_transforms` parameters the DataModule sets itself (the rest are ``augment``)
AUGMENT_FIXED = ("tasks", "train", "crop_size", "pad_to", "seed")
_TRANSFORM_PARAMS = inspect.signature(build_transforms).parameters


class MultiTaskDataModule(pl.LightningDataModule):
    """Train/val loaders over a registered dataset for any subset of tasks.

    ``tasks`` maps task names to task objects; the batch holds ``image`` (``float32 B×3×H×W``),
    one tensor per task in the torch label convention and ``meta`` (list of dicts). Training
    batches are augmented (see :func:`build_transforms`) and need a fixed ``crop_size`` unless
    the images already share one size and random scaling is off; validation images are only
    standardised and, with ``val_pad_to``, padded to one size. ``aug_seed`` seeds the
    training order and augmentations (default: torch's initial seed, i.e. the run's ``seed``
    after ``seed_everything``); both are functions of (seed, epoch, image), so they do not
    depend on ``num_workers`` and a run resumed from any checkpoint sees what it would have seen
    uninterrupted. Neither loader draws from the global random generators. ``augment``
    are :func:`build_transforms`'s options (``scale_range``, ``hflip``, ``rotate_deg``,
    ``color_jitter``, ``mean``, ``std``), with its defaults.
    """

    def __init__(
        self,
        tasks: Mapping[str, Task],
        dataset: str = "synthetic",
        dataset_kwargs: Mapping[str, Any] | None = None,
        train_split: str = "train",
        val_split: str = "val",
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool = False,
        crop_size: tuple[int, int] | int | None = None,
        val_pad_to: tuple[int, int] | int | None = None,
        aug_seed: int | None = None,
        **augment: Any,
    ) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("tasks is empty: the DataModule needs at least one task")
        DATASET_REGISTRY.check(dataset, dict(dataset_kwargs or {}), skip=("split", "tasks"))
        if batch_size < 1 or (val_batch_size is not None and val_batch_size < 1):
            raise ValueError(f"batch sizes must be >= 1, got batch_size={batch_size}, "
                             f"val_batch_size={val_batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        check_kwargs(build_transforms, augment, "data.augment", skip=AUGMENT_FIXED)
        scale_range = augment.get("scale_range", _TRANSFORM_PARAMS["scale_range"].default)
        scaling = scale_range is not None and tuple(scale_range) != (1.0, 1.0)
        if crop_size is None and scaling:
            raise ValueError("training batches need one image size: set crop_size, or disable "
                             f"random scaling (scale_range=None; got {scale_range!r})")
        self.tasks = dict(tasks)
        self.crop_size = None if crop_size is None else size_pair(crop_size, "data.crop_size")
        self.scale_range = tuple(scale_range) if scaling else (1.0, 1.0)
        self.dataset_name = dataset
        self.dataset_kwargs = dict(dataset_kwargs or {})
        self.train_split = train_split
        self.val_split = val_split
        self.batch_size = batch_size
        self.val_batch_size = val_batch_size or batch_size
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.seed = torch.initial_seed() % 2**32 if aug_seed is None else int(aug_seed)
        self.train_transform = build_transforms(
            self.tasks, train=True, crop_size=crop_size, seed=self.seed, **augment)
        standardise = {k: v for k, v in augment.items() if k in ("mean", "std")}
        self.val_transform = build_transforms(
            self.tasks, train=False, crop_size=None, pad_to=val_pad_to, **standardise)
        self.train_set: TransformedDataset | None = None
        self.val_set: TransformedDataset | None = None

    #: keys of a ``data`` config that configure the loaders rather than the dataset
    LOADER_KEYS: ClassVar[tuple[str, ...]] = (
        "batch_size", "val_batch_size", "num_workers", "pin_memory", "crop_size", "val_pad_to",
        "train_split", "val_split", "aug_seed",
    )

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], tasks: Mapping[str, Task]) -> MultiTaskDataModule:
        """Build from a ``data`` config: ``name``, loader keys, ``augment: {...}``; every other
        key is a dataset argument (``task_args`` is skipped: it configures the tasks).

        ``crop_size: null`` means "the dataset's ``size``" when the config has one, so the
        default synthetic config trains on fixed-size random-scaled crops.
        """
        cfg = dict(cfg)
        if "name" not in cfg:
            raise KeyError(f"data config needs 'name' (one of "
                           f"{', '.join(DATASET_REGISTRY.names())}); got keys {sorted(cfg)}")
        name = cfg.pop("name")
        cfg.pop("task_args", None)
        augment = dict(cfg.pop("augment", None) or {})
        loader = {k: cfg.pop(k) for k in cls.LOADER_KEYS if k in cfg}
        if loader.get("crop_size") is None and "size" in cfg:
            loader["crop_size"] = cfg["size"]
        for key in ("scale_range", "rotate_deg", "mean", "std"):
            if isinstance(augment.get(key), Sequence):
                augment[key] = tuple(augment[key])  # OmegaConf lists -> tuples
        if isinstance(loader.get("crop_size"), Sequence):
            loader["crop_size"] = tuple(loader["crop_size"])
        if isinstance(loader.get("val_pad_to"), Sequence):
            loader["val_pad_to"] = tuple(loader["val_pad_to"])
        check_kwargs(cls, loader, "data")
        return cls(tasks, dataset=name, dataset_kwargs=cfg, **loader, **augment)

    def check_input_size(self, output_stride: int, network: str) -> None:
        """Refuse at start-up inputs with a side shorter than the network's ``output_stride``
        (``data.size``, when the dataset has one size, and ``data.crop_size``); warn when every
        training crop is larger than every scaled image.

        A crop larger than the image is padded with each task's ignore value (SPEC §1: PASCAL's
        ≤ 500-pixel images in 512×512 crops), so it is accepted; but a crop no scaled image can
        fill is mostly padding, which is likely a mistake."""
        size = self.dataset_kwargs.get("size")
        image = None if size is None else size_pair(size, "data.size")
        for key, hw in (("data.size", image), ("data.crop_size", self.crop_size)):
            if hw is not None and min(hw) < output_stride:
                raise ValueError(
                    f"{key}={list(hw)} is smaller than the output stride {output_stride} of "
                    f"{network} (one pixel of its coarsest feature map); use inputs of at least "
                    f"{output_stride}×{output_stride} pixels")
        if image is not None and self.crop_size is not None:
            largest = [round(s * self.scale_range[1]) for s in image]
            if all(c > s for c, s in zip(self.crop_size, largest)):
                log.warning(
                    "data.crop_size=%s is larger than every training image (data.size=%s scaled "
                    "by at most %s: %s): each crop is padded with the tasks' ignore values, at "
                    "most %.0f%% of it is image", list(self.crop_size), list(image),
                    self.scale_range[1], largest,
                    100 * largest[0] * largest[1] / (self.crop_size[0] * self.crop_size[1]))

    @property
    def label_keys(self) -> list[str]:
        """The dataset labels the tasks read (tasks sharing a label load it once)."""
        keys = [getattr(task, "label_key", name) for name, task in self.tasks.items()]
        return list(dict.fromkeys(keys))

    def _build(self, split: str) -> Dataset:
        return build_dataset(self.dataset_name, split, self.label_keys, **self.dataset_kwargs)

    def prepare_data(self) -> None:
        """Build both splits once on the main process (generates on-disk caches, e.g. synthetic)."""
        self._build(self.train_split)
        self._build(self.val_split)

    def setup(self, stage: str | None = None) -> None:
        """Build the datasets the stage needs and wrap them with their transforms."""
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = TransformedDataset(self._build(self.train_split),
                                                self.train_transform, seed=self.seed)
        if stage in (None, "fit", "validate") and self.val_set is None:
            self.val_set = TransformedDataset(self._build(self.val_split), self.val_transform)

    def _loader(self, dataset: Dataset | None, train: bool) -> DataLoader:
        if dataset is None:
            raise RuntimeError("call setup() before asking for dataloaders")
        common = dict(
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
            collate_fn=collate_samples,
            # the loaders' own generator: creating an iterator leaves the global stream alone
            generator=torch.Generator().manual_seed(self.seed),
        )
        if not train:
            return DataLoader(dataset, batch_size=self.val_batch_size, shuffle=False, **common)
        return ResumableLoader(
            dataset, batch_size=self.batch_size, sampler=EpochSampler(dataset, self.seed),
            drop_last=True, position=lambda: fit_position(self.trainer), **common,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled, augmented training batches (the last incomplete batch is dropped); a
        :class:`ResumableLoader` over an :class:`EpochSampler`."""
        return self._loader(self.train_set, train=True)

    def val_dataloader(self) -> DataLoader:
        """Validation batches in dataset order, un-augmented."""
        return self._loader(self.val_set, train=False)


__all__ = [
    "DATASET_REGISTRY",
    "EpochSampler",
    "MultiTaskDataModule",
    "ResumableLoader",
    "TransformedDataset",
    "build_dataset",
    "collate_samples",
    "register_dataset",
]
