"""Checkpoint files: crash-safe writing, safe loading, a run's last checkpoint, and whether a
checkpoint belongs to the run that resumes from it.

Every load goes through :func:`load_checkpoint` with ``weights_only=True`` passed explicitly, so
a ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` environment cannot turn a crafted checkpoint into code
execution; densemtl's checkpoints hold only tensors and plain containers, so nothing legitimate
needs more.
"""

from __future__ import annotations

import os
import pickle
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

#: the checkpoint a run keeps current (``<run dir>/checkpoints/last.ckpt``)
LAST = "last.ckpt"
#: temporary files of an atomic write: ``.<name>.tmp-<pid>``
_TMP = re.compile(r"^\..+\.tmp-(\d+)$")
#: config sections a resumed run may change (how it runs, not what it trains)
RESUMABLE_CHANGES = ("trainer", "paths", "tracking", "logger", "checkpoint", "ckpt_path",
                     "evaluate", "baselines", "name", "max_bad_steps", "threads")
#: ``data`` keys a resumed run may change (loader mechanics and where files live)
RESUMABLE_DATA_CHANGES = ("num_workers", "pin_memory", "val_batch_size", "root", "workers",
                          "progress")


class CheckpointError(RuntimeError):
    """A checkpoint cannot be written, read, or does not fit the run resuming from it."""


def checkpoint_dir(run_dir: str | Path) -> Path:
    """Where a run directory keeps its checkpoints."""
    return Path(run_dir) / "checkpoints"


def last_checkpoint(run_dir: str | Path) -> Path | None:
    """``<run dir>/checkpoints/last.ckpt`` if it exists."""
    path = checkpoint_dir(run_dir) / LAST
    return path if path.is_file() else None


def temporary_path(path: Path) -> Path:
    """The hidden sibling an atomic write of ``path`` goes through first."""
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_orphans(directory: str | Path) -> list[Path]:
    """Delete temporary files of atomic writes whose writer process is gone (a kill during a
    save leaves one behind); returns what was removed."""
    directory = Path(directory)
    removed = []
    if not directory.is_dir():
        return removed
    for path in directory.iterdir():
        match = _TMP.match(path.name)
        if match and path.is_file() and not _pid_alive(int(match.group(1))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def check_writable(directory: str | Path, need_bytes: int) -> None:
    """Fail before training if ``directory`` cannot take a file or has less than ``need_bytes``
    free (a full disk would otherwise surface as an I/O error at the first checkpoint)."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe = temporary_path(directory / "write-probe")
        probe.write_bytes(b"0")
        probe.unlink()
    except OSError as err:
        raise CheckpointError(f"output directory {directory} is not writable: {err}") from err
    free = shutil.disk_usage(directory).free
    if free < need_bytes:
        raise CheckpointError(
            f"output directory {directory} has {free / 2**20:.1f} MiB free; the run needs about "
            f"{need_bytes / 2**20:.1f} MiB (two checkpoints while one replaces the other)"
        )


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """``torch.load(path, weights_only=True)`` with errors that name the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f"checkpoint {path} holds objects other than tensors and plain containers; refusing "
            f"to load it, since unpickling them could run code ({str(err).splitlines()[0]})"
        ) from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint {path} is corrupt or truncated and cannot be read ({err}); resume from "
            "another checkpoint or start the run again"
        ) from err


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file and renames it into place; loads with
    ``weights_only=True`` whatever the caller or the environment asks.

    A crash or a full disk while saving leaves the previous checkpoint intact (``os.replace`` is
    atomic on POSIX), never a truncated ``last.ckpt``; a failed write raises
    :class:`CheckpointError` naming the path, which stops the run.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        path = Path(path)
        tmp = temporary_path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except (OSError, RuntimeError) as err:
            kept = " (the previous checkpoint is kept)" if path.is_file() else ""
            raise CheckpointError(f"could not write checkpoint {path}: {err}{kept}") from err
        finally:
            tmp.unlink(missing_ok=True)

    def load_checkpoint(
        self, path: str | Path, map_location: Any = None, weights_only: bool | None = None
    ) -> dict[str, Any]:
        return load_checkpoint(path, map_location=map_location or "cpu")


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``key: checkpoint=X, this run=Y`` for every setting that differs between a checkpoint's
    config and the resuming run's, skipping those a resumed run may change
    (:data:`RESUMABLE_CHANGES`, :data:`RESUMABLE_DATA_CHANGES`)."""

    def flat(cfg: Any, prefix: str = "") -> dict[str, Any]:
        if not isinstance(cfg, Mapping):
            return {prefix: cfg}
        out: dict[str, Any] = {}
        for k, v in cfg.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, Mapping) and v else
                       {f"{prefix}{k}": v})
        return out

    def relevant(key: str) -> bool:
        top, _, rest = key.partition(".")
        if top in RESUMABLE_CHANGES:
            return False
        return not (top == "data" and rest.split(".")[0] in RESUMABLE_DATA_CHANGES)

    a, b = flat(dict(saved)), flat(dict(current))
    missing = object()
    return [
        f"{k}: checkpoint={a.get(k, '(unset)')!r}, this run={b.get(k, '(unset)')!r}"
        for k in sorted(set(a) | set(b))
        if relevant(k) and a.get(k, missing) != b.get(k, missing)
    ]


def check_resumable(path: str | Path, current: Mapping[str, Any]) -> dict[str, Any]:
    """Load checkpoint ``path`` and fail, listing what differs, if it was written by a run of
    another task set, architecture, weighting, optimiser or data set; returns the checkpoint."""
    ckpt = load_checkpoint(path)
    saved = (ckpt.get("hyper_parameters") or {}).get("config")
    if not saved:
        raise CheckpointError(f"checkpoint {path} holds no densemtl config "
                              "(hyper_parameters.config); it was not written by densemtl-train")
    diff = config_differences(saved, current)
    if diff:
        raise CheckpointError(
            f"checkpoint {path} belongs to another run; it cannot continue this one. Settings "
            "that differ:\n  " + "\n  ".join(diff)
        )
    return ckpt
