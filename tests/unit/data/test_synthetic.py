"""The procedural synthetic scenes: determinism, label geometry, cache and dataset."""

from __future__ import annotations

import json
import pickle
from functools import cache
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from densemtl.data.geometry import angle_between_deg, backproject, normals_from_depth, pixel_rays
from densemtl.data.synthetic import (
    FIRST_OBJECT_INSTANCE,
    PERSON_CLASS,
    SYNTHETIC_CLASSES,
    SyntheticCacheError,
    SyntheticScenes,
    boundary_edges,
    image_seed,
    load_cache,
    render_scene,
    write_cache,
)
from densemtl.data.synthetic import cache as syn_cache
from densemtl.data.synthetic.render import SALIENT_MIN_AREA, most_conspicuous

SEEDS = range(8)
FLOOR, BACK_WALL, LEFT_WALL = 1, 3, 4  # instance ids of ROOM_SURFACES


@cache
def scene(seed: int, size: int = 64, extras: bool = True) -> dict[str, np.ndarray]:
    return render_scene(seed, size, extras=extras)


def four_neighbour_diff(ids: np.ndarray) -> np.ndarray:
    """Pixels with at least one 4-neighbour of another id (computed independently of the code)."""
    padded = np.pad(ids, 1, mode="edge")
    c = padded[1:-1, 1:-1]
    return ((padded[:-2, 1:-1] != c) | (padded[2:, 1:-1] != c)
            | (padded[1:-1, :-2] != c) | (padded[1:-1, 2:] != c))


def test_same_seed_same_arrays_and_different_seed_differs() -> None:
    a = render_scene(5, 48, extras=True)
    b = render_scene(5, 48, extras=True)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    c = render_scene(6, 48, extras=True)
    assert not np.array_equal(a["image"], c["image"])
    assert not np.array_equal(a["depth"], c["depth"])


def test_labels_follow_the_numpy_convention() -> None:
    out = scene(0)
    for key in ("semseg", "human_parts"):
        assert out[key].dtype == np.uint8 and out[key].shape == (64, 64, 1), key
    channels = {"edge": 1, "normals": 3, "sal": 1, "depth": 1, "albedo": 3, "curvature": 2,
                "reshading": 1, "edge2d": 1, "edge3d": 1, "keypoints2d": 1, "keypoints3d": 1}
    for key, c in channels.items():
        assert out[key].dtype == np.float32 and out[key].shape == (64, 64, c), key
    assert out["image"].dtype == np.uint8 and out["image"].shape == (64, 64, 3)
    assert out["instance"].dtype == np.int32 and out["instance"].shape == (64, 64)
    fx, fy, cx, cy = out["intrinsics"]
    assert fx == fy and cx == cy == 31.5
    # horizontal field of view of 55–70 degrees: fx = (W/2) / tan(fov/2)
    assert 32 / np.tan(np.radians(35)) <= fx <= 32 / np.tan(np.radians(27.5))


@pytest.mark.parametrize("seed", SEEDS)
def test_value_ranges_and_part_person_consistency(seed: int) -> None:
    out = scene(seed)
    depth = out["depth"]
    assert np.isfinite(depth).all() and depth.min() > 0.5 and depth.max() < 10
    assert 0 <= out["albedo"].min() and out["albedo"].max() <= 1
    assert out["semseg"].max() < len(SYNTHETIC_CLASSES)
    for key in ("edge", "sal", "edge3d"):
        assert set(np.unique(out[key])) <= {0.0, 1.0}, key
    person = out["semseg"][..., 0] == PERSON_CLASS
    parts = out["human_parts"][..., 0]
    if person.any():
        assert parts.max() <= 6
        np.testing.assert_array_equal(parts > 0, person)
    else:
        assert (parts == 255).all()


