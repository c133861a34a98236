"""The classification track on synthetic Curiosity classes, on a CPU.

    python -m benchmarks.classification [--quick] [--seeds 0 1 2] [--work runs/cls_bench]
                                        [--out benchmarks/results]

1. data: `marsedge data synth-classes` (12 procedural classes, imbalanced, sol-ordered splits with
   drift, plus unlabelled images) and, as the "other domain" of mixed-domain SimCLR, unlabelled
   synthetic NAVCAM terrain frames (`marsedge data synth --mission m2020`);
2. Wang et al.'s losses, per seed: `classify` with CE alone, CE + eq. 2, and the full eq. 5 (same
   model, data and budget); test top-1 and balanced accuracy of best.pt (chosen on val);
3. Ward et al.'s linear evaluation, per seed: SimCLR, mixed-domain SimCLR (half the frames from the
   other domain) and cluster-aware SimCLR (k-means on the SimCLR features) pretrained on the
   unlabelled images only (never the labelled splits), plus a random-init backbone; then
   `classify_linear` at 10/25/50/100 % of the training labels; test top-1.

Writes OUT/classification.json, OUT/classification.md (tables, mean +- std over seeds) and
OUT/classification.png (the loss comparison and the linear-evaluation curves). `--quick`: one seed,
small data and budgets (a smoke run of every path, a few minutes); the numbers it gives are not
a comparison. Synthetic data, tiny models: this measures the pipeline and how the variants rank
here, not what they do on the MSL surface dataset.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np

from benchmarks.common import command, finished_run, machine, synthetic_tree, write_result
from benchmarks.common import train as train_mode

BACKBONE = "r18_0.25x_sk0"
OBJECTIVES = ("ce", "ce_interclass", "full")
FRACTIONS = (0.1, 0.25, 0.5, 1.0)  # of the training labels, linear evaluation
LOSS_FRACTIONS = (1.0, 0.1)  # of the training labels, the loss comparison
PRETRAINS = ("random init", "SimCLR", "mixed-domain SimCLR", "cluster-aware SimCLR")


def train(work: Path, name: str, config: dict) -> dict:
    """Run one config through its mode; returns its seconds, best epoch and test metrics. A finished
    run (its bench.json exists) is read back instead, so an interrupted benchmark resumes."""

    def figures() -> dict:
        run = {"log_every": 10, "amp": "auto", **config.get("run", {})}
        summary = train_mode(work, name, {"num_workers": 0, **config, "run": run})
        kept = {"seconds": round(summary["seconds"], 1),
                "best": {"epoch": (summary.get("best") or {}).get("epoch")}}
        if "test_metrics" in summary:
            kept["test_metrics"] = summary["test_metrics"]
        print(f"  {name}: {kept['seconds']} s", flush=True)
        return kept

    return finished_run(work, name, figures)


def classify_config(root: Path, args, objective: str, fraction: float, seed: int) -> dict:
    """One classify run; at a label fraction f the epochs are scaled by 1/f, so every row takes the
    same optimiser steps (an epoch is one pass over the labelled images)."""
    return {
        "mode": "classify",
        "seed": seed,
        "epochs": max(1, round(args.epochs / fraction)),
        "batch_size": args.batch,
        "data": {
            "preprocess": {"height": args.input, "width": args.input, "channels": 3, "gain": 1.0},
            "eval_batch_size": 64,
        },
        "model": {"backbone": BACKBONE, "head": "classifier", "output_stride": 32, "in_channels": 3},
        "optim": {
            "name": "adamw",
            "lr": 3e-3,
            "weight_decay": 1e-4,
            "schedule": "cosine",
            "warmup_epochs": 0.5,
        },
        "classify": {
            "root": str(root),
            "objective": objective,
            "unlabelled": str(root / "unlabelled"),
            "label_fraction": fraction,
        },
        "run": {"early_stop_metric": "top1"},
    }


def pretrain_config(sources: list[dict], args, seed: int, clusters: Path | None = None) -> dict:
    section: dict = {"temperature": 0.5, "sources": sources, "frames_per_epoch": args.unlabelled}
    if clusters is not None:
        section.update(clusters=str(clusters), num_clusters=args.k)
    return {
        "mode": "pretrain",
        "seed": seed,
        "epochs": args.pretrain_epochs,
        "batch_size": min(64, args.unlabelled),
        "model": {"backbone": BACKBONE, "output_stride": 32, "in_channels": 3},
        "data": {"preprocess": {"height": args.input, "width": args.input, "channels": 3, "gain": 1.0}},
        "optim": {"name": "lars", "lr": 0.6, "weight_decay": 1e-6, "schedule": "cosine", "warmup_epochs": 1},
        "pretrain": section,
        "run": {"eval_every": 0},
    }


def linear_config(root: Path, args, checkpoint: str | None, fraction: float, seed: int) -> dict:
    return {
        "mode": "classify_linear",
        "seed": seed,
        "epochs": args.linear_epochs,
        "batch_size": args.linear_batch,
        "init": {"checkpoint": checkpoint},
        "model": {"backbone": BACKBONE, "output_stride": 32, "in_channels": 3},
        "data": {"preprocess": {"height": args.input, "width": args.input, "channels": 3, "gain": 1.0}},
        "optim": {"name": "adamw", "lr": 3e-3, "weight_decay": 1e-4, "schedule": "cosine"},
        "classify_linear": {"root": str(root), "label_fraction": fraction, "hidden": 128},
        "run": {"early_stop_metric": "top1"},
    }


def make_data(work: Path, args) -> tuple[Path, Path]:
    from marsedge.synthetic.classes import ClassSynthOptions, generate_classes

    classes = work / "classes"
    generate_classes(
        ClassSynthOptions(str(classes), n=args.n, size=args.size, seed=0, unlabelled=args.unlabelled),
        progress=False,
    )
    navcam = synthetic_tree(work / "navcam", 1, args.size, mission="m2020", unlabelled=args.unlabelled,
                            workers=1)
    return classes, navcam


def pretrain_all(work: Path, classes: Path, navcam: Path, args, seed: int) -> dict[str, str | None]:
    """The three pretraining modes for one seed; pretraining checkpoints by name."""
    from marsedge.data.frame_sources import SourceConfig, mix_sources
    from marsedge.ssl.cluster import cluster_frames

    # the unlabelled Curiosity-like images only (never the labelled splits); mixed-domain swaps half
    # of them for NAVCAM terrain frames at the same frames per epoch (Ward et al.'s 50K + 50K)
    mars = [{"root": str(classes / "unlabelled"), "kind": "folder"}]
    mixed = [{**mars[0], "proportion": 0.5}, {"root": str(navcam), "split": "unlabelled", "proportion": 0.5}]
    runs = work / "runs"
    train(work, f"simclr_s{seed}", pretrain_config(mars, args, seed))
    train(work, f"mixed_s{seed}", pretrain_config(mixed, args, seed))
    clusters = work / f"clusters_k{args.k}_s{seed}.json"
    frames = mix_sources([SourceConfig(**s) for s in mars], args.unlabelled, seed)
    cluster_frames(runs / f"simclr_s{seed}" / "best.pt", frames, args.k, clusters, seed=seed)
    train(work, f"cluster_s{seed}", pretrain_config(mars, args, seed, clusters))
    return {
        "random init": None,
        "SimCLR": str(runs / f"simclr_s{seed}" / "best.pt"),
        "mixed-domain SimCLR": str(runs / f"mixed_s{seed}" / "best.pt"),
        "cluster-aware SimCLR": str(runs / f"cluster_s{seed}" / "best.pt"),
    }


def _mean_std(values: list[float]) -> str:
    return f"{np.mean(values):.4f} +- {np.std(values):.4f}" if len(values) > 1 else f"{values[0]:.4f}"


def report(r: dict) -> str:
    lines = [
        "# Classification track on synthetic Curiosity classes",
        "",
        f"`{r['command']}`; {r['cpu']}; seeds {r['seeds']}; {r['seconds']} s in all. Synthetic data, tiny "
        f"{BACKBONE} models at {r['input']} px: how the variants rank here, not MSL numbers.",
        "",
        "## Losses (Wang et al.): test top-1 of best.pt (chosen on val), equal optimiser steps",
        "",
        "| objective | labels | test top-1 | balanced accuracy | train s |",
        "|---|---|---|---|---|",
    ]
    for f in LOSS_FRACTIONS:
        for obj in OBJECTIVES:
            rows = r["losses"][f"{f:g}"][obj]
            lines.append(
                f"| {obj} | {100 * f:g} % | {_mean_std([x['top1'] for x in rows])} | "
                f"{_mean_std([x['balanced_accuracy'] for x in rows])} | "
                f"{np.mean([x['seconds'] for x in rows]):.0f} |"
            )
    lines += [
        "",
        "## Linear evaluation (Ward et al.): test top-1 by label fraction",
        "",
        "| backbone | " + " | ".join(f"{f:g}" for f in FRACTIONS) + " |",
        "|---|" + "---|" * len(FRACTIONS),
    ]
    for name in PRETRAINS:
        cells = [_mean_std(r["linear"][name][str(f)]) for f in FRACTIONS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.8 / len(LOSS_FRACTIONS)
    for i, f in enumerate(LOSS_FRACTIONS):
        rows = [r["losses"][f"{f:g}"][o] for o in OBJECTIVES]
        means = [np.mean([x["top1"] for x in row]) for row in rows]
        stds = [np.std([x["top1"] for x in row]) for row in rows]
        xs = np.arange(len(OBJECTIVES)) + (i - (len(LOSS_FRACTIONS) - 1) / 2) * width
        a.bar(xs, means, width, yerr=stds, capsize=3, label=f"{100 * f:g} % labels")
    a.set_xticks(range(len(OBJECTIVES)), ["CE", "CE + eq. 2", "eq. 5"])
    low = min(
        np.mean([x["top1"] for x in r["losses"][f"{f:g}"][o]]) for f in LOSS_FRACTIONS for o in OBJECTIVES
    )
    a.set(
        ylabel="test top-1 (axis cut: the bars differ by a few points)",
        title="Wang et al. losses",
        ylim=(max(0.0, round(low - 0.15, 1)), 1),
    )
    a.legend(fontsize=8, loc="lower right")
    for name in PRETRAINS:
        ys = [np.mean(r["linear"][name][str(f)]) for f in FRACTIONS]
        b.plot([f * 100 for f in FRACTIONS], ys, marker="o", label=name)
    b.set(
        xscale="log",
        xlabel="% of training labels",
        ylabel="test top-1",
        title="linear evaluation",
        ylim=(0, 1),
    )
    b.set_xticks([10, 25, 50, 100], ["10", "25", "50", "100"])
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="runs/cls_bench", help="data and runs go here")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--quick", action="store_true", help="one seed, small data and budgets (smoke run)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n", type=int, default=720, help="labelled synthetic images")
    parser.add_argument(
        "--unlabelled", type=int, default=240, help="unlabelled images (= pretraining frames per epoch)"
    )
    parser.add_argument("--size", type=int, default=64, help="synthetic image size")
    parser.add_argument("--input", type=int, default=64, help="model input size")
    parser.add_argument("--epochs", type=int, default=12, help="classify epochs at 100 %% labels")
    parser.add_argument("--batch", type=int, default=24, help="classify batch size")
    parser.add_argument("--pretrain-epochs", type=int, default=60)
    parser.add_argument("--linear-epochs", type=int, default=30)
    parser.add_argument("--linear-batch", type=int, default=32)
    parser.add_argument("--k", type=int, default=8, help="clusters for cluster-aware SimCLR")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.n, args.unlabelled, args.size, args.input = [0], 160, 64, 32, 32
        args.epochs, args.pretrain_epochs, args.linear_epochs, args.k, args.linear_batch = 1, 1, 3, 4, 8
        args.batch = 8
        args.work = args.work + "_quick"
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    classes, navcam = make_data(work, args)
    losses: dict[str, dict[str, list[dict]]] = {f"{f:g}": {o: [] for o in OBJECTIVES} for f in LOSS_FRACTIONS}
    linear: dict[str, dict[str, list[float]]] = {p: {str(f): [] for f in FRACTIONS} for p in PRETRAINS}
    for seed in args.seeds:
        for f, obj in itertools.product(LOSS_FRACTIONS, OBJECTIVES):
            s = train(work, f"{obj}_{f:g}_s{seed}", classify_config(classes, args, obj, f, seed))
            losses[f"{f:g}"][obj].append(
                {k: s["test_metrics"][k] for k in ("top1", "top5", "balanced_accuracy")}
                | {"seconds": s["seconds"], "best_epoch": s["best"]["epoch"]}
            )
        for name, ckpt in pretrain_all(work, classes, navcam, args, seed).items():
            for f in FRACTIONS:
                tag = name.split()[0].lower().replace("-", "_")
                s = train(work, f"linear_{tag}_{f:g}_s{seed}", linear_config(classes, args, ckpt, f, seed))
                linear[name][str(f)].append(s["test_metrics"]["top1"])
    suffix = "_quick" if args.quick else ""
    result = {
        "command": command("classification", ["--quick"] if args.quick else []),
        "cpu": machine()["cpu"],
        "seeds": args.seeds,
        "input": args.input,
        "settings": {k: v for k, v in vars(args).items() if k not in ("work", "out")},
        "losses": losses,
        "linear": linear,
        "seconds": round(time.perf_counter() - start, 1),
    }
    write_result(out / f"classification{suffix}", result, report(result), plot)
    print(report(result))
    print(f"wrote {out}/classification{suffix}.json, .md, .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
