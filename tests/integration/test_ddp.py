"""Single-tasking with the adversarial loss under DDP keeps the replicas identical."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from densemtl.data.synthetic import write_cache


@pytest.mark.slow
def test_two_process_ddp_single_tasking_keeps_replicas_in_sync(tmp_path):
    write_cache(tmp_path / "data" / "synthetic", n=24, size=32, seed=0, progress=False)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    worker = Path(__file__).with_name("ddp_worker.py")
    result = subprocess.run([sys.executable, str(worker), str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    # 3 minibatches x 3 per-task optimiser steps
    assert r0["steps"] == r1["steps"] == 9
    assert r0["params"].keys() == r1["params"].keys()
    disc = [k for k in r0["params"] if k.startswith("discriminator.")]
    assert disc, "the adversarial discriminator must be part of the synced module"
    for name, value in r0["params"].items():
        assert torch.equal(value, r1["params"][name]), name
