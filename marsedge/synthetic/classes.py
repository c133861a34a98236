"""Synthetic Curiosity image classes in the MSL surface layout (`marsedge data synth-classes`).

    marsedge data synth-classes --out DIR --n 600 --size 96 --seed 0 [--unlabelled U]

writes exactly what `marsedge.data.msl_surface` reads (the published v2.1 layout):

    DIR/msl-labeled-data-set-v2.1/images/<sol><cam><seq>E01_DRCL.JPG   colour JPEG, one class each
    DIR/msl-labeled-data-set-v2.1/class_map.csv                         `id,name`
    DIR/msl-labeled-data-set-v2.1/{train,val,test}-set-v2.1.txt         `<file name> <class id>`
    DIR/unlabelled/<name>.JPG                                           U images without a label
    DIR/synth-classes.json                                              options and counts

Why it looks like the real set where it matters for the methods:
- classes are procedural scenes of what Curiosity photographs: terrain close-ups (nearby surface,
  close-up rock, sand, layers, wheel tracks, drill hole), distant landscape, night sky, the sun and
  rover parts (wheel, arm cover, Mastcam calibration target); several share the same ground texture,
  so the class is in the structure, not in the mean colour;
- class-imbalanced: `nearby surface` is about a third of the images, `arm cover` under 1%;
- chronological: each image has a sol (the file name's first four digits); train holds the first
  sols, val the next, test the last, as published. Priors drift from `TRAIN_PRIOR` to `TEST_PRIOR`
  over the mission (drill holes rarer later, wheel tracks commoner), and so does the appearance:
  dust lowers contrast and saturation and rover parts are shot from further away (smaller) late in
  the mission, the papers' train-test gap.
Determinism: image i comes from `np.random.default_rng([seed, 11, i])`; a rerun skips images that
exist (written atomically), so an interrupted run resumes and gives the same files.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from marsedge.data.msl_surface import RELEASES
from marsedge.errors import ConfigError
from marsedge.io import atomic_write_bytes, atomic_write_json, atomic_write_text

Renderer = Callable[[np.random.Generator, int, float], np.ndarray]  # (rng, size, drift) -> HxWx3 0..1
RENDERERS: dict[str, Renderer] = {}
#                      name                   train prior  test prior
CLASS_PRIORS: dict[str, tuple[float, float]] = {
    "nearby surface": (0.32, 0.30),
    "close-up rock": (0.08, 0.06),
    "sand": (0.06, 0.10),
    "layers": (0.05, 0.05),
    "wheel tracks": (0.06, 0.16),
    "drill hole": (0.09, 0.02),
    "distant landscape": (0.12, 0.10),
    "night sky": (0.02, 0.03),
    "sun": (0.02, 0.02),
    "wheel": (0.11, 0.09),
    "arm cover": (0.006, 0.01),
    "mastcam cal target": (0.05, 0.05),
}
SOL_MAX = 1600
SKY = np.array([0.80, 0.66, 0.52], np.float32)  # butterscotch Mars sky
CAMS = ("ML", "MR", "MH")  # Mastcam left/right, MAHLI


def register_renderer(name: str):
    def decorate(fn: Renderer) -> Renderer:
        RENDERERS[name] = fn
        return fn

    return decorate


def _noise(rng: np.random.Generator, size: int, cells: int, octaves: int = 3) -> np.ndarray:
    """Value noise in [0, 1]: octaves of bicubically upsampled random grids."""
    out = np.zeros((size, size), np.float32)
    weight = 1.0
    for o in range(octaves):
        n = max(2, cells * 2**o)
        grid = rng.random((n, n)).astype(np.float32)
        out += weight * cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
        weight *= 0.5
    out -= out.min()
    return out / max(float(out.max()), 1e-6)


def _tint(grey: np.ndarray, rng: np.random.Generator, base=(1.0, 0.74, 0.52)) -> np.ndarray:
    """Greyscale -> Mars-coloured RGB with a per-image tint."""
    tint = np.asarray(base, np.float32) * rng.uniform(0.9, 1.1, 3).astype(np.float32)
    return grey[..., None] * tint


def _ground(rng: np.random.Generator, size: int) -> np.ndarray:
    g = 0.35 + 0.3 * _noise(rng, size, 4) + 0.12 * (rng.random((size, size)) - 0.5)
    pebbles = (_noise(rng, size, 12, 1) > 0.8).astype(np.float32)
    return np.clip(g - 0.12 * pebbles, 0, 1).astype(np.float32)


def _lit_disc(size: int, cx: float, cy: float, rx: float, ry: float, light=(-0.6, -0.6)) -> tuple:
    """An ellipsoid's mask and Lambert shading."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    u, v = (xx - cx) / rx, (yy - cy) / ry
    r2 = u * u + v * v
    mask = r2 < 1
    nz = np.sqrt(np.clip(1 - r2, 0, 1))
    shade = np.clip(0.35 + 0.65 * (-light[0] * u - light[1] * v + 0.5 * nz), 0, 1)
    return mask, shade.astype(np.float32)


