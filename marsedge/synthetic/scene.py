"""The procedural NAVCAM renderer: a terrain scene seen from a rover mast camera.

One call, `render_scene(rng, height, width, look)`, draws one frame and its pixel truth:

- geometry (`geometry.Camera`): a pinhole camera ~1.9 m above a ground plane, pitched
  down, slightly rolled; every pixel below the horizon gets its ground point (X, Z) in metres
  and its range;
- terrain classes on the ground: two smooth random fields split the visible ground (< 30 m) into
  bedrock, sand and soil with per-frame fractions drawn around the mission's mix;
- textures in ground coordinates (so they shrink with distance, as in a real perspective view),
  built from value-noise octaves that fade out where one pixel covers more than a period
  (anti-aliasing): soil = fine grain + pebbles, bedrock = Voronoi plates with cracks and layering,
  sand = ripples shaded by the sun and otherwise smooth;
- big rocks (class 3, sparse) and small rocks (labelled as the ground beneath them: labelers
  ignore rocks under 50 cm) are ray-traced ellipsoid clusters with Lambert shading and cast
  shadows;
- MSL rover hardware intruding from the bottom edge (the rover mask), the far field beyond
  30 m with haze and hills, and sky (both in the range mask);
- per-frame lighting (sun, shadows, illumination gradient, vignetting), exposure, gamma, blur and
  sensor noise. JPEG artefacts are added when the frame is encoded (`synthetic/navcam.py`).

The class albedos are drawn per frame from overlapping ranges and lit by the same shadows and
gradients, so a pixel's brightness alone says little about its class: telling soil from bedrock
from sand needs the texture around the pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from marsedge.synthetic.geometry import CAMERA_HEIGHT_M, Camera, Noise
from marsedge.terrain import BACKGROUND, BEDROCK, BIG_ROCK, ROVER, SAND, SOIL

LABEL_RANGE_M = 30.0  # AI4Mars: features beyond 30 m are masked, not labelled


@dataclass(frozen=True)
class MissionLook:
    """What a mission's frames look like."""

    name: str
    colour: bool
    hfov_deg: float
    pitch_deg: tuple[float, float]
    class_mix: tuple[float, float, float]  # mean fractions of soil, bedrock, sand on the near ground
    big_rocks: float  # mean number of big rocks per frame
    rover_probability: float  # chance that rover hardware enters the frame


LOOKS = {
    "msl": MissionLook("msl", False, 45.0, (12.0, 40.0), (0.36, 0.52, 0.12), 2.5, 0.45),
    "m2020": MissionLook("m2020", True, 60.0, (8.0, 32.0), (0.62, 0.22, 0.16), 2.0, 0.0),
}


@dataclass
class Scene:
    image: np.ndarray  # uint8 HxW (grey) or HxWx3 RGB
    truth: np.ndarray  # uint8 HxW: 0..3 terrain, 4 rover, 5 beyond 30 m / sky
    rover: np.ndarray  # bool HxW
    far: np.ndarray  # bool HxW, range > 30 m or above the horizon


def _classes_on_ground(noise, X, Z, near, look, rng) -> np.ndarray:
    """Split the ground into soil, bedrock, sand with per-frame fractions around the mission mix."""
    mix = rng.dirichlet(np.asarray(look.class_mix) * 4.0)
    bed_field = noise.fbm(X, Z, 0.05, 3, coarse=4) + 0.3 * noise.fbm(X, Z, 0.4, 2, coarse=4)
    sand_field = noise.fbm(X, Z, 0.08, 3, coarse=4) + 0.3 * noise.fbm(X, Z, 0.5, 2, coarse=4)
    classes = np.full(X.shape, SOIL, dtype=np.uint8)
    if not near.any():
        return classes
    sample = bed_field[near][::5]
    bedrock = bed_field > np.quantile(sample, 1.0 - mix[1])
    rest = near & ~bedrock
    if rest.any():
        sand_share = mix[2] / max(mix[0] + mix[2], 1e-6)
        sand = ~bedrock & (sand_field > np.quantile(sand_field[rest][::5], 1.0 - sand_share))
        classes[sand] = SAND
    classes[bedrock] = BEDROCK
    return classes


def _albedos(rng) -> dict[int, float]:
    """Per-frame class albedos from overlapping ranges: brightness alone does not give the class."""
    base = rng.uniform(0.34, 0.5)
    return {c: base * rng.uniform(0.8, 1.25) for c in (SOIL, BEDROCK, SAND, BIG_ROCK)}


