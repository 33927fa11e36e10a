"""Readers, validators and fixture writers shared by the real-benchmark loaders.

Every reader names the file it failed on: a :class:`DataFormatError` carries ``path`` and
``problem`` so ``densemtl-data verify`` and the dataset constructors can list them. The base class
:class:`BenchmarkDataset` holds what the four loaders share: the split file, the sample layout of
the synthetic dataset (``{"image": uint8 H×W×3, <label key>: numpy label, "meta": {...}}``), the
verification of a tree before training (bad samples refuse the run unless ``skip_bad_samples``)
and a fingerprint cache, so a verified tree is not decoded again at every start.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

CHECK_LEVELS = ("full", "files", "none")


class DataFormatError(ValueError):
    """A dataset file is missing, unreadable or holds values of the wrong shape / range."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class Problem:
    """One bad file of one sample, as listed by ``verify`` and by the dataset constructors."""

    sample: str
    path: str
    problem: str

    def __str__(self) -> str:
        where = "" if self.sample == "-" else f" (sample {self.sample})"
        return f"{self.path}: {self.problem}{where}"


# -- readers -----------------------------------------------------------------------------------
def _require(path: Path) -> Path:
    if not path.is_file():
        raise DataFormatError(path, "missing file")
    return path


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file (JPEG / PNG / WebP) as ``uint8 H×W×3`` RGB."""
    path = _require(Path(path))
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, SyntaxError, ValueError) as err:
        raise DataFormatError(path, f"unreadable image ({err})") from err


def read_png(path: str | os.PathLike, channels: int | None = None) -> np.ndarray:
    """A PNG's raw values (``uint8`` or ``uint16``), ``H×W`` or ``H×W×C``; ``channels`` checks C
    (1 = a single-channel map)."""
    path = _require(Path(path))
    try:
        with Image.open(path) as im:
            array = np.asarray(im)
    except (OSError, SyntaxError, ValueError) as err:
        raise DataFormatError(path, f"unreadable PNG ({err})") from err
    if array.dtype == np.int32:  # PIL opens 16-bit greyscale as mode "I"
        array = array.astype(np.uint16)
    have = 1 if array.ndim == 2 else array.shape[2]
    if channels is not None and have != channels:
        raise DataFormatError(path, f"expected {channels} channel(s), found shape {array.shape}")
    return array


def read_npy(path: str | os.PathLike) -> np.ndarray:
    """A ``.npy`` array (not memory-mapped: samples are small and transforms write to them)."""
    path = _require(Path(path))
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise DataFormatError(path, f"unreadable .npy ({err})") from err


def read_mat(path: str | os.PathLike, key: str) -> Any:
    """Variable ``key`` of a MATLAB ``.mat`` file (``scipy.io.loadmat``)."""
    import scipy.io

    path = _require(Path(path))
    try:
        content = scipy.io.loadmat(path)
    except Exception as err:  # a corrupt .mat raises anything from MatReadError to zlib.error
        raise DataFormatError(path, f"unreadable .mat ({type(err).__name__}: {err})") from err
    if key not in content:
        found = sorted(k for k in content if not k.startswith("__"))
        raise DataFormatError(path, f"no variable {key!r} in .mat (found {found})")
    return content[key]


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file."""
    path = _require(Path(path))
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataFormatError(path, f"unreadable JSON ({err})") from err


def read_split(path: str | os.PathLike) -> list[str]:
    """Ids of a split file, one per line (blank lines skipped; duplicates are an error)."""
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(path, "missing split file (expected one sample id per line)")
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataFormatError(path, "split file is empty (expected one sample id per line)")
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise DataFormatError(path, f"split file lists id {dup!r} more than once")
    return ids


# -- validators --------------------------------------------------------------------------------
def check_size(array: np.ndarray, size: tuple[int, int] | None, path: str | os.PathLike) -> None:
    """Raise unless the label's ``H×W`` equals the image's ``size`` (``None``: no check)."""
    if size is not None and tuple(array.shape[:2]) != tuple(size):
        raise DataFormatError(path, f"label of size {tuple(array.shape[:2])} does not match "
                                    f"the image size {tuple(size)}")


