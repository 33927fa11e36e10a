"""Procedural indoor scenes with exact multi-task labels (numpy only, deterministic per seed).

Each image is ray cast analytically: a closed box room (floor, ceiling, four walls) holding
spheres, oriented boxes, upright cylinders and cones and 0–2 articulated figures built from a
head sphere, a torso capsule, capsule limbs, hand spheres and foot boxes. Every pixel's ray keeps
its nearest hit, which gives depth, normals, surface/instance/class/part ids and curvature in
closed form. Albedo comes from procedural solid textures (plain, stripes, checkers, value noise)
that change colour only, never a label; shading is Lambertian under one directional light plus
ambient (no shadows), then gamma 2.2 and a little Gaussian noise.

Conventions (all exact, the tests rely on them):

* Camera frame: x right in the image, y up in the image, z towards the camera (the camera looks
  along -z). A horizontal image flip negates normals' x; rotating the image content
  counter-clockwise by θ rotates (x, y) counter-clockwise by θ. Pixel (row v, column u) is centred
  on image coordinates (u, v) and ``intrinsics = (fx, fy, cx, cy)`` with cx = (W - 1) / 2,
  cy = (H - 1) / 2, so its ray is ((u - cx) / fx, -(v - cy) / fy, -1); see
  :mod:`densemtl.data.geometry`. Visible surfaces face the camera: ⟨n, ray⟩ < 0 at every pixel.
  Under perspective that is not n_z > 0 everywhere: surfaces seen away from the image centre at
  a grazing angle have n_z < 0 (the ceiling when the camera pitches down, a side wall the camera
  yaws away from, the inner rim of an off-centre sphere), about 15 % of pixels here.
* ``depth``: metric z-depth (distance along the optical axis), about 1–9 m.
* ``semseg``: indices into :data:`SYNTHETIC_CLASSES`; class 0 is "wall". Every pixel is labelled
  (the room is closed), so no pixel carries the ignore value 255.
* ``instance`` (``int32 H×W``): room surfaces have ids 1..6 in the order of
  :data:`ROOM_SURFACES`; objects and figures have ids ≥ 7 (one id per figure); 0 is never used.
* ``edge``: for every pair of 4-neighbours with different instance ids (so wall/wall and
  wall/floor creases count, texture never does) the nearer pixel is marked (ties: the left / top
  one). Edges sit on the occluding side, one pixel thick, and every edge pixel has a 4-neighbour
  of another instance.
* ``human_parts``: 0 background, 1..6 = head, torso, upper arms, lower arms + hands, upper legs,
  lower legs + feet (the PASCAL grouping). Parts are labelled on the figures' visible pixels; an
  image with no visible figure pixel is all 255 (ignore), as for PASCAL images without persons.
* ``sal``: all visible figure pixels if any; otherwise the object (non-room instance) with the
  most visible pixels (ties: the lower instance id). Never empty: a layout where no object is
  visible is redrawn from the same random stream.
* extras: ``curvature`` = principal curvatures (k1 ≥ k2, 1/m, positive where the surface bends
  away from its normal: 1/r on spheres, (1/r, 0) on cylinders, (cos α / ρ, 0) on cones clipped at
  20, 0 on planes); ``reshading`` = 0.2 + 0.8·max(0, ⟨n, l⟩) for a fixed camera-frame light l;
  ``edge2d`` = Sobel magnitude of the grey image divided by its maximum 4√2; ``edge3d`` = nearer
  pixel of a 4-neighbour pair on two different primitives where depth jumps by more than 2 % and
  neither surface, extrapolated in inverse depth, continues into the other (contact lines do not
  count; room faces never occlude, so room creases never do); ``keypoints2d`` = Harris response
  (k = 0.05, σ = 1) clipped at 0 and divided by its image maximum; ``keypoints3d`` = max of
  Gaussian blobs (σ = max(1, W/64) px) at the visible room and box corners, cone apexes and
  figure joints.

Datasets: :func:`image_seed` makes image i of a dataset depend only on (seed, i), never on n;
:func:`write_cache` renders n images into a directory of stacked ``.npy`` files (atomically, in
parallel) and :class:`SyntheticScenes` serves splits of it as a torch ``Dataset``.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import re
import shutil
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from torch.utils.data import Dataset

from densemtl.data.datamodule import register_dataset
from densemtl.data.geometry import pixel_rays

VERSION = 1
SYNTHETIC_CLASSES: tuple[str, ...] = (
    "wall", "floor", "ceiling", "sphere", "box", "cylinder", "cone", "person",
)
HUMAN_PART_NAMES: tuple[str, ...] = (
    "background", "head", "torso", "upper_arm", "lower_arm", "upper_leg", "lower_leg",
)
ROOM_SURFACES: tuple[str, ...] = (
    "floor", "ceiling", "back_wall", "left_wall", "right_wall", "front_wall",
)
PERSON_CLASS = SYNTHETIC_CLASSES.index("person")
FIRST_OBJECT_INSTANCE = len(ROOM_SURFACES) + 1
IGNORE = 255
BASE_KEYS: tuple[str, ...] = (
    "image", "semseg", "human_parts", "edge", "normals", "sal", "depth", "albedo", "instance",
    "intrinsics",
)
EXTRA_KEYS: tuple[str, ...] = (
    "curvature", "reshading", "edge2d", "edge3d", "keypoints2d", "keypoints3d",
)
ASTMT_TASKS: tuple[str, ...] = (
    "semseg", "human_parts", "edge", "normals", "sal", "depth", "albedo",
)

_WALL, _FLOOR, _CEILING, _SPHERE, _BOX, _CYLINDER, _CONE = range(7)
_HEAD, _TORSO, _UPPER_ARM, _LOWER_ARM, _UPPER_LEG, _LOWER_LEG = range(1, 7)
_INF = np.inf
_CURVATURE_CLIP = 20.0
_RESHADING_LIGHT = np.array([0.3, 0.4, 1.0]) / np.linalg.norm([0.3, 0.4, 1.0])


# ---------------------------------------------------------------------------------------------
# textures
# ---------------------------------------------------------------------------------------------
@dataclass
class Texture:
    """A procedural solid texture: albedo as a function of a surface point's local coordinates."""

    kind: str
    color_a: np.ndarray
    color_b: np.ndarray
    scale: float = 0.3
    direction: np.ndarray = field(default_factory=lambda: np.array([1.0, 0.0, 0.0]))
    lattice: np.ndarray | None = None

    def albedo(self, p: np.ndarray) -> np.ndarray:
        """``M×3`` albedo in [0, 1] at local points ``p`` (``M×3``)."""
        if self.kind == "plain":
            w = np.zeros(len(p))
        elif self.kind == "stripes":
            w = (np.floor(p @ self.direction / self.scale) % 2.0).astype(np.float64)
        elif self.kind == "checkers":
            w = np.floor(p / self.scale).sum(axis=1) % 2.0
        elif self.kind == "noise":
            w = _value_noise(p / self.scale, self.lattice)
        else:
            raise ValueError(f"unknown texture kind {self.kind!r}; "
                             "expected plain, stripes, checkers or noise")
        return self.color_a + w[:, None] * (self.color_b - self.color_a)


