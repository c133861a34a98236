"""Synthetic NAVCAM datasets in the exact AI4Mars layout (`marsedge data synth`).

    marsedge data synth --out DIR --mission msl|m2020|mer --n N --size S --seed K
                        [--test-fraction F] [--unlabelled U] [--labelers MIN MAX] [--workers W]
                        [--release 0.1|0.6] [--pds N]

What it writes under DIR (the names and folders `ai4mars.py` reads):

  MSL (greyscale SxS, default 1024):
    msl/images/edr/NLA_<sclk>EDR_F<seq>AUT_04096M1.JPG     frame (JPEG, quality varies per frame)
    msl/images/mxy/NLA_<sclk>MXY_...png                     rover mask (only frames showing rover)
    msl/images/rng-30m/NLA_<sclk>RNG_...png                 range mask (beyond 30 m and sky)
    msl/labels/crowd/<stem>/<labeler>.png                   each crowd label (the merge input)
    msl/labels/train/<stem>.png                             merge of the crowd labels (3 votes, >65%)
    msl/labels/test/masked-gold-min{1,2,3}-100agree/<stem>_merged.png   expert gold sets
  M2020 (colour, 4:3, S is the long side: S x 3S/4, default 1280x960; no masks, no gold sets):
    m2020/images/ncam/NLF_<sol>_<sclk>_..._295J01.png
    m2020/labels/crowd/<stem>/<labeler>.png
    m2020/labels/NAV/<stem>_merged.png
  synth-<mission>.json                                      options, counts, timings

Of the N labelled frames, round(N * test_fraction) are MSL gold test frames (M2020: none) and the
rest train; `--unlabelled U` adds U frames with no label at all (for self-supervised work).

`--release 0.6` writes the later layout instead (`synthetic/release.py`): MSL under msl/ncam/ with
real-style names `NLB_<sclk>EDR_F<seq>NCAM<nnnnn>M1`, M2020
`NLF_<sol>_<sclk>_<nnn>ECM_N<seq>NCAM<nnnnn>_01_295J` whose test frames form `m2020-test`
(greyscale, expert-dense labels), MER (`--mission mer`) train in mer/images/eff +
mer/labels/train/merged-unmasked and test in mer/images/test + gold min2/min3 paired through
test.csv, and `label_keys.json`. `--pds N` adds PDS3 (attached label with a VICAR
IMAGE_HEADER) and PDS4 copies of the first N frames under DIR/pds/<mission>/ as 12-bit samples.
With neither flag the output is byte-for-byte what release 0.1 always wrote.

Determinism: frame i is drawn from `np.random.default_rng([seed, mission, i])` and written by
whichever worker gets it, so the files are byte-identical for any worker count. A frame is
complete when its image exists (written last, atomically), so an interrupted run resumes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from marsedge.data import ai4mars
from marsedge.data.labels import merge_labels
from marsedge.errors import ConfigError
from marsedge.io import atomic_write_bytes, atomic_write_json
from marsedge.synthetic import release as synthetic_release
from marsedge.synthetic.labelers import crowd_labels, gold_labels
from marsedge.synthetic.scene import LOOKS, render_scene

MISSION_CODE = {"msl": 0, "m2020": 1, "mer": 2}
DEFAULT_SIZE = {"msl": 1024, "m2020": 1280, "mer": 1024}
RELEASES = ("0.1", "0.6")


@dataclass(frozen=True)
class SynthOptions:
    out: str
    mission: str = "msl"
    n: int = 100
    size: int | None = None  # MSL: SxS; M2020: S x 3S/4 (S the long side); None: the real size
    seed: int = 0
    test_fraction: float = 0.1
    unlabelled: int = 0
    labelers: tuple[int, int] = (5, 9)  # crowd labels per frame, drawn uniformly in [min, max]
    workers: int | None = None
    release: str = "0.1"  # "0.6": the later layout, real-style names, MER and M2020 test sets
    pds: int = 0  # PDS3 + PDS4 copies of the first N frames

    def __post_init__(self) -> None:
        if self.release not in RELEASES:
            raise ConfigError(f"--release must be one of {', '.join(RELEASES)}, got '{self.release}'")
        missions = sorted(MISSION_CODE) if self.release == "0.6" else sorted(LOOKS)
        if self.mission not in missions:
            raise ConfigError(
                f"--mission must be one of {missions} for release {self.release}, got '{self.mission}'"
            )
        if self.pds < 0:
            raise ConfigError(f"--pds must be >= 0, got {self.pds}")
        if self.n < 0 or self.unlabelled < 0:
            raise ConfigError("--n and --unlabelled must be >= 0")
        if self.size is not None and self.size < 32:
            raise ConfigError(f"--size must be at least 32, got {self.size}")
        if not 0.0 <= self.test_fraction <= 1.0:
            raise ConfigError(f"--test-fraction must be in [0, 1], got {self.test_fraction}")
        if not 3 <= self.labelers[0] <= self.labelers[1]:
            raise ConfigError(
                f"--labelers needs 3 <= MIN <= MAX (merging needs 3 votes), got {self.labelers}"
            )

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width)."""
        size = self.size or DEFAULT_SIZE[self.mission]
        return (int(round(size * 0.75)), size) if self.mission == "m2020" else (size, size)