def check_finite(array: np.ndarray, path: str | os.PathLike) -> None:
    """Raise if the array holds NaN or infinite values (counted, so the message says how bad)."""
    bad = ~np.isfinite(array)
    if bad.any():
        raise DataFormatError(path, f"{int(bad.sum())} NaN/infinite value(s)")


def check_classes(ids: np.ndarray, num_classes: int, path: str | os.PathLike,
                  ignore: int = 255) -> None:
    """Raise unless every class id lies in ``[0, num_classes)`` or equals ``ignore``."""
    bad = (ids >= num_classes) & (ids != ignore)
    if bad.any():
        raise DataFormatError(path, f"class ids {sorted(np.unique(ids[bad]).tolist())[:8]} "
                                    f"outside 0..{num_classes - 1} (and {ignore} = ignore)")


def class_map(ids: np.ndarray) -> np.ndarray:
    """Integer class ids ``H×W`` -> the numpy label convention ``uint8 H×W×1``."""
    return np.ascontiguousarray(ids.astype(np.uint8)[..., None])


def dense_map(values: np.ndarray) -> np.ndarray:
    """A dense label ``H×W`` or ``H×W×C`` -> ``float32 H×W×C``."""
    values = values.astype(np.float32, copy=False)
    return np.ascontiguousarray(values[..., None] if values.ndim == 2 else values)


