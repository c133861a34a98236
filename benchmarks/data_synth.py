#!/usr/bin/env python
"""Is the synthetic NAVCAM set fast to make, fair to learn from, and shaped like AI4Mars?

    python -m benchmarks.data_synth                      # 1,000 MSL frames at 512 px, 2 workers
    python -m benchmarks.data_synth --n 200 --size 256   # quicker look

Measures, in one run:
1. generator speed: wall seconds for N MSL frames at S px with W worker processes (the target:
   1,000 frames at 512 px in under 2 minutes on 2 cores), plus the CPU seconds per frame
   and the machine's load average, because the CPU may be shared;
2. the intensity-only baseline: the best class for each grey level, fit on the train labels, scored
   by pixel accuracy on the gold test sets (it must stay well under 60%: brightness alone must not
   give the class away). This histogram rule is the Bayes-optimal per-pixel intensity classifier on
   the train distribution, so no per-pixel brightness model can do better on it;
3. the class composition of the train labels next to AI4Mars. The AI4Mars paper's Figure 3 (MSL
   NAVCAM composition) is a chart whose numbers are not in its text; the reference used is the
   AI4Mars MSL pixel area per class tabulated in the semi-supervised Mars segmentation paper
   (Table 2, train/val and test), in percent of the four terrain classes;
4. merge speed: one image with 10 crowd labels of 1024x1024 (merge + agreement scores);
5. listing speed: `list_items` on a tree of 16,064 (empty) frames and labels, the size of the
   AI4Mars MSL train set; the reader only lists names, so the files' content does not matter.

Writes benchmarks/results/data_synth.json and .md.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, command, load_1min, machine, write_result
from marsedge.data.ai4mars import AI4MarsDataset, list_items
from marsedge.data.labels import agreement_scores, merge_labels
from marsedge.data.stats import dataset_stats
from marsedge.synthetic.navcam import SynthOptions, generate
from marsedge.terrain import CLASS_NAMES, IGNORE_INDEX, NUM_TERRAIN_CLASSES

# AI4Mars MSL pixels per class (semi-supervised Mars segmentation paper, Table 2)
AI4MARS_PIXELS = {
    "train/val": {"soil": 2.59e9, "bedrock": 2.59e9, "sand": 5.68e8, "big rock": 6.35e7},
    "test": {"soil": 9.57e8, "bedrock": 2.10e9, "sand": 5.89e8, "big rock": 2.28e7},
}
TERRAIN = CLASS_NAMES[:NUM_TERRAIN_CLASSES]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    p.add_argument("--n", type=int, default=1000, help="MSL frames (default 1000)")
    p.add_argument("--size", type=int, default=512, help="frame size (default 512)")
    p.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", default=None, help="keep the generated set in this folder")
    p.add_argument("--out", default=str(RESULTS), help="results folder")
    return p.parse_args(argv)


def time_generation(root: Path, args: argparse.Namespace) -> dict:
    opts = SynthOptions(str(root), "msl", n=args.n, size=args.size, seed=args.seed, workers=args.workers)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_before = load_1min()
    summary = generate(opts, progress=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "frames": args.n,
        "size": args.size,
        "workers": summary["workers"],
        "wall_seconds": summary["seconds"],
        "cpu_seconds_per_frame": cpu / max(args.n, 1),
        "load_average_1min": [load_before, load_1min()],
        "bytes_written": sum(p.stat().st_size for p in root.rglob("*") if p.is_file()),
    }


def intensity_baseline(root: Path) -> dict:
    """Best class per grey level on train, pixel accuracy on each gold set (6-class and 4-class)."""
    results = {}
    for four_class, k in ((False, len(CLASS_NAMES)), (True, NUM_TERRAIN_CLASSES)):
        votes = np.zeros((256, k))
        for sample in AI4MarsDataset(root, "train", four_class=four_class):
            keep = sample.label != IGNORE_INDEX
            np.add.at(votes, (sample.image[keep], sample.label[keep]), 1)
        best = votes.argmax(axis=1)
        mode = "4-class" if four_class else "6-class"
        for split in ("gold-min1", "gold-min2", "gold-min3"):
            correct = total = 0
            truth_counts = np.zeros(k)
            for sample in AI4MarsDataset(root, split, four_class=four_class):
                keep = sample.label != IGNORE_INDEX
                correct += int((best[sample.image[keep]] == sample.label[keep]).sum())
                total += int(keep.sum())
                truth_counts += np.bincount(sample.label[keep], minlength=k)[:k]
            results[f"{mode} {split}"] = {
                "pixel_accuracy": correct / max(total, 1),
                "majority_class_rate": float(truth_counts.max() / max(truth_counts.sum(), 1)),
            }
    return results


def composition(root: Path) -> dict:
    stats = dataset_stats(root)

    def terrain_percent(pixels: dict) -> dict:
        total = sum(pixels[n] for n in TERRAIN)
        return {n: 100.0 * pixels[n] / total for n in TERRAIN}

    return {
        "synthetic train": terrain_percent(stats["splits"]["train"]["pixels"]),
        "synthetic gold-min1": terrain_percent(stats["splits"]["gold-min1"]["pixels"]),
        "AI4Mars train/val": terrain_percent(AI4MARS_PIXELS["train/val"]),
        "AI4Mars test": terrain_percent(AI4MARS_PIXELS["test"]),
        "synthetic train, all classes (% of labelled)": stats["splits"]["train"]["percent"],
    }


def merge_speed(repeats: int = 3) -> dict:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, (1024, 1024)).astype(np.uint8)
    labels = np.repeat(truth[None], 10, axis=0)
    noise = rng.random(labels.shape) < 0.3
    labels[noise] = rng.integers(0, 5, int(noise.sum())).astype(np.uint8) % 4
    labels[rng.random(labels.shape) < 0.3] = IGNORE_INDEX
    timings = {"merge": [], "agreement": []}
    for _ in range(repeats):
        t = time.perf_counter()
        merge_labels(labels)
        timings["merge"].append(time.perf_counter() - t)
        t = time.perf_counter()
        agreement_scores(labels)
        timings["agreement"].append(time.perf_counter() - t)
    return {f"{k}_seconds_best": min(v) for k, v in timings.items()}


def listing_speed(count: int = 16064) -> dict:
    with tempfile.TemporaryDirectory(prefix="marsedge-list-") as tmp:
        edr, train = Path(tmp, "msl/images/edr"), Path(tmp, "msl/labels/train")
        edr.mkdir(parents=True)
        train.mkdir(parents=True)
        for i in range(count):
            stem = f"NLA_{397681455 + 1000 * i:09d}EDR_F{20000 + i:07d}AUT_04096M1"
            (edr / f"{stem}.JPG").touch()
            (train / f"{stem}.png").touch()
        start = time.perf_counter()
        items = list_items(tmp, "train")
        seconds = time.perf_counter() - start
    return {"items": len(items), "seconds": seconds}


def markdown(results: dict) -> str:
    g, lines = results["generation"], []
    lines += [
        "# Synthetic NAVCAM data benchmark",
        "",
        f"Machine: {results['machine']}. Command: `{results['command']}`.",
        "",
        "## Generator speed",
        "",
        f"{g['frames']} MSL frames at {g['size']} px with {g['workers']} workers: "
        f"**{g['wall_seconds']:.1f} s** wall "
        f"({g['cpu_seconds_per_frame']:.3f} CPU s per frame; 1-min load average {g['load_average_1min'][0]} "
        f"before, {g['load_average_1min'][1]} after, on a shared CPU). "
        f"{g['bytes_written'] / 1e6:.0f} MB written.",
        "",
        "## Intensity-only baseline (best class per grey level, fit on train)",
        "",
        "| labels | gold set | pixel accuracy | majority-class rate |",
        "|---|---|---|---|",
    ]
    for key, r in results["intensity_baseline"].items():
        mode, split = key.split(" ")
        accuracy, majority = 100 * r["pixel_accuracy"], 100 * r["majority_class_rate"]
        lines.append(f"| {mode} | {split} | {accuracy:.1f}% | {majority:.1f}% |")
    lines += ["", "## Class composition (% of the four terrain classes)", ""]
    lines += ["| source | " + " | ".join(TERRAIN) + " |", "|---|" + "---|" * len(TERRAIN)]
    for source, pct in results["composition"].items():
        if source.startswith("synthetic train, all"):
            continue
        lines.append(f"| {source} | " + " | ".join(f"{pct[n]:.1f}" for n in TERRAIN) + " |")
    allc = results["composition"]["synthetic train, all classes (% of labelled)"]
    lines += [
        "",
        "Synthetic train labels with the masks folded in (% of labelled pixels): "
        + ", ".join(f"{n} {v:.1f}" for n, v in allc.items())
        + ".",
        "AI4Mars rows: pixel areas from the semi-supervised Mars segmentation paper, Table 2 (the AI4Mars",
        "paper's Figure 3 is a chart without numbers in its text).",
        "",
        "## Crowd label merging",
        "",
        f"One image, 10 labels of 1024x1024: merge {1000 * results['merge']['merge_seconds_best']:.0f} ms, "
        f"agreement scores {1000 * results['merge']['agreement_seconds_best']:.0f} ms.",
        "",
        "## Listing",
        "",
        f"`list_items(root, 'train')` on {results['listing']['items']} frames + labels: "
        f"{1000 * results['listing']['seconds']:.0f} ms (names only, no file is opened).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="marsedge-synth-"))
    try:
        results = {
            "machine": "{cpu}, {cores} cores".format(**machine()),
            "command": command("data_synth", argv if argv is not None else sys.argv[1:]),
            "generation": time_generation(root, args),
        }
        results["intensity_baseline"] = intensity_baseline(root)
        results["composition"] = composition(root)
        results["merge"] = merge_speed()
        results["listing"] = listing_speed()
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    text = markdown(results)
    write_result(Path(args.out) / "data_synth", results, text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
