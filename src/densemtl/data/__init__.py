"""Datasets, augmentation pipelines and the LightningDataModule."""

from densemtl.data.datamodule import (
    DATASET_REGISTRY,
    EpochSampler,
    MultiTaskDataModule,
    ResumableLoader,
    TransformedDataset,
    build_dataset,
    collate_samples,
    register_dataset,
)
from densemtl.data.geometry import backproject, normals_from_depth
from densemtl.data.synthetic import SyntheticScenes, render_scene, write_cache
from densemtl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms

__all__ = [
    "DATASET_REGISTRY",
    "EpochSampler",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MultiTaskDataModule",
    "ResumableLoader",
    "SyntheticScenes",
    "TransformedDataset",
    "backproject",
    "build_dataset",
    "build_transforms",
    "collate_samples",
    "normals_from_depth",
    "register_dataset",
    "render_scene",
    "write_cache",
]
