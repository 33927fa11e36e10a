"""The on-disk cache of rendered scenes: stacked ``.npy`` files written atomically in parallel,
checked on load (structure) and by the datasets (label values)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import multiprocessing as mp
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from densemtl.data.synthetic.render import IGNORE, image_hw, image_seed, render_scene
from densemtl.data.synthetic.scene import HUMAN_PART_NAMES, ROOM_SURFACES, SYNTHETIC_CLASSES

VERSION = 3
IN_PROCESS_MAX = 128  # caches this small render in the calling process


class SyntheticCacheError(RuntimeError):
    """A synthetic cache directory is missing, incomplete or corrupt."""


def cache_name(n: int, size: int | Sequence[int], seed: int, extras: bool = False) -> str:
    """Directory name of the cache of these parameters, e.g. ``synthetic-v3-n2000-s96-seed0``."""
    h, w = image_hw(size)
    side = f"{h}" if h == w else f"{h}x{w}"
    return f"synthetic-v{VERSION}-n{n}-s{side}-seed{seed}" + ("-extras" if extras else "")


def _remake_hint(path: Path, meta: dict[str, Any] | None) -> str:
    """The command that (re)creates the cache at ``path``."""
    n, size, seed, extras = "N", "SIZE", "SEED", False
    if meta is not None:
        n, size, seed, extras = meta.get("n", n), meta.get("size", size), \
            meta.get("seed", seed), bool(meta.get("extras", False))
    else:
        m = re.fullmatch(r"synthetic-v\d+-n(\d+)-s([\dx]+)-seed(\d+)(-extras)?", path.name)
        if m:
            n, size, seed, extras = m.group(1), m.group(2), m.group(3), bool(m.group(4))
    if isinstance(size, list):
        size = size[0] if size[0] == size[1] else f"{size[0]}x{size[1]}"
    return (f"delete it and run `densemtl-data make synthetic --root {path.parent} --n {n} "
            f"--size {size} --seed {seed}{' --extras' if extras else ''}` "
            "(or let SyntheticScenes rebuild it)")


def _cache_error(path: Path, problem: str,
                 meta: dict[str, Any] | None = None) -> SyntheticCacheError:
    return SyntheticCacheError(f"synthetic cache {path}: {problem}; {_remake_hint(path, meta)}")


def load_cache(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Memory-map every array of a cache directory; a missing or damaged cache raises clearly.

    Each array is checked against ``meta.json`` (shape and dtype), so a truncated or swapped file
    is reported with its path instead of surfacing later as a wrong image.
    """
    path = Path(path)
    if not path.is_dir():
        raise _cache_error(path, "directory does not exist")
    meta_file = path / "meta.json"
    try:
        meta = json.loads(meta_file.read_text())
        keys, shapes, dtypes = meta["keys"], meta["shapes"], meta["dtypes"]
        n = int(meta["n"])
    except FileNotFoundError:
        raise _cache_error(path, "meta.json is missing (incomplete cache)") from None
    except (ValueError, KeyError, TypeError) as err:
        raise _cache_error(path, f"meta.json is unreadable ({err!r})") from None
    if meta.get("version") != VERSION:
        raise _cache_error(path, f"made by version {meta.get('version')}, this is {VERSION}",
                           meta)
    arrays: dict[str, np.ndarray] = {}
    for key in keys:
        file = path / f"{key}.npy"
        try:
            arr = np.load(file, mmap_mode="r")
        except FileNotFoundError:
            raise _cache_error(path, f"{file.name} is missing", meta) from None
        except (ValueError, OSError) as err:
            raise _cache_error(path, f"{file.name} is truncated or corrupt ({err})", meta) from None
        expected = (n, *shapes[key])
        if arr.shape != expected or arr.dtype != np.dtype(dtypes[key]):
            raise _cache_error(path, f"{file.name} holds {arr.dtype}{list(arr.shape)}, "
                                     f"meta.json says {dtypes[key]}{list(expected)}", meta)
        arrays[key] = arr
    return arrays


