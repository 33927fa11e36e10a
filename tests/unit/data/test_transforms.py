"""Augmentation pipelines: pixels move as albumentations says, label values follow the geometry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from densemtl.data.synthetic import render_scene
from densemtl.data.transforms import IMAGENET_MEAN, IMAGENET_STD, build_transforms
from densemtl.tasks import build_task

NO_NORM = {"mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "color_jitter": False}


def make_tasks() -> dict:
    """The three label kinds whose values react to geometry (class map, depth, normals)."""
    return {"semseg": build_task("semseg", num_classes=5), "depth": build_task("depth"),
            "normals": build_task("normals")}


def random_unit(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """``H×W×3`` random unit vectors facing the camera (z > 0)."""
    n = rng.normal(size=(*shape, 3))
    n[..., 2] = np.abs(n[..., 2]) + 0.1
    return (n / np.linalg.norm(n, axis=-1, keepdims=True)).astype(np.float32)


def make_sample(h: int = 8, w: int = 8, seed: int = 0) -> dict:
    """A hand-built numpy sample: random image, classes 0..4, depth in [1, 3], unit normals."""
    rng = np.random.default_rng(seed)
    return {
        "image": rng.integers(0, 256, (h, w, 3), dtype=np.uint8),
        "semseg": rng.integers(0, 5, (h, w, 1)).astype(np.uint8),
        "depth": rng.uniform(1.0, 3.0, (h, w, 1)).astype(np.float32),
        "normals": random_unit((h, w), rng),
        "meta": {"index": 3},
    }


def geometry(**kw) -> object:
    """A training pipeline with only the geometric ops asked for (no jitter, no standardising)."""
    args = {"crop_size": None, "scale_range": None, "hflip": False, "rotate_deg": 0.0,
            "seed": 0, **NO_NORM}
    args.update(kw)
    return build_transforms(make_tasks(), train=True, **args)


def chw(label: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(label.transpose(2, 0, 1)))


def test_hflip_moves_pixels_exactly_and_negates_normals_x():
    s = make_sample()
    out = geometry(hflip=1.0)(s)
    flip = s["image"][:, ::-1]
    torch.testing.assert_close(out["image"], chw(flip.astype(np.float32) / 255.0))
    assert torch.equal(out["semseg"], torch.from_numpy(s["semseg"][:, ::-1, 0].astype(np.int64)))
    assert torch.equal(out["depth"], chw(s["depth"][:, ::-1]))
    expected = s["normals"][:, ::-1] * np.array([-1.0, 1.0, 1.0], np.float32)
    assert torch.equal(out["normals"], chw(expected))
    assert out["meta"] == {"index": 3, "aug": {"scale": 1.0, "hflip": True, "angle": 0.0,
                                               "input_size": (8, 8)}}


def test_no_flip_when_probability_zero_and_output_convention():
    s = make_sample()
    out = geometry(hflip=False)(s)
    assert out["semseg"].dtype == torch.int64 and out["semseg"].shape == (8, 8)
    assert out["depth"].dtype == torch.float32 and out["depth"].shape == (1, 8, 8)
    assert out["normals"].shape == (3, 8, 8) and out["image"].shape == (3, 8, 8)
    assert torch.equal(out["normals"], chw(s["normals"]))
    assert out["meta"]["aug"]["hflip"] is False


@pytest.mark.parametrize("angle, expected_normal", [(90.0, (0.0, 1.0, 0.0)),
                                                    (-90.0, (0.0, -1.0, 0.0))])
def test_rotation_by_90_is_counter_clockwise_for_pixels_and_normals(angle, expected_normal):
    s = make_sample()
    s["semseg"][:] = 0
    s["semseg"][1, 6] = 4  # a mark near the top-right corner (row 1, column 6)
    s["normals"][:] = (1.0, 0.0, 0.0)
    out = geometry(rotate_deg=(angle, angle))(s)
    assert out["meta"]["aug"]["angle"] == pytest.approx(angle)
    # About the centre c = 3.5, counter-clockwise as displayed (rows grow downwards): +90° takes
    # (row 1, col 6) to (row 1, col 1) (top-left), -90° to (row 6, col 6) (bottom-right).
    marks = torch.nonzero(out["semseg"] == 4).tolist()
    assert marks == ([[1, 1]] if angle > 0 else [[6, 6]])
    assert int((out["semseg"] == 255).sum()) == 0  # a square turned by 90° covers itself
    torch.testing.assert_close(out["normals"],
                               torch.tensor(expected_normal).view(3, 1, 1).expand(3, 8, 8),
                               atol=1e-6, rtol=0)
    # the depth map turned the same way: np.rot90 turns counter-clockwise
    k = 1 if angle > 0 else -1
    assert torch.equal(out["depth"], chw(np.rot90(s["depth"], k)))


def test_rotation_fills_uncovered_corners_with_each_tasks_ignore_value():
    s = make_sample(16, 16)
    out = geometry(rotate_deg=(30.0, 30.0))(s)
    for name, ignore in (("semseg", 255), ("depth", 0.0)):
        assert float(out[name].flatten()[0]) == ignore, name  # top-left corner lies outside
        assert float(out[name][..., 8, 8].flatten()[0]) != ignore, name
    assert torch.equal(out["normals"][:, 0, 0], torch.zeros(3))
    norms = out["normals"].norm(dim=0)
    invalid = out["semseg"] == 255
    assert invalid.sum() > 0
    torch.testing.assert_close(norms[~invalid], torch.ones(int((~invalid).sum())))
    assert torch.equal(norms[invalid], torch.zeros(int(invalid.sum())))
    assert torch.equal(out["depth"][0] == 0, invalid)


def test_scale_two_doubles_size_and_halves_depth():
    s = make_sample()
    out = geometry(scale_range=(2.0, 2.0))(s)
    up = lambda a: np.repeat(np.repeat(a, 2, axis=0), 2, axis=1)
    assert out["meta"]["aug"]["scale"] == 2.0
    assert out["image"].shape == (3, 16, 16)
    assert torch.equal(out["semseg"], torch.from_numpy(up(s["semseg"][..., 0]).astype(np.int64)))
    assert torch.equal(out["depth"], chw(up(s["depth"]) / 2.0))
    assert torch.equal(out["normals"], chw(up(s["normals"])))


def test_padding_uses_each_tasks_ignore_value_and_mean_image():
    s = make_sample()
    out = build_transforms(make_tasks(), train=True, crop_size=(12, 12), scale_range=None,
                           hflip=False, color_jitter=False, seed=0)(s)
    inside = out["semseg"] != 255
    assert int(inside.sum()) == 64  # exactly the 8×8 input survives, the rest is padding
    rows, cols = torch.nonzero(inside).T
    top, left = int(rows.min()), int(cols.min())
    window = (slice(top, top + 8), slice(left, left + 8))
    assert torch.equal(out["semseg"][window], torch.from_numpy(s["semseg"][..., 0]).long())
    assert torch.equal(out["depth"][0][~inside], torch.zeros(144 - 64))
    assert torch.equal(out["normals"][:, ~inside], torch.zeros(3, 144 - 64))
    assert torch.equal(out["depth"][0][window], torch.from_numpy(s["depth"][..., 0]))
    # the image is padded with the mean colour, i.e. ~0 after standardisation (uint8 rounding)
    assert out["image"][:, ~inside].abs().max() < 0.5 / 255 / min(IMAGENET_STD) + 1e-6
    expected = (s["image"] / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    torch.testing.assert_close(out["image"][:, window[0], window[1]],
                               chw(expected.astype(np.float32)), atol=1e-5, rtol=0)


def test_eval_pads_bottom_right_without_resizing_and_rejects_crops():
    s = make_sample(6, 7)
    tf = build_transforms(make_tasks(), train=False, crop_size=None, pad_to=(8, 8), **NO_NORM)
    out = tf(s)
    assert torch.equal(out["semseg"][:6, :7], torch.from_numpy(s["semseg"][..., 0]).long())
    assert (out["semseg"][6:] == 255).all() and (out["semseg"][:, 7:] == 255).all()
    assert (out["depth"][:, 6:] == 0).all() and (out["normals"][:, :, 7:] == 0).all()
    assert out["meta"]["aug"]["input_size"] == (6, 7)
    with pytest.raises(ValueError, match=r"larger than pad_to=\(4, 4\)"):
        build_transforms(make_tasks(), train=False, crop_size=None, pad_to=4)(s)
    with pytest.raises(ValueError, match="crop_size=.*is for training"):
        build_transforms(make_tasks(), train=False, crop_size=(4, 4))
    with pytest.raises(ValueError, match="pad_to=.*is for evaluation"):
        build_transforms(make_tasks(), train=True, crop_size=(4, 4), pad_to=(8, 8))


@pytest.mark.parametrize("seed", range(6))
def test_random_pipeline_keeps_label_values_nearest(seed):
    s = make_sample(12, 12, seed=seed)
    tf = build_transforms(make_tasks(), train=True, crop_size=(10, 10), rotate_deg=25.0,
                          seed=seed)
    out = tf(s)
    aug = out["meta"]["aug"]
    assert 0.5 <= aug["scale"] <= 2.0 and -25.0 <= aug["angle"] <= 25.0
    values = set(out["semseg"].unique().tolist())
    assert values <= set(np.unique(s["semseg"]).tolist()) | {255}
    depth = out["depth"][out["depth"] != 0].numpy()
    source = s["depth"].ravel() / np.float32(aug["scale"])
    assert np.isin(depth, source).all()  # every depth is an input depth over the scale
    norms = out["normals"].norm(dim=0)
    assert torch.all(((norms - 1).abs() < 1e-5) | (norms == 0))
    assert out["image"].dtype == torch.float32 and out["image"].shape == (3, 10, 10)


def test_seed_makes_draws_repeatable():
    s = make_sample(12, 12)
    kw = {"crop_size": (10, 10), "rotate_deg": 20.0}
    a = build_transforms(make_tasks(), train=True, seed=5, **kw)
    b = build_transforms(make_tasks(), train=True, seed=5, **kw)
    first = [a(s)["meta"]["aug"] for _ in range(3)]
    assert first == [b(s)["meta"]["aug"] for _ in range(3)]
    b.set_seed(6)
    assert [b(s)["meta"]["aug"] for _ in range(3)] != first


def test_bad_samples_raise_clear_errors():
    tf = geometry()
    s = make_sample()
    del s["depth"]
    with pytest.raises(KeyError, match="no label 'depth' for task 'depth'"):
        tf(s)
    s = make_sample()
    s["normals"] = s["normals"][:, :7]
    with pytest.raises(ValueError, match=r"'normals'.*H×W×3 = \(8, 8, 3\).*got \(8, 7, 3\)"):
        tf(s)
    with pytest.raises(ValueError, match="scale_range"):
        build_transforms(make_tasks(), train=True, crop_size=4, scale_range=(2.0, 1.0))


# -- geometric consistency of depth and normals ------------------------------------------------
def reference_normals(depth: np.ndarray, f: float, c: float, step: int) -> np.ndarray:
    """Normals (x right, y up, z to the camera) from a depth map by central differences over
    ``step`` pixels of the back-projected points; NaN where undefined (independent reference)."""
    h, w = depth.shape
    v, u = np.mgrid[:h, :w].astype(np.float64)
    d = depth.astype(np.float64)
    points = np.stack([(u - c) / f * d, -(v - c) / f * d, -d], axis=-1)
    du = np.full_like(points, np.nan)
    dv = np.full_like(points, np.nan)
    du[:, step:-step] = points[:, 2 * step:] - points[:, :-2 * step]
    dv[step:-step] = points[2 * step:] - points[:-2 * step]
    n = np.cross(dv, du)  # rows grow downwards (-y), columns rightwards (+x): (-y)×(+x) = +z
    with np.errstate(invalid="ignore"):  # NaN borders stay NaN
        n /= np.linalg.norm(n, axis=-1, keepdims=True)
    invalid = d == 0
    for axis, shift in ((0, step), (0, -step), (1, step), (1, -step)):
        invalid |= np.roll(d == 0, shift, axis=axis)
    n[invalid] = np.nan
    return n


def angle_error_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Angle between unit vectors along the last axis, in degrees."""
    return np.degrees(np.arccos(np.clip((a * b).sum(-1), -1.0, 1.0)))