def _ground_radiance(noise, X, Z, fp, classes, albedo, sun, rng) -> np.ndarray:
    grain = noise.fbm(X, Z, 40.0, 2)
    medium = noise.fbm(X, Z, 1.5, 2, coarse=2)
    # soil: fine grain, pebbles, gentle mottling
    pebble = np.clip((noise.at(X, Z, 9.0) - 0.28) / 0.06, 0, 1) * np.sign(noise.at(X, Z, 3.0))
    soil = albedo[SOIL] * (1 + 0.45 * grain + 0.2 * medium + 0.35 * pebble)
    # bedrock: Voronoi plates of their own brightness, dark cracks along the plate edges and some
    # random fractures, faint layering, little grain
    plate_value, edge_m = noise.plates(X, Z, rng.uniform(0.5, 1.6))
    crack_m = rng.uniform(0.008, 0.02)
    cracks = np.clip(1 - edge_m / crack_m, 0, 1)
    cracks = np.maximum(
        cracks, np.clip(1 - np.abs(noise.at(X, Z, 0.8)) / 0.012, 0, 1) * (noise.at(X, Z, 0.3) > 0)
    )
    cracks *= np.clip(2 * crack_m / np.maximum(fp, 1e-4), 0, 1)  # cracks thinner than a pixel fade out
    heading = rng.uniform(0, math.pi)
    layers = np.sin(
        2 * math.pi * rng.uniform(2.0, 6.0) * (X * math.cos(heading) + Z * math.sin(heading))
        + 6.0 * noise.fbm(X, Z, 0.3, 2, coarse=4)
    )
    layering = rng.uniform(0.0, 0.12) * layers * np.clip(0.1 / np.maximum(fp, 1e-3), 0, 1)
    bedrock = albedo[BEDROCK] * (
        1 + rng.uniform(0.15, 0.45) * plate_value + 0.15 * grain + layering + 0.1 * medium
    )
    bedrock *= 1 - rng.uniform(0.4, 0.7) * cracks
    # sand: ripples lit from the sun's side, smooth otherwise
    wavelength = rng.uniform(0.12, 0.45)
    rip_dir = rng.uniform(0, math.pi)
    along = X * math.cos(rip_dir) + Z * math.sin(rip_dir)
    phase = 2 * math.pi * along / wavelength + 5.0 * noise.fbm(X, Z, 0.35, 2, coarse=4)
    facing = math.cos(rip_dir) * sun[0] + math.sin(rip_dir) * sun[2]
    ripple_fade = np.clip((wavelength / np.maximum(fp, 1e-6) - 2.0) / 2.0, 0, 1)
    sand = albedo[SAND] * (
        1
        + rng.uniform(0.12, 0.3) * (0.3 + abs(facing)) * np.cos(phase) * ripple_fade
        + 0.05 * grain
        + 0.12 * medium
    )
    radiance = np.where(classes == SOIL, soil, np.where(classes == BEDROCK, bedrock, sand))
    return radiance.astype(np.float32)


def _rock_cluster(rng, centre, size) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """1-3 overlapping ellipsoids (centre xyz, radii xyz, yaw) make an irregular rock."""
    parts = []
    for _ in range(int(rng.integers(1, 4))):
        r = size * rng.uniform(0.55, 1.0)
        radii = np.array([r * rng.uniform(0.8, 1.3), r * rng.uniform(0.5, 0.9), r * rng.uniform(0.8, 1.3)])
        offset = np.array([rng.normal(0, size * 0.35), -0.25 * radii[1], rng.normal(0, size * 0.35)])
        parts.append((np.asarray(centre) + offset, radii, rng.uniform(0, math.pi)))
    return parts


def _bbox(cam, points, height, width):
    u, v, _ = cam.project(points[:, 0], points[:, 1], points[:, 2])
    u0, u1 = int(max(0, np.floor(u.min()))), int(min(width, np.ceil(u.max()) + 1))
    v0, v1 = int(max(0, np.floor(v.min()))), int(min(height, np.ceil(v.max()) + 1))
    return (v0, v1, u0, u1) if u0 < u1 and v0 < v1 else None


