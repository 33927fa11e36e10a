"""Single-tasking with the adversarial loss under DDP keeps the replicas identical."""

import pytest
import torch


@pytest.mark.slow
def test_two_process_ddp_single_tasking_keeps_replicas_in_sync(ddp_ranks):
    r0, r1 = ddp_ranks("ddp_worker.py")
    # 3 minibatches x 3 per-task optimiser steps
    assert r0["steps"] == r1["steps"] == 9
    assert r0["params"].keys() == r1["params"].keys()
    disc = [k for k in r0["params"] if k.startswith("discriminator.")]
    assert disc, "the adversarial discriminator must be part of the synced module"
    for name, value in r0["params"].items():
        assert torch.equal(value, r1["params"][name]), name