def plane_scene(size: int = 48) -> tuple[dict, float, float]:
    """A tilted plane seen by a pinhole camera with the principal point at the image centre."""
    f, c = float(size), (size - 1) / 2.0
    n = np.array([0.35, -0.25, 1.0]) / np.linalg.norm([0.35, -0.25, 1.0])
    v, u = np.mgrid[:size, :size].astype(np.float64)
    rays = np.stack([(u - c) / f, -(v - c) / f, -np.ones_like(u)], axis=-1)
    depth = (n @ np.array([0.0, 0.0, -4.0])) / (rays @ n)  # n·(d r) = n·p0
    assert depth.min() > 0
    sample = {"image": np.zeros((size, size, 3), np.uint8),
              "depth": depth[..., None].astype(np.float32),
              "normals": np.broadcast_to(n, (size, size, 3)).astype(np.float32)}
    return sample, f, c


def compare(out: dict, f: float, c: float, step: int) -> np.ndarray:
    """Angle errors between the transformed normals label and normals of the transformed depth."""
    label = out["normals"].numpy().transpose(1, 2, 0).astype(np.float64)
    derived = reference_normals(out["depth"][0].numpy(), f, c, step)
    ok = np.isfinite(derived).all(-1) & (np.linalg.norm(label, axis=-1) > 0)
    assert ok.sum() > 100
    return angle_error_deg(label[ok], derived[ok])


