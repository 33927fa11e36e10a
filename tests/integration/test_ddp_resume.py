"""Mid-epoch resume under 2-process CPU DDP (gloo): a run SIGTERMed in its second epoch and
started again in its directory ends bit-identical to an uninterrupted DDP run (weights,
metrics.json, the metrics.csv rows), as the single-process runs of test_resume.py do, for the
joint loop (rlw: random weights) and single-tasking with the adversarial term (dwa: weights from
the epoch-mean losses, summed over the processes so that every rank holds them). Each rank's
sampler skips the batches of the epoch that rank already trained on, and validation uses rank
0's BN statistics (the checkpoint's) on every rank."""

import json

import pytest
from test_resume import assert_same_run

from densemtl.training.checkpoint import load_checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["joint", "adversarial"])
def test_two_process_ddp_mid_epoch_resume_is_bit_identical(loop, ddp_ranks, tmp_path):
    r0, r1 = ddp_ranks("ddp_resume_worker.py", "reference", loop)
    assert r0["ended"] == r1["ended"] == "finished"
    # rank 0's 9th training image: the second batch of epoch 1 (3 batches of 2 per epoch)
    r0, r1 = ddp_ranks("ddp_resume_worker.py", "interrupted", loop, "9")
    assert r0["ended"] == r1["ended"] == "interrupted 143"  # both ranks stop, together
    info = json.loads((tmp_path / "resumed" / "run_info.json").read_text())
    assert info["status"] == "interrupted" and info["epoch"] == 1
    ckpt = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    steps = 3 if loop == "adversarial" else 1  # optimiser steps per batch: one per task
    step, batch = ckpt["global_step"], ckpt["global_step"] // steps
    assert step == info["global_step"] and 3 < batch < 6  # within epoch 1 (batches 3, 4, 5)
    assert not (tmp_path / "resumed" / "metrics.json").exists()
    r0, r1 = ddp_ranks("ddp_resume_worker.py", "resumed", loop)
    assert r0["ended"] == r1["ended"] == "finished"
    # each rank loads only the batches after the checkpoint: the rest of epoch 1 and epoch 2
    assert r0["train_images"] == r1["train_images"] == 2 * (9 - batch)
    assert_same_run(tmp_path / "reference", tmp_path / "resumed", resumed_mid_epoch=1)
