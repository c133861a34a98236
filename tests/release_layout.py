"""A tiny AI4Mars release-0.6 tree written from the published layout alone (the layout section of the
project's design: folder names, file names, label values), not by marsedge's synthetic generator,
so that the own-data recipe is tested against the layout a download has, not against what the
generator happens to write.

    msl/ncam/images/edr/      NLA_<sclk>EDR_F0020000AUT_04096M1.JPG   greyscale frame
    msl/ncam/images/mxy/      NLA_<sclk>MXY_F0020000AUT_04096M1.png   rover mask, 1 = rover (some frames)
    msl/ncam/images/rng-30m/  NLA_<sclk>RNG_F0020000AUT_04096M1.png   range mask, 1 = beyond 30 m
    msl/ncam/labels/train/    <EDR stem>.png                           merged label, 0..3, 255 = null
    msl/ncam/labels/test/masked-gold-min{1,2,3}-100agree/<EDR stem>_merged.png
    m2020/images/ncam/        NLF_<sol>_<sclk>_..._N0000000NCAM00000_01_095J.png   colour 4:3
    m2020/labels/NAV/         <stem>_merged0.png
    label_keys.json

Frames are a few terrain patches, each class with its own brightness and texture, so a model can
learn something in a few steps and brightness alone is a fair baseline.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

CLASS_LEVEL = {0: 110, 1: 70, 2: 170, 3: 35}  # mean grey level per terrain class
LABEL_KEYS = {"soil": 0, "bedrock": 1, "sand": 2, "big rock": 3, "null": 255}


def terrain(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """(grey image, label): vertical bands of random classes with a sprinkle of rocks."""
    label = np.zeros((h, w), np.uint8)
    edges = np.sort(rng.choice(np.arange(8, w - 8), size=2, replace=False))
    for band, (a, b) in enumerate(zip([0, *edges], [*edges, w], strict=True)):
        label[:, a:b] = rng.choice([0, 1, 2]) if band != 1 else rng.choice([0, 2])
    for _ in range(rng.integers(1, 4)):
        y, x, r = rng.integers(6, h - 6), rng.integers(6, w - 6), rng.integers(3, 6)
        cv2.circle(label, (int(x), int(y)), int(r), 3, -1)
    levels = np.vectorize(CLASS_LEVEL.get)(label).astype(np.float32)
    image = np.clip(levels + rng.normal(0, 18, (h, w)), 0, 255).astype(np.uint8)
    label[: h // 10] = 255  # the sky-ward rows nobody labelled
    return image, label


def msl_stem(sclk: int, kind: str = "EDR") -> str:
    return f"NLA_{sclk}{kind}_F0020000AUT_04096M1"


def write_release_06(root: Path, train: int = 40, gold: int = 6, unlabelled: int = 6, m2020: int = 4,
                     size: int = 64, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    msl = root / "msl" / "ncam"
    folders = {name: msl / name for name in ("images/edr", "images/mxy", "images/rng-30m", "labels/train")}
    golds = [msl / f"labels/test/masked-gold-min{k}-100agree" for k in (1, 2, 3)]
    for folder in [*folders.values(), *golds]:
        folder.mkdir(parents=True, exist_ok=True)
    for i in range(train + gold + unlabelled):
        sclk = 397681455 + 20_000 * i  # one spacecraft-clock group per frame
        image, label = terrain(rng, size, size)
        edr = folders["images/edr"] / f"{msl_stem(sclk)}.JPG"
        cv2.imwrite(str(edr), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        if i % 3 == 0:  # a rover mask on some frames: the bottom rows
            rover = np.zeros_like(label)
            rover[-size // 8:, : size // 3] = 1
            cv2.imwrite(str(folders["images/mxy"] / f"{msl_stem(sclk, 'MXY')}.png"), rover)
        if i % 4 == 0:  # beyond 30 m: the top rows
            far = np.zeros_like(label)
            far[: size // 6] = 1
            cv2.imwrite(str(folders["images/rng-30m"] / f"{msl_stem(sclk, 'RNG')}.png"), far)
        if i < train:
            cv2.imwrite(str(folders["labels/train"] / f"{msl_stem(sclk)}.png"), label)
        elif i < train + gold:
            for k, folder in enumerate(golds):  # sparser with each expert level
                sparse = label.copy()
                sparse[rng.random(label.shape) < 0.15 * k] = 255
                cv2.imwrite(str(folder / f"{msl_stem(sclk)}_merged.png"), sparse)
    images, labels = root / "m2020/images/ncam", root / "m2020/labels/NAV"
    for i in range(m2020):
        images.mkdir(parents=True, exist_ok=True)
        labels.mkdir(parents=True, exist_ok=True)
        stem = f"NLF_{100 + i:04d}_{667000000 + i * 90_000:010d}_123ECM_N0000000NCAM00000_01_095J"
        grey, label = terrain(rng, size * 3 // 4, size)
        cv2.imwrite(str(images / f"{stem}.png"), cv2.merge([grey, grey, grey]))
        cv2.imwrite(str(labels / f"{stem}_merged0.png"), label)
    (root / "label_keys.json").write_text(json.dumps(LABEL_KEYS))
    return root