def test_most_but_not_all_images_contain_figures_of_useful_size() -> None:
    parts = [render_scene(image_seed(0, i), 32)["human_parts"] for i in range(80)]
    has_figure = [(p != 255).any() for p in parts]
    assert 0.75 <= np.mean(has_figure) <= 0.95  # 15 % of the scenes are sampled without one
    cover = [(p[p != 255] > 0).mean() for p in parts if (p != 255).any()]
    assert np.median(cover) > 0.06  # v1 scenes: 3 %, too few pixels for the parts at 64×64


@pytest.mark.parametrize("seed", SEEDS)
def test_saliency_is_the_object_of_highest_colour_contrast(seed: int) -> None:
    out = scene(seed)
    sal = out["sal"][..., 0] > 0
    inst = out["instance"]
    rgb = out["image"].astype(np.float64) / 255.0
    (only,) = np.unique(inst[sal])
    np.testing.assert_array_equal(sal, inst == only)
    contrast = {}
    for i in np.unique(inst[inst >= FIRST_OBJECT_INSTANCE]):
        mask = inst == i
        if mask.mean() >= SALIENT_MIN_AREA:
            contrast[i] = np.linalg.norm(rgb[mask].mean(0) - rgb[~mask].mean(0))
    assert only in contrast
    assert contrast[only] == pytest.approx(max(contrast.values()), abs=1e-12)


def test_most_conspicuous_by_hand() -> None:
    # ids 7 (grey), 8 (red), 9 (the same red, one pixel, not a candidate) on a grey room (1)
    instance = np.array([[1, 1, 7, 8],
                         [1, 1, 7, 9]])
    grey, red = [128, 128, 128], [255, 0, 0]
    image = np.array([[grey, grey, grey, red],
                      [grey, grey, grey, red]], dtype=np.uint8)
    candidate = np.zeros(10, dtype=bool)
    candidate[[7, 8]] = True
    assert most_conspicuous(image, instance, candidate) == 8
    candidate[8] = False
    assert most_conspicuous(image, instance, candidate) == 7


def test_saliency_is_not_a_copy_of_the_figures() -> None:
    """Salient by colour, not by class: a figure is the salient object in some images with a
    figure, most often another object is (v2 scenes: always the figures, a copy of semseg)."""
    figure_salient = []
    for i in range(80):
        out = render_scene(image_seed(0, i), 32)
        person = out["semseg"][..., 0] == PERSON_CLASS
        if person.any():
            sal = out["sal"][..., 0] > 0
            figure_salient.append(bool(person[sal].all()))
    assert 0.05 <= np.mean(figure_salient) <= 0.6


def test_boundary_edges_mark_the_nearer_side_by_hand() -> None:
    ids = np.array([[1, 1, 2],
                    [1, 1, 2],
                    [3, 3, 3]])
    depth = np.array([[5.0, 5.0, 2.0],
                      [5.0, 5.0, 2.0],
                      [5.0, 4.0, 1.0]])
    # 1|2 pairs: 2 is nearer -> (0,2), (1,2); 1/3 pairs: (1,0)-(2,0) tie -> top (1,0),
    # (1,1)-(2,1): 3 nearer -> (2,1); 2/3 pair (1,2)-(2,2): 3 nearer -> (2,2).
    expected = np.array([[0, 0, 1],
                         [1, 0, 1],
                         [0, 1, 1]], dtype=bool)
    np.testing.assert_array_equal(boundary_edges(ids, depth), expected)


@pytest.mark.parametrize("seed", SEEDS)
def test_edges_are_exactly_one_side_of_every_instance_boundary(seed: int) -> None:
    out = scene(seed)
    edge = out["edge"][..., 0] > 0
    inst = out["instance"]
    # every edge pixel touches another instance: no texture edges, no edges inside a surface
    assert not (edge & ~four_neighbour_diff(inst)).any()
    # every 4-neighbour pair across a boundary has an edge on at least one side
    horizontal = inst[:, :-1] != inst[:, 1:]
    vertical = inst[:-1, :] != inst[1:, :]
    assert (edge[:, :-1] | edge[:, 1:])[horizontal].all()
    assert (edge[:-1, :] | edge[1:, :])[vertical].all()
    # the room's creases count: the back wall meets the floor somewhere in view
    if (inst == BACK_WALL).any() and (inst == FLOOR).any():
        assert edge[inst == FLOOR].any() or edge[inst == BACK_WALL].any()