@register_renderer("nearby surface")
def _nearby_surface(rng, size, drift):
    return _tint(_ground(rng, size), rng)


@register_renderer("close-up rock")
def _close_up_rock(rng, size, drift):
    img = _ground(rng, size)
    c = size * rng.uniform(0.4, 0.6, 2)
    mask, shade = _lit_disc(size, c[0], c[1], size * rng.uniform(0.3, 0.45), size * rng.uniform(0.25, 0.4))
    rock = shade * (0.55 + 0.25 * _noise(rng, size, 8, 2))
    img[mask] = rock[mask]
    return _tint(img, rng, (0.95, 0.8, 0.65))


@register_renderer("sand")
def _sand(rng, size, drift):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    angle, freq = rng.uniform(0, np.pi), rng.uniform(5, 10)
    warp = 0.15 * _noise(rng, size, 3)
    ripples = np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle) + warp))
    return _tint(np.clip(0.5 + 0.15 * ripples + 0.05 * _noise(rng, size, 16, 1), 0, 1), rng, (1.0, 0.7, 0.45))


@register_renderer("layers")
def _layers(rng, size, drift):
    yy = np.mgrid[0:size, 0:size][0].astype(np.float32) / size
    tilt = rng.uniform(-0.3, 0.3) * np.mgrid[0:size, 0:size][1].astype(np.float32) / size
    bands = np.sin(2 * np.pi * rng.uniform(6, 14) * (yy + tilt + 0.05 * _noise(rng, size, 3)))
    grey = 0.45 + 0.2 * np.sign(bands) * np.abs(bands) ** 0.5 + 0.1 * _noise(rng, size, 10, 2)
    return _tint(np.clip(grey, 0, 1), rng)


@register_renderer("wheel tracks")
def _wheel_tracks(rng, size, drift):
    img = _ground(rng, size)
    xx = np.mgrid[0:size, 0:size][1].astype(np.float32)
    yy = np.mgrid[0:size, 0:size][0].astype(np.float32)
    slant = rng.uniform(-0.3, 0.3)
    for centre in (size * rng.uniform(0.2, 0.35), size * rng.uniform(0.65, 0.8)):
        track = np.abs(xx - centre - slant * (yy - size / 2)) < size * 0.08
        tread = 0.8 + 0.2 * (np.sin(yy * 2 * np.pi / (size * 0.06)) > 0)
        img[track] = (img * 0.6 * tread)[track]
    return _tint(img, rng)


@register_renderer("drill hole")
def _drill_hole(rng, size, drift):
    img = _ground(rng, size) * 0.8 + 0.1
    c = size * rng.uniform(0.35, 0.65, 2)
    r = size * rng.uniform(0.07, 0.12)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    d = np.hypot(xx - c[0], yy - c[1])
    img = np.where(d < 2.6 * r, np.clip(img + 0.25, 0, 1), img)  # pale tailings around the hole
    img = np.where(d < r, 0.05 + 0.1 * d / r, img)
    return _tint(img.astype(np.float32), rng, (0.95, 0.72, 0.6))


@register_renderer("distant landscape")
def _distant_landscape(rng, size, drift):
    x = np.arange(size, dtype=np.float32)
    horizon = size * (
        rng.uniform(0.3, 0.55) + 0.08 * np.sin(x / size * rng.uniform(2, 6) + rng.uniform(0, 6))
    )
    yy = np.mgrid[0:size, 0:size][0].astype(np.float32)
    img = _tint(0.3 + 0.35 * _noise(rng, size, 6) * (yy / size), rng)
    sky = yy < horizon[None, :]
    img[sky] = (SKY * (0.9 + 0.1 * yy / size)[..., None])[sky]
    return img


@register_renderer("night sky")
def _night_sky(rng, size, drift):
    img = np.full((size, size), 0.02, np.float32) + 0.02 * rng.random((size, size)).astype(np.float32)
    n = int(rng.integers(15, 40))
    img[rng.integers(0, size, n), rng.integers(0, size, n)] = rng.uniform(0.6, 1.0, n)
    img = cv2.GaussianBlur(img, (3, 3), 0.6)
    return np.repeat(img[..., None], 3, axis=2)


