"""A PASCAL-Context tree in exactly the published layout — no ``json/``, nothing suite-specific —
loads every task with the shipped class lists, leaves the tree untouched (caches go to the user
cache directory), and gives label values worked out by hand."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from densemtl.data.formats import DataFormatError, default_cache_dir
from densemtl.data.pascal_context import (
    FIXTURE_CONTEXT_CLASSES,
    PascalContext,
    class_list,
    normals_valid_classes,
)
from densemtl.data.verify import verify_tree, write_fixture

TASKS = ["edge", "semseg", "human_parts", "normals", "sal"]
PUBLISHED = {"JPEGImages", "ImageSets", "semseg", "human_parts", "normals_distill",
             "sal_distill", "pascal-context"}


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_shipped_class_lists_facts():
    context, nyu = class_list("context_classes.json"), class_list("nyu_classes.json")
    assert len(context) == 459 and sorted(context.values()) == list(range(1, 460))
    assert len(nyu) == 894 and context["tvmonitor"] == 427 and "tvmonitor" not in nyu
    valid = set(normals_valid_classes().tolist())
    # wall, floor, chair are in both lists; sky and aeroplane only in Context; "unknown" is in
    # both but excluded; tvmonitor is added by hand
    assert {context[c] for c in ("wall", "floor", "chair", "tvmonitor")} <= valid
    assert not {context[c] for c in ("sky", "aeroplane", "unknown")} & valid


def test_published_tree_loads_every_task_without_writing_into_it(tmp_path, capsys):
    root = write_fixture("pascal_context", tmp_path / "PASCAL_MT")
    assert {p.name for p in root.iterdir()} == PUBLISHED  # no json/, no cache
    before = _files(root)
    for split in ("train", "val"):
        ds = PascalContext(root, split, TASKS, progress=False)
        samples = [ds[i] for i in range(len(ds))]
        assert all(set(TASKS) <= set(s) for s in samples)
    assert _files(root) == before
    cache = default_cache_dir("pascal_context", root)
    assert ds.cache_dir == cache and str(cache).startswith(os.environ["XDG_CACHE_HOME"])
    assert f"caches (derived labels, verification stamps) in {cache}" in capsys.readouterr().err
    assert len(list((cache / "verified").iterdir())) == 2 and (cache / "edges").is_dir()

    s = samples[0]  # 2008_000003 (val): LabelMap wall rows 0–11, floor 12–23, sky rows 0–3 × 0–5
    normals = s["normals"]
    assert np.all(normals[:4, :6] == 0)  # sky (360): not an NYU class → invalid
    # elsewhere valid: the published PNG value (255, 128, 0) → 2v/255 − 1
    np.testing.assert_allclose(normals[10, 20], [1.0, 2 * 128 / 255 - 1, -1.0], atol=1e-6)
    np.testing.assert_allclose(normals[20, 3], [1.0, 2 * 128 / 255 - 1, -1.0], atol=1e-6)
    assert s["edge"][12, 20, 0] == 1 and s["edge"][6, 20, 0] == 0  # the wall/floor boundary
    assert FIXTURE_CONTEXT_CLASSES == {"wall": 440, "floor": 158, "sky": 360}


def test_a_trees_copy_of_the_lists_is_used_only_when_identical(tmp_path):
    root = write_fixture("pascal_context", tmp_path / "PASCAL_MT")
    (root / "json").mkdir()
    for name in ("nyu_classes.json", "context_classes.json"):
        (root / "json" / name).write_text(json.dumps(class_list(name)))
    ds = PascalContext(root, "train", ["normals"], progress=False)
    assert ds[0]["normals"][:4, :6].sum() == 0
    edited = class_list("context_classes.json") | {"sky": 440}
    (root / "json" / "context_classes.json").write_text(json.dumps(edited))
    with pytest.raises(DataFormatError, match=r"context_classes.json: differs from the"):
        PascalContext(root, "val", ["normals"], check="none", progress=False)[0]


def test_verify_shares_the_training_cache_and_an_empty_split_is_refused(tmp_path):
    root = write_fixture("pascal_context", tmp_path / "PASCAL_MT")
    report = verify_tree("pascal_context", root, subset=True, progress=False)
    assert report.ok and report.cache_dir == str(default_cache_dir("pascal_context", root))
    stamps = set((Path(report.cache_dir) / "verified").iterdir())
    assert len(stamps) == 2
    PascalContext(root, "train", ["edge", "sal"], progress=False)  # accepted by verify's stamp
    assert set((Path(report.cache_dir) / "verified").iterdir()) == stamps
    for sample_id in ("2008_000003", "2008_000004"):  # every val sample broken
        (root / "sal_distill" / f"{sample_id}.png").write_bytes(b"not a png")
    with pytest.raises(DataFormatError, match="split 'val' has no sample left after skipping"):
        PascalContext(root, "val", TASKS, skip_bad_samples=True, progress=False)
    (root / "ImageSets" / "Context" / "val.txt").write_text("\n")
    with pytest.raises(DataFormatError, match="val.txt: split file is empty"):
        PascalContext(root, "val", TASKS, progress=False)
