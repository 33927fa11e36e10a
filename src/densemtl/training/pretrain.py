"""Synthetic pretraining of an SE-ResNet backbone, the CPU-scale stand-in for ImageNet weights.

The papers fine-tune ImageNet-pretrained encoders; a few hundred steps from random
initialisation are a different regime (tasks then mostly help each other by adding gradient
signal). This stage trains the backbone alone on an image-level, ImageNet-like task — which of the
semantic classes and which human parts appear in the image (multi-label) — on scenes rendered with
a seed no study uses (:data:`PRETRAIN_SEED`), and writes the weights under timm's key names, the
format ``backbone.pretrained_path`` loads. No dense label and no image of a study is seen.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from densemtl.data.synthetic import HUMAN_PART_NAMES, SYNTHETIC_CLASSES, load_cache, write_cache
from densemtl.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from densemtl.models.backbones import SEResNetBackbone, build_backbone

#: scene seed of the pretraining images; the studies use seeds 0, 1, 2, ...
PRETRAIN_SEED = 1_000_003
#: SEResNetBackbone module prefixes -> the timm ResNet's
TIMM_PREFIXES = {"stem.0.": "conv1.", "stem.1.": "bn1.", "stages.0.": "layer1.",
                 "stages.1.": "layer2.", "stages.2.": "layer3.", "stages.3.": "layer4."}


def timm_state_dict(backbone: SEResNetBackbone) -> dict[str, Tensor]:
    """The backbone's weights under the timm ResNet's key names (``conv1.*``, ``layer1.*``, …)."""
    out = {}
    for key, value in backbone.state_dict().items():
        prefix = next(p for p in TIMM_PREFIXES if key.startswith(p))
        out[TIMM_PREFIXES[prefix] + key[len(prefix):]] = value.detach().clone()
    return out


def presence_targets(semseg: np.ndarray, parts: np.ndarray) -> np.ndarray:
    """Per image, 1 for every semantic class and every human part (not background) present."""
    n = len(semseg)
    classes, part_ids = len(SYNTHETIC_CLASSES), len(HUMAN_PART_NAMES)
    target = np.zeros((n, classes + part_ids - 1), np.float32)
    for i in range(n):
        seg = semseg[i].ravel()
        target[i, np.unique(seg[seg < classes])] = 1.0
        hp = parts[i].ravel()
        present = np.unique(hp[(hp > 0) & (hp < part_ids)])
        target[i, classes + present - 1] = 1.0
    return target


def pretrain_backbone(
    backbone: Mapping[str, Any],
    out: str | os.PathLike,
    root: str | os.PathLike,
    n: int = 2000,
    size: int = 64,
    seed: int = PRETRAIN_SEED,
    epochs: int = 12,
    batch_size: int = 32,
    lr: float = 0.05,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``backbone`` (the options of a ``conf/backbone`` file) to classify class and part
    presence on ``n`` scenes of ``seed`` (rendered under ``root`` if not cached), 10 % held out;
    write its weights to ``out`` (atomically) and a ``<out>.json`` record; return that record.

    SGD (momentum 0.9, weight decay 1e-4, cosine schedule), horizontal flips; the record holds
    the settings, the time and the held-out mean per-label accuracy against the all-absent/
    all-present majority answer."""
    options = {k: v for k, v in dict(backbone).items() if k != "pretrained_path"}
    name = options.pop("name")
    model = build_backbone(name, **options)
    if not isinstance(model, SEResNetBackbone):
        raise ValueError(f"backbone {name!r}: synthetic pretraining supports the SE-ResNets")
    if seed < 1000:
        raise ValueError(f"seed={seed}: use a seed no study uses for its scenes (e.g. the default "
                         f"{PRETRAIN_SEED}), so the pretraining never sees a study image")
    started = time.perf_counter()
    arrays = load_cache(write_cache(root, n, size, seed, progress=progress))
    targets = torch.from_numpy(presence_targets(arrays["semseg"], arrays["human_parts"]))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255
    pixels = torch.from_numpy(np.array(arrays["image"])).permute(0, 3, 1, 2).float()
    images = (pixels - mean) / std
    n_val = max(1, n // 10)
    train_x, train_y = images[n_val:], targets[n_val:]
    val_x, val_y = images[:n_val], targets[:n_val]
    head = nn.Linear(model.high_channels, targets.shape[1])
    params = [*model.parameters(), *head.parameters()]
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(train_x) / batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    loss_fn = nn.BCEWithLogitsLoss()

    def logits(x: Tensor) -> Tensor:
        return head(model(x)[1].mean(dim=(2, 3)))

    losses = []
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(train_x), generator=gen)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            x = train_x[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x[flip] = x[flip].flip(-1)
            loss = loss_fn(logits(x), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        accuracy = float(((logits(val_x) > 0).float() == val_y).float().mean())
    majority = float(torch.maximum(val_y.mean(0), 1 - val_y.mean(0)).mean())
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    torch.save(timm_state_dict(model), tmp)
    os.replace(tmp, out)
    record = {
        "backbone": dict(backbone), "task": "multi-label presence of classes and human parts",
        "n": n, "size": size, "seed": seed, "epochs": epochs, "batch_size": batch_size,
        "lr": lr, "seconds": round(time.perf_counter() - started, 1),
        "final_train_loss": float(np.mean(losses[-steps_per_epoch:])),
        "val_accuracy": accuracy, "val_majority_accuracy": majority,
    }
    Path(f"{out}.json").write_text(json.dumps(record, indent=1))
    return record