def test_textures_make_image_edges_but_no_label_edges() -> None:
    strong_inside = 0
    for seed in SEEDS:
        out = scene(seed)
        gray = out["image"].mean(axis=2) / 255.0
        grad = np.hypot(ndimage.sobel(gray, 0), ndimage.sobel(gray, 1))
        inside = ~ndimage.binary_dilation(four_neighbour_diff(out["instance"]))
        strong_inside += int((inside & (grad > 0.5)).sum())
        assert out["edge"][..., 0][inside].max() == 0
    assert strong_inside > 100  # texture contrast is really there, and produced no edge labels


@pytest.mark.parametrize("seed", SEEDS)
def test_normals_are_unit_face_the_camera_and_agree_with_depth(seed: int) -> None:
    out = scene(seed)
    n = out["normals"].astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-5)
    rays = pixel_rays(64, 64, out["intrinsics"])
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    assert (np.einsum("hwc,hwc->hw", n, rays) < 0).all()  # every visible surface faces the ray
    # finite-difference normals of the back-projected depth, on single smooth surfaces
    from_depth = normals_from_depth(out["depth"], out["intrinsics"])
    inst, cls = out["instance"], out["semseg"][..., 0]
    smooth_class = np.isin(cls, [SYNTHETIC_CLASSES.index(c)
                                 for c in ("wall", "floor", "ceiling", "sphere")])
    same = ndimage.minimum_filter(inst, 3) == ndimage.maximum_filter(inst, 3)
    no_edge = ndimage.maximum_filter(out["edge"][..., 0], 3) == 0
    mask = smooth_class & same & no_edge & (np.linalg.norm(from_depth, axis=-1) > 0)
    assert mask.sum() > 500
    err = angle_between_deg(from_depth[mask], n[mask])
    assert np.median(err) < 0.5, np.median(err)
    assert np.percentile(err, 95) < 3.0, np.percentile(err, 95)


def test_normals_axes_follow_the_image() -> None:
    """x right, y up, z towards the camera; a horizontal flip negates x."""
    for seed in SEEDS:
        out = scene(seed)
        n, inst = out["normals"], out["instance"]
        assert (n[inst == FLOOR][:, 1] > 0.9).all()  # the floor points up in the image
        assert (n[inst == BACK_WALL][:, 2] > 0.9).all()  # the back wall faces the camera
        assert (n[inst == LEFT_WALL][:, 0] > 0.7).all()  # the left wall points right
        # the mirrored scene (flip depth, cx stays centred) has the flipped normals, x negated
        flipped = normals_from_depth(out["depth"][:, ::-1], out["intrinsics"])
        expected = n[:, ::-1] * np.array([-1.0, 1.0, 1.0])
        mask = (ndimage.minimum_filter(inst, 3) == ndimage.maximum_filter(inst, 3))[:, ::-1]
        mask &= (inst < FIRST_OBJECT_INSTANCE)[:, ::-1] & (np.abs(flipped).sum(-1) > 0)
        assert np.median(angle_between_deg(flipped[mask], expected[mask])) < 0.1