@register_renderer("sun")
def _sun(rng, size, drift):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = size * rng.uniform(0.3, 0.7, 2)
    d = np.hypot(xx - c[0], yy - c[1]) / (size * rng.uniform(0.05, 0.1))
    grey = np.clip(1.2 * np.exp(-(d**4)) + 0.15 * np.exp(-d / 3), 0, 1) + 0.03
    return _tint(grey.astype(np.float32), rng, (1.0, 0.85, 0.7))


def _on_background(rng, size, drift) -> np.ndarray:
    """What a rover part is photographed against: ground, or the deck and sky."""
    return _ground(rng, size) * 0.9 if rng.random() < 0.6 else np.full((size, size), 0.5, np.float32)


@register_renderer("wheel")
def _wheel(rng, size, drift):
    img = _on_background(rng, size, drift)
    scale = 1.0 - 0.4 * drift  # shot from further away later in the mission
    c = size * rng.uniform(0.4, 0.6, 2)
    radius = size * rng.uniform(0.38, 0.48) * scale
    mask, shade = _lit_disc(size, c[0], c[1], radius, radius)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = np.arctan2(yy - c[1], xx - c[0])
    grousers = (np.sin(angle * 24 + np.hypot(xx - c[0], yy - c[1]) / radius * 3) > 0.3).astype(np.float32)
    wheel = 0.55 * shade + 0.25 * grousers * shade
    hub = np.hypot(xx - c[0], yy - c[1]) < radius * 0.25
    img[mask] = wheel[mask]
    img[hub] = 0.2
    return _tint(img, rng, (0.9, 0.82, 0.75))


