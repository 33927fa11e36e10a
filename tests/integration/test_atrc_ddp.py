"""The ATRC search under 2-process DDP keeps the replicas (weights, α, fixing) identical."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from densemtl.data.synthetic import write_cache


@pytest.mark.slow
def test_two_process_ddp_search_keeps_replicas_in_sync(tmp_path):
    write_cache(tmp_path / "data" / "synthetic", n=24, size=32, seed=0, progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    worker = Path(__file__).with_name("atrc_ddp_worker.py")
    result = subprocess.run([sys.executable, str(worker), str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
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
