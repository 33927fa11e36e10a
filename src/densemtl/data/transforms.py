"""Augmentation pipelines: albumentations over the numpy sample, task hooks for label values.

One ``A.Compose`` resamples the image and every label map together (labels are declared as
``"mask"`` targets, so they are resampled nearest-neighbour and keep their exact values). The
geometry moves pixels but cannot know what a label *means*; after it ran, the parameters it
actually applied (read back with ``save_applied_params``) are handed to each task's
``scale_label`` / ``rotate_label`` / ``hflip_label`` in the order the operations happened (flip and
rotation do not commute on vectors).

Per-task padding values: one Compose has one ``fill_mask``, but tasks disagree on their ignore
value (255 for class maps, 0 for depth and normals). So the pipeline carries one extra all-ones
``uint8`` mask padded with 0; wherever it ends up 0 (padding, corners uncovered by a rotation)
each label is set to its own task's ``ignore_value``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import torch

from densemtl.tasks.base import Task

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
import albumentations as A  # noqa: E402

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)

#: Colour jitter strengths used when ``color_jitter=True`` (mild: they must not change what a
#: saliency or segmentation label means).
COLOR_JITTER: dict[str, float] = {
    "brightness": 0.3, "contrast": 0.3, "saturation": 0.3, "hue": 0.05,
}

_VALID_KEY = "valid_px"  # the extra uint8 mask that tracks which output pixels came from the input
_LABEL_PREFIX = "label_"

Sample = dict[str, Any]


def _label_key(name: str, task: Task) -> str:
    """The sample key a task reads its label from (tasks sharing labels set ``label_key``)."""
    return getattr(task, "label_key", name)


def size_pair(value: Sequence[int] | int, what: str) -> tuple[int, int]:
    """``(height, width)`` from an int or a pair of positive ints; a clear error otherwise."""
    if isinstance(value, int):
        value = (value, value)
    if len(value) != 2 or not all(isinstance(v, int) and v > 0 for v in value):
        raise ValueError(f"{what} must be a positive int or (height, width) of positive ints, "
                         f"got {value!r}")
    return int(value[0]), int(value[1])


class MultiTaskTransform:
    """Callable ``numpy sample -> torch sample`` for a fixed set of tasks.

    Built by :func:`build_transforms`; holds the albumentations pipeline and applies the tasks'
    label hooks with the parameters the pipeline actually used. ``set_seed`` reseeds it (the
    DataModule's training set reseeds it per image and epoch, so forked workers do not share one
    random state and a resumed run draws what it would have drawn).
    """

    def __init__(
        self,
        tasks: Mapping[str, Task],
        ops: list[A.BasicTransform],
        pad_to: tuple[int, int] | None,
        seed: int | None = None,
    ) -> None:
        self.tasks = dict(tasks)
        self.pad_to = pad_to
        self.geometric = any(
            isinstance(op, (A.RandomScale, A.Rotate, A.RandomCrop, A.PadIfNeeded)) for op in ops
        )
        targets = {_LABEL_PREFIX + name: "mask" for name in self.tasks}
        targets[_VALID_KEY] = "mask"
        self.compose = A.Compose(
            ops, additional_targets=targets, save_applied_params=True, seed=seed, strict=True
        )

    def set_seed(self, seed: int) -> None:
        """Reseed the random draws of the pipeline (numpy and python generators)."""
        self.compose.set_random_seed(seed)

    def _check(self, sample: Mapping[str, Any]) -> tuple[int, int]:
        """Validate the numpy sample against the numpy label convention; return ``(H, W)``."""
        if "image" not in sample:
            raise KeyError(f"sample has no 'image'; keys: {sorted(sample)}")
        image = sample["image"]
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"sample['image'] must be uint8 H×W×3, got {image.dtype} "
                             f"{tuple(image.shape)}")
        h, w = image.shape[:2]
        for name, task in self.tasks.items():
            key = _label_key(name, task)
            if key not in sample:
                raise KeyError(f"sample has no label {key!r} for task {name!r}; keys: "
                               f"{sorted(sample)}")
            label = sample[key]
            shape = tuple(label.shape)
            if shape != (h, w) and shape != (h, w, task.label_channels):
                raise ValueError(f"label {key!r} for task {name!r} must be H×W×"
                                 f"{task.label_channels} = {(h, w, task.label_channels)} "
                                 f"(the image's size), got {shape}")
        if self.pad_to is not None and (h > self.pad_to[0] or w > self.pad_to[1]):
            raise ValueError(f"image of size {(h, w)} is larger than pad_to={self.pad_to}; "
                             f"pad_to must be at least the largest image size (no resizing)")
        return h, w

    def __call__(self, sample: Mapping[str, Any]) -> Sample:
        """Augment one numpy sample and convert it to the torch convention."""
        h, w = self._check(sample)
        data: dict[str, np.ndarray] = {"image": sample["image"]}
        for name, task in self.tasks.items():
            label = np.asarray(sample[_label_key(name, task)])
            data[_LABEL_PREFIX + name] = label.reshape(h, w, task.label_channels)
        data[_VALID_KEY] = np.ones((h, w), np.uint8)
        out = self.compose(**data)

        scale, angle, flipped = 1.0, 0.0, False
        fixes: list[tuple[str, float]] = []  # label-value fixes, in the order the ops ran
        for op_name, params in out["applied_transforms"]:
            if op_name == "RandomScale":
                scale = float(params["scale"])
                fixes.append(("scale", scale))
            elif op_name == "Rotate":
                # cv2.getRotationMatrix2D(centre, angle, 1) = [[cos, sin, ·], [-sin, cos, ·]];
                # a positive angle turns the picture counter-clockwise as displayed.
                matrix = params["matrix"]
                angle = math.degrees(math.atan2(matrix[0, 1], matrix[0, 0]))
                fixes.append(("rotate", angle))
            elif op_name == "HorizontalFlip":
                flipped = True
                fixes.append(("hflip", 0.0))

        valid = out[_VALID_KEY].astype(bool)
        result: Sample = {"image": torch.from_numpy(out["image"].transpose(2, 0, 1).copy())}
        for name, task in self.tasks.items():
            label = np.array(out[_LABEL_PREFIX + name])  # a private, writable copy for the hooks
            if label.ndim == 2:
                label = label[..., None]
            for kind, value in fixes:
                if kind == "scale":
                    label = task.scale_label(label, value)
                elif kind == "rotate":
                    label = task.rotate_label(label, value)
                else:
                    label = task.hflip_label(label)
            if self.geometric:
                ignore = np.asarray(task.ignore_value, label.dtype)
                label = np.where(valid[..., None], label, ignore)
            result[name] = to_torch_label(label, task)

        meta = dict(sample.get("meta", {}))
        meta["aug"] = {"scale": scale, "hflip": flipped, "angle": angle, "input_size": (h, w)}
        result["meta"] = meta
        return result


def to_torch_label(label: np.ndarray, task: Task) -> torch.Tensor:
    """Numpy ``H×W×C`` label -> torch: class maps ``int64`` ``H×W``, the rest ``float32 C×H×W``."""
    if task.kind == "class":
        return torch.from_numpy(np.ascontiguousarray(label[..., 0]).astype(np.int64))
    return torch.from_numpy(np.ascontiguousarray(label.transpose(2, 0, 1)).astype(np.float32))


def _probability(value: bool | float, what: str) -> float:
    """``True`` -> 0.5, ``False`` -> 0, a float in [0, 1] -> itself."""
    if isinstance(value, bool):
        return 0.5 if value else 0.0
    if not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{what} must be a bool or a probability in [0, 1], got {value!r}")
    return float(value)


def _angle_range(rotate_deg: float | Sequence[float]) -> tuple[float, float]:
    """``r`` -> ``(-r, r)``; a pair ``(lo, hi)`` is taken as it is."""
    if isinstance(rotate_deg, (int, float)):
        if rotate_deg < 0:
            raise ValueError(f"rotate_deg must be >= 0 (0 disables), got {rotate_deg!r}")
        return -float(rotate_deg), float(rotate_deg)
    lo, hi = (float(v) for v in rotate_deg)
    if lo > hi:
        raise ValueError(f"rotate_deg range must have lo <= hi, got {tuple(rotate_deg)!r}")
    return lo, hi


def build_transforms(
    tasks: Mapping[str, Task],
    train: bool,
    crop_size: tuple[int, int] | int | None,
    scale_range: tuple[float, float] | None = (0.5, 2.0),
    hflip: bool | float = True,
    rotate_deg: float | tuple[float, float] = 0.0,
    color_jitter: bool = True,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    pad_to: tuple[int, int] | int | None = None,
    seed: int | None = None,
) -> MultiTaskTransform:
    """The ``numpy sample -> torch sample`` pipeline for ``tasks`` (SPEC §5 "Augmentation").

    Training (``train=True``), in this order: random scale in ``scale_range`` (depth divided by
    the scale), rotation by an angle drawn from ``(-rotate_deg, rotate_deg)`` (or from the pair
    given; 0 disables; positive = counter-clockwise), pad + random crop to ``crop_size``,
    horizontal flip with probability ``hflip`` (``True`` = 0.5), colour jitter (image only),
    standardisation with ``mean``/``std`` (fractions of 255). Evaluation (``train=False``) only
    pads to ``pad_to`` (bottom/right, no resizing, so predictions crop back to
    ``meta["aug"]["input_size"]``) and standardises; a ``crop_size`` there is an error, because
    evaluation must see whole images (and ``pad_to`` in training, where the crop pads). Padded
    and rotated-in pixels get each task's ``ignore_value``; the image is padded with the mean
    colour (0 after standardisation). ``seed`` fixes the random draws (else fresh entropy).
    """
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"mean and std must hold 3 values each, std > 0; got mean={mean!r}, "
                         f"std={std!r}")
    crop = None if crop_size is None else size_pair(crop_size, "crop_size")
    pad = None if pad_to is None else size_pair(pad_to, "pad_to")
    if not train and crop is not None:
        raise ValueError(f"crop_size={crop_size!r} is for training; evaluation sees whole images "
                         f"(use pad_to to give them a common size)")
    if train and pad is not None:
        raise ValueError(f"pad_to={pad_to!r} is for evaluation; training pads as part of the "
                         f"random crop (crop_size)")
    fill = tuple(255.0 * m for m in mean)
    ops: list[A.BasicTransform] = []
    if train:
        if scale_range is not None:
            lo, hi = (float(s) for s in scale_range)
            if not 0 < lo <= hi:
                raise ValueError(f"scale_range must be (lo, hi) with 0 < lo <= hi, got "
                                 f"{tuple(scale_range)!r}")
            if (lo, hi) != (1.0, 1.0):
                ops.append(A.RandomScale(scale_limit=(lo - 1.0, hi - 1.0), p=1.0,
                                         interpolation=cv2.INTER_LINEAR,
                                         mask_interpolation=cv2.INTER_NEAREST))
        angles = _angle_range(rotate_deg)
        if angles != (0.0, 0.0):
            ops.append(A.Rotate(limit=angles, p=1.0, interpolation=cv2.INTER_LINEAR,
                                mask_interpolation=cv2.INTER_NEAREST,
                                border_mode=cv2.BORDER_CONSTANT, fill=fill, fill_mask=0))
        if crop is not None:
            ops.append(A.RandomCrop(height=crop[0], width=crop[1], pad_if_needed=True,
                                    pad_position="random", border_mode=cv2.BORDER_CONSTANT,
                                    fill=fill, fill_mask=0, p=1.0))
        p_flip = _probability(hflip, "hflip")
        if p_flip > 0:
            ops.append(A.HorizontalFlip(p=p_flip))
        if color_jitter:
            ops.append(A.ColorJitter(**COLOR_JITTER, p=1.0))
    elif pad is not None:
        ops.append(A.PadIfNeeded(min_height=pad[0], min_width=pad[1], position="top_left",
                                 border_mode=cv2.BORDER_CONSTANT, fill=fill, fill_mask=0))
    ops.append(A.Normalize(mean=tuple(mean), std=tuple(std), max_pixel_value=255.0))
    return MultiTaskTransform(tasks, ops, pad_to=pad, seed=seed)