def test_normals_from_depth_recovers_a_tilted_plane_exactly() -> None:
    k = (50.0, 60.0, 15.5, 11.5)
    normal = np.array([0.3, -0.5, 0.8]) / np.linalg.norm([0.3, -0.5, 0.8])
    rays = pixel_rays(24, 32, k)
    depth = -3.0 / (rays @ normal)  # plane <normal, P> = -3 with P = depth * ray
    assert (depth > 0).all()
    np.testing.assert_allclose(backproject(depth, k) @ normal, -3.0)
    got = normals_from_depth(depth[..., None], k)
    np.testing.assert_allclose(got[1:-1, 1:-1], np.broadcast_to(normal, (22, 30, 3)), atol=1e-6)
    assert (got[0] == 0).all() and (got[:, -1] == 0).all()  # no central difference on the border
    with pytest.raises(ValueError, match="intrinsics"):
        normals_from_depth(depth, (0.0, 1.0, 2.0, 3.0))


def test_curvature_matches_a_sphere_fitted_to_the_depth() -> None:
    fitted = 0
    for seed in range(40):
        out = render_scene(image_seed(0, seed), 64, extras=True)
        inst, cls = out["instance"], out["semseg"][..., 0]
        curv = out["curvature"]
        room = inst < FIRST_OBJECT_INSTANCE
        assert (curv[room] == 0).all()
        assert (curv[..., 0] >= curv[..., 1]).all()
        points = backproject(out["depth"], out["intrinsics"])
        for i in np.unique(inst[cls == SYNTHETIC_CLASSES.index("sphere")]):
            m = inst == i
            if m.sum() < 40:
                continue
            # |P|² = 2<c, P> + (r² - |c|²): linear least squares in (c, r² - |c|²)
            p = points[m]
            a = np.c_[2 * p, np.ones(len(p))]
            sol = np.linalg.lstsq(a, (p * p).sum(1), rcond=None)[0]
            radius = np.sqrt(sol[3] + sol[:3] @ sol[:3])
            np.testing.assert_allclose(curv[m], 1.0 / radius, rtol=1e-3)
            fitted += 1
    assert fitted >= 3


@pytest.mark.parametrize("seed", SEEDS)
def test_extras_ranges_and_meaning(seed: int) -> None:
    out = scene(seed)
    for key in ("edge2d", "keypoints2d", "keypoints3d"):
        assert 0 <= out[key].min() and out[key].max() <= 1, key
    assert out["keypoints2d"].max() == 1.0
    assert 0.2 <= out["reshading"].min() and out["reshading"].max() <= 1
    inst = out["instance"]
    # reshading has no albedo: constant over each (textured) room plane
    for i in range(1, FIRST_OBJECT_INSTANCE):
        if (inst == i).sum() > 10:
            assert np.ptp(out["reshading"][inst == i]) < 1e-5
    # room faces never occlude anything (a convex room seen from inside): occlusion edges lie
    # on objects, on the nearer side of a depth jump
    e3 = out["edge3d"][..., 0] > 0
    assert (inst[e3] >= FIRST_OBJECT_INSTANCE).all()
    depth = np.pad(out["depth"][..., 0], 1, mode="edge")
    deeper = np.zeros_like(e3)
    for dv, du in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        deeper |= depth[1 + dv:65 + dv, 1 + du:65 + du] > 1.02 * depth[1:-1, 1:-1]
    assert not (e3 & ~deeper).any()


def test_image_seed_depends_on_seed_and_index_only() -> None:
    assert image_seed(0, 3) == image_seed(0, 3)
    assert len({image_seed(s, i) for s in range(3) for i in range(50)}) == 150


