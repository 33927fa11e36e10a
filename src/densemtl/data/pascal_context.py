"""PASCAL-Context multi-task (``PASCAL_MT/``): edge, semseg, human_parts, normals, sal (SPEC §5).

Layout (the tree released with ASTMT / MTI-Net)::

    PASCAL_MT/
      JPEGImages/<id>.jpg
      ImageSets/Context/{train,val}.txt          4 998 / 5 105 ids
      semseg/VOC12/<id>.png                      preferred when it exists
      semseg/pascal-context/<id>.png             otherwise (21 classes incl. background, 255)
      human_parts/<id>.mat                       PASCAL-Part ``anno`` struct
      normals_distill/<id>.png                   n = 2v/255 − 1
      sal_distill/<id>.png                       positive where v/255 > 0.5
      pascal-context/trainval/<id>.mat           ``LabelMap``, 459 classes

Decoding, as the public loaders do it:

* human parts — ``anno`` fields read by position (``anno[0][0][1][0]`` = objects; an object is
  (class, class_ind, mask, parts), a part (part_name, mask)). Objects of class 15 (person) with
  part annotations paint their parts with the six-part grouping (head, torso+neck, upper arms,
  lower arms+hands, upper legs, lower legs+feet; the rest 0 = background); parts of other
  classes are skipped by class before their names are looked up. An image with no person, or
  only persons without parts, gives an all-255 map (SPEC §5; the ASTMT code gave all-0), so it
  adds nothing to the loss or to the mIoU.
* edges — the 459-class ``LabelMap`` (wall/floor boundaries count) through the 4-neighbour
  Laplacian of OpenCV's ``cv2.Laplacian`` (border reflect-101), non-zero -> 1, then thinned
  (scikit-image ``thin``). Derived once per id and cached as PNG under ``cache_dir/edges``.
* normals — valid only on ``LabelMap`` classes whose names are both in the NYU class list and
  the 459-class Context list (not "unknown"), plus ``tvmonitor``; zero elsewhere. The mask comes
  from ``LabelMap``, never from the PNG (2v/255 − 1 is never exactly 0). The public code bases
  ship the two lists with their code (``nyu_classes.json``, ``context_classes.json``), not with
  the tree; so does this package (``densemtl/data/class_lists/``). A tree that carries its own
  ``json/`` copies is checked against them and refused if they differ.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from densemtl.data.datamodule import register_dataset
from densemtl.data.formats import (
    BenchmarkDataset,
    DataFormatError,
    check_classes,
    check_size,
    class_map,
    dense_map,
    read_json,
    read_mat,
    read_png,
    write_image,
    write_lines,
    write_mat,
)

PERSON_CLASS = 15
NUM_SEMSEG_CLASSES = 21
#: PASCAL-Part person part names -> the six-part grouping (1 head, 2 torso+neck, 3 upper arms,
#: 4 lower arms+hands, 5 upper legs, 6 lower legs+feet)
HUMAN_PARTS_6 = {
    **dict.fromkeys(("hair", "head", "lear", "lebrow", "leye", "mouth", "nose", "rear",
                     "rebrow", "reye"), 1),
    "neck": 2, "torso": 2,
    "luarm": 3, "ruarm": 3,
    "lhand": 4, "llarm": 4, "rhand": 4, "rlarm": 4,
    "luleg": 5, "ruleg": 5,
    "lfoot": 6, "llleg": 6, "rfoot": 6, "rlleg": 6,
}


CLASS_LISTS = ("nyu_classes.json", "context_classes.json")


def class_list(name: str, root: str | os.PathLike | None = None) -> dict[str, int]:
    """The shipped class list ``name`` (class name -> id); with ``root``, a ``<root>/json/``
    copy of it, when the tree has one, must hold the same entries."""
    from importlib.resources import files

    shipped = json.loads(files("densemtl.data").joinpath("class_lists", name).read_text())
    if root is not None:
        copy = Path(root) / "json" / name
        if copy.is_file() and read_json(copy) != shipped:
            raise DataFormatError(copy, f"differs from the {name} the public code bases ship "
                                        f"(densemtl/data/class_lists/{name}); remove the tree's "
                                        f"copy or restore the published one")
    return shipped


def normals_valid_classes(root: str | os.PathLike | None = None) -> np.ndarray:
    """Context class ids of the classes also in the NYU list (not "unknown"), plus
    ``tvmonitor``: where the distilled PASCAL normals are valid (sorted ``int64``)."""
    nyu, context = (class_list(name, root) for name in CLASS_LISTS)
    valid = [context[name] for name in nyu if name in context and name != "unknown"]
    return np.array(sorted(set(valid + [context["tvmonitor"]])), dtype=np.int64)


def laplacian_edges(label_map: np.ndarray) -> np.ndarray:
    """Thinned boundaries of a label map: 4-neighbour Laplacian ≠ 0 (border reflect-101, as
    ``cv2.Laplacian`` with ksize 1), then morphological thinning; ``uint8`` {0, 1}.

    Note the published quirk kept here: a pixel whose four neighbours' labels sum to four times
    its own (e.g. labels 1 | 2 | 3 in a row) is not an edge.
    """
    from scipy.ndimage import convolve
    from skimage.morphology import thin

    kernel = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float64)
    lap = convolve(label_map.astype(np.float64), kernel, mode="mirror")
    return thin(np.abs(lap) > 0).astype(np.uint8)


def human_parts_from_anno(anno: Any, path: str | os.PathLike) -> np.ndarray | None:
    """The 7-class part map of a PASCAL-Part ``anno`` struct (``loadmat(...)['anno']``), or
    ``None`` when no person has part annotations. Fields are read by position."""
    try:
        objects = anno[0][0][1][0]
    except (IndexError, TypeError, KeyError) as err:
        raise DataFormatError(path, f"'anno' is not a PASCAL-Part struct ({err})") from err
    target = None
    for obj in objects:
        try:
            cls, mask, parts = int(np.asarray(obj[1]).ravel()[0]), obj[2], obj[3]
        except (IndexError, TypeError, ValueError) as err:
            raise DataFormatError(path, f"object of 'anno' lacks (class, class_ind, mask, "
                                        f"parts) fields ({err})") from err
        if cls != PERSON_CLASS or len(parts) == 0:
            continue
        if target is None:
            target = np.zeros(np.asarray(mask).shape, dtype=np.uint8)
        for part in parts[0]:
            name = str(np.asarray(part[0]).ravel()[0])
            if name not in HUMAN_PARTS_6:
                raise DataFormatError(path, f"unknown person part name {name!r}")
            part_mask = np.asarray(part[1]).astype(bool)
            if part_mask.shape != target.shape:
                raise DataFormatError(path, f"part mask {name!r} of shape {part_mask.shape} "
                                            f"differs from the object mask {target.shape}")
            target[part_mask] = HUMAN_PARTS_6[name]
    return target


@register_dataset("pascal_context")
class PascalContext(BenchmarkDataset):
    """PASCAL-Context multi-task split (see the module docstring for layout and decoding)."""

    NAME = "pascal_context"
    TASKS = ("edge", "semseg", "human_parts", "normals", "sal")
    SPLITS = ("train", "val")
    PUBLISHED_COUNTS = {"train": 4998, "val": 5105}

    def split_file(self, split: str) -> Path:
        """``ImageSets/Context/<split>.txt``."""
        return self.root / "ImageSets" / "Context" / f"{split}.txt"

    def image_path(self, sample_id: str) -> Path:
        """``JPEGImages/<id>.jpg``."""
        return self.root / "JPEGImages" / f"{sample_id}.jpg"

    def semseg_path(self, sample_id: str) -> Path:
        """VOC12's segmentation when it exists, else PASCAL-Context's (they differ where both
        exist)."""
        voc = self.root / "semseg" / "VOC12" / f"{sample_id}.png"
        context = self.root / "semseg" / "pascal-context" / f"{sample_id}.png"
        return voc if voc.is_file() else context

    def label_map_path(self, sample_id: str) -> Path:
        """The 459-class ``LabelMap`` .mat (edges and the normals' validity)."""
        return self.root / "pascal-context" / "trainval" / f"{sample_id}.mat"

    def label_files(self, sample_id: str, task: str) -> list[Path]:
        """Files each task reads."""
        lmap = self.label_map_path(sample_id)
        return {
            "edge": [lmap],
            "semseg": [self.semseg_path(sample_id)],
            "human_parts": [self.root / "human_parts" / f"{sample_id}.mat"],
            "normals": [self.root / "normals_distill" / f"{sample_id}.png", lmap],
            "sal": [self.root / "sal_distill" / f"{sample_id}.png"],
        }[task]

    @cached_property
    def normals_valid_classes(self) -> np.ndarray:
        """``LabelMap`` class ids on which the distilled normals count."""
        return normals_valid_classes(self.root)

    def label_map(self, sample_id: str, size: tuple[int, int] | None) -> np.ndarray:
        """The ``LabelMap`` of a sample, checked against the image size."""
        path = self.label_map_path(sample_id)
        lmap = np.asarray(read_mat(path, "LabelMap"))
        if lmap.ndim != 2:
            raise DataFormatError(path, f"LabelMap must be H×W, got shape {lmap.shape}")
        check_size(lmap, size, path)
        return lmap

    def edges(self, sample_id: str, size: tuple[int, int] | None) -> np.ndarray:
        """Edge map ``uint8`` {0, 1}, from the cache when it is newer than the ``.mat``."""
        source = self.label_map_path(sample_id)
        cached = self.cache_dir / "edges" / f"{sample_id}.png"
        if source.is_file() and cached.is_file() and \
                cached.stat().st_mtime_ns >= source.stat().st_mtime_ns:
            edge = read_png(cached, channels=1)
            check_size(edge, size, source)
            return edge
        edge = laplacian_edges(self.label_map(sample_id, size))
        try:
            write_image(cached, edge)
        except OSError:
            pass  # read-only cache location: derived again next time
        return edge

    def load_label(self, sample_id: str, task: str, size: tuple[int, int] | None) -> np.ndarray:
        """One task's label in the numpy convention (see the module docstring)."""
        if task == "edge":
            return dense_map(self.edges(sample_id, size))
        if task == "semseg":
            path = self.semseg_path(sample_id)
            seg = read_png(path, channels=1)
            check_size(seg, size, path)
            check_classes(seg, NUM_SEMSEG_CLASSES, path)
            return class_map(seg)
        if task == "human_parts":
            path = self.label_files(sample_id, task)[0]
            parts = human_parts_from_anno(read_mat(path, "anno"), path)
            if parts is None:  # no person with parts: all ignore (of the image's size)
                return class_map(np.full(size if size is not None else (0, 0), 255))
            check_size(parts, size, path)
            return class_map(parts)
        if task == "normals":
            path = self.label_files(sample_id, task)[0]
            png = read_png(path, channels=3)
            check_size(png, size, path)
            normals = 2.0 * png.astype(np.float32) / 255.0 - 1.0
            valid = np.isin(self.label_map(sample_id, png.shape[:2]), self.normals_valid_classes)
            return dense_map(normals * valid[..., None])
        path = self.label_files(sample_id, task)[0]
        sal = read_png(path, channels=1)
        check_size(sal, size, path)
        return dense_map((sal.astype(np.float32) / 255.0 > 0.5).astype(np.float32))


# -- fixture ----------------------------------------------------------------------------------
#: fixture's LabelMap classes, by their ids in the Context list (wall and floor are also NYU
#: classes, so the normals are valid there; sky is not)
FIXTURE_CONTEXT_CLASSES = {"wall": 440, "floor": 158, "sky": 360}
FIXTURE_SIZE = (24, 32)


def _anno(objects: Sequence[tuple[str, int, np.ndarray, Sequence[tuple[str, np.ndarray]]]],
          imname: str) -> np.ndarray:
    """A PASCAL-Part ``anno`` struct with the published field order, for ``scipy.io.savemat``."""
    part_dtype = [("part_name", "O"), ("mask", "O")]
    obj_dtype = [("class", "O"), ("class_ind", "O"), ("mask", "O"), ("parts", "O")]
    objs = np.zeros((1, len(objects)), dtype=obj_dtype)
    for k, (name, cls, mask, parts) in enumerate(objects):
        if parts:
            part_arr = np.zeros((1, len(parts)), dtype=part_dtype)
            for j, (pname, pmask) in enumerate(parts):
                part_arr[0, j] = (pname, pmask.astype(np.uint8))
        else:
            part_arr = np.zeros((0, 0))
        objs[0, k] = (name, np.array([[cls]], dtype=np.uint8), mask.astype(np.uint8), part_arr)
    anno = np.zeros((1, 1), dtype=[("imname", "O"), ("objects", "O")])
    anno[0, 0] = (imname, objs)
    return anno


def write_fixture(root: str | os.PathLike) -> Path:
    """A 4-image ``PASCAL_MT`` tree of 24×32 images in the published formats (tests use it).

    Hand-known contents:

    * ``LabelMap`` of every id: rows 0–11 wall (440), rows 12–23 floor (158), a sky (360)
      block at rows 0–3, cols 0–5 -> edges along the wall/floor boundary and around the sky;
      normals invalid on the sky. Nothing beyond the published files (no ``json/``).
    * ``2008_000001`` (train): VOC12 semseg = 15 in rows 4–19 × cols 8–23 (else 0) *and* a
      PASCAL-Context semseg of all 7 (the VOC12 one must win); person with parts head (rows 4–7,
      cols 12–19), torso (rows 8–13), luarm (rows 8–13, cols 8–11), lfoot (rows 18–19); a dog
      (class 12) with a part named "tail" (skipped); saliency columns: 0–7 = 127, 8–15 = 128,
      16–23 = 255, 24–31 = 0; normals PNG (255, 128, 0).
    * ``2008_000002`` (train): a person without parts -> all-255 parts; context semseg only.
    * ``2008_000003`` (val): only a dog -> all-255 parts.
    * ``2008_000004`` (val): a person with a head part + a person without parts.
    """
    root = Path(root)
    h, w = FIXTURE_SIZE
    rng = np.random.default_rng(0)
    lmap = np.full((h, w), FIXTURE_CONTEXT_CLASSES["wall"], dtype=np.uint16)
    lmap[12:] = FIXTURE_CONTEXT_CLASSES["floor"]
    lmap[:4, :6] = FIXTURE_CONTEXT_CLASSES["sky"]
    sal = np.zeros((h, w), dtype=np.uint8)
    sal[:, 0:8], sal[:, 8:16], sal[:, 16:24] = 127, 128, 255
    person = np.zeros((h, w), dtype=bool)
    person[4:20, 8:24] = True

    def box(r0: int, r1: int, c0: int, c1: int) -> np.ndarray:
        m = np.zeros((h, w), dtype=bool)
        m[r0:r1, c0:c1] = True
        return m

    dog = ("dog", 12, box(20, 24, 0, 8), [("tail", box(22, 24, 0, 4))])
    objects = {
        "2008_000001": [("person", PERSON_CLASS, person,
                         [("head", box(4, 8, 12, 20)), ("torso", box(8, 14, 12, 20)),
                          ("luarm", box(8, 14, 8, 12)), ("lfoot", box(18, 20, 12, 20))]), dog],
        "2008_000002": [("person", PERSON_CLASS, person, [])],
        "2008_000003": [dog],
        "2008_000004": [("person", PERSON_CLASS, box(0, 12, 0, 16), [("head", box(0, 4, 4, 8))]),
                        ("person", PERSON_CLASS, box(12, 24, 16, 32), [])],
    }
    for sample_id, objs in objects.items():
        write_image(root / "JPEGImages" / f"{sample_id}.jpg",
                    rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        write_mat(root / "pascal-context" / "trainval" / f"{sample_id}.mat", {"LabelMap": lmap})
        write_mat(root / "human_parts" / f"{sample_id}.mat", {"anno": _anno(objs, sample_id)})
        write_image(root / "normals_distill" / f"{sample_id}.png",
                    np.broadcast_to(np.array([255, 128, 0], np.uint8), (h, w, 3)).copy())
        write_image(root / "sal_distill" / f"{sample_id}.png", sal)
        write_image(root / "semseg" / "pascal-context" / f"{sample_id}.png",
                    np.full((h, w), 7, dtype=np.uint8))
    write_image(root / "semseg" / "VOC12" / "2008_000001.png", (person * 15).astype(np.uint8))
    write_lines(root / "ImageSets" / "Context" / "train.txt", ["2008_000001", "2008_000002"])
    write_lines(root / "ImageSets" / "Context" / "val.txt", ["2008_000003", "2008_000004"])
    return root
