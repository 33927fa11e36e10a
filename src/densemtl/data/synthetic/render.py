"""Rendering one scene into the image and every exact label (ray casting, edges, keypoints,
shading), and ``render_scene`` / ``image_seed``."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from densemtl.data.geometry import pixel_rays
from densemtl.data.synthetic.primitives import Plane, Primitive
from densemtl.data.synthetic.scene import (
    FIRST_OBJECT_INSTANCE,
    PERSON_CLASS,
    Camera,
    Scene,
    sample_scene,
)

IGNORE = 255
BASE_KEYS: tuple[str, ...] = (
    "image", "semseg", "human_parts", "edge", "normals", "sal", "depth", "albedo", "instance",
    "intrinsics",
)
EXTRA_KEYS: tuple[str, ...] = (
    "curvature", "reshading", "edge2d", "edge3d", "keypoints2d", "keypoints3d",
)
#: smallest share of the image an object or figure must cover to be the salient one
SALIENT_MIN_AREA = 0.02
_RESHADING_LIGHT = np.array([0.3, 0.4, 1.0]) / np.linalg.norm([0.3, 0.4, 1.0])


def _screen_rect(prim: Primitive, cam: Camera, h: int, w: int) -> tuple[int, int, int, int]:
    """Pixel rectangle (v0, v1, u0, u1) that contains the primitive's projection (conservative)."""
    if not np.isfinite(prim.bound):
        return 0, h, 0, w
    corners = prim.center + prim.bound * np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1)
                                for sz in (-1, 1)])
    pc = (corners - cam.position) @ cam.rotation
    if np.any(pc[:, 2] > -1e-3):
        return 0, h, 0, w
    us = cam.fx * pc[:, 0] / -pc[:, 2] + cam.cx
    vs = -cam.fy * pc[:, 1] / -pc[:, 2] + cam.cy
    u0 = int(np.clip(np.floor(us.min()) - 1, 0, w))
    u1 = int(np.clip(np.ceil(us.max()) + 2, 0, w))
    v0 = int(np.clip(np.floor(vs.min()) - 1, 0, h))
    v1 = int(np.clip(np.ceil(vs.max()) + 2, 0, h))
    return v0, v1, u0, u1


def _shift(a: np.ndarray, dv: int, du: int, fill: float) -> np.ndarray:
    """``out[v, u] = a[v + dv, u + du]``, ``fill`` outside the image."""
    out = np.full_like(a, fill)
    h, w = a.shape
    out[max(0, -dv):h - max(0, dv), max(0, -du):w - max(0, du)] = \
        a[max(0, dv):h - max(0, -dv), max(0, du):w - max(0, -du)]
    return out


_NEIGHBOURS = ((0, 1), (0, -1), (1, 0), (-1, 0))