@dataclass(frozen=True)
class FramePlan:
    index: int
    role: str  # "train", "test" or "unlabelled"
    stem: str


def frame_stem(mission: str, index: int) -> str:
    """A real-looking product id, unique per index."""
    if mission == "msl":
        return f"NLA_{397681455 + 1000 * index:09d}EDR_F{20000 + index:07d}AUT_04096M1"
    sol, sclk = 10 + index // 20, 667000000 + 1000 * index
    return f"NLF_{sol:04d}_{sclk:010d}_{index % 1000:03d}ECM_N{40000 + index:07d}NCAM00406_01_295J01"


def plan_frames(opts: SynthOptions) -> list[FramePlan]:
    """Which frame index plays which role: a seeded choice of test frames among the N labelled."""
    tested = opts.mission == "msl" or opts.release != "0.1"
    n_test = int(round(opts.n * opts.test_fraction)) if tested else 0
    test = set(
        np.random.default_rng([opts.seed, MISSION_CODE[opts.mission]]).permutation(opts.n)[:n_test].tolist()
    )
    roles = ["test" if i in test else "train" for i in range(opts.n)] + ["unlabelled"] * opts.unlabelled
    stem = frame_stem if opts.release == "0.1" else synthetic_release.frame_stem
    return [FramePlan(i, role, stem(opts.mission, i)) for i, role in enumerate(roles)]


def _png(array: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", array)
    assert ok, "PNG encoding of an in-memory array cannot fail"
    return buf.tobytes()


def _image_bytes(rng: np.random.Generator, image: np.ndarray, mission: str) -> bytes:
    """MSL: a JPEG of random quality. M2020: a PNG of a JPEG-compressed frame (the artefacts stay)."""
    quality = int(rng.integers(60, 96))
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok, "JPEG encoding of an in-memory array cannot fail"
    if mission == "msl":
        return jpeg.tobytes()
    return _png(cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED))


def msl_paths(msl: Path, stem: str) -> dict[str, Path]:
    """Where one MSL frame's image, masks and labels go under the MSL root (`msl/` in release 0.1,
    `msl/ncam/` in 0.6)."""
    return {
        "image": msl / ai4mars.MSL_EDR / f"{stem}.JPG",
        "rover": msl / ai4mars.MSL_MXY / f"{ai4mars.mask_stem(stem, 'MXY')}.png",
        "range": msl / ai4mars.MSL_RNG / f"{ai4mars.mask_stem(stem, 'RNG')}.png",
        "crowd": msl / ai4mars.MSL_CROWD / stem,
        "train": msl / ai4mars.MSL_TRAIN / f"{stem}.png",
        **{name: msl / folder / f"{stem}_merged.png" for name, folder in ai4mars.GOLD_DIRS.items()},
    }


def _paths(root: Path, mission: str, stem: str) -> dict[str, Path]:
    if mission == "msl":
        return msl_paths(root / "msl", stem)
    return {
        "image": root / ai4mars.M2020_IMAGES / f"{stem}.png",
        "crowd": root / ai4mars.M2020_CROWD / stem,
        "train": root / ai4mars.M2020_TRAIN / f"{stem}_merged.png",
    }


