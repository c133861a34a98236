"""Geometry and procedural primitives of the synthetic NAVCAM renderer.

- `Camera`: a pinhole mast camera CAMERA_HEIGHT_M above a flat ground plane, pitched down and
  slightly rolled; it gives each pixel's world ray and projects world points back to pixels.
- `Noise`: value-noise octaves and Voronoi plates evaluated at ground coordinates (metres), looked
  up in small random tables with cv2.remap (fast), and faded out where one pixel covers more than
  a third of a period (anti-aliasing: distant ground gets smooth, as in a real camera).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

CAMERA_HEIGHT_M = 1.9


@dataclass
class Camera:
    """Pinhole camera at (0, CAMERA_HEIGHT_M, 0) looking along +Z, pitched down, rolled."""

    f: float
    cx: float
    cy: float
    pitch: float
    roll: float

    def rays(self, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World ray directions (dx, dy, dz) per pixel, not normalised."""
        u = (np.arange(width, dtype=np.float32) - self.cx) / self.f
        v = (np.arange(height, dtype=np.float32) - self.cy) / self.f
        x, y = np.meshgrid(u, v)
        cr, sr = math.cos(self.roll), math.sin(self.roll)
        x, y = x * cr - y * sr, x * sr + y * cr
        cp, sp = math.cos(self.pitch), math.sin(self.pitch)
        return x, -(y * cp + sp), cp - y * sp

    def project(
        self, X: np.ndarray, Y: np.ndarray, Z: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """World points -> pixel (u, v) and depth along the optical axis."""
        cp, sp = math.cos(self.pitch), math.sin(self.pitch)
        dy = Y - CAMERA_HEIGHT_M
        yc = -dy * cp - Z * sp
        zc = np.maximum(-dy * sp + Z * cp, 1e-3)
        x, y = X / zc, yc / zc
        cr, sr = math.cos(self.roll), math.sin(self.roll)
        x, y = x * cr + y * sr, -x * sr + y * cr
        return x * self.f + self.cx, y * self.f + self.cy, zc


class Noise:
    """Value-noise octaves evaluated at ground coordinates with cv2.remap (fast bicubic lookup)."""

    SIZE = 128

    def __init__(self, rng: np.random.Generator, footprint: np.ndarray) -> None:
        self.rng = rng
        self.tables = [rng.random((self.SIZE, self.SIZE), dtype=np.float32) for _ in range(4)]
        self.half_inv_footprint = (0.5 / np.maximum(footprint, 1e-6)).astype(np.float32)

    def _wrap(self, coord: np.ndarray, size: int | None = None) -> np.ndarray:
        """coord mod size (default SIZE), in place (np.mod is ten times slower on float32)."""
        size = size or self.SIZE
        whole = coord * np.float32(1.0 / size)
        np.floor(whole, out=whole)
        whole *= -size
        coord += whole
        return coord

    def at(self, X: np.ndarray, Z: np.ndarray, freq: float, fade: bool = True) -> np.ndarray:
        """One octave in [-0.5, 0.5], faded to 0 where a pixel covers more than a third of a period."""
        rng = self.rng
        table = self.tables[int(rng.integers(len(self.tables)))]
        a = rng.uniform(0, 2 * math.pi)
        c, s = np.float32(math.cos(a) * freq), np.float32(math.sin(a) * freq)
        ox, oz = (np.float32(v) for v in rng.uniform(0, self.SIZE, 2))
        mx = self._wrap(c * X - s * Z + ox)
        my = self._wrap(s * X + c * Z + oz)
        value = cv2.remap(table, mx, my, cv2.INTER_CUBIC, borderMode=cv2.BORDER_WRAP)
        value -= np.float32(0.5)
        if fade and X.shape == self.half_inv_footprint.shape:
            weight = self.half_inv_footprint * np.float32(1.0 / freq) - np.float32(0.5)
            value *= np.clip(weight, 0.0, 1.0, out=weight)
        return value

    def plates(self, X: np.ndarray, Z: np.ndarray, plate_m: float) -> tuple[np.ndarray, np.ndarray]:
        """Voronoi plates about `plate_m` wide: (per-plate value in [-0.5, 0.5], distance to the
        nearest plate edge in metres). Built on a seamless 3x3-tiled table, looked up with remap."""
        size, cells = 2 * self.SIZE, 180  # ~19 table pixels per plate: fine steps along its edges
        seeds = self.rng.uniform(0, size, (cells, 2))
        tiled = np.concatenate([seeds + (dx * size, dy * size) for dy in range(3) for dx in range(3)])
        ij = np.minimum(tiled.astype(np.int32), 3 * size - 1)
        canvas = np.ones((3 * size, 3 * size), np.uint8)
        canvas[ij[:, 1], ij[:, 0]] = 0
        _, nearest = cv2.distanceTransformWithLabels(canvas, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
        lut = np.zeros(int(nearest.max()) + 1, np.int32)
        lut[nearest[ij[:, 1], ij[:, 0]]] = np.arange(len(tiled)) % cells
        cell = lut[nearest]
        edge = np.zeros_like(canvas)
        edge[:, 1:] |= (cell[:, 1:] != cell[:, :-1]).astype(np.uint8)
        edge[1:, :] |= (cell[1:, :] != cell[:-1, :]).astype(np.uint8)
        edge_dist = cv2.distanceTransform(1 - edge, cv2.DIST_L2, 5)[size : 2 * size, size : 2 * size]
        values = self.rng.uniform(-0.5, 0.5, cells).astype(np.float32)[cell[size : 2 * size, size : 2 * size]]
        px_per_m = np.float32(np.sqrt(size * size / cells) / plate_m)
        # irregular plate edges: warp the lookup by noise a few times finer than a plate
        warp = np.float32(0.12 * plate_m)
        wx = X + warp * self.fbm(X, Z, 3.0 / plate_m, 2, coarse=2)
        wz = Z + warp * self.fbm(X, Z, 3.0 / plate_m, 2, coarse=2)
        a = self.rng.uniform(0, 2 * math.pi)
        c, s = np.float32(math.cos(a)) * px_per_m, np.float32(math.sin(a)) * px_per_m
        mx = self._wrap(c * wx - s * wz, size)
        my = self._wrap(s * wx + c * wz, size)
        value = cv2.remap(values, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_WRAP)
        dist = cv2.remap(edge_dist, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        return value, dist / px_per_m

    def fbm(
        self, X: np.ndarray, Z: np.ndarray, freq: float, octaves: int, gain: float = 0.5, coarse: int = 1
    ) -> np.ndarray:
        """Sum of octaves at freq, 2 freq, ...; about unit range. `coarse` evaluates a smooth field
        on every coarse-th pixel and resizes it up (low frequencies need no full-resolution lookup)."""
        if coarse > 1:
            small = self.fbm(X[::coarse, ::coarse], Z[::coarse, ::coarse], freq, octaves, gain)
            return cv2.resize(small, (X.shape[1], X.shape[0]), interpolation=cv2.INTER_LINEAR)
        total = np.zeros_like(X)
        amp, norm = 1.0, 0.0
        for k in range(octaves):
            total += np.float32(amp) * self.at(X, Z, freq * 2**k)
            norm += amp
            amp *= gain
        total *= np.float32(2.0 / norm)
        return total