def boundary_edges(ids: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """``bool H×W``: the nearer pixel of every 4-neighbour pair with different ``ids``.

    Depth ties go to the left / top pixel so that every boundary gets exactly one side marked.
    """
    edge = np.zeros(ids.shape, dtype=bool)
    for axis in (0, 1):
        a = ids[:-1, :] if axis == 0 else ids[:, :-1]
        b = ids[1:, :] if axis == 0 else ids[:, 1:]
        za = depth[:-1, :] if axis == 0 else depth[:, :-1]
        zb = depth[1:, :] if axis == 0 else depth[:, 1:]
        diff = a != b
        first = diff & (za <= zb)
        second = diff & (zb < za)
        if axis == 0:
            edge[:-1, :] |= first
            edge[1:, :] |= second
        else:
            edge[:, :-1] |= first
            edge[:, 1:] |= second
    return edge


def _occlusion_edges(prim_id: np.ndarray, depth: np.ndarray, occluder: np.ndarray,
                     rel: float = 0.02) -> np.ndarray:
    """Depth-discontinuity pixels (near side) between different primitives; see module doc.

    ``occluder[k]`` says whether primitive k can occlude anything: the room is a convex box
    seen from inside, so its faces never do and room creases are excluded exactly.
    """
    inv = 1.0 / depth
    out = np.zeros(depth.shape, dtype=bool)
    for dv, du in _NEIGHBOURS:
        q_id = _shift(prim_id, dv, du, -1)
        q_inv = _shift(inv, dv, du, np.nan)
        p2_id = _shift(prim_id, -dv, -du, -1)  # the pixel before p, on p's side
        p2_inv = _shift(inv, -dv, -du, np.nan)
        q2_id = _shift(prim_id, 2 * dv, 2 * du, -1)  # the pixel after q, on q's side
        q2_inv = _shift(inv, 2 * dv, 2 * du, np.nan)
        with np.errstate(invalid="ignore"):
            cand = occluder[prim_id] & (q_id >= 0) & (q_id != prim_id)
            cand &= inv > q_inv * (1.0 + rel)
            near_ext = 2 * inv - p2_inv  # p's surface continued to q's ray (inverse depth)
            near_ok = (p2_id != prim_id) | (near_ext > q_inv * (1.0 + rel))
            far_ext = 2 * q_inv - q2_inv  # q's surface continued to p's ray
            far_ok = (q2_id != q_id) | (far_ext < inv / (1.0 + rel))
        out |= cand & near_ok & far_ok
    return out


def _harris(gray: np.ndarray) -> np.ndarray:
    ix = ndimage.sobel(gray, axis=1)
    iy = ndimage.sobel(gray, axis=0)
    sxx = ndimage.gaussian_filter(ix * ix, 1.0)
    syy = ndimage.gaussian_filter(iy * iy, 1.0)
    sxy = ndimage.gaussian_filter(ix * iy, 1.0)
    r = np.maximum(sxx * syy - sxy * sxy - 0.05 * (sxx + syy) ** 2, 0.0)
    peak = r.max()
    return r / peak if peak > 0 else r


def _keypoint_map(scene: Scene, depth: np.ndarray) -> np.ndarray:
    """Gaussian blobs at the projections of visible 3D keypoints, values in [0, 1]."""
    cam = scene.camera
    h, w = depth.shape
    sigma = max(1.0, w / 64)
    vv, uu = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.zeros((h, w))
    for prim in scene.prims:
        for point, below in prim.keypoints():
            pc = cam.rotation.T @ (point - cam.position)
            if pc[2] >= -1e-3:
                continue
            z = -pc[2]
            u = cam.fx * pc[0] / z + cam.cx
            v = -cam.fy * pc[1] / z + cam.cy
            iu, iv = int(round(u)), int(round(v))
            if not (0 <= iu < w and 0 <= iv < h) or z > depth[iv, iu] + below + 0.05:
                continue
            v0, v1 = max(0, iv - int(4 * sigma) - 1), min(h, iv + int(4 * sigma) + 2)
            u0, u1 = max(0, iu - int(4 * sigma) - 1), min(w, iu + int(4 * sigma) + 2)
            blob = np.exp(-((uu[v0:v1, u0:u1] - u) ** 2 + (vv[v0:v1, u0:u1] - v) ** 2)
                          / (2 * sigma**2))
            out[v0:v1, u0:u1] = np.maximum(out[v0:v1, u0:u1], blob)
    return out


def _cast(scene: Scene, rays_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-hit distance and primitive index per pixel (``H×W`` each)."""
    h, w, _ = rays_world.shape
    o = scene.camera.position
    t_best = np.full((h, w), np.inf)
    prim_id = np.full((h, w), -1, dtype=np.int64)
    for k, prim in enumerate(scene.prims):
        v0, v1, u0, u1 = _screen_rect(prim, scene.camera, h, w)
        if v1 <= v0 or u1 <= u0:
            continue
        t = prim.intersect(o, rays_world[v0:v1, u0:u1].reshape(-1, 3)).reshape(v1 - v0, u1 - u0)
        tb = t_best[v0:v1, u0:u1]
        better = t < tb
        tb[better] = t[better]
        prim_id[v0:v1, u0:u1][better] = k
    return t_best, prim_id


def most_conspicuous(image: np.ndarray, instance: np.ndarray, candidate: np.ndarray) -> int:
    """The candidate instance whose mean colour lies farthest (Euclidean, sRGB in [0, 1]) from
    the mean colour of all other pixels: global colour contrast. ``candidate[i]`` says whether
    instance id ``i`` may be chosen."""
    rgb = image.reshape(-1, 3).astype(np.float64) / 255.0
    ids = instance.ravel()
    area = np.bincount(ids, minlength=len(candidate)).astype(np.float64)
    sums = np.stack([np.bincount(ids, rgb[:, c], minlength=len(candidate)) for c in range(3)], 1)
    chosen = np.flatnonzero(candidate)
    inside = sums[chosen] / area[chosen, None]
    rest = (sums.sum(0) - sums[chosen]) / (len(ids) - area[chosen, None])
    return int(chosen[np.argmax(np.linalg.norm(inside - rest, axis=1))])


def _render(scene: Scene, h: int, w: int, rng: np.random.Generator,
            extras: bool) -> dict[str, np.ndarray] | None:
    """All labels of one sampled scene, or None when no object covers SALIENT_MIN_AREA."""
    cam = scene.camera
    rays_cam = pixel_rays(h, w, (cam.fx, cam.fy, cam.cx, cam.cy))
    ray_len = np.linalg.norm(rays_cam, axis=-1)
    rays_world = (rays_cam / ray_len[..., None]) @ cam.rotation.T
    t_best, prim_id = _cast(scene, rays_world)
    if np.any(prim_id < 0):
        raise RuntimeError("a camera ray left the closed room; the scene sampler is broken")
    prims = scene.prims
    instance = np.array([p.instance for p in prims], dtype=np.int32)[prim_id]
    cls = np.array([p.class_id for p in prims], dtype=np.uint8)[prim_id]
    part = np.array([p.part for p in prims], dtype=np.uint8)[prim_id]

    person = cls == PERSON_CLASS
    areas = np.bincount(instance.ravel(), minlength=FIRST_OBJECT_INSTANCE + 1)
    areas[:FIRST_OBJECT_INSTANCE] = 0
    if areas.max() < SALIENT_MIN_AREA * h * w:
        return None

    depth = t_best / ray_len
    flat_id = prim_id.ravel()
    points = cam.position + t_best.reshape(-1, 1) * rays_world.reshape(-1, 3)
    normals_w = np.zeros((h * w, 3))
    curvature = np.zeros((h * w, 2))
    albedo = np.zeros((h * w, 3))
    order = np.argsort(flat_id, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(flat_id, minlength=len(prims)))])
    for k, prim in enumerate(prims):
        idx = order[bounds[k]:bounds[k + 1]]
        if len(idx) == 0:
            continue
        p = points[idx]
        normals_w[idx], curvature[idx] = prim.surface(p)
        albedo[idx] = prim.texture.albedo(prim.local(p))
    albedo = np.clip(albedo, 0.0, 1.0)
    normals_w /= np.linalg.norm(normals_w, axis=1, keepdims=True)
    normals_cam = normals_w @ cam.rotation

    lambert = np.maximum(normals_w @ scene.light, 0.0)
    shade = scene.ambient + (1.0 - scene.ambient) * lambert
    linear = albedo * shade[:, None] * scene.light_color
    img = np.clip(linear, 0.0, 1.0) ** (1 / 2.2) + rng.normal(0.0, 0.01, linear.shape)
    image = np.round(np.clip(img, 0.0, 1.0) * 255).astype(np.uint8).reshape(h, w, 3)
    salient = instance == most_conspicuous(image, instance, areas >= SALIENT_MIN_AREA * h * w)

    parts = part[..., None] if person.any() else np.full((h, w, 1), IGNORE, dtype=np.uint8)
    out: dict[str, np.ndarray] = {
        "image": image,
        "semseg": cls[..., None],
        "human_parts": parts,
        "edge": boundary_edges(instance, depth)[..., None].astype(np.float32),
        "normals": normals_cam.reshape(h, w, 3).astype(np.float32),
        "sal": salient[..., None].astype(np.float32),
        "depth": depth[..., None].astype(np.float32),
        "albedo": albedo.reshape(h, w, 3).astype(np.float32),
        "instance": instance,
        "intrinsics": np.array([cam.fx, cam.fy, cam.cx, cam.cy], dtype=np.float32),
    }
    if extras:
        curv = np.sort(curvature, axis=1)[:, ::-1]
        occluder = np.array([not isinstance(p, Plane) for p in prims])
        gray = image.astype(np.float64).mean(axis=2) / 255.0
        grad = np.hypot(ndimage.sobel(gray, axis=1), ndimage.sobel(gray, axis=0))
        out["curvature"] = curv.reshape(h, w, 2).astype(np.float32)
        reshading = 0.2 + 0.8 * np.maximum(normals_cam @ _RESHADING_LIGHT, 0.0)
        out["reshading"] = reshading.reshape(h, w, 1).astype(np.float32)
        out["edge2d"] = np.clip(grad / (4 * np.sqrt(2)), 0, 1)[..., None].astype(np.float32)
        out["edge3d"] = _occlusion_edges(prim_id, depth, occluder)[..., None].astype(np.float32)
        out["keypoints2d"] = _harris(gray)[..., None].astype(np.float32)
        out["keypoints3d"] = _keypoint_map(scene, depth)[..., None].astype(np.float32)
    return out


def image_hw(size: int | Sequence[int]) -> tuple[int, int]:
    """(height, width) of an image ``size`` given as one side or (height, width)."""
    if isinstance(size, (int, np.integer)):
        h = w = int(size)
    else:
        dims = tuple(int(s) for s in size)
        if len(dims) != 2:
            raise ValueError(f"size must be an int or (height, width), got {size!r}")
        h, w = dims
    if h < 8 or w < 8:
        raise ValueError(f"image size must be at least 8×8 pixels, got {size!r}")
    return h, w


def render_scene(seed: int, size: int | Sequence[int] = 96,
                 extras: bool = False) -> dict[str, np.ndarray]:
    """Render one random scene and all its labels; the same ``seed`` gives identical arrays.

    ``size`` is the image side (or ``(height, width)``). Returns ``image`` and the labels listed
    in the module docstring in the numpy label convention, plus ``instance`` and ``intrinsics``;
    with ``extras`` also the LSB study's Taskonomy-like labels.
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    h, w = image_hw(size)
    rng = np.random.default_rng(int(seed))
    for _ in range(50):
        out = _render(sample_scene(rng, h, w), h, w, rng, extras)
        if out is not None:
            return out
    raise RuntimeError(f"seed {seed}: no scene with a visible object in 50 draws")


def image_seed(seed: int, index: int) -> int:
    """Seed of image ``index`` of a dataset with master ``seed`` (independent of its length)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])