def _value_noise(q: np.ndarray, lattice: np.ndarray) -> np.ndarray:
    """Smoothly interpolated lattice noise in [0, 1] at points ``q`` (``M×3``, lattice units)."""
    g = lattice.shape[0]
    base = np.floor(q)
    f = q - base
    f = f * f * (3.0 - 2.0 * f)
    i = base.astype(np.int64) % g
    j = (i + 1) % g
    out = np.zeros(len(q))
    for cx in (0, 1):
        wx = f[:, 0] if cx else 1.0 - f[:, 0]
        ix = j[:, 0] if cx else i[:, 0]
        for cy in (0, 1):
            wy = f[:, 1] if cy else 1.0 - f[:, 1]
            iy = j[:, 1] if cy else i[:, 1]
            for cz in (0, 1):
                wz = f[:, 2] if cz else 1.0 - f[:, 2]
                iz = j[:, 2] if cz else i[:, 2]
                out += wx * wy * wz * lattice[ix, iy, iz]
    return out


def _random_color(rng: np.random.Generator, low: float = 0.15, high: float = 0.9) -> np.ndarray:
    return rng.uniform(low, high, size=3)


def _random_texture(rng: np.random.Generator, kinds: Sequence[str], scale: tuple[float, float],
                    base: np.ndarray | None = None) -> Texture:
    """A texture of a random kind among ``kinds`` with two contrasting colours."""
    kind = str(rng.choice(list(kinds)))
    a = _random_color(rng) if base is None else base
    b = np.clip(a * rng.uniform(0.35, 0.75) + rng.uniform(-0.08, 0.08, 3), 0.0, 1.0)
    if rng.random() < 0.4:
        b = _random_color(rng)
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    return Texture(kind, a, b, float(rng.uniform(*scale)), direction, rng.random((8, 8, 8)))


