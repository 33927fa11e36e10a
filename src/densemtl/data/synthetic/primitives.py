"""Ray-primitive intersection in closed form: spheres, capsules, boxes, upright cylinders and
cones, planes — each hit gives depth, normal, curvature and texture coordinates."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from densemtl.data.synthetic.textures import Texture

_CURVATURE_CLIP = 20.0


@dataclass
class Primitive:
    """A surface with its labels (class, instance, part) and texture; subclasses ray-intersect."""

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
    t = np.full(len(d), np.inf)
    ok = h >= 0
    t0 = -b[ok] - np.sqrt(h[ok])
    t[ok] = np.where(t0 > 1e-9, t0, np.inf)
    return t


@dataclass
class Sphere(Primitive):
    """A sphere of ``radius`` around ``center``."""

    radius: float = 1.0

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        return _sphere_hit(o, d, self.center, self.radius)

    def surface(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = (p - self.center) / self.radius
        return n, np.full((len(p), 2), 1.0 / self.radius)


@dataclass
class Capsule(Primitive):
    """A segment ``a``–``b`` swept by a sphere of ``radius`` (figure limbs and torso)."""

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
        t = np.full(len(d), np.inf)
        ok = (h >= 0) & (qa > 1e-12)
        t0 = (-qb[ok] - np.sqrt(h[ok])) / qa[ok]
        y = oa @ u + t0 * du[ok]
        t[ok] = np.where((t0 > 1e-9) & (y >= 0) & (y <= length), t0, np.inf)
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


def yaw_matrix(angle: float) -> np.ndarray:
    """Rotation about the world y axis by ``angle`` radians (right-handed)."""
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


@dataclass
class Box(Primitive):
    """An oriented box of half-sizes ``half`` (local axes ``rotation``) around ``center``."""

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
        return np.where((t_near <= t_far) & (t_near > 1e-9), t_near, np.inf)

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
class _UprightSolid(Primitive):
    """A solid of revolution about a vertical axis; ``center`` is the middle of its axis."""

    radius: float = 0.3
    height: float = 1.0

    @property
    def base(self) -> np.ndarray:
        """Centre of the bottom disc."""
        return self.center - np.array([0.0, self.height / 2, 0.0])


@dataclass
class Cylinder(_UprightSolid):
    """Upright cylinder standing on the floor."""

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        ol = o - self.base
        qa = d[:, 0] ** 2 + d[:, 2] ** 2
        qb = d[:, 0] * ol[0] + d[:, 2] * ol[2]
        qc = ol[0] ** 2 + ol[2] ** 2 - self.radius**2
        h = qb * qb - qa * qc
        t = np.full(len(d), np.inf)
        ok = (h >= 0) & (qa > 1e-12)
        t0 = (-qb[ok] - np.sqrt(h[ok])) / qa[ok]
        y = ol[1] + t0 * d[ok, 1]
        t[ok] = np.where((t0 > 1e-9) & (y >= 0) & (y <= self.height), t0, np.inf)
        if ol[1] > self.height:  # the top cap faces up, so only a camera above it sees it
            down = d[:, 1] < -1e-12
            tc = np.full(len(d), np.inf)
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
class Cone(_UprightSolid):
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
        t = np.full(len(d), np.inf)
        ok = (h >= 0) & (np.abs(qa) > 1e-12)
        sq = np.sqrt(h[ok])
        for root in ((-qb[ok] - sq) / qa[ok], (-qb[ok] + sq) / qa[ok]):
            y = ol[1] + root * d[ok, 1]
            valid = (root > 1e-9) & (y >= 0) & (y <= self.height)
            t[ok] = np.minimum(t[ok], np.where(valid, root, np.inf))
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
class Plane(Primitive):
    """A room face: the plane ⟨normal, x⟩ = offset, seen from the side its normal points to."""

    normal: np.ndarray = field(default_factory=lambda: np.array([0.0, 1.0, 0.0]))
    offset: float = 0.0
    corners: tuple[np.ndarray, ...] = ()

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        dn = d @ self.normal
        t = np.full(len(d), np.inf)
        front = dn < -1e-12
        t[front] = (self.offset - o @ self.normal) / dn[front]
        return np.where(t > 1e-9, t, np.inf)

    def surface(self, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.broadcast_to(self.normal, p.shape).copy(), np.zeros((len(p), 2))

    def local(self, p: np.ndarray) -> np.ndarray:
        return p

    def keypoints(self) -> list[tuple[np.ndarray, float]]:
        return [(c, 0.0) for c in self.corners]