def resize_nearest(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resampling of an ``H×W[×C]`` label to ``size`` (pixel-centre rule)."""
    h, w = array.shape[:2]
    rows = np.minimum(((np.arange(size[0]) + 0.5) * h / size[0]).astype(int), h - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * w / size[1]).astype(int), w - 1)
    return array[rows][:, cols]


def resize_image(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resampling of a ``uint8 H×W×3`` image to ``size`` (PIL)."""
    if tuple(rgb.shape[:2]) == tuple(size):
        return rgb
    out = Image.fromarray(rgb).resize((size[1], size[0]), Image.Resampling.BILINEAR)
    return np.asarray(out, dtype=np.uint8).copy()


# -- writers (fixtures, caches, saved predictions) -------------------------------------------
def _parent(path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_image(path: str | os.PathLike, array: np.ndarray, **params: Any) -> Path:
    """Write ``uint8`` (or 2-D ``uint16``) pixels; the format follows the suffix (JPEG at quality
    100, WebP lossless, PNG), so fixtures decode to what was written."""
    path = _parent(path)
    suffix = path.suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        params = {"quality": 100, "subsampling": 0, **params}
    elif suffix == ".webp":
        params = {"lossless": True, **params}
    Image.fromarray(np.ascontiguousarray(array)).save(path, **params)
    return path


def write_npy(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write a ``.npy`` file."""
    path = _parent(path)
    np.save(path, array)
    return path


def write_mat(path: str | os.PathLike, variables: Mapping[str, Any]) -> Path:
    """Write a MATLAB ``.mat`` file (v5, what ``scipy.io.loadmat`` and the public loaders read)."""
    import scipy.io

    path = _parent(path)
    scipy.io.savemat(path, dict(variables))
    return path


def write_lines(path: str | os.PathLike, lines: Iterable[str]) -> Path:
    """Write a split file, one id per line."""
    path = _parent(path)
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    """Write a JSON file."""
    path = _parent(path)
    path.write_text(json.dumps(payload, indent=1))
    return path


def save_prediction(task: str, pred: Any, path: str | os.PathLike,
                    normals_encoding: str = "round") -> Path:
    """Save one image's *decoded* prediction (``C×H×W`` tensor or array, cropped to the image)
    in the published format of its task, for external toolboxes.

    ``edge`` / ``sal``: 8-bit PNG of round(255·p) (what the BSDS / SEISM edge benchmarks and the
    saliency toolboxes read); ``semseg`` / ``human_parts``: 8-bit PNG of class ids; ``normals``:
    8-bit RGB PNG of round(255·(n + 1)/2) (the PASCAL ``normals_distill`` encoding), or with
    ``normals_encoding="trunc"`` floor(255·(n + 1)/2), as the public pipeline's ``astype(uint8)``
    saves it; ``depth`` and any other dense task: ``float32`` ``.npy`` (``H×W`` for one
    channel). The suffix of ``path`` is replaced by the format's.
    """
    array = pred.detach().cpu().numpy() if hasattr(pred, "detach") else np.asarray(pred)
    if task in ("semseg", "human_parts"):
        if array.ndim == 3 and array.shape[0] == 1:
            array = array[0]
        if array.ndim != 2 or array.min(initial=0) < 0 or array.max(initial=0) > 255:
            raise ValueError(f"{task}: expected H×W class ids in 0..255, got shape {array.shape}")
        return write_image(Path(path).with_suffix(".png"), array.astype(np.uint8))
    if array.ndim != 3:
        raise ValueError(f"{task}: expected a decoded C×H×W prediction, got shape {array.shape}")
    if task in ("edge", "sal"):
        prob = np.clip(array[0], 0.0, 1.0)
        return write_image(Path(path).with_suffix(".png"), np.rint(255 * prob).astype(np.uint8))
    if task == "normals":
        if normals_encoding not in ("round", "trunc"):
            raise ValueError(f"normals_encoding must be 'round' or 'trunc', got "
                             f"{normals_encoding!r}")
        scaled = 255 * (np.clip(array.transpose(1, 2, 0), -1, 1) + 1) / 2
        rgb = (np.rint(scaled) if normals_encoding == "round" else np.floor(scaled))
        return write_image(Path(path).with_suffix(".png"), rgb.astype(np.uint8))
    out = array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)
    return write_npy(Path(path).with_suffix(".npy"), out.astype(np.float32))


# -- the shared dataset base ------------------------------------------------------------------
_ANNOUNCED: set[Path] = set()


def default_cache_dir(dataset: str, root: str | os.PathLike) -> Path:
    """Where a tree's caches go unless ``cache_dir`` is given: ``$XDG_CACHE_HOME/densemtl``
    (``~/.cache/densemtl`` without it) / ``<dataset>-<hash of the tree's absolute path>``.

    Not the tree itself: dataset roots are often shared and read-only, and a cache that cannot be
    written silently costs the derivation again on every run.
    """
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "densemtl"
    key = hashlib.sha256(str(Path(root).expanduser().resolve()).encode()).hexdigest()[:12]
    return base / f"{dataset}-{key}"


def _fingerprint(paths: Iterable[Path], extra: str) -> str:
    """Hash of (path, size, mtime) of every file: changes when any file is added/edited."""
    digest = hashlib.sha256(extra.encode())
    for path in paths:
        try:
            st = path.stat()
            digest.update(f"{path}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            digest.update(f"{path}|missing\n".encode())
    return digest.hexdigest()


@dataclass
class SampleCheck:
    """What checking one sample found: its problems, its image size (``None`` if unreadable or
    not decoded) and the tasks whose label decoded cleanly."""

    problems: list[Problem]
    size: tuple[int, int] | None
    ok_tasks: list[str]


class BadTreeError(DataFormatError):
    """A dataset tree failed verification; ``problems`` lists every bad file."""

    def __init__(self, root: str | os.PathLike, split: str, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        shown = "\n  ".join(str(p) for p in self.problems[:20])
        more = f"\n  ... and {len(self.problems) - 20} more" if len(self.problems) > 20 else ""
        super().__init__(root, f"split {split!r} failed verification ({len(self.problems)} "
                               f"problem(s)):\n  {shown}{more}\nRun `densemtl-data verify` for a "
                               "full report, fix the files, or set data.skip_bad_samples=true to "
                               "train without these samples")


class BenchmarkDataset(Dataset, ABC):
    """A split of a benchmark tree on disk as numpy samples, verified when constructed.

    Subclasses define ``NAME``, ``TASKS`` (label keys they provide), ``SPLITS``,
    ``PUBLISHED_COUNTS`` and ``PUBLISHED_SIZE``, and implement ``split_file``, ``image_path``,
    ``label_files`` and ``load_label``. ``check`` = ``"full"`` decodes every file of the split
    once (the result is remembered in ``cache_dir`` by a fingerprint of file sizes and times),
    ``"files"`` only checks that they exist, ``"none"`` trusts the tree. Bad samples make the
    constructor raise :class:`BadTreeError` naming every bad file, unless ``skip_bad_samples``:
    then they are dropped, listed on stderr and kept in ``self.skipped``. A split left without
    samples is refused. ``cache_dir`` (derived labels, verification stamps) defaults to
    ``default_cache_dir``; its location is printed once per process.
    """

    NAME: ClassVar[str]
    TASKS: ClassVar[tuple[str, ...]]
    SPLITS: ClassVar[tuple[str, ...]]
    PUBLISHED_COUNTS: ClassVar[dict[str, int]]
    PUBLISHED_SIZE: ClassVar[tuple[int, int] | None] = None

    def __init__(self, root: str | os.PathLike, split: str, tasks: Sequence[str],
                 check: str = "full", skip_bad_samples: bool = False,
                 cache_dir: str | os.PathLike | None = None, progress: bool = True) -> None:
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataFormatError(self.root, f"{self.NAME} root directory does not exist (point "
                                             f"data.root at the extracted tree)")
        if split not in self.SPLITS:
            raise ValueError(f"{self.NAME}: split must be one of {', '.join(self.SPLITS)}, "
                             f"got {split!r}")
        unknown = [t for t in tasks if t not in self.TASKS]
        if unknown:
            raise ValueError(f"{self.NAME} has no label(s) {unknown}; available: "
                             f"{', '.join(self.TASKS)}")
        if check not in CHECK_LEVELS:
            raise ValueError(f"check must be one of {', '.join(CHECK_LEVELS)}, got {check!r}")
        self.split = split
        self.tasks = list(tasks)
        self.cache_dir = (Path(cache_dir).expanduser() if cache_dir
                          else default_cache_dir(self.NAME, self.root))
        if self.cache_dir not in _ANNOUNCED:
            _ANNOUNCED.add(self.cache_dir)
            print(f"{self.NAME}: caches (derived labels, verification stamps) in "
                  f"{self.cache_dir} (set data.cache_dir to move them)", file=sys.stderr)
        self.progress = progress
        self.ids = read_split(self.split_file(split))
        self.prepare_ids()
        self._refuse_empty("lists no ids")
        self.skipped: list[Problem] = []
        if check != "none":
            problems = self.scan(full=check == "full")
            if problems and not skip_bad_samples:
                raise BadTreeError(self.root, split, problems)
            if problems:
                bad = {p.sample for p in problems}
                self.ids = [i for i in self.ids if i not in bad]
                self.skipped = problems
                listing = "\n  ".join(str(p) for p in problems)
                print(f"{self.NAME} {split}: skipping {len(bad)} bad sample(s) "
                      f"(data.skip_bad_samples=true):\n  {listing}", file=sys.stderr)
                self._refuse_empty("has no sample left after skipping the bad ones")

    def _refuse_empty(self, why: str) -> None:
        """Raise a clear error for a split without samples (a sampler would fail later with
        ``num_samples=0``)."""
        if not self.ids:
            raise DataFormatError(self.split_file(self.split),
                                  f"{self.NAME} split {self.split!r} {why}; check data.root "
                                  f"and data.{self.split}_split (or the split file)")

    # -- to implement ------------------------------------------------------------------------
    @abstractmethod
    def split_file(self, split: str) -> Path:
        """The file listing the ids of ``split``."""

    @abstractmethod
    def image_path(self, sample_id: str) -> Path:
        """The image file of a sample."""

    @abstractmethod
    def label_files(self, sample_id: str, task: str) -> list[Path]:
        """The files a task's label of a sample is made from (all must exist)."""

    @abstractmethod
    def load_label(self, sample_id: str, task: str, size: tuple[int, int] | None) -> np.ndarray:
        """The label in the numpy convention, checked against the image ``size`` (``None``: the
        image was unreadable, check the label alone)."""

    def prepare_ids(self) -> None:
        """Hook run once the split's ids are read, before the scan: refuse a tree of the wrong
        kind (the NYUD variant) or select ids (FSV's test subset)."""

    def meta(self) -> dict[str, Any]:
        """Dataset-level values recorded in every sample's ``meta`` (e.g. the NYUD variant)."""
        return {}

    # -- shared ------------------------------------------------------------------------------
    def load_image(self, sample_id: str) -> np.ndarray:
        """The sample's image, ``uint8 H×W×3``."""
        return read_rgb(self.image_path(sample_id))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        sample_id = self.ids[index]
        image = self.load_image(sample_id)
        size = (image.shape[0], image.shape[1])
        sample: dict[str, Any] = {"image": image}
        for task in self.tasks:
            sample[task] = self.load_label(sample_id, task, size)
        sample["meta"] = {"id": sample_id, "split": self.split, "dataset": self.NAME,
                          "size": size, **self.meta()}
        return sample

    def check_sample(self, sample_id: str, tasks: Sequence[str] | None = None,
                     full: bool = True) -> SampleCheck:
        """Problems of one sample; ``full=False`` only checks that its files exist."""
        tasks = self.tasks if tasks is None else list(tasks)
        if not full:
            problems = [Problem(sample_id, str(path), "missing file")
                        for path in [self.image_path(sample_id)]
                        + [p for t in tasks for p in self.label_files(sample_id, t)]
                        if not path.is_file()]
            return SampleCheck(problems, None, [])
        check = SampleCheck([], None, [])
        try:
            image = self.load_image(sample_id)
            check.size = (image.shape[0], image.shape[1])
        except DataFormatError as err:
            check.problems.append(Problem(sample_id, err.path, err.problem))
        for task in tasks:
            try:
                self.load_label(sample_id, task, check.size)
                check.ok_tasks.append(task)
            except DataFormatError as err:
                check.problems.append(Problem(sample_id, err.path, err.problem))
        return check

    def verified_stamp(self, tasks: Sequence[str] | None = None) -> Path:
        """The file whose existence says this split (``tasks``, default this dataset's, with
        these file sizes and times) decoded cleanly; training's ``check="full"`` and
        ``densemtl-data verify`` (which checks every task) share it."""
        tasks = sorted(self.tasks if tasks is None else tasks)
        files = [self.split_file(self.split)] + [
            p for i in self.ids for p in [self.image_path(i)]
            + [q for t in tasks for q in self.label_files(i, t)]]
        key = _fingerprint(files, f"{self.NAME}|{self.split}|{tasks}|{self.meta()}")
        return self.cache_dir / "verified" / f"{self.split}-{key[:32]}"

    def mark_verified(self) -> None:
        """Write ``verified_stamp`` (a warning, not an error, where the cache is unwritable)."""
        stamp = self.verified_stamp()
        try:
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.touch()
        except OSError as err:
            print(f"{self.NAME}: cannot write the verification stamp in {self.cache_dir} "
                  f"({err}); the tree is decoded again next time", file=sys.stderr)

    def scan(self, full: bool = True) -> list[Problem]:
        """Problems of every sample of the split (cached by fingerprint once a scan is clean)."""
        if full and (self.verified_stamp().is_file()
                     or self.verified_stamp(self.TASKS).is_file()):  # all tasks verified
            return []
        from tqdm import tqdm

        problems: list[Problem] = []
        for sample_id in tqdm(self.ids, desc=f"checking {self.NAME} {self.split}",
                              disable=not self.progress, leave=False):
            problems += self.check_sample(sample_id, full=full).problems
        if full and not problems:
            self.mark_verified()
        return problems