def _draw_rocks(cam, rays, depth, radiance, truth, X, Z, sun, rocks, albedo, noise, rng) -> None:
    """Cast shadows of all rocks on the ground, then ray-trace the ellipsoids with a depth test."""
    height, width = depth.shape
    sun_h = np.array([sun[0], sun[2]]) / max(math.hypot(sun[0], sun[2]), 1e-6)
    shadow_len_per_m = sun[1] / max(math.hypot(sun[0], sun[2]), 1e-6)  # tan(elevation)
    shade = rng.uniform(0.45, 0.65)
    for parts, _label in rocks:
        for centre, radii, _yaw in parts:
            length = (radii[1] * 0.75 + centre[1]) / shadow_len_per_m
            tip = centre[[0, 2]] - sun_h * length
            ext = max(radii[0], radii[2])
            xs = [centre[0] - ext, centre[0] + ext, tip[0] - ext, tip[0] + ext]
            zs = [centre[2] - ext, centre[2] + ext, tip[1] - ext, tip[1] + ext]
            pts = np.array([[x, 0.0, z] for x in xs for z in zs], dtype=np.float32)
            box = _bbox(cam, pts, height, width)
            if box is None:
                continue
            v0, v1, u0, u1 = box
            qx, qz = X[v0:v1, u0:u1] - centre[0], Z[v0:v1, u0:u1] - centre[2]
            along = -(qx * sun_h[0] + qz * sun_h[1])
            across = -qx * sun_h[1] + qz * sun_h[0]
            t = np.clip(along, 0, length)
            inside = ((along - t) / ext) ** 2 + (across / (ext * 0.85)) ** 2 < 1.0
            inside &= np.isfinite(depth[v0:v1, u0:u1])
            radiance[v0:v1, u0:u1][inside] *= shade
    dx, dy, dz = rays
    origin = np.array([0.0, CAMERA_HEIGHT_M, 0.0], dtype=np.float32)
    for parts, label in sorted(rocks, key=lambda r: -float(np.hypot(*r[0][0][0][[0, 2]]))):
        rock_albedo = albedo[BIG_ROCK] * rng.uniform(0.85, 1.15)
        for centre, radii, yaw in parts:
            corners = (
                np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * radii * 1.5
            )
            box = _bbox(cam, corners + centre, height, width)
            if box is None:
                continue
            v0, v1, u0, u1 = box
            cy, sy = math.cos(yaw), math.sin(yaw)
            d = [dx[v0:v1, u0:u1], dy[v0:v1, u0:u1], dz[v0:v1, u0:u1]]
            o = origin - centre
            # rock frame: rotate about the vertical axis by -yaw, scale by 1/radii
            dl = [(d[0] * cy + d[2] * sy) / radii[0], d[1] / radii[1], (-d[0] * sy + d[2] * cy) / radii[2]]
            ol = [(o[0] * cy + o[2] * sy) / radii[0], o[1] / radii[1], (-o[0] * sy + o[2] * cy) / radii[2]]
            a = dl[0] ** 2 + dl[1] ** 2 + dl[2] ** 2
            b = 2 * (ol[0] * dl[0] + ol[1] * dl[1] + ol[2] * dl[2])
            c = ol[0] ** 2 + ol[1] ** 2 + ol[2] ** 2 - 1
            disc = b * b - 4 * a * c
            t = (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a)
            hit = (disc > 0) & (t > 0) & (t < depth[v0:v1, u0:u1])
            if not hit.any():
                continue
            pl = [ol[i] + t * dl[i] for i in range(3)]
            nl = [pl[0] / radii[0], pl[1] / radii[1], pl[2] / radii[2]]
            n = np.stack([nl[0] * cy - nl[2] * sy, nl[1], nl[0] * sy + nl[2] * cy])
            n /= np.linalg.norm(n, axis=0, keepdims=True) + 1e-9
            lambert = np.maximum(0, n[0] * sun[0] + n[1] * sun[1] + n[2] * sun[2])
            # texture on the rock's own surface coordinates, so it does not slide with the ground
            hx, hz = (pl[0] * 3).astype(np.float32), (pl[2] * 3 + pl[1] * 2).astype(np.float32)
            texture = noise.at(hx, hz, 2.0, fade=False)
            value = rock_albedo * (0.35 + 0.75 * lambert) * (1 + 0.35 * texture)
            region = (slice(v0, v1), slice(u0, u1))
            radiance[region][hit] = value[hit]
            depth[region][hit] = t[hit]
            if label is not None:
                truth[region][hit] = label


