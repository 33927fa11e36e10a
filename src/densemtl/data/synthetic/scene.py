"""Scene sampling: the label vocabularies, the closed box room, articulated figures, objects,
the camera."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from densemtl.data.synthetic.primitives import (
    Box,
    Capsule,
    Cone,
    Cylinder,
    Plane,
    Primitive,
    Sphere,
    yaw_matrix,
)
from densemtl.data.synthetic.textures import Texture, random_texture

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
_WALL, _FLOOR, _CEILING, _SPHERE, _BOX, _CYLINDER, _CONE = range(7)
_HEAD, _TORSO, _UPPER_ARM, _LOWER_ARM, _UPPER_LEG, _LOWER_LEG = range(1, 7)


@dataclass
class Camera:
    """Pinhole camera: world position, camera-to-world rotation, focal lengths, centre."""

    position: np.ndarray
    rotation: np.ndarray  # camera -> world
    fx: float
    fy: float
    cx: float
    cy: float


@dataclass
class Scene:
    """One sampled scene: camera, primitives and lighting."""

    camera: Camera
    prims: list[Primitive]
    light: np.ndarray
    ambient: float
    light_color: np.ndarray


def _rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _room(rng: np.random.Generator) -> tuple[list[Primitive], tuple[float, float, float, float]]:
    """The six room faces (instances 1..6) and the room extent (half width, height, back, front)."""
    half_w = rng.uniform(2.5, 3.5)
    height = rng.uniform(2.6, 3.2)
    back = -rng.uniform(5.5, 8.0)
    front = 0.6
    xs, ys, zs = (-half_w, half_w), (0.0, height), (back, front)
    corner = {(i, j, k): np.array([xs[i], ys[j], zs[k]]) for i in (0, 1) for j in (0, 1)
              for k in (0, 1)}
    wall_texture = random_texture(rng, ["plain", "stripes", "noise", "plain"], (0.15, 0.6),
                                   base=rng.uniform(0.45, 0.9, 3))
    specs = [  # (class, normal, point on plane, corners on the face, texture)
        (_FLOOR, (0, 1, 0), 0.0, [c for key, c in corner.items() if key[1] == 0],
         random_texture(rng, ["checkers", "stripes", "noise"], (0.25, 0.7))),
        (_CEILING, (0, -1, 0), -height, [c for key, c in corner.items() if key[1] == 1],
         random_texture(rng, ["plain", "noise"], (0.5, 1.0), base=rng.uniform(0.7, 0.95, 3))),
        (_WALL, (0, 0, 1), back, [c for key, c in corner.items() if key[2] == 0], wall_texture),
        (_WALL, (1, 0, 0), -half_w, [c for key, c in corner.items() if key[0] == 0],
         wall_texture if rng.random() < 0.5 else random_texture(rng, ["plain", "noise"],
                                                                  (0.2, 0.6))),
        (_WALL, (-1, 0, 0), -half_w, [c for key, c in corner.items() if key[0] == 1],
         wall_texture),
        (_WALL, (0, 0, -1), -front, [c for key, c in corner.items() if key[2] == 1],
         wall_texture),
    ]
    faces: list[Primitive] = []
    for inst, (cls, normal, offset, corners, texture) in enumerate(specs, start=1):
        faces.append(Plane(cls, inst, 0, texture, np.zeros(3), np.inf,
                            normal=np.asarray(normal, dtype=np.float64), offset=float(offset),
                            corners=tuple(corners)))
    return faces, (half_w, height, back, front)


def _figure(rng: np.random.Generator, instance: int, base: np.ndarray, yaw: float,
            scale: float) -> list[Primitive]:
    """An articulated figure standing on the floor at ``base``, facing +z turned by ``yaw``."""
    s = scale
    rot = yaw_matrix(yaw)
    skin = Texture("plain", rng.uniform([0.45, 0.3, 0.2], [0.95, 0.75, 0.6]), np.zeros(3))
    shirt = random_texture(rng, ["plain", "stripes", "checkers", "noise"], (0.05, 0.15))
    trousers = random_texture(rng, ["plain", "noise", "stripes"], (0.05, 0.2))
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
    lowest = np.inf
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

    prims: list[Primitive] = []
    for kind, part, texture, g in parts:
        if kind == "capsule":
            a, b = place(g[0]), place(g[1])
            prims.append(Capsule(PERSON_CLASS, instance, part, texture, (a + b) / 2,
                                  float(np.linalg.norm(b - a)) / 2 + g[2], a=a, b=b, radius=g[2],
                                  joint_depth=g[2]))
        elif kind == "sphere":
            c = place(g[0])
            prims.append(Sphere(PERSON_CLASS, instance, part, texture, c, g[1], radius=g[1]))
        else:
            c = place(g[0])
            prims.append(Box(PERSON_CLASS, instance, part, texture, c,
                              float(np.linalg.norm(g[1])), half=g[1], rotation=rot))
    return prims


def _object(rng: np.random.Generator, instance: int, base: np.ndarray,
            radius: float, kind: int) -> Primitive:
    """A primitive of class ``kind`` standing on the floor at ``base`` within footprint radius."""
    texture = random_texture(rng, ["plain", "stripes", "checkers", "noise"], (0.06, 0.25))
    if kind == _SPHERE:
        c = base + np.array([0.0, radius, 0.0])
        return Sphere(_SPHERE, instance, 0, texture, c, radius, radius=radius)
    if kind == _BOX:
        half = np.array([radius / np.sqrt(2) * rng.uniform(0.6, 1.0), rng.uniform(0.2, 0.8),
                         radius / np.sqrt(2) * rng.uniform(0.6, 1.0)])
        c = base + np.array([0.0, half[1], 0.0])
        rot = yaw_matrix(rng.uniform(0, np.pi / 2))
        return Box(_BOX, instance, 0, texture, c, float(np.linalg.norm(half)), half=half,
                    rotation=rot)
    height = rng.uniform(0.4, 1.8) if kind == _CYLINDER else rng.uniform(0.5, 1.5)
    mid = base + np.array([0.0, height / 2, 0.0])
    cls = Cylinder if kind == _CYLINDER else Cone
    return cls(kind, instance, 0, texture, mid, float(np.hypot(radius, height / 2)),
               radius=radius, height=height)


def sample_scene(rng: np.random.Generator, height_px: int, width_px: int) -> Scene:
    """Room, camera, light, 0–2 figures and 2–6 objects placed without overlapping footprints."""
    faces, (half_w, _, back, _) = _room(rng)
    hfov = np.radians(rng.uniform(55.0, 70.0))
    fx = (width_px / 2) / np.tan(hfov / 2)
    position = np.array([rng.uniform(-0.4, 0.4), rng.uniform(1.2, 1.7), 0.0])
    yaw = np.radians(rng.uniform(-12.0, 12.0))
    pitch = np.radians(rng.uniform(-18.0, -4.0))
    camera = Camera(position, yaw_matrix(yaw) @ _rot_x(pitch), fx, fx,
                     (width_px - 1) / 2, (height_px - 1) / 2)
    tan_half = np.tan(hfov / 2) * 0.8
    footprints: list[tuple[np.ndarray, float]] = []

    def place(radius: float, near: float, bias: float = 1.6) -> np.ndarray | None:
        for _ in range(40):
            far = -back - radius - 0.1  # favour near placements (bias > 1): more pixels
            dist = near + (far - near) * rng.random() ** bias
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
    n_figures = 0 if u < 0.15 else (1 if u < 0.65 else 2)
    for _ in range(n_figures):
        scale = rng.uniform(1.5, 1.85) / 1.75
        base = place(0.45 * scale, 1.4, bias=3.0)
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
    return Scene(camera, prims, light / np.linalg.norm(light), float(rng.uniform(0.25, 0.4)),
                  rng.uniform(0.9, 1.0, 3) * rng.uniform(1.0, 1.25))