def _class_ids(count: int) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    return (lambda x: (x >= count) & (x != IGNORE),
            f"class ids 0..{count - 1} or {IGNORE} (ignore)")


def _within(low: float, high: float) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    return lambda x: ~((x >= low) & (x <= high)), f"values in [{low}, {high}]"  # NaN is outside


def _not_unit(x: np.ndarray) -> np.ndarray:
    squared = np.einsum("...i,...i->...", x, x)  # 6× faster than np.linalg.norm on float32
    return ~((squared >= (1 - 1e-3) ** 2) & (squared <= (1 + 1e-3) ** 2))


_BINARY = (lambda x: (x != 0) & (x != 1), "0 or 1")
_FINITE = (lambda x: ~np.isfinite(x), "finite values")
#: the labels' value conventions (see the package docstring): key -> (bad-value mask, expected)
LABEL_CHECKS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], str]] = {
    "semseg": _class_ids(len(SYNTHETIC_CLASSES)),
    "human_parts": _class_ids(len(HUMAN_PART_NAMES)),
    "edge": _BINARY, "sal": _BINARY, "edge3d": _BINARY,
    "normals": (_not_unit, "unit vectors (norm 1 ± 1e-3)"),
    "depth": (lambda x: ~(np.isfinite(x) & (x > 0)), "finite depths > 0 (metres)"),
    "albedo": _within(0, 1), "reshading": _within(0, 1), "edge2d": _within(0, 1),
    "keypoints2d": _within(0, 1), "keypoints3d": _within(0, 1),
    "curvature": _FINITE,
}
CHECK_CHUNK = 256  # images per read: bounded memory on caches of any size


def check_labels(path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
                 keys: Sequence[str], images: range) -> None:
    """Raise :class:`SyntheticCacheError` at the first label value of ``images`` outside its
    convention (:data:`LABEL_CHECKS`): out-of-range class or part ids, non-binary edges or
    saliency, non-unit normals, negative / NaN depth, ...; the message names the cache, the
    array, the image, pixel and value and what is expected.

    One vectorised pass over ``CHECK_CHUNK`` images at a time of the memory-mapped arrays
    (what a split's dataset reads), so it costs about one read of the labels.
    """
    path = Path(path)
    for key in keys:
        if key not in LABEL_CHECKS:
            continue
        bad_of, expected = LABEL_CHECKS[key]
        arr = arrays[key]
        for start in range(images.start, images.stop, CHECK_CHUNK):
            chunk = np.asarray(arr[start:min(images.stop, start + CHECK_CHUNK)])
            bad = bad_of(chunk)
            if bad.any():
                i, v, u = (int(k) for k in np.argwhere(bad)[0][:3])
                values = ", ".join(f"{x:.6g}" for x in np.ravel(chunk[i, v, u]).tolist())
                shown = values if chunk.shape[3:] in ((), (1,)) else f"[{values}]"
                raise _cache_error(path, f"{key}.npy image {start + i} pixel ({v}, {u}) holds "
                                         f"{shown}; expected {expected}")


def _render_chunk(job: tuple[int, int, int, tuple[int, int], bool]) -> tuple[int, dict]:
    """Worker: render images ``start..stop-1``; returns ``start`` and the stacked arrays."""
    start, stop, seed, size, extras = job
    renders = [render_scene(image_seed(seed, i), size, extras) for i in range(start, stop)]
    return start, {k: np.stack([r[k] for r in renders]) for k in renders[0]}


def _chunks(n: int, first: int, chunk: int, seed: int, size: tuple[int, int],
            extras: bool) -> Iterator[tuple[int, int, int, tuple[int, int], bool]]:
    for start in range(first, n, chunk):
        yield start, min(n, start + chunk), seed, size, extras