def _place_rocks(rng, X, Z, near, footprint, look):
    """Big rocks (class 3, >= 50 cm wide) and small ones (labelled as the ground under them).

    Positions are uniform over the visible ground area (pixels weighted by the ground they cover),
    so most rocks lie far away and look small, as in real frames.
    """
    rows, cols = np.nonzero(near[::4, ::4])
    rocks = []
    if rows.size == 0:
        return rocks
    weight = footprint[::4, ::4][rows, cols].astype(np.float64) ** 2
    weight /= weight.sum()
    n_big, n_small = rng.poisson(look.big_rocks), rng.poisson(16)
    picks = rng.choice(rows.size, size=n_big + n_small, p=weight)
    for k, i in enumerate(picks):
        big = k < n_big
        centre = np.array([X[rows[i] * 4, cols[i] * 4], 0.0, Z[rows[i] * 4, cols[i] * 4]])
        size = rng.uniform(0.25, 0.6) if big else rng.uniform(0.04, 0.15)
        rocks.append((_rock_cluster(rng, centre, size), BIG_ROCK if big else None))
    return rocks


def _rover_hardware(rng, height, width) -> tuple[np.ndarray, np.ndarray]:
    """Rover parts entering from the bottom edge: a deck edge, a wheel or an arm. Mask + radiance."""
    mask = np.zeros((height, width), dtype=np.uint8)
    kind = rng.choice(["deck", "wheel", "arm"], p=[0.5, 0.3, 0.2])
    if kind == "deck":
        x0, x1 = sorted(rng.uniform(-0.2, 1.2, 2) * width)
        xs = np.linspace(x0, x1, int(rng.integers(2, 5)))
        ys = height * (1 - rng.uniform(0.04, 0.2, xs.size))
        pts = [(x0, height), *zip(xs, ys, strict=True), (x1, height)]
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    elif kind == "wheel":
        r = rng.uniform(0.12, 0.25) * width
        centre = (int(rng.choice([0.05, 0.95]) * width), int(height + r * rng.uniform(0.2, 0.6)))
        cv2.circle(mask, centre, int(r), 1, -1)
    else:
        x = rng.uniform(0.2, 0.8) * width
        top = (x + rng.uniform(-0.3, 0.3) * width, height * rng.uniform(0.55, 0.85))
        w = rng.uniform(0.03, 0.08) * width
        pts = [(x - w, height), (top[0] - w * 0.6, top[1]), (top[0] + w * 0.6, top[1]), (x + w, height)]
        cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    yy = np.arange(height, dtype=np.float32)[:, None]
    xx = np.arange(width, dtype=np.float32)[None, :]
    g = rng.uniform(-1, 1, 2)
    base = rng.uniform(0.15, 0.75) * (1 + 0.3 * (g[0] * xx / width + g[1] * yy / height))
    stripes = (np.sin(xx * rng.uniform(0.05, 0.3) * 512 / width + yy * 0.02) > 0.96) * rng.uniform(0.1, 0.4)
    return mask.astype(bool), (base + stripes).astype(np.float32)


def _sky_and_hills(rng, rays, ground, far_radiance) -> np.ndarray:
    """Radiance above the horizon (computed there only): hills near the horizon, a smooth sky."""
    radiance = np.zeros(ground.shape, dtype=np.float32)
    above = ~ground
    if not above.any():
        return radiance
    dx, dy, dz = (r[above] for r in rays)
    elevation = np.arcsin(np.clip(dy / np.sqrt(dx * dx + dy * dy + dz * dz), -1, 1))
    profile = np.interp(np.arctan2(dx, dz), np.linspace(-math.pi, math.pi, 24), rng.uniform(0, 1, 24))
    hill_top = np.radians(rng.uniform(0.3, 3.0)) * (0.3 + profile)
    sky = rng.uniform(0.4, 0.85) * (1 + 0.8 * np.clip(elevation, 0, 0.5))
    hills = far_radiance * (1 - 0.3 * elevation / np.maximum(hill_top, 1e-6))
    radiance[above] = np.where(elevation < hill_top, hills, sky)
    return radiance