def test_plane_normals_follow_depth_through_flip_and_rotation():
    sample, f, c = plane_scene()
    tasks = {"depth": build_task("depth"), "normals": build_task("normals")}
    base = {"crop_size": None, "scale_range": None, "seed": 0, **NO_NORM}

    # the reference itself: exact on the untouched plane (up to float32 depths: ~0.002°)
    assert compare({k: chw(v) for k, v in sample.items()}, f, c, 1).max() < 0.01
    # a flip about the principal point mirrors the scene: exact (pixels are only permuted)
    out = build_transforms(tasks, train=True, hflip=1.0, **base)(sample)
    assert compare(out, f, c, 1).max() < 0.01
    # 90°: pixels permuted, exact again
    out = build_transforms(tasks, train=True, hflip=False, rotate_deg=(90, 90), **base)(sample)
    assert compare(out, f, c, 1).max() < 0.01
    # 30° then flip: nearest resampling puts each depth up to 0.71 px off its ray, so finite
    # differences (over ±6 px) carry a little noise: measured median 0.87°, max 1.28°. The wrong
    # rotation sense is off by the 60° turn of the normal's in-plane part: ≈ 23°.
    tf = build_transforms(tasks, train=True, hflip=1.0, rotate_deg=(30, 30), **base)
    out = tf(sample)
    assert out["meta"]["aug"]["angle"] == pytest.approx(30.0)
    err = compare(out, f, c, 6)
    assert np.median(err) < 1.5 and err.max() < 2.0
    wrong = sample | {"normals": tasks["normals"].rotate_label(sample["normals"], -60.0)}
    assert np.median(compare(tf(wrong), f, c, 6)) > 15.0


