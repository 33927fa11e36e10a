"""Bad input a user gives a run, caught at start-up with a message that names the key, the value
and what is expected: image and crop sizes against the network's output stride, crops larger
than the images (accepted: padded with the ignore values)."""

from __future__ import annotations

import csv
import logging
import re

import numpy as np
import pytest

from densemtl.config import compose
from densemtl.experiment import build_datamodule, build_tasks, run

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["data.n=10", "data.batch_size=2", "trainer=debug", "tracking.qualitative=0",
        "tasks=fsv3", "backbone.channels=[8,8,16,16]", "backbone.stem_width=8",
        "model.decoder_width=16"]


@pytest.mark.parametrize(("override", "message"), [
    ("data.size=8", "data.size=[8, 8] is smaller than the output stride 16 of model.arch=deeplab"),
    ("data.crop_size=[32,12]",
     "data.crop_size=[32, 12] is smaller than the output stride 16 of model.arch=deeplab"),
])
def test_inputs_smaller_than_the_output_stride_are_refused_before_any_data(override, message,
                                                                            tmp_path):
    cfg = compose([*TINY, "data.size=16", override, f"paths.data_dir={tmp_path / 'data'}"])
    with pytest.raises(ValueError, match=re.escape(message) + ".*at least 16×16 pixels"):
        run(cfg, tmp_path / "run")
    assert not (tmp_path / "data").exists()  # refused before rendering the data


def test_an_input_of_one_output_stride_trains(tmp_path):
    cfg = compose([*TINY, "data.size=16", "trainer.max_epochs=1",
                   f"paths.data_dir={tmp_path / 'data'}"])
    assert set(run(cfg, tmp_path / "run")["tasks"]) == {"semseg", "albedo", "depth"}


def test_a_crop_larger_than_the_images_is_padded_with_ignore_values_and_warned(tmp_path, caplog):
    cfg = compose([*TINY, "data.size=16", "data.crop_size=24", "data.augment.scale_range=null",
                   "data.augment.hflip=false", "data.augment.color_jitter=false",
                   f"paths.data_dir={tmp_path / 'data'}"])
    tasks = build_tasks(cfg)
    dm = build_datamodule(cfg, tasks)
    with caplog.at_level(logging.WARNING, logger="densemtl.data.datamodule"):
        dm.check_input_size(16, "model.arch=deeplab")
    assert ("data.crop_size=[24, 24] is larger than every training image (data.size=[16, 16] "
            "scaled by at most 1.0: [16, 16])") in caplog.text
    assert "at most 44% of it is image" in caplog.text  # 256 / 576
    dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    semseg, depth = batch["semseg"].numpy(), batch["depth"].numpy()
    assert semseg.shape == (2, 24, 24) and depth.shape == (2, 1, 24, 24)
    # every 16×16 image lands whole in its crop: the synthetic labels have no ignore pixel, so
    # exactly 24² − 16² pixels per image carry semseg's ignore (255) and depth's (0)
    assert [(s != 255).sum() for s in semseg] == [256, 256]
    assert [(d[0] != 0).sum() for d in depth] == [256, 256]
    assert np.array_equal(semseg != 255, depth[:, 0] != 0)


def test_mgda_on_the_astmt_network_follows_its_messages_to_a_working_run(tmp_path):
    """MGDA-UB (space=representation) has no shared representation on a task-conditioned
    decoder: refused before any data, naming the option that works; the per-task schedule then
    names the accumulated one; the combination the messages lead to trains, with MGDA's
    coefficients on the simplex."""
    base = [*TINY, "data.size=16", "model=astmt", "weighting=mgda",
            f"paths.data_dir={tmp_path / 'data'}"]
    with pytest.raises(ValueError, match=re.escape(
            "weighting 'mgda' takes gradients w.r.t. the shared representation, but the network "
            "(DenseMTLNet) has none") + ".*use weighting.space=parameters"):
        run(compose([*base, "model.schedule=accumulated"]), tmp_path / "run")
    assert not (tmp_path / "data").exists()
    with pytest.raises(ValueError, match="needs every task's loss at once; use "
                                         "model.schedule=accumulated"):
        run(compose([*base, "weighting.space=parameters"]), tmp_path / "run")
    payload = run(compose([*base, "weighting.space=parameters", "model.schedule=accumulated",
                           "trainer.max_epochs=1"]), tmp_path / "run")
    assert payload["config"]["weighting"] == {"name": "mgda", "space": "parameters",
                                              "normalization": "none"}
    with open(tmp_path / "run" / "metrics.csv", newline="") as f:
        (row,) = [r for r in csv.DictReader(f) if r.get("train/weight/semseg")]
    weights = [float(row[f"train/weight/{t}"]) for t in ("semseg", "albedo", "depth")]
    assert sum(weights) == pytest.approx(1.0, abs=1e-6) and min(weights) >= 0