def render_scene(rng: np.random.Generator, height: int, width: int, look: MissionLook) -> Scene:
    """Draw one frame and its truth (see the module docstring)."""
    cam = Camera(
        f=(width / 2) / math.tan(math.radians(look.hfov_deg) / 2),
        cx=(width - 1) / 2,
        cy=(height - 1) / 2,
        pitch=math.radians(rng.uniform(*look.pitch_deg)),
        roll=math.radians(rng.uniform(-3, 3)),
    )
    rays = cam.rays(height, width)
    dx, dy, dz = rays
    ground = dy < -1e-4
    t = np.where(ground, CAMERA_HEIGHT_M / np.maximum(-dy, 1e-4), np.inf).astype(np.float32)
    X = np.where(ground, t * dx, 0).astype(np.float32)
    Z = np.where(ground, t * dz, 0).astype(np.float32)
    rng_m = np.hypot(X, Z)
    ray_len = np.sqrt(dx * dx + dy * dy + dz * dz)
    footprint = np.where(ground, t * ray_len / cam.f / np.sqrt(np.maximum(-dy / ray_len, 1e-3)), 1e3)
    footprint = footprint.astype(np.float32)  # metres of ground one pixel covers
    near = ground & (rng_m <= LABEL_RANGE_M)

    noise = Noise(rng, footprint)
    sun_el, sun_az = math.radians(rng.uniform(20, 70)), rng.uniform(0, 2 * math.pi)
    sun = (math.cos(sun_el) * math.sin(sun_az), math.sin(sun_el), math.cos(sun_el) * math.cos(sun_az))
    classes = _classes_on_ground(noise, X, Z, near, look, rng)
    albedo = _albedos(rng)
    radiance = _ground_radiance(noise, X, Z, footprint, classes, albedo, sun, rng)
    if rng.random() < 0.35:  # terrain or cloud shadows: large soft dark patches
        patch = noise.fbm(X, Z, rng.uniform(0.03, 0.12), 2, coarse=4)
        radiance *= 1 - rng.uniform(0.25, 0.45) * np.clip((patch - 0.1) / 0.1, 0, 1)
    haze = np.clip((rng_m - 15.0) / 120.0, 0, 0.5)
    haze_level = float(np.mean(radiance[near])) if near.any() else 0.4
    radiance = radiance * (1 - haze) + haze_level * haze
    sky = _sky_and_hills(rng, rays, ground, haze_level)
    radiance = np.where(ground, radiance, sky)

    truth = np.where(near, classes, BACKGROUND).astype(np.uint8)
    depth = t.copy()
    rocks = _place_rocks(rng, X, Z, near, footprint, look)
    _draw_rocks(cam, rays, depth, radiance, truth, X, Z, sun, rocks, albedo, noise, rng)
    truth[~near & (truth == BIG_ROCK)] = BACKGROUND  # rock tops seen beyond 30 m are not labelled

    rover = np.zeros((height, width), dtype=bool)
    if rng.random() < look.rover_probability:
        rover, rover_radiance = _rover_hardware(rng, height, width)
        if rng.random() < 0.5:  # the rover's own shadow on the ground in front of it
            shift = int(rng.uniform(0.03, 0.12) * height)
            shadow = np.zeros_like(rover)
            shadow[:-shift] = rover[shift:]
            radiance[shadow & ~rover] *= rng.uniform(0.45, 0.7)
        radiance = np.where(rover, rover_radiance, radiance)
        truth[rover] = ROVER
    far = truth == BACKGROUND

    image = _camera(rng, radiance, truth, look)
    return Scene(image=image, truth=truth, rover=rover, far=far)


def _camera(rng, radiance, truth, look) -> np.ndarray:
    """Illumination gradient, vignetting, exposure, gamma, colour, blur and sensor noise."""
    height, width = radiance.shape
    xn = np.arange(width, dtype=np.float32)[None, :] / width - 0.5
    yn = np.arange(height, dtype=np.float32)[:, None] / height - 0.5
    g = rng.uniform(-0.3, 0.3, 2)
    light = (1 + g[0] * xn + g[1] * yn) * (1 - rng.uniform(0, 0.35) * (xn * xn + yn * yn) * 2)
    x = np.clip(radiance * light * rng.uniform(0.75, 1.3), 0, 1) ** rng.uniform(0.8, 1.25)
    if look.colour:
        warmth = rng.uniform(-1, 1)  # white balance varies along the butterscotch axis only
        tint = np.array([1.0, 0.8 - 0.06 * warmth, 0.62 - 0.1 * warmth]) * rng.uniform(0.92, 1.08)
        per_class = tint * (1 + rng.uniform(-0.03, 0.03, (6, 3)))
        x = x[..., None] * per_class[np.minimum(truth, 5)].astype(np.float32)
    sigma = rng.uniform(0.0, 1.1) * max(height, width) / 512
    if sigma > 0.3:
        x = cv2.GaussianBlur(x.astype(np.float32), (0, 0), sigma)
    x = x + rng.normal(0, rng.uniform(0.004, 0.025), x.shape).astype(np.float32)
    return np.clip(x * 255 + 0.5, 0, 255).astype(np.uint8)
