"""Synthetic pretraining: targets, the weights file's timm keys, loading it as a backbone."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from densemtl.cli.data import main as data_main
from densemtl.models.backbones import build_backbone
from densemtl.training.pretrain import presence_targets, pretrain_backbone

TINY = {"name": "seresnet26", "output_stride": 16, "channels": [8, 8, 16, 16], "stem_width": 8,
        "pretrained_path": None}


def test_presence_targets_mark_classes_and_parts_present() -> None:
    semseg = np.array([[[0, 7], [255, 3]], [[1, 1], [1, 1]]], np.uint8)
    parts = np.array([[[0, 2], [255, 6]], [[255, 255], [255, 255]]], np.uint8)
    target = presence_targets(semseg, parts)
    assert target.shape == (2, 8 + 6)
    # image 0: classes wall, sphere, person; parts torso (2) and lower leg (6)
    assert np.flatnonzero(target[0]).tolist() == [0, 3, 7, 8 + 1, 8 + 5]
    assert np.flatnonzero(target[1]).tolist() == [1]  # floor only; no figure, no part


def test_pretrained_file_loads_as_the_backbone(tmp_path: Path) -> None:
    torch.manual_seed(0)
    out = tmp_path / "w.pth"
    record = pretrain_backbone(TINY, out, tmp_path / "data", n=20, size=32, epochs=1,
                               batch_size=8, progress=False)
    assert json.loads(Path(f"{out}.json").read_text()) == record
    assert record["seed"] >= 1000 and record["n"] == 20
    assert 0.0 <= record["val_accuracy"] <= 1.0
    state = torch.load(out, weights_only=True)
    assert "conv1.weight" in state and "layer4.0.se.fc1.weight" in state  # timm's key names
    loaded = build_backbone(**{**TINY, "pretrained_path": str(out)})
    fresh = build_backbone(**TINY)
    assert not torch.equal(fresh.stem[0].weight, loaded.stem[0].weight)
    torch.testing.assert_close(loaded.stem[0].weight, state["conv1.weight"], rtol=0, atol=0)
    torch.testing.assert_close(loaded.stages[3][0].se.fc1.weight, state["layer4.0.se.fc1.weight"],
                               rtol=0, atol=0)


def test_pretraining_refuses_study_seeds_and_other_backbones(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ValueError, match="seed=0: use a seed no study uses"):
        pretrain_backbone(TINY, tmp_path / "w.pth", tmp_path, n=4, size=32, seed=0)
    with pytest.raises(ValueError, match="supports the SE-ResNets"):
        pretrain_backbone({"name": "mobilenetv2"}, tmp_path / "w.pth", tmp_path, n=4, size=32)
    assert data_main(["pretrain", "--backbone", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "--backbone nosuch: no " in err and "seresnet26_cpu" in err
