"""Checkpoint files: crafted and truncated checkpoints, failed writes, orphans, room checks,
config comparison."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from densemtl.training.checkpoint import (
    AtomicCheckpointIO,
    CheckpointError,
    check_writable,
    config_differences,
    load_checkpoint,
    remove_orphans,
)


class Payload:
    """Unpickling runs ``touch <marker>``: what a crafted checkpoint does."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_crafted_checkpoint_does_not_run_even_when_the_environment_forces_full_unpickling(
        tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    crafted = tmp_path / "last.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"config": Payload(marker)}}, crafted)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    # the oracle: torch's default under this environment does run it
    torch.load(crafted)
    assert marker.exists()
    marker.unlink()
    for load in (load_checkpoint, AtomicCheckpointIO().load_checkpoint,
                 lambda p: AtomicCheckpointIO().load_checkpoint(p, weights_only=False)):
        with pytest.raises(CheckpointError, match=rf"{crafted}.*refusing to load") as err:
            load(crafted)
        assert "weights_only=False" not in str(err.value)
        assert not marker.exists()


def test_truncated_checkpoint_is_named_without_suggesting_unsafe_loading(tmp_path):
    path = tmp_path / "last.ckpt"
    torch.save({"w": torch.arange(10_000.0)}, path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=rf"{path} is corrupt or truncated") as err:
        load_checkpoint(path)
    assert "weights_only" not in str(err.value)
    with pytest.raises(FileNotFoundError, match="missing.ckpt does not exist"):
        load_checkpoint(tmp_path / "missing.ckpt")


def test_failed_write_names_the_path_and_keeps_the_previous_checkpoint(tmp_path):
    io, path = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"
    first = {"w": torch.ones(10)}
    io.save_checkpoint(first, path)
    # a real failed write: the file-size limit (like a full disk) stops torch.save half-way
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))
    try:
        with pytest.raises(CheckpointError, match=rf"could not write checkpoint {path}.*kept"):
            io.save_checkpoint({"w": torch.zeros(100_000)}, path)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert torch.equal(load_checkpoint(path)["w"], first["w"])
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temporary left


def test_orphaned_temporary_files_of_dead_writers_are_removed(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    orphan = tmp_path / f".last.ckpt.tmp-{dead.pid}"
    alive = tmp_path / f".last.ckpt.tmp-{os.getpid()}"
    for p in (orphan, alive, tmp_path / "last.ckpt"):
        p.write_bytes(b"x")
    assert remove_orphans(tmp_path) == [orphan]
    assert alive.exists() and (tmp_path / "last.ckpt").exists() and not orphan.exists()


def test_output_checks_name_the_directory(tmp_path):
    blocked = tmp_path / "run"
    blocked.write_text("a file where the directory should be")
    with pytest.raises(CheckpointError, match=rf"{blocked / 'checkpoints'} is not writable"):
        check_writable(blocked / "checkpoints", 1)
    with pytest.raises(CheckpointError, match=rf"{tmp_path} has .* MiB free; the run needs"):
        check_writable(tmp_path, 1 << 60)
    check_writable(tmp_path / "ok", 1)


def test_config_differences_skip_what_a_resumed_run_may_change():
    saved = {"tasks": {"semseg": {}, "depth": {}}, "weighting": {"name": "fixed"},
             "data": {"n": 20, "num_workers": 0}, "trainer": {"max_epochs": 3}}
    same = {**saved, "data": {"n": 20, "num_workers": 4}, "trainer": {"max_epochs": 9},
            "threads": 2}  # another machine's thread count: how it runs, not what it trains
    assert config_differences(saved, same) == []
    other = {**saved, "tasks": {"semseg": {}}, "weighting": {"name": "dwa"}}
    assert config_differences(saved, other) == [
        "tasks.depth: checkpoint={}, this run='(unset)'",
        "weighting.name: checkpoint='fixed', this run='dwa'",
    ]