def test_cache_round_trip_is_exact_and_independent_of_n(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from densemtl.data.synthetic import cache

    monkeypatch.setattr(cache, "IN_PROCESS_MAX", 0)  # render n=5 with the worker pool
    path = write_cache(tmp_path, n=5, size=32, seed=3, workers=2, progress=False)
    assert path.name == "synthetic-v3-n5-s32-seed3"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temp dir left behind
    arrays = load_cache(path)
    assert isinstance(arrays["depth"], np.memmap)
    meta = json.loads((path / "meta.json").read_text())
    assert meta["n"] == 5 and meta["class_names"] == list(SYNTHETIC_CLASSES)
    for i in range(5):
        ref = render_scene(image_seed(3, i), 32)
        assert set(ref) == set(arrays)
        for key, value in ref.items():
            np.testing.assert_array_equal(arrays[key][i], value, err_msg=f"{key}[{i}]")
    shorter = load_cache(write_cache(tmp_path, n=3, size=32, seed=3, workers=1, progress=False))
    np.testing.assert_array_equal(shorter["image"], arrays["image"][:3])
    mtime = (path / "meta.json").stat().st_mtime_ns
    assert write_cache(tmp_path, n=5, size=32, seed=3, progress=False) == path
    assert (path / "meta.json").stat().st_mtime_ns == mtime  # complete cache reused


def test_damaged_cache_is_reported_with_its_path_and_rebuilt(tmp_path: Path) -> None:
    path = write_cache(tmp_path, n=2, size=16, seed=1, workers=1, progress=False)
    depth = path / "depth.npy"
    depth.write_bytes(depth.read_bytes()[:-100])
    with pytest.raises(SyntheticCacheError, match="depth.npy is truncated") as err:
        load_cache(path)
    assert str(path) in str(err.value)
    assert "densemtl-data make synthetic" in str(err.value) and "--n 2 --size 16" in str(err.value)
    (path / "meta.json").unlink()
    with pytest.raises(SyntheticCacheError, match="meta.json is missing") as err:
        load_cache(path)
    assert str(path) in str(err.value) and "--seed 1" in str(err.value)
    with pytest.raises(SyntheticCacheError, match="does not exist"):
        load_cache(tmp_path / "nowhere")
    assert write_cache(tmp_path, n=2, size=16, seed=1, workers=1, progress=False) == path
    np.testing.assert_array_equal(load_cache(path)["depth"][1],
                                  render_scene(image_seed(1, 1), 16)["depth"])


def test_interrupted_write_leaves_nothing_that_looks_complete(tmp_path: Path,
                                                              monkeypatch) -> None:
    def crash(job):
        raise KeyboardInterrupt

    monkeypatch.setattr(syn_cache, "_render_chunk", crash)
    with pytest.raises(KeyboardInterrupt):
        write_cache(tmp_path, n=4, size=16, seed=0, workers=1, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_dataset_splits_items_and_errors(tmp_path: Path) -> None:
    kw = dict(root=tmp_path, n=10, size=24, seed=2, val_fraction=0.2, progress=False, workers=1)
    train = SyntheticScenes(split="train", tasks=["semseg", "depth", "human_parts"], **kw)
    val = SyntheticScenes(split="val", tasks=["normals"], **kw)
    assert (len(train), len(val)) == (8, 2)
    assert [val[i]["meta"] for i in range(2)] == [{"index": 8, "split": "val"},
                                                  {"index": 9, "split": "val"}]
    item = train[3]
    assert set(item) == {"image", "semseg", "depth", "human_parts", "meta"}
    ref = render_scene(image_seed(2, 3), 24)
    for key in ("image", "semseg", "depth", "human_parts"):
        np.testing.assert_array_equal(item[key], ref[key])
    item["depth"][0, 0, 0] = -1.0  # items are private copies, the cache stays intact
    assert train[3]["depth"][0, 0, 0] == ref["depth"][0, 0, 0]
    np.testing.assert_array_equal(val[-1]["normals"], render_scene(image_seed(2, 9), 24)["normals"])
    clone = pickle.loads(pickle.dumps(train))
    np.testing.assert_array_equal(clone[0]["image"], train[0]["image"])
    with pytest.raises(IndexError):
        train[8]
    with pytest.raises(ValueError, match="available: .*semseg.*LSB extras need extras=True"):
        SyntheticScenes(split="train", tasks=["curvature"], **kw)
    with pytest.raises(ValueError, match="split must be"):
        SyntheticScenes(split="test", tasks=["semseg"], **kw)