# ---------------------------------------------------------------------------------------------
# primitives: every intersect() takes a shared ray origin o (3,) and unit directions d (M×3) and
# returns the distance of the first hit in front of the origin (inf where the ray misses);
# surface() returns unit outward normals and principal curvatures (k1 ≥ k2) at hit points.
# ---------------------------------------------------------------------------------------------
@dataclass
class _Primitive:
    class_id: int
    instance: int
    part: int
    texture: Texture
    center: np.ndarray
    bound: float  # radius of a sphere around ``center`` containing the primitive (inf: room)

    def keypoints(self) -> list[tuple[np.ndarray, float]]:
        """3D keypoints of this primitive with their depth below the visible surface."""
        return []

    def local(self, p: np.ndarray) -> np.ndarray:
        """Texture coordinates of world points ``p``."""
        return p - self.center


def _sphere_hit(o: np.ndarray, d: np.ndarray, c: np.ndarray, r: float) -> np.ndarray:
    oc = o - c
    b = d @ oc
    h = b * b - (oc @ oc - r * r)
    t = np.full(len(d), _INF)
    ok = h >= 0
    t0 = -b[ok] - np.sqrt(h[ok])
    t[ok] = np.where(t0 > 1e-9, t0, _INF)
    return t


@dataclass
class _Sphere(_Primitive):
    radius: float = 1.0

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        return _sphere_hit(o, d, self.center, self.radius)

    def surface(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = (p - self.center) / self.radius
        return n, np.full((len(p), 2), 1.0 / self.radius)


@dataclass
class _Capsule(_Primitive):
    a: np.ndarray = field(default_factory=lambda: np.zeros(3))
    b: np.ndarray = field(default_factory=lambda: np.zeros(3))
    radius: float = 0.1
    joint_depth: float = 0.0

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        # The first entry into a union of convex pieces is the earliest entry into any of them.
        axis = self.b - self.a
        length = float(np.linalg.norm(axis))
        u = axis / length
        oa = o - self.a
        du = d @ u
        d_perp = d - du[:, None] * u
        oa_perp = oa - (oa @ u) * u
        qa = (d_perp * d_perp).sum(1)
        qb = d_perp @ oa_perp
        qc = oa_perp @ oa_perp - self.radius**2
        h = qb * qb - qa * qc
        t = np.full(len(d), _INF)
        ok = (h >= 0) & (qa > 1e-12)
        t0 = (-qb[ok] - np.sqrt(h[ok])) / qa[ok]
        y = oa @ u + t0 * du[ok]
        t[ok] = np.where((t0 > 1e-9) & (y >= 0) & (y <= length), t0, _INF)
        t = np.minimum(t, _sphere_hit(o, d, self.a, self.radius))
        return np.minimum(t, _sphere_hit(o, d, self.b, self.radius))

    def surface(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        axis = self.b - self.a
        s = np.clip((p - self.a) @ axis / (axis @ axis), 0.0, 1.0)
        n = (p - (self.a + s[:, None] * axis)) / self.radius
        n /= np.linalg.norm(n, axis=1, keepdims=True)
        curv = np.zeros((len(p), 2))
        curv[:, 0] = 1.0 / self.radius
        curv[:, 1] = np.where((s > 0) & (s < 1), 0.0, 1.0 / self.radius)
        return n, curv

    def keypoints(self) -> list[tuple[np.ndarray, float]]:
        return [(self.a, self.joint_depth), (self.b, self.joint_depth)]


def _yaw_matrix(angle: float) -> np.ndarray:
    """Rotation about the world y axis by ``angle`` radians (right-handed)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


@dataclass
class _Box(_Primitive):
    half: np.ndarray = field(default_factory=lambda: np.ones(3))
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))  # local -> world

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        ol = self.rotation.T @ (o - self.center)
        dl = d @ self.rotation
        dl = np.where(np.abs(dl) < 1e-12, 1e-12, dl)
        t1 = (-self.half - ol) / dl
        t2 = (self.half - ol) / dl
        t_near = np.minimum(t1, t2).max(axis=1)
        t_far = np.maximum(t1, t2).min(axis=1)
        return np.where((t_near <= t_far) & (t_near > 1e-9), t_near, _INF)

    def surface(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = (p - self.center) @ self.rotation / self.half
        axis = np.abs(q).argmax(axis=1)
        nl = np.zeros_like(q)
        nl[np.arange(len(q)), axis] = np.sign(q[np.arange(len(q)), axis])
        return nl @ self.rotation.T, np.zeros((len(p), 2))

    def local(self, p: np.ndarray) -> np.ndarray:
        return (p - self.center) @ self.rotation

    def keypoints(self) -> list[tuple[np.ndarray, float]]:
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
        return [(self.center + self.rotation @ (s * self.half), 0.0) for s in signs]


@dataclass
class _UprightSolid(_Primitive):
    """A solid of revolution about a vertical axis; ``center`` is the middle of its axis."""

    radius: float = 0.3
    height: float = 1.0

    @property
    def base(self) -> np.ndarray:
        """Centre of the bottom disc."""
        return self.center - np.array([0.0, self.height / 2, 0.0])


@dataclass
class _Cylinder(_UprightSolid):
    """Upright cylinder standing on the floor."""

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        ol = o - self.base
        qa = d[:, 0] ** 2 + d[:, 2] ** 2
        qb = d[:, 0] * ol[0] + d[:, 2] * ol[2]
        qc = ol[0] ** 2 + ol[2] ** 2 - self.radius**2
        h = qb * qb - qa * qc
        t = np.full(len(d), _INF)
        ok = (h >= 0) & (qa > 1e-12)
        t0 = (-qb[ok] - np.sqrt(h[ok])) / qa[ok]
        y = ol[1] + t0 * d[ok, 1]
        t[ok] = np.where((t0 > 1e-9) & (y >= 0) & (y <= self.height), t0, _INF)
        if ol[1] > self.height:  # the top cap faces up, so only a camera above it sees it
            down = d[:, 1] < -1e-12
            tc = np.full(len(d), _INF)
            tc[down] = (self.height - ol[1]) / d[down, 1]
            x = ol[0] + tc * d[:, 0]
            z = ol[2] + tc * d[:, 2]
            inside = down & (x * x + z * z <= self.radius**2)
            t = np.where(inside, np.minimum(t, tc), t)
        return t

    def surface(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        q = p - self.base
        cap = q[:, 1] >= self.height - 1e-7
        n = np.zeros_like(q)
        rho = np.maximum(np.hypot(q[:, 0], q[:, 2]), 1e-12)
        n[:, 0] = q[:, 0] / rho
        n[:, 2] = q[:, 2] / rho
        n[cap] = (0.0, 1.0, 0.0)
        curv = np.zeros((len(p), 2))
        curv[~cap, 0] = 1.0 / self.radius
        return n, curv


@dataclass
class _Cone(_UprightSolid):
    """Upright cone, apex up, standing on the floor."""

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        # x² + z² = k²(h - y)²; the base faces the floor and is never seen from above it.
        k2 = (self.radius / self.height) ** 2
        ol = o - self.base
        w = self.height - ol[1]
        qa = d[:, 0] ** 2 + d[:, 2] ** 2 - k2 * d[:, 1] ** 2
        qb = d[:, 0] * ol[0] + d[:, 2] * ol[2] + k2 * w * d[:, 1]
        qc = ol[0] ** 2 + ol[2] ** 2 - k2 * w * w
        h = qb * qb - qa * qc
        t = np.full(len(d), _INF)
        ok = (h >= 0) & (np.abs(qa) > 1e-12)
        sq = np.sqrt(h[ok])
        for root in ((-qb[ok] - sq) / qa[ok], (-qb[ok] + sq) / qa[ok]):
            y = ol[1] + root * d[ok, 1]
            valid = (root > 1e-9) & (y >= 0) & (y <= self.height)
            t[ok] = np.minimum(t[ok], np.where(valid, root, _INF))
        return t

    def surface(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = self.radius / self.height
        q = p - self.base
        rho = np.maximum(np.hypot(q[:, 0], q[:, 2]), 1e-12)
        n = np.stack([q[:, 0] / rho, np.full(len(q), k), q[:, 2] / rho], axis=1)
        n /= np.sqrt(1.0 + k * k)
        curv = np.zeros((len(p), 2))
        curv[:, 0] = np.minimum(1.0 / (np.sqrt(1.0 + k * k) * rho), _CURVATURE_CLIP)
        return n, curv

    def keypoints(self) -> list[tuple[np.ndarray, float]]:
        return [(self.center + np.array([0.0, self.height / 2, 0.0]), 0.0)]


@dataclass
class _Plane(_Primitive):
    """A room face: the plane ⟨normal, x⟩ = offset, seen from the side its normal points to."""

    normal: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0, 0.0]))
    offset: float = 0.0
    corners: tuple[np.ndarray, ...] = ()

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        dn = d @ self.normal
        t = np.full(len(d), _INF)
        front = dn < -1e-12
        t[front] = (self.offset - o @ self.normal) / dn[front]
        return np.where(t > 1e-9, t, _INF)

    def surface(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.broadcast_to(self.normal, p.shape).copy(), np.zeros((len(p), 2))

    def local(self, p: np.ndarray) -> np.ndarray:
        return p

    def keypoints(self) -> list[tuple[np.ndarray, float]]:
        return [(c, 0.0) for c in self.corners]


# ---------------------------------------------------------------------------------------------
# scene sampling
# ---------------------------------------------------------------------------------------------
@dataclass
class _Camera:
    position: np.ndarray
    rotation: np.ndarray  # camera -> world
    fx: float
    fy: float
    cx: float
    cy: float


@dataclass
class _Scene:
    camera: _Camera
    prims: list[_Primitive]
    light: np.ndarray
    ambient: float
    light_color: np.ndarray


def _rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _room(rng: np.random.Generator) -> tuple[list[_Primitive], tuple[float, float, float, float]]:
    """The six room faces (instances 1..6) and the room extent (half width, height, back, front)."""
    half_w = rng.uniform(2.5, 3.5)
    height = rng.uniform(2.6, 3.2)
    back = -rng.uniform(5.5, 8.0)
    front = 0.6
    xs, ys, zs = (-half_w, half_w), (0.0, height), (back, front)
    corner = {(i, j, k): np.array([xs[i], ys[j], zs[k]]) for i in (0, 1) for j in (0, 1)
              for k in (0, 1)}
    wall_texture = _random_texture(rng, ["plain", "stripes", "noise", "plain"], (0.15, 0.6),
                                   base=rng.uniform(0.45, 0.9, 3))
    specs = [  # (class, normal, point on plane, corners on the face, texture)
        (_FLOOR, (0, 1, 0), 0.0, [c for key, c in corner.items() if key[1] == 0],
         _random_texture(rng, ["checkers", "stripes", "noise"], (0.25, 0.7))),
        (_CEILING, (0, -1, 0), -height, [c for key, c in corner.items() if key[1] == 1],
         _random_texture(rng, ["plain", "noise"], (0.5, 1.0), base=rng.uniform(0.7, 0.95, 3))),
        (_WALL, (0, 0, 1), back, [c for key, c in corner.items() if key[2] == 0], wall_texture),
        (_WALL, (1, 0, 0), -half_w, [c for key, c in corner.items() if key[0] == 0],
         wall_texture if rng.random() < 0.5 else _random_texture(rng, ["plain", "noise"],
                                                                  (0.2, 0.6))),
        (_WALL, (-1, 0, 0), -half_w, [c for key, c in corner.items() if key[0] == 1],
         wall_texture),
        (_WALL, (0, 0, -1), -front, [c for key, c in corner.items() if key[2] == 1],
         wall_texture),
    ]
    faces: list[_Primitive] = []
    for inst, (cls, normal, offset, corners, texture) in enumerate(specs, start=1):
        faces.append(_Plane(cls, inst, 0, texture, np.zeros(3), _INF,
                            normal=np.asarray(normal, dtype=np.float64), offset=float(offset),
                            corners=tuple(corners)))
    return faces, (half_w, height, back, front)


def _figure(rng: np.random.Generator, instance: int, base: np.ndarray, yaw: float,
            scale: float) -> list[_Primitive]:
    """An articulated figure standing on the floor at ``base``, facing +z turned by ``yaw``."""
    s = scale
    rot = _yaw_matrix(yaw)
    skin = Texture("plain", rng.uniform([0.45, 0.3, 0.2], [0.95, 0.75, 0.6]), np.zeros(3))
    shirt = _random_texture(rng, ["plain", "stripes", "checkers", "noise"], (0.05, 0.15))
    trousers = _random_texture(rng, ["plain", "noise", "stripes"], (0.05, 0.2))
    shoes = Texture("plain", rng.uniform(0.05, 0.3, 3), np.zeros(3))
    parts: list[tuple[str, int, Texture, tuple]] = []  # local-frame geometry before placement
    hip_y = 0.93 * s
    parts.append(("capsule", _TORSO, shirt, (np.array([0, hip_y + 0.06 * s, 0]),
                                             np.array([0, 1.36 * s, 0]), 0.15 * s)))
    parts.append(("sphere", _HEAD, skin, (np.array([0, 1.60 * s, 0]), 0.11 * s)))
    for side in (-1.0, 1.0):
        shoulder = np.array([side * 0.21 * s, 1.39 * s, 0.0])
        abduct = rng.uniform(0.05, 1.3)
        flex = rng.uniform(-0.8, 1.5)
        bend = rng.uniform(0.0, 2.0)
        down = np.array([0.0, -1.0, 0.0])
        upper = _rot_x(-flex) @ _rot_z(side * abduct) @ down
        lower = _rot_x(-(flex + bend)) @ _rot_z(side * abduct) @ down
        elbow = shoulder + 0.30 * s * upper
        wrist = elbow + 0.26 * s * lower
        parts.append(("capsule", _UPPER_ARM, shirt, (shoulder, elbow, 0.055 * s)))
        parts.append(("capsule", _LOWER_ARM, skin, (elbow, wrist, 0.045 * s)))
        parts.append(("sphere", _LOWER_ARM, skin, (wrist + 0.05 * s * lower, 0.05 * s)))
        hip = np.array([side * 0.10 * s, hip_y, 0.0])
        hip_flex = rng.uniform(-0.45, 0.6)
        knee = rng.uniform(0.0, 0.9)
        spread = rng.uniform(0.0, 0.2)
        thigh = _rot_x(-hip_flex) @ _rot_z(side * spread) @ down
        shin = _rot_x(-(hip_flex - knee)) @ _rot_z(side * spread) @ down
        knee_p = hip + 0.44 * s * thigh
        ankle = knee_p + 0.42 * s * shin
        parts.append(("capsule", _UPPER_LEG, trousers, (hip, knee_p, 0.08 * s)))
        parts.append(("capsule", _LOWER_LEG, trousers, (knee_p, ankle, 0.06 * s)))
        parts.append(("box", _LOWER_LEG, shoes, (ankle + np.array([0, -0.03 * s, 0.06 * s]),
                                                 np.array([0.05, 0.035, 0.12]) * s)))
    lowest = _INF
    for kind, _, _, g in parts:
        if kind == "capsule":
            lowest = min(lowest, g[0][1] - g[2], g[1][1] - g[2])
        elif kind == "sphere":
            lowest = min(lowest, g[0][1] - g[1])
        else:
            lowest = min(lowest, g[0][1] - g[1][1])
    lift = np.array([0.0, -lowest, 0.0])

    def place(x: np.ndarray) -> np.ndarray:
        return base + rot @ (x + lift)

    prims: list[_Primitive] = []
    for kind, part, texture, g in parts:
        if kind == "capsule":
            a, b = place(g[0]), place(g[1])
            prims.append(_Capsule(PERSON_CLASS, instance, part, texture, (a + b) / 2,
                                  float(np.linalg.norm(b - a)) / 2 + g[2], a=a, b=b, radius=g[2],
                                  joint_depth=g[2]))
        elif kind == "sphere":
            c = place(g[0])
            prims.append(_Sphere(PERSON_CLASS, instance, part, texture, c, g[1], radius=g[1]))
        else:
            c = place(g[0])
            prims.append(_Box(PERSON_CLASS, instance, part, texture, c,
                              float(np.linalg.norm(g[1])), half=g[1], rotation=rot))
    return prims


def _object(rng: np.random.Generator, instance: int, base: np.ndarray,
            radius: float, kind: int) -> _Primitive:
    """A primitive of class ``kind`` standing on the floor at ``base`` within footprint radius."""
    texture = _random_texture(rng, ["plain", "stripes", "checkers", "noise"], (0.06, 0.25))
    if kind == _SPHERE:
        c = base + np.array([0.0, radius, 0.0])
        return _Sphere(_SPHERE, instance, 0, texture, c, radius, radius=radius)
    if kind == _BOX:
        half = np.array([radius / np.sqrt(2) * rng.uniform(0.6, 1.0), rng.uniform(0.2, 0.8),
                         radius / np.sqrt(2) * rng.uniform(0.6, 1.0)])
        c = base + np.array([0.0, half[1], 0.0])
        rot = _yaw_matrix(rng.uniform(0, np.pi / 2))
        return _Box(_BOX, instance, 0, texture, c, float(np.linalg.norm(half)), half=half,
                    rotation=rot)
    height = rng.uniform(0.4, 1.8) if kind == _CYLINDER else rng.uniform(0.5, 1.5)
    mid = base + np.array([0.0, height / 2, 0.0])
    cls = _Cylinder if kind == _CYLINDER else _Cone
    return cls(kind, instance, 0, texture, mid, float(np.hypot(radius, height / 2)),
               radius=radius, height=height)


def _sample_scene(rng: np.random.Generator, height_px: int, width_px: int) -> _Scene:
    """Room, camera, light, 0–2 figures and 2–6 objects placed without overlapping footprints."""
    faces, (half_w, _, back, _) = _room(rng)
    hfov = np.radians(rng.uniform(55.0, 70.0))
    fx = (width_px / 2) / np.tan(hfov / 2)
    position = np.array([rng.uniform(-0.4, 0.4), rng.uniform(1.2, 1.7), 0.0])
    yaw = np.radians(rng.uniform(-12.0, 12.0))
    pitch = np.radians(rng.uniform(-18.0, -4.0))
    camera = _Camera(position, _yaw_matrix(yaw) @ _rot_x(pitch), fx, fx,
                     (width_px - 1) / 2, (height_px - 1) / 2)
    tan_half = np.tan(hfov / 2) * 0.8
    footprints: list[tuple[np.ndarray, float]] = []

    def place(radius: float, near: float) -> np.ndarray | None:
        for _ in range(40):
            far = -back - radius - 0.1  # favour near placements so objects cover more pixels
            dist = near + (far - near) * rng.random() ** 1.6
            x = position[0] + rng.uniform(-1.0, 1.0) * dist * tan_half
            if abs(x) > half_w - radius - 0.05:
                continue
            p = np.array([x, 0.0, position[2] - dist])
            if all(np.hypot(*(p - q)[[0, 2]]) > radius + r + 0.05 for q, r in footprints):
                footprints.append((p, radius))
                return p
        return None

    prims = list(faces)
    instance = FIRST_OBJECT_INSTANCE
    u = rng.random()
    n_figures = 0 if u < 0.3 else (1 if u < 0.8 else 2)
    for _ in range(n_figures):
        scale = rng.uniform(1.5, 1.85) / 1.75
        base = place(0.45 * scale, 2.2)
        if base is not None:
            toward = np.arctan2(position[0] - base[0], position[2] - base[2])
            prims += _figure(rng, instance, base, toward + rng.uniform(-1.6, 1.6), scale)
            instance += 1
    for _ in range(int(rng.integers(2, 7))):
        kind = int(rng.choice([_SPHERE, _BOX, _CYLINDER, _CONE]))
        radius = rng.uniform(0.2, 0.6) if kind != _CYLINDER else rng.uniform(0.15, 0.45)
        base = place(radius, 1.8)
        if base is not None:
            prims.append(_object(rng, instance, base, radius, kind))
            instance += 1
    light = np.array([rng.uniform(-0.6, 0.6), 1.0, rng.uniform(0.2, 0.9)])
    return _Scene(camera, prims, light / np.linalg.norm(light), float(rng.uniform(0.25, 0.4)),
                  rng.uniform(0.9, 1.0, 3) * rng.uniform(1.0, 1.25))


# ---------------------------------------------------------------------------------------------
# rendering
# ---------------------------------------------------------------------------------------------
def _screen_rect(prim: _Primitive, cam: _Camera, h: int, w: int) -> tuple[int, int, int, int]:
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


def _keypoint_map(scene: _Scene, depth: np.ndarray) -> np.ndarray:
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


def _cast(scene: _Scene, rays_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-hit distance and primitive index per pixel (``H×W`` each)."""
    h, w, _ = rays_world.shape
    o = scene.camera.position
    t_best = np.full((h, w), _INF)
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


def _render(scene: _Scene, h: int, w: int, rng: np.random.Generator,
            extras: bool) -> dict[str, np.ndarray] | None:
    """All labels of one sampled scene, or None when no object is visible (nothing salient)."""
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
    if person.any():
        salient = person
    else:
        counts = np.bincount(instance.ravel(), minlength=FIRST_OBJECT_INSTANCE + 1)
        counts[:FIRST_OBJECT_INSTANCE] = 0
        if counts.max() == 0:
            return None
        salient = instance == int(counts.argmax())

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
        occluder = np.array([not isinstance(p, _Plane) for p in prims])
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


def _hw(size: int | Sequence[int]) -> tuple[int, int]:
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
    h, w = _hw(size)
    rng = np.random.default_rng(int(seed))
    for _ in range(50):
        out = _render(_sample_scene(rng, h, w), h, w, rng, extras)
        if out is not None:
            return out
    raise RuntimeError(f"seed {seed}: no scene with a visible object in 50 draws")


def image_seed(seed: int, index: int) -> int:
    """Seed of image ``index`` of a dataset with master ``seed`` (independent of its length)."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


# ---------------------------------------------------------------------------------------------
# on-disk cache
# ---------------------------------------------------------------------------------------------
class SyntheticCacheError(RuntimeError):
    """A synthetic cache directory is missing, incomplete or corrupt."""


def cache_name(n: int, size: int | Sequence[int], seed: int, extras: bool = False) -> str:
    """Directory name of the cache of these parameters, e.g. ``synthetic-v1-n2000-s96-seed0``."""
    h, w = _hw(size)
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
    """
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    hw = _hw(size)
    root = Path(root)
    final = root / cache_name(n, hw, seed, extras)
    if final.exists():
        try:
            load_cache(final)
            return final
        except SyntheticCacheError:
            shutil.rmtree(final)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        first = render_scene(image_seed(seed, 0), hw, extras)
        stores = {k: np.lib.format.open_memmap(tmp / f"{k}.npy", mode="w+", dtype=v.dtype,
                                               shape=(n, *v.shape)) for k, v in first.items()}
        for k, v in first.items():
            stores[k][0] = v
        workers = max(1, min(workers or os.cpu_count() or 1, n))
        chunk = max(1, min(32, (n - 1) // (4 * workers) + 1))
        jobs = _chunks(n, 1, chunk, int(seed), hw, extras)
        bar = _progress(n, progress, final.name)
        bar.update(1)
        if workers == 1:
            results = map(_render_chunk, jobs)
            _fill(stores, results, bar)
        else:
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
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


def _progress(total: int, enabled: bool, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="img")


def _fill(stores: dict[str, np.ndarray], results: Iterator[tuple[int, dict]], bar: Any) -> None:
    for start, arrays in results:
        for k, v in arrays.items():
            stores[k][start:start + len(v)] = v
        bar.update(len(arrays["image"]))


# ---------------------------------------------------------------------------------------------
# dataset
# ---------------------------------------------------------------------------------------------
@register_dataset("synthetic")
class SyntheticScenes(Dataset):
    """A split of the cached synthetic scenes as numpy samples (the cache is made on first use).

    Splits are disjoint index ranges: ``train`` is the first ``n - round(n·val_fraction)``
    images, ``val`` the rest. Arrays are memory-mapped lazily in each process (DataLoader workers
    open their own maps rather than receiving pickled copies) and copied per item, so transforms
    may write to them.
    """

    def __init__(self, root: str | os.PathLike, n: int = 2000, size: int | Sequence[int] = 96,
                 seed: int = 0, split: str = "train", val_fraction: float = 0.2,
                 tasks: Sequence[str] = ASTMT_TASKS, extras: bool = False,
                 workers: int | None = None, progress: bool = True) -> None:
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
        n_val = int(round(n * val_fraction))
        if n_val < 1 or n_val >= n:
            raise ValueError(f"n={n} with val_fraction={val_fraction} leaves an empty split")
        available = [k for k in BASE_KEYS + (EXTRA_KEYS if extras else ()) if k != "image"]
        unknown = [t for t in tasks if t not in available]
        if unknown:
            hint = "" if extras else " (the LSB extras need extras=True)"
            raise ValueError(f"unknown synthetic label(s) {unknown}; available: "
                             f"{', '.join(available)}{hint}")
        self.tasks = list(tasks)
        self.split = split
        self.offset = 0 if split == "train" else n - n_val
        self.length = n - n_val if split == "train" else n_val
        self.path = write_cache(root, n, size, seed, extras=extras, workers=workers,
                                progress=progress)
        self._arrays: dict[str, np.ndarray] | None = None
        load_cache(self.path)  # fail now, not in a worker, if the cache is unusable

    def __len__(self) -> int:
        return self.length

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_arrays"] = None
        return state

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for the {self.split} split "
                             f"of {self.length} images")
        index = int(index) % self.length
        if self._arrays is None:
            self._arrays = load_cache(self.path)
        i = self.offset + index
        sample: dict[str, Any] = {"image": np.array(self._arrays["image"][i])}
        for task in self.tasks:
            sample[task] = np.array(self._arrays[task][i])
        sample["meta"] = {"index": i, "split": self.split}
        return sample