def write_cache(root: str | os.PathLike, n: int, size: int | Sequence[int], seed: int,
                extras: bool = False, workers: int | None = None, progress: bool = True) -> Path:
    """Render ``n`` images into ``root/<cache_name>`` and return that directory.

    Idempotent: a complete cache of the same parameters is returned as is, a damaged one is
    replaced. Files are written into a temporary sibling directory that is renamed into place
    only after ``meta.json`` (written last) exists, so an interrupted run never leaves a cache
    that looks complete. Images are rendered by ``workers`` processes (default: all cores).
    Processes writing into the same ``root`` at once (parallel sweep jobs) take turns on an
    exclusive lock of that directory: the first renders, the others wait and then load its
    result (or render another cache after it).
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive(root):
        return _write_cache_unlocked(root, n, size, seed, extras, workers, progress)


@contextlib.contextmanager
def _exclusive(directory: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``directory`` itself: no lock file is left behind, and the
    lock is released when the process dies, so a crashed renderer never blocks the others."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _write_cache_unlocked(root: Path, n: int, size: int | Sequence[int], seed: int,
                          extras: bool, workers: int | None, progress: bool) -> Path:
    """:func:`write_cache` without the lock (its caller holds it)."""
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    hw = image_hw(size)
    root = Path(root)
    final = root / cache_name(n, hw, seed, extras)
    if final.exists():
        try:
            load_cache(final)
            return final
        except SyntheticCacheError:
            shutil.rmtree(final)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(f".{final.name}.tmp-*"):  # a killed renderer's (we hold the lock)
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        first = render_scene(image_seed(seed, 0), hw, extras)
        stores = {k: np.lib.format.open_memmap(tmp / f"{k}.npy", mode="w+", dtype=v.dtype,
                                               shape=(n, *v.shape)) for k, v in first.items()}
        for k, v in first.items():
            stores[k][0] = v
        workers = max(1, min(workers or os.cpu_count() or 1, n))
        if n <= IN_PROCESS_MAX:  # a pool costs more than it saves, and forking is not free
            workers = 1
        chunk = max(1, min(32, (n - 1) // (4 * workers) + 1))
        jobs = _chunks(n, 1, chunk, int(seed), hw, extras)
        bar = _progress(n, progress, final.name)
        bar.update(1)
        method = _start_method()
        if workers == 1 or method is None:
            _fill(stores, map(_render_chunk, jobs), bar)
        else:
            ctx = mp.get_context(method)
            with ctx.Pool(workers) as pool:
                _fill(stores, pool.imap_unordered(_render_chunk, jobs), bar)
        bar.close()
        for store in stores.values():
            store.flush()
        meta = {
            "version": VERSION, "n": int(n), "size": list(hw), "seed": int(seed),
            "extras": bool(extras), "class_names": list(SYNTHETIC_CLASSES),
            "human_part_names": list(HUMAN_PART_NAMES), "room_surfaces": list(ROOM_SURFACES),
            "keys": list(first),
            "shapes": {k: list(v.shape) for k, v in first.items()},
            "dtypes": {k: v.dtype.str for k, v in first.items()},
            "image_seed": "numpy SeedSequence([seed, index]).generate_state(1)[0]",
        }
        del stores
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        try:
            tmp.rename(final)
        except OSError:
            if final.exists():  # another process finished the same cache first
                shutil.rmtree(tmp)
                load_cache(final)
                return final
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _start_method() -> str | None:
    """``fork`` when this process runs a single thread (fast start), else ``spawn``; ``None``
    (render in this process) when this process was started by a method ``multiprocessing``
    does not know.

    A child forked from a multi-threaded process inherits locks held by the other threads and
    can deadlock on its first allocation (seen inside a threaded test runner). A child spawned
    from a joblib/loky worker (the parallel sweep launcher) fails at start-up asking for the
    ``loky`` method, and a pool replaces its failed children forever: the sweep hangs.
    """
    if mp.get_start_method(allow_none=True) not in (None, *mp.get_all_start_methods()):
        return None
    if "fork" in mp.get_all_start_methods() and threading.active_count() == 1:
        return "fork"
    return "spawn"


def _progress(total: int, enabled: bool, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="img")


def _fill(stores: dict[str, np.ndarray], results: Iterator[tuple[int, dict]], bar: Any) -> None:
    for start, arrays in results:
        for k, v in arrays.items():
            stores[k][start:start + len(v)] = v
        bar.update(len(arrays["image"]))
