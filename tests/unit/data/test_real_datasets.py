"""Real-benchmark loaders on fixture trees written in the published formats: hand-known values,
variant handling, the DataModule over them, saved predictions and the paper reference rows."""

import numpy as np
import pytest
import torch

from densemtl.data.datamodule import MultiTaskDataModule
from densemtl.data.formats import DataFormatError, read_png, save_prediction
from densemtl.data.fsv import FSV, decode_disparity, encode_disparity
from densemtl.data.nyud import NYUD
from densemtl.data.pascal_context import PascalContext, laplacian_edges
from densemtl.data.taskonomy import Taskonomy
from densemtl.data.verify import write_fixture
from densemtl.metrics.delta_m import delta_m
from densemtl.reference import available, baselines
from densemtl.tasks import build_task

PASCAL_TASKS = ["edge", "semseg", "human_parts", "normals", "sal"]


@pytest.fixture(scope="module")
def pascal_root(tmp_path_factory):
    return write_fixture("pascal_context", tmp_path_factory.mktemp("pascal") / "PASCAL_MT")


def pascal(root, split="train", tasks=PASCAL_TASKS, **kw):
    return PascalContext(root, split, tasks, progress=False, **kw)


def test_pascal_semseg_prefers_voc12_over_context(pascal_root):
    both = pascal(pascal_root, tasks=["semseg"])[0]  # has VOC12 (person = 15) and context (7)
    assert both["semseg"].dtype == np.uint8 and both["semseg"].shape == (24, 32, 1)
    assert both["semseg"][10, 10, 0] == 15 and both["semseg"][0, 0, 0] == 0
    only_context = pascal(pascal_root, tasks=["semseg"])[1]
    assert np.all(only_context["semseg"] == 7)


def test_pascal_human_parts_grouping_and_all_ignore(pascal_root):
    parts = pascal(pascal_root, tasks=["human_parts"])[0]["human_parts"][..., 0]
    # head -> 1, torso -> 2, left upper arm -> 3, left foot -> 6; a dog's "tail" is skipped
    assert (parts[5, 14], parts[10, 14], parts[10, 9], parts[19, 14]) == (1, 2, 3, 6)
    assert parts[22, 1] == 0 and parts[0, 0] == 0
    assert np.all(pascal(pascal_root, tasks=["human_parts"])[1]["human_parts"] == 255)  # no parts
    val = pascal(pascal_root, "val", ["human_parts"])
    assert np.all(val[0]["human_parts"] == 255)  # no person at all
    # one person with a head part, one without parts: the latter is background, not ignore
    assert sorted(np.unique(val[1]["human_parts"]).tolist()) == [0, 1]


def test_pascal_edges_from_labelmap_boundary_and_cache(pascal_root, tmp_path):
    ds = pascal(pascal_root, tasks=["edge"], cache_dir=tmp_path / "cache")
    edge = ds[0]["edge"][..., 0]
    assert edge.dtype == np.float32 and set(np.unique(edge)) == {0.0, 1.0}
    # wall (rows 0-11) / floor (rows 12-23): one thinned line per column, away from the sky
    # block (thinning shortens the line's end at the last column)
    assert np.all(edge[:, 10:31].sum(axis=0) == 1) and edge[:, 31].sum() == 0
    assert np.all(np.argwhere(edge[:, 10:])[:, 0] == 12)
    cached = tmp_path / "cache" / "edges" / "2008_000001.png"
    assert np.array_equal(read_png(cached), edge.astype(np.uint8))
    assert np.array_equal(ds[0]["edge"], ds[0]["edge"])  # the cached read gives the same map


def test_laplacian_edges_published_quirk():
    row = np.array([[1, 2, 3, 3]] * 3)
    # label 2 between 1 and 3 sums to 4·2 over its 4-neighbourhood: no edge there (as cv2 does)
    assert laplacian_edges(row)[1, 1] == 0 and laplacian_edges(row)[1, 2] == 1


