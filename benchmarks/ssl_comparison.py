"""Learning from unlabelled frames, measured on synthetic data on a CPU (about 10 minutes).

    python -m benchmarks.ssl_comparison [--work runs/ssl_bench] [--out benchmarks/results]

1. a synthetic AI4Mars tree (`marsedge data synth`): labelled MSL frames, gold test frames and
   unlabelled frames, 96 px;
2. a classification folder cut from it (`marsedge class-folder`: 48 px crops by majority class);
3. SimCLR pretraining of a narrow ResNet-18 (width 0.25, 64 px input) on the unlabelled + train
   frames (labels unused); `marsedge cluster` (k-means, K clusters) on its features; cluster-aware
   SimCLR from scratch with those clusters, same budget;
4. linear evaluation (frozen backbone, features computed once, 128-unit linear classifier) of random
   init vs SimCLR vs cluster-aware SimCLR;
5. finetuning DeepLabv3+ at 1 % of the labelled frames, from scratch vs from each pretraining
   (test: the gold-min1 frames), for each seed;
6. the false-negative simulation (`marsedge fn-rate`) and its Figure-6-style plot.

Writes OUT/ssl_comparison.json, OUT/ssl_comparison.md and OUT/fn_rate_figure6.png. Everything is
seeded; the numbers are what one run measured, on synthetic data, with tiny models and budgets:
they show the pipeline works and how the variants compare here, not what they do on AI4Mars.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.common import load_1min, machine, synthetic_tree, train, write_result

BACKBONE = "r18_0.25x_sk0"
TINY = {"model": {"backbone": BACKBONE, "head": "deeplabv3plus", "head_channels": 32, "output_stride": 16},
        "num_workers": 0}


def train_tiny(work: Path, name: str, config: dict) -> dict:
    """Run one `marsedge train` config (the tiny model unless it says otherwise) through its mode's
    module; returns the loop's summary."""
    summary = train(work, name, {**TINY, **config, "run": {"log_every": 5, "eval_every": 0,
                                                          **config.get("run", {})}})
    summary["seconds"] = round(summary["seconds"], 1)
    print(f"  {name}: {summary['seconds']} s")
    return summary


def pretrain_config(data: Path, args, clusters: Path | None = None) -> dict:
    section = {"temperature": args.temperature, "frames_per_epoch": None,
               "sources": [{"root": str(data), "split": "unlabelled"}, {"root": str(data), "split": "train"}]}
    if clusters is not None:
        section.update(clusters=str(clusters), num_clusters=args.k)
    return {"mode": "pretrain", "seed": args.seed, "epochs": args.pretrain_epochs, "batch_size": 64,
            "data": {"root": str(data), "preprocess": {"height": args.input, "width": args.input}},
            "optim": {"name": "lars", "lr": 0.6, "weight_decay": 1e-6, "schedule": "cosine",
                      "warmup_epochs": 1},
            "pretrain": section}


def linear_eval_config(folder: Path, args, checkpoint: str | None) -> dict:
    return {"mode": "linear_eval", "seed": args.seed, "epochs": 40, "batch_size": 128,
            "init": {"checkpoint": checkpoint},
            "data": {"preprocess": {"height": args.input, "width": args.input}},
            "optim": {"name": "adamw", "lr": 3e-3, "weight_decay": 1e-4, "schedule": "cosine"},
            "linear_eval": {"folder": str(folder), "hidden": 128},
            "run": {"eval_every": 40, "early_stop_metric": "accuracy"}}


def finetune_config(data: Path, args, checkpoint: str | None, seed: int) -> dict:
    return {"mode": "finetune", "seed": seed, "epochs": args.finetune_epochs, "batch_size": 4,
            "init": {"checkpoint": checkpoint, "backbone_only": True},
            "data": {"root": str(data), "label_fraction": 0.01, "test_splits": ["gold-min1"],
                     "preprocess": {"height": args.input, "width": args.input}},
            "optim": {"name": "sgd", "lr": 0.05, "schedule": "poly", "weight_decay": 1e-4},
            "run": {"eval_every": args.finetune_epochs, "early_stop_metric": "miou"}}


