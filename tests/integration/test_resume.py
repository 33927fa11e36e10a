"""Interrupted + resumed runs equal uninterrupted ones, bit for bit on the CPU: weights and
metrics.json, for both loops, with and without the adversarial term, for every weighting.

The interruption is a real SIGTERM sent to the training process while it loads a training image
(mid-epoch: the run checkpoints after the current batch and stops), or
``checkpoint.stop_after_epochs`` (an epoch-end checkpoint). The resumed run is started the way a
requeued job is: the same configuration in the same run directory.
"""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import pytest
import torch

from densemtl.config import compose
from densemtl.data.synthetic import SyntheticScenes
from densemtl.experiment import run
from densemtl.training.callbacks import RunInterrupted
from densemtl.training.checkpoint import CheckpointError, load_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

#: 3 epochs of 3 batches of 4 images; validation every epoch
BASE = ["data.n=18", "data.size=32", "data.batch_size=4", "trainer=debug",
        "trainer.max_epochs=3", "trainer.limit_train_batches=3",
        "trainer.check_val_every_n_epoch=1", "tracking.qualitative=0", "tasks=fsv3",
        "backbone.channels=[8,8,16,16]", "backbone.stem_width=8", "model.decoder_width=16"]
JOINT = ["model=mtl_baseline", "modulation=none"]
SINGLE_TASKING = ["model=astmt", "modulation=se_decoder"]
ADVERSARIAL = [*SINGLE_TASKING, "adversarial=on"]
#: per weighting, the loop it runs in (gradient methods need every loss at once)
FAST = {"fixed": JOINT, "dwa": ADVERSARIAL, "rlw": JOINT, "mgda": JOINT}
SLOW = {name: JOINT for name in ("equal", "uncertainty", "gls", "lsb", "gradnorm", "pcgrad",
                                 "cagrad", "imtl", "aligned_mtl", "nash_mtl")}
SLOW["uncertainty_single_tasking"] = SINGLE_TASKING


def overrides(name: str, model: list[str], data_dir: Path) -> list[str]:
    weighting = name.removesuffix("_single_tasking")
    return [*BASE, *model, f"weighting={weighting}", f"paths.data_dir={data_dir}"]


def sigterm_at_image(monkeypatch, k: int) -> None:
    """Send this process SIGTERM while the training loader fetches its ``k``-th image."""
    original = SyntheticScenes.__getitem__
    seen = {"n": 0}

    def getitem(self, index):
        if self.split == "train":
            seen["n"] += 1
            if seen["n"] == k:
                os.kill(os.getpid(), signal.SIGTERM)
        return original(self, index)

    monkeypatch.setattr(SyntheticScenes, "__getitem__", getitem)


