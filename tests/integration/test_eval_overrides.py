"""``densemtl-eval`` evaluates a checkpoint as it was trained: overrides of how the validation
images are loaded (the documented ``data.batch_size=4``) work and are stated in metrics.json;
overrides of the network or of which images are evaluated are refused, naming the key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from densemtl.config import compose
from densemtl.experiment import evaluate_checkpoint, run

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = ["data.n=20", "data.size=16", "data.batch_size=2", "trainer=debug",
         "trainer.max_epochs=1", "tracking.qualitative=0", "tasks=fsv3",
         "backbone.channels=[8,8,16,16]", "backbone.stem_width=8", "model.decoder_width=16"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    run(compose([*TRAIN, f"paths.data_dir={root / 'data'}"]), root / "run")
    return root / "run" / "checkpoints" / "last.ckpt"


def evaluate(checkpoint: Path, out: Path, *overrides: str) -> dict:
    cfg = compose([f"ckpt_path={checkpoint}", "trainer=debug", *overrides], config_name="eval")
    return evaluate_checkpoint(cfg, out)


def test_documented_batch_size_override_evaluates_with_that_batch_size(checkpoint, tmp_path):
    # the CLI as the README's users call it: one validation batch of 4 images ...
    exe = Path(sys.executable).with_name("densemtl-eval")
    out = tmp_path / "batch4"
    result = subprocess.run(
        [str(exe), f"ckpt_path={checkpoint}", "trainer=debug", "trainer.limit_val_batches=1",
         "data.batch_size=4", f"hydra.run.dir={out}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads((out / "metrics.json").read_text())
    assert payload["eval_overrides"] == {"data": {"val_batch_size": 4}}
    assert payload["config"]["data"]["val_batch_size"] == 4
    assert payload["config"]["data"]["batch_size"] == 2  # the run's training batch, as trained
    # ... scores exactly the 4 images that four batches of one score, and not what one does
    four_of_one = evaluate(checkpoint, tmp_path / "b1x4", "data.batch_size=1",
                           "trainer.limit_val_batches=4")
    one_of_one = evaluate(checkpoint, tmp_path / "b1x1", "data.batch_size=1",
                          "trainer.limit_val_batches=1")
    for task, metrics in payload["tasks"].items():
        assert metrics == pytest.approx(four_of_one["tasks"][task], rel=1e-5), task
    assert payload["tasks"]["albedo"] != pytest.approx(one_of_one["tasks"]["albedo"], rel=1e-5)


@pytest.mark.parametrize(("override", "named"), [
    ("+data.n=40", "data.n"), ("+data.size=32", "data.size"), ("+data.seed=3", "data.seed"),
    ("+model.decoder_width=8", "model"), ("+backbone.stem_width=16", "backbone"),
    ("+tasks.normals={}", "tasks"),
])
def test_overrides_of_the_network_or_the_images_are_refused(checkpoint, tmp_path, override,
                                                            named):
    with pytest.raises(ValueError, match=(
            rf"densemtl-eval evaluates {checkpoint} as it was trained, on its own data: "
            rf"{named} cannot be overridden .* evaluation may set data.batch_size, "
            r"data.num_workers, data.task_args")):
        evaluate(checkpoint, tmp_path / "out", override)
    assert not (tmp_path / "out" / "metrics.json").exists()


def test_task_arguments_that_change_the_network_are_refused(checkpoint, tmp_path):
    with pytest.raises(ValueError, match=r"change the network's outputs \(\{'semseg': 9, "
                                         r"'albedo': 3, 'depth': 1\} instead of the "
                                         r"checkpoint's \{'semseg': 8,"):
        evaluate(checkpoint, tmp_path / "out", "++data.task_args.semseg.num_classes=9")


def test_metric_conventions_are_evaluation_settings_and_stated(checkpoint, tmp_path):
    trained = evaluate(checkpoint, tmp_path / "skip")
    zero = evaluate(checkpoint, tmp_path / "zero", "++data.task_args.semseg.absent=zero")
    assert trained["eval_overrides"] == {}
    assert zero["eval_overrides"] == {"data": {"task_args": {"semseg": {"absent": "zero"}}}}
    assert (trained["protocol"]["semseg"], zero["protocol"]["semseg"]) == (
        {"absent": "skip"}, {"absent": "zero"})
    assert zero["tasks"]["albedo"] == trained["tasks"]["albedo"]  # the same network and images