def fn_rate_section(out: Path) -> dict:
    from marsedge.ssl.fn_rate import expected_fn_rate, parse_distribution, plot_figure6, simulate_fn_rate

    rows = {}
    for preset in ("curiosity", "imagenet"):
        probs = parse_distribution(preset=preset)
        rows[preset] = {"simulated": simulate_fn_rate(probs, 128, 1000), "iid_expectation":
                        expected_fn_rate(probs, 128), "classes": len(probs)}
    rows["figure"] = str(out / "fn_rate_figure6.png")
    plot_figure6(out / "fn_rate_figure6.png")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="runs/ssl_bench", help="data and runs go here")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--labelled", type=int, default=500, help="labelled synthetic frames (train + test)")
    parser.add_argument("--unlabelled", type=int, default=300)
    parser.add_argument("--size", type=int, default=96, help="synthetic frame size")
    parser.add_argument("--input", type=int, default=64, help="model input size")
    parser.add_argument("--crop", type=int, default=48, help="class-folder crop size (synthetic px)")
    parser.add_argument("--pretrain-epochs", type=int, default=4)
    parser.add_argument("--finetune-epochs", type=int, default=40)
    parser.add_argument("--temperature", type=float, default=0.5)
    parser.add_argument("--k", type=int, default=6, help="clusters for cluster-aware SimCLR")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--finetune-seeds", type=int, default=2)
    args = parser.parse_args(argv)

    from marsedge.data.frame_sources import SourceConfig, mix_sources
    from marsedge.ssl.class_folder import build_class_folder
    from marsedge.ssl.cluster import cluster_frames
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data, folder = work / "synth", work / "classes"
    start, load_start = time.perf_counter(), load_1min(1)
    print("1/6 synthetic data")
    synthetic_tree(data, args.labelled, args.size, seed=args.seed, test_fraction=0.2,
                   unlabelled=args.unlabelled, workers=2)
    print("2/6 classification folder")
    crops = build_class_folder(data, folder, crop=args.crop)

    print("3/6 pretraining")
    simclr = train_tiny(work, "simclr", pretrain_config(data, args))
    simclr_ckpt = work / "runs" / "simclr" / "best.pt"
    sources = [SourceConfig(root=str(data), split="unlabelled"), SourceConfig(root=str(data), split="train")]
    clusters_path = work / f"clusters_k{args.k}.json"
    clusters = cluster_frames(simclr_ckpt, mix_sources(sources, None, args.seed), args.k, clusters_path,
                              seed=args.seed)
    aware = train_tiny(work, "cluster_aware", pretrain_config(data, args, clusters_path))
    checkpoints = {"random init": None, "SimCLR": str(simclr_ckpt),
                   "cluster-aware SimCLR": str(work / "runs" / "cluster_aware" / "best.pt")}

    print("4/6 linear evaluation")
    linear = {}
    for label, ckpt in checkpoints.items():
        s = train_tiny(work, f"linear_{label.split()[0].lower()}", linear_eval_config(folder, args, ckpt))
        linear[label] = {"accuracy": s["last_metrics"]["accuracy"],
                         "balanced_accuracy": s["last_metrics"]["balanced_accuracy"], "seconds": s["seconds"]}

    print("5/6 finetuning at 1 % labels")
    finetune = {}
    for label, ckpt in checkpoints.items():
        tag = label.split()[0].lower()
        runs = [train_tiny(work, f"ft1pct_{tag}_s{seed}", finetune_config(data, args, ckpt, seed))
                for seed in range(args.finetune_seeds)]
        mious = [r["last_metrics"]["miou"] for r in runs]
        finetune["from scratch" if ckpt is None else label] = {
            "miou_per_seed": mious, "miou_mean": sum(mious) / len(mious),
            "pixel_accuracy_per_seed": [r["last_metrics"]["pixel_accuracy"] for r in runs],
            "seconds": sum(r["seconds"] for r in runs)}

    print("6/6 false negatives per batch")
    fn = fn_rate_section(out)
    result = {
        "setup": {"backbone": BACKBONE, "input_px": args.input, "synthetic_px": args.size,
                  "labelled_frames": args.labelled, "unlabelled_frames": args.unlabelled,
                  "pretrain_frames": simclr["frames"], "pretrain_epochs": args.pretrain_epochs,
                  "temperature": args.temperature, "k": args.k, "cluster_sizes": clusters["sizes"],
                  "class_folder_crops": crops, "crop_px": args.crop, "finetune_epochs": args.finetune_epochs,
                  "finetune_labelled_frames": "1 % of the train split", "seed": args.seed,
                  "machine": machine()["line"],
                  # other work on the machine slows every step: the 1-minute load at start and end
                  "load_average": [load_start, load_1min(1)]},
        "pretrain_seconds": {"SimCLR": simclr["seconds"], "cluster-aware SimCLR": aware["seconds"]},
        "linear_eval": linear, "finetune_1pct": finetune, "fn_rate": fn,
        "total_seconds": round(time.perf_counter() - start, 1),
    }
    write_result(out / "ssl_comparison", result, report(result))
    print(report(result))
    return 0


def report(r: dict) -> str:
    s = r["setup"]
    lines = [
        "# Learning from unlabelled frames: synthetic CPU comparison", "",
        f"{s['backbone']} at {s['input_px']} px; {s['pretrain_frames']} pretraining frames x "
        f"{s['pretrain_epochs']} epochs (temperature {s['temperature']}, K={s['k']}, cluster sizes "
        f"{s['cluster_sizes']}); total {r['total_seconds']} s on {s['machine']} "
        f"(load average {s['load_average'][0]} at start, {s['load_average'][1]} at end).", "",
        f"## Linear evaluation (frozen backbone, 128-unit linear classifier on {s['crop_px']} px crops)", "",
        "| backbone | accuracy | balanced accuracy |", "|---|---|---|",
        *[f"| {k} | {v['accuracy']:.3f} | {v['balanced_accuracy']:.3f} |"
          for k, v in r["linear_eval"].items()],
        "", f"## Finetuning DeepLabv3+ at 1 % labels ({s['finetune_epochs']} epochs; gold-min1 test)", "",
        "| initialisation | mIoU per seed | mean mIoU |", "|---|---|---|",
        *[f"| {k} | {', '.join(f'{m:.3f}' for m in v['miou_per_seed'])} | {v['miou_mean']:.3f} |"
          for k, v in r["finetune_1pct"].items()],
        "", "## False negative view pairs per batch of 128 (simulation)", "",
        f"- Curiosity-like (19 classes, MSL v2.1 extremes): "
        f"{100 * r['fn_rate']['curiosity']['simulated']:.2f} %",
        f"- ImageNet-like (1000 balanced classes): {100 * r['fn_rate']['imagenet']['simulated']:.3f} %",
        f"- Figure: {Path(r['fn_rate']['figure']).name}", "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
