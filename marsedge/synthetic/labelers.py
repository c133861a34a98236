"""Simulated labelers for the synthetic dataset: a noisy crowd and three careful experts.

Crowd labelers (the citizen scientists of AI4Mars) draw coarse polygons (labels are drawn on a
grid about 1/96 of the frame wide), label only part of the image (sparse on purpose), shift boundaries,
sometimes miss big rocks and sometimes give a whole region the wrong class. Each labeler id has a
fixed temperament (careful, sloppy or bad) across images, so agreement scores mean something.
The train label is their merge (`labels.merge_labels`, the paper's 3-vote / 65% rule).

Experts label only what they are sure of: nothing near a class boundary, not everything, and
they occasionally disagree on ambiguous regions. The gold sets min1/min2/min3 are their merge with
100% agreement and at least 1, 2 or 3 votes, so min3 is the sparsest.

Rover and beyond-30 m pixels are never labelled (AI4Mars removes annotations under the masks).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from marsedge.data.labels import GOLD_RULES, merge_labels
from marsedge.terrain import BEDROCK, BIG_ROCK, IGNORE_INDEX, NUM_TERRAIN_CLASSES, SAND, SOIL

CROWD_POOL = 400  # distinct crowd labeler ids per dataset seed

# a labeler's typical mistake for each class (bedrock under dust looks like soil, and so on)
CONFUSED_WITH = {SOIL: (SAND, BEDROCK), BEDROCK: (SOIL, BIG_ROCK), SAND: (SOIL,), BIG_ROCK: (BEDROCK,)}


@dataclass(frozen=True)
class Temperament:
    name: str
    shift: float  # boundary displacement, as a fraction of the image size
    coverage: tuple[float, float]  # fraction of the terrain labelled
    wrong: float  # fraction of the image area given a confused class
    sees_rocks: float  # chance of labelling the big rocks at all


TEMPERAMENTS = (
    (0.5, Temperament("careful", 0.008, (0.45, 0.9), 0.03, 0.85)),
    (0.35, Temperament("sloppy", 0.025, (0.3, 0.8), 0.12, 0.55)),
    (0.15, Temperament("bad", 0.05, (0.15, 0.7), 0.4, 0.3)),
)


def labeler_temperament(seed: int, labeler: int) -> Temperament:
    rng = np.random.default_rng([seed, 7, labeler])
    weights = [w for w, _ in TEMPERAMENTS]
    return TEMPERAMENTS[int(rng.choice(len(TEMPERAMENTS), p=weights))][1]


def _blobs(rng: np.random.Generator, shape: tuple[int, int], fraction: float, cells: int = 6) -> np.ndarray:
    """A random mask of smooth blobs covering about `fraction` of the image."""
    h, w = shape
    grid = rng.random((cells, max(2, round(cells * w / h))), dtype=np.float32)
    field = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    if fraction <= 0:
        return np.zeros(shape, dtype=bool)
    return field >= np.quantile(field[::4, ::4], 1.0 - min(fraction, 1.0))


def _displaced(rng: np.random.Generator, truth: np.ndarray, amplitude: float) -> np.ndarray:
    """The truth sampled through a smooth random displacement field (a labeler's boundary error)."""
    h, w = truth.shape
    amp = amplitude * max(h, w)
    if amp < 0.5:
        return truth.copy()
    dx = cv2.resize(rng.normal(0, amp, (5, 5)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    dy = cv2.resize(rng.normal(0, amp, (5, 5)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    dx += np.arange(w, dtype=np.float32)[None, :]
    dy += np.arange(h, dtype=np.float32)[:, None]
    return cv2.remap(truth, dx, dy, cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE)


def crowd_label(rng: np.random.Generator, truth: np.ndarray, temperament: Temperament) -> np.ndarray:
    """One citizen scientist's label of a frame: class ids 0..3, 255 unlabelled.

    Drawn on a grid `block` pixels wide (coarse polygons, and cheap), then the post-processing
    of AI4Mars removes whatever falls on the rover or beyond 30 m at full resolution.
    """
    block = max(1, max(truth.shape) // 96)
    coarse = truth[block // 2 :: block, block // 2 :: block]
    label = _displaced(rng, coarse, temperament.shift)
    if rng.random() > temperament.sees_rocks:  # big rocks missed: drawn over as the ground around them
        label[label == BIG_ROCK] = rng.choice([SOIL, BEDROCK, IGNORE_INDEX])
    wrong = _blobs(rng, coarse.shape, temperament.wrong * rng.uniform(0.3, 1.5))
    for cls, options in CONFUSED_WITH.items():
        label[wrong & (label == cls)] = options[int(rng.integers(len(options)))]
    label[~_blobs(rng, coarse.shape, rng.uniform(*temperament.coverage))] = IGNORE_INDEX
    label = cv2.resize(label, truth.shape[::-1], interpolation=cv2.INTER_NEAREST)
    label[(truth >= NUM_TERRAIN_CLASSES) | (label >= NUM_TERRAIN_CLASSES)] = IGNORE_INDEX
    return label


def expert_label(rng: np.random.Generator, truth: np.ndarray) -> np.ndarray:
    """One expert's label: exact where given, nothing near boundaries, partial coverage."""
    label = truth.copy()
    margin = max(1, int(rng.uniform(0.004, 0.015) * max(truth.shape)))
    kernel = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    near_boundary = cv2.dilate(truth, kernel) != cv2.erode(truth, kernel)
    ambiguous = _blobs(rng, truth.shape, rng.uniform(0.0, 0.12))  # e.g. dusty bedrock called soil
    label[ambiguous & (truth == BEDROCK)] = SOIL
    label[near_boundary] = IGNORE_INDEX
    label[~_blobs(rng, truth.shape, rng.uniform(0.55, 0.95))] = IGNORE_INDEX
    label[truth >= NUM_TERRAIN_CLASSES] = IGNORE_INDEX
    return label


def crowd_labels(rng: np.random.Generator, truth: np.ndarray, seed: int, count: int) -> dict[str, np.ndarray]:
    """`count` crowd labels of one frame, keyed by labeler id (`u0042`)."""
    ids = rng.choice(CROWD_POOL, size=count, replace=False)
    return {f"u{i:04d}": crowd_label(rng, truth, labeler_temperament(seed, int(i))) for i in sorted(ids)}


def gold_labels(rng: np.random.Generator, truth: np.ndarray, experts: int = 3) -> dict[str, np.ndarray]:
    """The three gold sets (`gold-min1`, `gold-min2`, `gold-min3`) from `experts` expert labels."""
    stack = np.stack([expert_label(rng, truth) for _ in range(experts)])
    return {name: merge_labels(stack, **rule) for name, rule in GOLD_RULES.items()}