def render_frame(plan: FramePlan, opts: SynthOptions) -> dict:
    """Draw and write one frame with its masks and labels. Returns what it wrote (for synth.json)."""
    paths = _image_paths(opts, plan)
    if paths["image"].exists():
        return {"role": plan.role, "resumed": True}
    rng = np.random.default_rng([opts.seed, MISSION_CODE[opts.mission], plan.index])
    height, width = opts.frame_size
    scene = render_scene(rng, height, width, LOOKS.get(opts.mission, LOOKS["msl"]))
    if "rover" in paths:
        if scene.rover.any():
            atomic_write_bytes(paths["rover"], _png(scene.rover.astype(np.uint8)))
        atomic_write_bytes(paths["range"], _png(scene.far.astype(np.uint8)))
    if plan.role == "train":
        count = int(rng.integers(opts.labelers[0], opts.labelers[1] + 1))
        crowd = crowd_labels(rng, scene.truth, opts.seed, count)
        for labeler, label in crowd.items():
            atomic_write_bytes(paths["crowd"] / f"{labeler}.png", _png(label))
        atomic_write_bytes(paths["train"], _png(merge_labels(list(crowd.values()))))
    elif plan.role == "test":
        for name, label in gold_labels(rng, scene.truth).items():
            if name in paths:
                atomic_write_bytes(paths[name], _png(label))
    image = scene.image
    if plan.role == "test" and opts.mission == "m2020":  # the expert M2020 set is greyscale
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    encoding = "msl" if opts.mission == "mer" else opts.mission  # MER frames are JPEGs like MSL's
    atomic_write_bytes(paths["image"], _image_bytes(rng, image, encoding))
    truth_pixels = np.bincount(scene.truth.ravel(), minlength=6).tolist()
    return {"role": plan.role, "resumed": False, "truth_pixels": truth_pixels}


def _worker_init() -> None:
    cv2.setNumThreads(1)  # one process per core already; OpenCV threads would oversubscribe


def _render_star(args: tuple[FramePlan, SynthOptions]) -> dict:
    return render_frame(*args)


def generate(opts: SynthOptions, progress: bool = True) -> dict:
    """Write the whole dataset (in parallel over `workers` processes); returns and saves a summary."""
    from tqdm import tqdm

    plans = plan_frames(opts)
    workers = max(1, opts.workers or min(len(os.sched_getaffinity(0)), 8))
    start = time.perf_counter()
    jobs = [(plan, opts) for plan in plans]
    bar = tqdm(total=len(jobs), desc=f"synth {opts.mission}", unit="frame", disable=not progress)
    results = []
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            results.append(_render_star(job))
            bar.update()
    else:
        with mp.get_context("spawn").Pool(workers, initializer=_worker_init) as pool:
            for result in pool.imap_unordered(_render_star, jobs, chunksize=4):
                results.append(result)
                bar.update()
    bar.close()
    seconds = time.perf_counter() - start
    truth = np.zeros(6, dtype=np.int64)
    for r in results:
        if not r["resumed"]:
            truth += np.asarray(r["truth_pixels"])
    summary = {
        "options": {**asdict(opts), "frame_size": list(opts.frame_size)},
        "frames": {role: sum(r["role"] == role for r in results) for role in ("train", "test", "unlabelled")},
        "resumed": sum(r["resumed"] for r in results),
        "workers": workers,
        "seconds": round(seconds, 2),
        "truth_pixels_rendered": truth.tolist(),
    }
    if opts.release != "0.1":
        synthetic_release.write_release_files(Path(opts.out), opts.mission, plans)
    if opts.pds:
        summary["pds"] = synthetic_release.write_pds_copies(
            Path(opts.out), opts.mission, plans[: opts.pds], lambda plan: _image_paths(opts, plan)["image"]
        )
    atomic_write_json(Path(opts.out) / f"synth-{opts.mission}.json", summary)
    return summary


def _image_paths(opts: SynthOptions, plan: FramePlan) -> dict[str, Path]:
    """Where a frame's files go: the release 0.1 layout, or 0.6 (`release.paths`)."""
    root = Path(opts.out)
    if opts.release == "0.1":
        return _paths(root, opts.mission, plan.stem)
    return synthetic_release.paths(root, opts.mission, plan)


def summary_line(summary: dict) -> str:
    f = summary["frames"]
    return (
        f"wrote {f['train']} train, {f['test']} test, {f['unlabelled']} unlabelled "
        f"{summary['options']['mission']} frames in {summary['seconds']:.1f} s "
        f"({summary['workers']} workers, {summary['resumed']} resumed)"
    )
