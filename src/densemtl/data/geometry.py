"""Camera geometry shared by datasets, transforms and tests: back-projection, normals from depth.

Camera frame (the convention of every ``normals`` label in densemtl): x to the right in the
image, y up in the image, z towards the camera, so the camera looks along -z and a point in front
of it at depth ``d`` has z = -d. Pixel (row v, column u) is centred on image coordinates (u, v),
so with intrinsics (fx, fy, cx, cy) its viewing ray is ((u - cx) / fx, -(v - cy) / fy, -1).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _depth_2d(depth: np.ndarray) -> np.ndarray:
    """``H×W`` float64 view of an ``H×W`` or ``H×W×1`` depth map; anything else is an error."""
    d = np.asarray(depth)
    if d.ndim == 3 and d.shape[2] == 1:
        d = d[..., 0]
    if d.ndim != 2:
        raise ValueError(f"depth must be H×W or H×W×1, got shape {np.shape(depth)}")
    return d.astype(np.float64)


def _intrinsics(intrinsics: Sequence[float] | np.ndarray) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) as floats, with positive focal lengths."""
    k = np.asarray(intrinsics, dtype=np.float64).reshape(-1)
    if k.size != 4 or not np.all(np.isfinite(k)) or k[0] <= 0 or k[1] <= 0:
        raise ValueError(f"intrinsics must be 4 finite numbers (fx>0, fy>0, cx, cy), got {k}")
    return float(k[0]), float(k[1]), float(k[2]), float(k[3])


def pixel_rays(height: int, width: int, intrinsics: Sequence[float] | np.ndarray) -> np.ndarray:
    """``H×W×3`` camera-frame viewing rays scaled to z = -1, so ``depth * ray`` is the 3D point."""
    fx, fy, cx, cy = _intrinsics(intrinsics)
    u = (np.arange(width, dtype=np.float64) - cx) / fx
    v = -(np.arange(height, dtype=np.float64) - cy) / fy
    rays = np.empty((height, width, 3))
    rays[..., 0] = u[None, :]
    rays[..., 1] = v[:, None]
    rays[..., 2] = -1.0
    return rays


def backproject(depth: np.ndarray, intrinsics: Sequence[float] | np.ndarray) -> np.ndarray:
    """``H×W×3`` float64 camera-frame points of a z-depth map (depth = distance along the axis)."""
    d = _depth_2d(depth)
    return d[..., None] * pixel_rays(d.shape[0], d.shape[1], intrinsics)


def normals_from_depth(
    depth: np.ndarray, intrinsics: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Unit camera-frame normals (``float32 H×W×3``) from a depth map by central differences.

    The normal is ``dP/dv × dP/du`` of the back-projected points, which for the convention above
    points towards the camera side of the surface. Pixels where a difference would use an invalid
    depth (≤ 0 or not finite) or the image border get the zero vector, the "invalid" normal of
    the published datasets. Across depth discontinuities the result is meaningless: mask those.
    """
    d = _depth_2d(depth)
    points = d[..., None] * pixel_rays(d.shape[0], d.shape[1], intrinsics)
    valid = np.isfinite(d) & (d > 0)
    out = np.zeros(d.shape + (3,), dtype=np.float32)
    if d.shape[0] < 3 or d.shape[1] < 3:
        return out
    du = points[1:-1, 2:] - points[1:-1, :-2]
    dv = points[2:, 1:-1] - points[:-2, 1:-1]
    n = np.cross(dv, du)
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    inner = (
        valid[1:-1, 1:-1] & valid[1:-1, 2:] & valid[1:-1, :-2] & valid[2:, 1:-1] & valid[:-2, 1:-1]
    )
    ok = inner & (norm[..., 0] > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        unit = np.where(ok[..., None], n / np.where(norm > 0, norm, 1.0), 0.0)
    out[1:-1, 1:-1] = unit.astype(np.float32)
    return out


def angle_between_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel angle in degrees between two fields of (not necessarily unit) vectors ``…×3``."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    cos = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))