@register_renderer("arm cover")
def _arm_cover(rng, size, drift):
    img = _on_background(rng, size, drift) * 0.5
    scale = 1.0 - 0.35 * drift
    w, h = size * rng.uniform(0.5, 0.7) * scale, size * rng.uniform(0.4, 0.6) * scale
    x0, y0 = int((size - w) * rng.uniform(0.3, 0.7)), int((size - h) * rng.uniform(0.3, 0.7))
    img[y0 : y0 + int(h), x0 : x0 + int(w)] = 0.85
    for fx in (0.1, 0.9):
        for fy in (0.1, 0.9):
            cv2.circle(img, (int(x0 + fx * w), int(y0 + fy * h)), max(1, size // 40), 0.3, -1)
    cv2.line(img, (x0, int(y0 + h / 2)), (int(x0 + w), int(y0 + h / 2)), 0.6, max(1, size // 48))
    return _tint(img, rng, (0.95, 0.92, 0.9))


@register_renderer("mastcam cal target")
def _cal_target(rng, size, drift):
    img = _on_background(rng, size, drift) * 0.6
    scale = 1.0 - 0.35 * drift
    side = int(size * rng.uniform(0.55, 0.7) * scale)
    x0, y0 = (int(rng.integers(0, size - side + 1)) for _ in range(2))
    rgb = np.repeat(img[..., None], 3, axis=2) * np.asarray([1.0, 0.75, 0.55], np.float32)
    rgb[y0 : y0 + side, x0 : x0 + side] = 0.7
    chips = [
        (0.9, 0.2, 0.2),
        (0.2, 0.8, 0.2),
        (0.2, 0.3, 0.9),
        (0.9, 0.9, 0.2),
        (0.15, 0.15, 0.15),
        (0.95,) * 3,
    ]
    cell = side // 3
    for k, colour in enumerate(chips):
        r, c = divmod(k, 3)
        rgb[y0 + r * cell + 2 : y0 + (r + 1) * cell - 2, x0 + c * cell + 2 : x0 + (c + 1) * cell - 2] = colour
    cv2.circle(
        rgb, (x0 + side // 2, y0 + side - cell // 2), max(2, side // 10), (0.1, 0.1, 0.1), -1
    )  # gnomon
    return rgb


@dataclass(frozen=True)
class ClassSynthOptions:
    out: str
    n: int = 600  # labelled images (train + val + test)
    size: int = 96
    seed: int = 0
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    unlabelled: int = 0
    quality: int = 90  # JPEG quality

    def __post_init__(self) -> None:
        if self.n < 3 or self.size < 16:
            raise ConfigError(f"--n must be >= 3 and --size >= 16, got {self.n} and {self.size}")
        if not (
            self.val_fraction > 0 and self.test_fraction > 0 and self.val_fraction + self.test_fraction < 1
        ):
            raise ConfigError("--val-fraction and --test-fraction must be positive and sum to less than 1")


def _prior(drift: float) -> np.ndarray:
    p = np.array([(1 - drift) * a + drift * b for a, b in CLASS_PRIORS.values()])
    return p / p.sum()


def _degrade(img: np.ndarray, rng: np.random.Generator, drift: float) -> np.ndarray:
    """Exposure, dust (contrast and saturation fall with the sol), blur and sensor noise."""
    dust = 0.35 * drift * rng.uniform(0.5, 1.0)
    grey = img.mean(axis=2, keepdims=True)
    img = img * (1 - dust) + (grey * 0.6 + 0.4 * grey.mean()) * dust * np.asarray([1.0, 0.8, 0.6], np.float32)
    img = img * rng.uniform(0.75, 1.25)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.5))
    img = img + rng.normal(0, 0.02, img.shape).astype(np.float32)
    return np.clip(img, 0, 1)


def render_image(rng: np.random.Generator, name: str, size: int, drift: float) -> np.ndarray:
    """One uint8 HxWx3 RGB image of class `name` at mission time `drift` (0 first sol, 1 last)."""
    img = RENDERERS[name](rng, size, drift).astype(np.float32)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    return (_degrade(np.ascontiguousarray(img), rng, drift) * 255 + 0.5).astype(np.uint8)


def _plan(opts: ClassSynthOptions) -> list[tuple[str, int, int]]:
    """(split, sol, class id) of each labelled image, in sol order; splits cut chronologically."""
    rng = np.random.default_rng([opts.seed, 10])
    sols = np.sort(rng.integers(1, SOL_MAX, opts.n))
    n_test = max(1, round(opts.n * opts.test_fraction))
    n_val = max(1, round(opts.n * opts.val_fraction))
    splits = ["train"] * (opts.n - n_val - n_test) + ["val"] * n_val + ["test"] * n_test
    targets = [int(rng.choice(len(CLASS_PRIORS), p=_prior(s / SOL_MAX))) for s in sols]
    return list(zip(splits, (int(s) for s in sols), targets, strict=True))


def _write_jpeg(path: Path, rgb: np.ndarray, quality: int) -> None:
    ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise OSError(f"cannot encode {path}")
    atomic_write_bytes(path, buf.tobytes())


def generate_classes(opts: ClassSynthOptions, progress: bool = True) -> dict:
    """Write the dataset (resuming an interrupted run); returns the summary written to synth-classes.json."""
    from tqdm import tqdm

    start = time.perf_counter()
    release = RELEASES["v2.1"]
    folder = Path(opts.out) / release.folder
    names = list(CLASS_PRIORS)
    lines: dict[str, list[str]] = {s: [] for s in release.splits}
    jobs = []
    for i, (split, sol, target) in enumerate(_plan(opts)):
        file = f"{sol:04d}{CAMS[i % 3]}{i:07d}{sol * 7 % 1000:03d}00{i % 97:03d}E01_DRCL.JPG"
        lines[split].append(f"{file} {target}")
        jobs.append((folder / release.images / file, i, names[target], sol))
    for j in range(opts.unlabelled):
        rng = np.random.default_rng([opts.seed, 12, j])
        sol = int(rng.integers(1, SOL_MAX))
        target = int(rng.choice(len(names), p=_prior(sol / SOL_MAX)))
        jobs.append(
            (Path(opts.out) / "unlabelled" / f"{sol:04d}ML{j:07d}U_DRCL.JPG", opts.n + j, names[target], sol)
        )
    for path, index, name, sol in tqdm(jobs, desc="synth-classes", disable=not progress, leave=False):
        if not path.exists():
            rng = np.random.default_rng([opts.seed, 11, index])
            _write_jpeg(path, render_image(rng, name, opts.size, sol / SOL_MAX), opts.quality)
    atomic_write_text(folder / release.class_map, "".join(f"{i},{n}\n" for i, n in enumerate(names)))
    for split, file in release.splits.items():
        atomic_write_text(folder / file, "".join(f"{line}\n" for line in lines[split]))
    counts = {split: len(v) for split, v in lines.items()}
    summary = {
        "options": asdict(opts),
        "root": str(folder),
        "classes": names,
        "images": counts,
        "unlabelled": opts.unlabelled,
        "seconds": round(time.perf_counter() - start, 2),
    }
    atomic_write_json(Path(opts.out) / "synth-classes.json", summary)
    return summary
