"""Shared by the integration tests: running a 2-process DDP worker script."""

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from densemtl.data.synthetic import write_cache


@pytest.fixture
def ddp_ranks(tmp_path) -> Callable[[str], tuple[dict, dict]]:
    """Run ``worker`` (a script beside these tests, given ``tmp_path`` and ``args``) on tiny
    synthetic data in ``tmp_path``; the two ranks' saved states (``rank0.pt``, ``rank1.pt``)."""

    def run(worker: str, *args: str) -> tuple[dict, dict]:
        write_cache(tmp_path / "data" / "synthetic", n=24, size=32, seed=0, progress=False)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        script = Path(__file__).with_name(worker)
        result = subprocess.run([sys.executable, str(script), str(tmp_path), *args], env=env,
                                capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return tuple(torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))

    return run