def tensors(state, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor of a (nested) state dict, by dotted key."""
    if torch.is_tensor(state):
        return {prefix: state}
    if isinstance(state, dict):
        return {k: v for key, value in state.items()
                for k, v in tensors(value, f"{prefix}{key}.").items()}
    return {}


def max_difference(a: Path, b: Path) -> float:
    """Largest absolute difference between the weights (and weighting states) of two runs."""
    sa, sb = (tensors(load_checkpoint(p / "checkpoints" / "last.ckpt")["state_dict"])
              for p in (a, b))
    assert sa.keys() == sb.keys() and sa
    return max((sa[k].double() - sb[k].double()).abs().max().item() if sa[k].numel() else 0.0
               for k in sa)


def history(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def assert_same_run(reference: Path, resumed: Path, resumed_mid_epoch: int | None) -> None:
    """Same weights, same metrics.json, same history (each row once). Lightning does not
    checkpoint its running training-epoch means, so in the epoch resumed mid-way the ``train/*``
    epoch means cover the batches after the resume only (the ``step/*`` values are compared)."""
    assert max_difference(reference, resumed) == 0.0
    ra, rb = (json.loads((d / "metrics.json").read_text())["tasks"] for d in (reference, resumed))
    assert ra == rb
    ha, hb = history(reference), history(resumed)
    assert [(r["step"], r["epoch"]) for r in ha] == [(r["step"], r["epoch"]) for r in hb]

    def comparable(row: dict) -> dict:
        if resumed_mid_epoch is None or int(row["epoch"]) != resumed_mid_epoch:
            return row
        return {k: v for k, v in row.items() if not k.startswith("train/")}

    assert [comparable(r) for r in ha] == [comparable(r) for r in hb]


def kill_and_resume(name: str, model: list[str], tmp_path: Path, monkeypatch,
                    k: int) -> None:
    cfg = overrides(name, model, tmp_path / "data")
    run(compose(cfg), tmp_path / "reference")
    with monkeypatch.context() as m:
        sigterm_at_image(m, k)
        with pytest.raises(RunInterrupted) as stop:
            run(compose(cfg), tmp_path / "resumed")
    assert stop.value.exit_code == 128 + signal.SIGTERM
    info = json.loads((tmp_path / "resumed" / "run_info.json").read_text())
    assert info["status"] == "interrupted" and info["signal"] == "SIGTERM"
    assert not (tmp_path / "resumed" / "metrics.json").exists()
    run(compose(cfg), tmp_path / "resumed")  # the same directory: it resumes by itself
    assert json.loads((tmp_path / "resumed" / "run_info.json").read_text())["status"] == (
        "finished")
    assert_same_run(tmp_path / "reference", tmp_path / "resumed", resumed_mid_epoch=1)


@pytest.mark.parametrize("name", list(FAST))
def test_mid_epoch_kill_then_resume_is_bit_identical(name, tmp_path, monkeypatch):
    # image 17 of 36: second epoch, second batch
    kill_and_resume(name, FAST[name], tmp_path, monkeypatch, k=17)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SLOW))
def test_mid_epoch_kill_then_resume_is_bit_identical_slow(name, tmp_path, monkeypatch):
    kill_and_resume(name, SLOW[name], tmp_path, monkeypatch, k=17)


@pytest.mark.parametrize("model", [JOINT, ADVERSARIAL], ids=["joint", "adversarial"])
def test_stop_at_epoch_end_then_resume_keeps_schedule_and_is_bit_identical(model, tmp_path):
    cfg = overrides("uncertainty", model, tmp_path / "data")
    run(compose(cfg), tmp_path / "reference")
    assert run(compose([*cfg, "checkpoint.stop_after_epochs=1"]), tmp_path / "resumed") == {}
    info = json.loads((tmp_path / "resumed" / "run_info.json").read_text())
    assert info["status"] == "stopped" and info["epoch"] == 1
    ckpt = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert ckpt["horizon"] == 9  # 3 epochs × 3 batches: the whole run's, not the first epoch's
    # the lr after the first epoch follows the 9-batch schedule: lr0 · scale · (1 − 3/9)^0.9,
    # with the shared layers' rate divided by the 3 tasks in the per-task schedule
    lr0, scale = compose(cfg)["optimizer"]["lr"], (1.0 if model is JOINT else 1 / 3)
    lr = ckpt["lr_schedulers"][0]["_last_lr"][0]
    assert lr == pytest.approx(lr0 * scale * (1 - 3 / 9) ** 0.9, rel=1e-6)
    run(compose(cfg), tmp_path / "resumed")
    assert_same_run(tmp_path / "reference", tmp_path / "resumed", resumed_mid_epoch=None)


def test_resume_refuses_a_checkpoint_of_another_run(tmp_path):
    cfg = overrides("fixed", JOINT, tmp_path / "data")
    run(compose([*cfg, "trainer.max_epochs=1"]), tmp_path / "first")
    last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    for change, key in [("weighting=dwa", "weighting.name"), ("data.n=20", "data.n"),
                        ("optimizer=adam", "optimizer.name"), ("~tasks.depth", "tasks.depth"),
                        ("backbone.stem_width=16", "backbone.stem_width")]:
        with pytest.raises(CheckpointError, match=rf"(?s)belongs to another run.*{key}"):
            run(compose([*cfg, change, f"ckpt_path={last}"]), tmp_path / "other")