def test_pascal_normals_valid_from_labelmap_and_saliency_threshold(pascal_root):
    s = pascal(pascal_root)[0]
    n = s["normals"]
    assert n.shape == (24, 32, 3) and n.dtype == np.float32
    np.testing.assert_allclose(n[10, 10], [1.0, 2 * 128 / 255 - 1, -1.0], atol=1e-6)
    assert np.all(n[:4, :6] == 0)  # sky is not an NYU class: invalid although the PNG is not 0
    assert np.all(np.any(n[4:] != 0, axis=-1))
    assert s["sal"][0, [0, 8, 16, 24], 0].tolist() == [0.0, 1.0, 1.0, 0.0]  # 127 no, 128 yes
    assert s["meta"]["id"] == "2008_000001" and s["meta"]["size"] == (24, 32)


@pytest.mark.parametrize("variant", ["npy_480x640", "png_425x560"])
def test_nyud_variants_decode(tmp_path, variant):
    root = write_fixture("nyud", tmp_path / variant, variant=variant)
    s = NYUD(root, "train", ["semseg", "depth", "normals", "edge"], variant=variant,
             progress=False)[0]
    assert s["semseg"][0, [0, 8, 16, 24], 0].tolist() == [255, 0, 39, 6]  # 0 | 1 | 40 | 7
    assert s["depth"][0, 0, 0] == 0 and s["depth"][10, 0, 0] == pytest.approx(2.5)
    assert s["edge"][12, 3, 0] == 1 and s["edge"][11, 3, 0] == 0
    if variant == "npy_480x640":
        assert np.all(s["normals"][:4] == 0) and s["normals"][10, 0].tolist() == [0, 0, 1]
    else:  # PNG: 2v/255 - 1, (128, 128, 255) -> (1/255, 1/255, 1), nothing exactly zero
        np.testing.assert_allclose(s["normals"][10, 0], [1 / 255, 1 / 255, 1.0], atol=1e-6)
        assert np.all(s["normals"] != 0)
    assert s["meta"]["variant"] == variant


def test_nyud_refuses_the_other_variant(tmp_path):
    root = write_fixture("nyud", tmp_path / "png", variant="png_425x560")
    with pytest.raises(DataFormatError, match="png_425x560"):
        NYUD(root, "train", ["depth"], variant="npy_480x640", progress=False)
    with pytest.raises(ValueError, match="npy_480x640"):
        NYUD(root, "train", ["depth"], variant="jpg", progress=False)


def test_taskonomy_decodings(tmp_path):
    root = write_fixture("taskonomy", tmp_path / "tk")
    ds = Taskonomy(root, "train", list(Taskonomy.TASKS), resize=None, progress=False)
    assert len(ds) == 3
    s = ds[0]
    assert s["depth"][0, 0, 0] == 0 and s["depth"][5, 5, 0] == pytest.approx(2.0)
    np.testing.assert_allclose(s["normals"][3, 3], [1.0, 2 * 128 / 255 - 1, -1.0], atol=1e-6)
    assert s["semseg"][0, 0, 0] == 0 and s["semseg"][0, 31, 0] == 3
    np.testing.assert_allclose(s["curvature"][0, 0], [0.2, 0.4], atol=1e-6)
    assert s["reshading"][0, 0, 0] == pytest.approx(128 / 255)
    assert s["edge2d"][0, 5, 0] == 1 and s["edge2d"][0, 4, 0] == 0
    for key in ("edge3d", "keypoints2d", "keypoints3d"):
        assert s[key][1, 1, 0] == pytest.approx(0.2)
    small = Taskonomy(root, "test", ["depth", "semseg"], resize=16, progress=False)[0]
    assert small["image"].shape == (16, 16, 3) and small["semseg"].shape == (16, 16, 1)
    assert small["semseg"][0, 7, 0] == 0 and small["semseg"][0, 8, 0] == 3
    assert np.all(small["depth"] == 2.0)  # nearest at pixel centres samples rows 1, 3, ...


def test_fsv_decodings(tmp_path):
    root = write_fixture("fsv", tmp_path / "FSV")
    s = FSV(root, "train", ["semseg", "albedo", "depth"], progress=False)[0]
    assert s["semseg"][0, [0, 8, 16, 24], 0].tolist() == [0, 0, 1, 2]  # ids 0 | 1 | 2 | 3
    np.testing.assert_allclose(s["albedo"][0, 0], [0.2, 0.4, 0.8], atol=1e-6)
    assert s["depth"][0, 0, 0] == 0 and s["depth"][5, 5, 0] == pytest.approx(1.5)
    v = np.array([[0.0, 1 / 8192, 300.25]], dtype=np.float32)
    np.testing.assert_allclose(decode_disparity(encode_disparity(v)), v)