def smooth_pixels(normals: np.ndarray, step: int) -> np.ndarray:
    """Pixels whose labelled normal is within 1° of every labelled normal ±``step`` px around
    (so finite differences over that window see one smooth surface)."""
    ok = np.linalg.norm(normals, axis=-1) > 0
    for dv in range(-step, step + 1):
        for du in range(-step, step + 1):
            near = np.roll(normals, (dv, du), axis=(0, 1))
            ok &= (normals * near).sum(-1) > np.cos(np.radians(1.0))
    ok[:step] = ok[-step:] = ok[:, :step] = ok[:, -step:] = False
    return ok


@pytest.mark.parametrize("scene_seed", [0, 1])
def test_synthetic_scene_normals_follow_depth_through_flip_and_rotation(scene_seed):
    scene = render_scene(scene_seed, 64)
    fx, fy, cx, cy = (float(v) for v in scene["intrinsics"])
    assert fx == fy and cx == cy == 31.5  # principal point at the centre: rotations keep it
    tasks = {"depth": build_task("depth"), "normals": build_task("normals")}
    sample = {k: scene[k] for k in ("image", "depth", "normals")}
    tf = build_transforms(tasks, train=True, crop_size=None, scale_range=None, hflip=1.0,
                          rotate_deg=(30, 30), seed=0, **NO_NORM)

    def median_error(out: dict) -> float:
        label = out["normals"].numpy().transpose(1, 2, 0).astype(np.float64)
        derived = reference_normals(out["depth"][0].numpy(), fx, cx, step=3)
        ok = smooth_pixels(label, 3) & np.isfinite(derived).all(-1)
        assert ok.sum() > 500
        return float(np.median(angle_error_deg(label[ok], derived[ok])))

    # measured: 0.00–0.01° untouched; about 1.3° after flip + 30° (nearest resampling noise
    # over ±3 px); 15–55° (depending on how much the surfaces face the camera) if the rotation
    # turned the normals the wrong way
    assert median_error({k: chw(sample[k]) for k in ("depth", "normals")}) < 0.05
    right = median_error(tf(sample))
    assert right < 2.5
    wrong = sample | {"normals": tasks["normals"].rotate_label(sample["normals"], -60.0)}
    assert median_error(tf(wrong)) > max(10.0, 5 * right)
