"""The ATRC search under 2-process DDP keeps the replicas (weights, α, fixing) identical."""

import pytest
import torch


@pytest.mark.slow
def test_two_process_ddp_search_keeps_replicas_in_sync(ddp_ranks, tmp_path):
    r0, r1 = ddp_ranks("atrc_ddp_worker.py")
    assert r0["steps"] == r1["steps"] == 3  # one optimiser step per batch (α's is not counted)
    alphas = [k for k in r0["state"] if k.endswith(".alpha")]
    assert len(alphas) == 16
    assert any(r0["state"][k].abs().sum() > 0 for k in alphas), "α must have moved"
    fixed = [k for k in r0["state"] if k.endswith(".fixed")]
    assert all(int(r0["state"][k]) >= 0 for k in fixed)  # tiny threshold: all fixed at step 2
    # parameters (weights and α) and the fixing state agree; BN running statistics are each
    # rank's own (no SyncBatchNorm), as in any DDP run
    for name, value in r0["state"].items():
        if not name.endswith(("running_mean", "running_var", "num_batches_tracked")):
            assert torch.equal(value, r1["state"][name]), name
    assert (tmp_path / "run" / "genotype.json").is_file()
