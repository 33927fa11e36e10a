"""Procedural solid textures (plain, stripes, checkers, value noise): colour only, never a label."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np


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


def random_texture(rng: np.random.Generator, kinds: Sequence[str], scale: tuple[float, float],
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
