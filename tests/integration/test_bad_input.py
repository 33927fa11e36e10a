"""Bad input a user gives a run, caught at start-up with a message that names the key, the value
and what is expected: image and crop sizes against the network's output stride, crops larger
than the images (accepted: padded with the ignore values)."""

from __future__ import annotations

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