@pytest.mark.parametrize("name,tasks,variant", [
    ("pascal_context", PASCAL_TASKS, None),
    ("nyud", ["semseg", "depth", "normals", "edge"], "png_425x560"),
])
def test_datamodule_over_fixture_tree(tmp_path, name, tasks, variant):
    kwargs = {"variant": variant} if variant else {}
    root = write_fixture(name, tmp_path / name, **kwargs)
    task_args = {"semseg": {"num_classes": 21 if name == "pascal_context" else 40}}
    objs = {t: build_task(t, **task_args.get(t, {})) for t in tasks}
    cfg = {"name": name, "root": str(root), "progress": False, "batch_size": 2,
           "crop_size": [16, 16], "val_pad_to": [24, 32], "augment": {"rotate_deg": 0},
           **kwargs}
    dm = MultiTaskDataModule.from_config(cfg, objs)
    dm.setup("fit")
    for loader, (h, w) in ((dm.train_dataloader(), (16, 16)), (dm.val_dataloader(), (24, 32))):
        batch = next(iter(loader))
        assert batch["image"].shape == (2, 3, h, w)
        for t, task in objs.items():
            if task.kind == "class":
                assert batch[t].shape == (2, h, w) and batch[t].dtype == torch.int64
            else:
                assert batch[t].shape == (2, task.label_channels, h, w)
    if variant:
        assert all(m["variant"] == variant for m in batch["meta"])


def test_save_prediction_formats_round_trip(tmp_path):
    prob = torch.tensor([[[0.0, 0.5, 1.0]]])
    edge_png = save_prediction("edge", prob, tmp_path / "edge" / "a.jpg")
    assert edge_png.suffix == ".png" and read_png(edge_png).tolist() == [[0, 128, 255]]
    normals = torch.nn.functional.normalize(torch.tensor([[[0.3]], [[-0.5]], [[0.8]]]), dim=0)
    png = read_png(save_prediction("normals", normals, tmp_path / "n"))
    decoded = 2 * png[0, 0].astype(float) / 255 - 1
    np.testing.assert_allclose(decoded, normals[:, 0, 0], atol=1 / 255)
    seg = save_prediction("semseg", torch.tensor([[3, 20]]), tmp_path / "s")
    assert read_png(seg).tolist() == [[3, 20]]
    depth = np.load(save_prediction("depth", torch.full((1, 2, 2), 1.25), tmp_path / "d"))
    assert depth.shape == (2, 2) and np.all(depth == 1.25)
    with pytest.raises(ValueError, match="C×H×W"):
        save_prediction("edge", torch.zeros(2, 2), tmp_path / "bad")


def test_reference_rows_reproduce_paper_delta_m():
    assert {"astmt_pascal_r26", "astmt_nyud_r50", "atrc_nyud_hrnet18"} <= set(available())
    base = baselines("astmt_pascal_r26")
    mtl = {"edge": 69.2, "semseg": 60.20, "human_parts": 54.10, "normals": 17.04, "sal": 62.10}
    metric = {t: next(iter(m)) for t, m in base.items()}
    higher = {t: t != "normals" for t in base}
    gain = delta_m(mtl, {t: base[t][metric[t]] for t in base}, higher)
    assert -gain == pytest.approx(6.62, abs=0.01)  # ASTMT Table 3: drop 6.62 %
    atrc = baselines("atrc_nyud_hrnet18")
    mt = {"semseg": 36.35, "depth": 0.6284, "normals": 21.02, "edge": 76.36}
    higher = {"semseg": True, "depth": False, "normals": False, "edge": True}
    gain = delta_m(mt, {t: next(iter(atrc[t].values())) for t in atrc}, higher)
    assert gain == pytest.approx(-1.89, abs=0.01)  # ATRC Table G-1: multi-task baseline
