"""LSB study runs: bad weighting input fails when the module is built, and a resumed LSB run
continues with exactly the weighting state of an uninterrupted one."""

import csv
from pathlib import Path

import pytest
import torch

from densemtl.config import compose
from densemtl.experiment import build_module, build_tasks, run

STUDY = ["experiment=lsb/nyuv2_mnet_multi_decoder", "model.decoder_width=16"]


@pytest.mark.parametrize("override,match", [
    ("weighting.weights=[1.0,2.0]", r"weights has 2 values but there are 3 tasks"),
    ("weighting.weights=[1.0,-2.0,1.0]", r"weights\['lsb_normals'\] must be >= 0, got -2.0"),
    ("weighting.weights=[1.0,nan,1.0]", r"weights\['lsb_normals'\] must be finite, got nan"),
    ("weighting.weights={lsb_depth:1.0,lsb_normal:1.0,lsb_semseg:1.0}",
     r"weights must have exactly the task keys .*missing \['lsb_normals'\], "
     r"unexpected \['lsb_normal'\]"),
])
def test_bad_fixed_weights_fail_when_the_module_is_built(override, match):
    cfg = compose([*STUDY, "weighting=fixed", override])
    with pytest.raises(ValueError, match=match):
        build_module(cfg, build_tasks(cfg))


def test_unknown_strategy_name_lists_the_valid_ones():
    cfg = compose([*STUDY, "weighting.name=lsbb"])
    with pytest.raises(KeyError, match=r"unknown weighting 'lsbb'.*valid weightings: .*lsb"):
        build_module(cfg, build_tasks(cfg))


def _weights_per_epoch(run_dir: Path) -> dict[int, list[float]]:
    """Epoch -> the epoch-mean logged LSB weights (constant within a period)."""
    with open(run_dir / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/weight/lsb_depth")]
    tasks = ("lsb_depth", "lsb_normals", "lsb_semseg")
    return {int(r["epoch"]): [float(r[f"train/weight/{t}"]) for t in tasks] for r in rows}


def _weighting_state(run_dir: Path) -> dict:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    return ckpt["state_dict"]["weighting._extra_state"]


def test_resumed_lsb_run_ends_with_the_uninterrupted_weighting_state(tmp_path):
    # One batch per epoch and no augmentation: the data of epoch 3 is the same in both runs
    # (the global RNG, which shuffles, is not part of a checkpoint; a permutation within the one
    # batch changes the losses only by float rounding), so only the weighting state can differ.
    base = [*STUDY, "weighting.beta_step=0.5", "data.n=20", "data.size=32", "data.batch_size=16",
            "data.augment.scale_range=null", "data.augment.hflip=false",
            "trainer.enable_progress_bar=false", "evaluate=false", "tracking.qualitative=0",
            f"paths.data_dir={tmp_path / 'data'}"]
    run(compose([*base, "trainer.max_epochs=3"]), tmp_path / "full")
    run(compose([*base, "trainer.max_epochs=2"]), tmp_path / "part")
    last = tmp_path / "part" / "checkpoints" / "last.ckpt"
    run(compose([*base, "trainer.max_epochs=3", f"ckpt_path={last}"]), tmp_path / "resumed")

    part, full, resumed = (_weighting_state(tmp_path / r) for r in ("part", "full", "resumed"))
    # the checkpoint holds the period update of epoch 2 (history, β, the new weights)
    assert len(part["history"]) == 2 and part["beta"] == pytest.approx(1.0)
    assert part["history"] == full["history"][:2] == resumed["history"][:2]
    # the resumed epoch trained with the weights the uninterrupted run used in epoch 3
    used = _weights_per_epoch(tmp_path / "resumed")
    assert list(used) == [2]
    assert used[2] == pytest.approx(part["weights"], rel=1e-6)
    assert used[2] == pytest.approx(_weights_per_epoch(tmp_path / "full")[2], rel=1e-6)
    # and ends where the uninterrupted run ends
    assert resumed["beta"] == full["beta"] == pytest.approx(1.5)
    assert resumed["history"][2] == pytest.approx(full["history"][2], rel=1e-5)
    for key in ("weights", "q"):
        assert resumed[key] == pytest.approx(full[key], rel=1e-5), key
    assert resumed["z_value"] == pytest.approx(full["z_value"], rel=1e-5)
    # LSB invariants on the final state: Σq = 1, every loss scale w·L̄ equals q·Z
    assert sum(resumed["q"]) == pytest.approx(1.0, abs=1e-12)
    scales = [w * m for w, m in zip(resumed["weights"], resumed["history"][-1])]
    assert scales == pytest.approx([q * resumed["z_value"] for q in resumed["q"]], rel=1e-9)
