"""Mode `semisup`'s contrastive head, before and after following Wang et al. (Fig. 7), on a CPU.

    python -m benchmarks.semisup_heads [--work runs/semisup_heads] [--out benchmarks/results]

One synthetic AI4Mars tree (`marsedge data synth`, MSL, labelled + unlabelled frames), a narrow
ResNet-18 (width 0.25) + DeepLabv3+ at 64 px, the three-stage schedule (contrastive alone, joint,
joint + pseudo labels) shrunk to a few epochs, and three rows trained alike from the same seed:

- CE only: the same schedule with the contrastive term off (stage 1 becomes CE too): the reference;
- `projection_1x1`: the contrastive head marsedge had first (1x1 MLP on the stride-16 map);
- `independent_v3plus`: the paper's own DeepLabv3+ head, 128-d at stride 4.

Both contrastive rows use the memory bank as the paper has it (per-image class means, the batch
scored before it is enqueued): the bank's old behaviour is not kept as an option. Test mIoU is on
the gold-min1 frames, with best.pt chosen on val. Writes OUT/semisup_heads.{json,md}. Tiny models,
synthetic data, few epochs: the figures show what each head costs and that both train, not what
they do on AI4Mars.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.common import load_1min, machine, synthetic_tree, train, write_result

BACKBONE = "r18_0.25x_sk0"


def semisup_config(data: Path, args, head: str | None, seed: int) -> dict:
    """head None: CE only (every stage CE, contrastive weight 0)."""
    e1, e2, e3 = args.stage_epochs
    weight = 0.0 if head is None else args.weight
    first = ({"ce": True, "contrastive_weight": 0.0} if head is None
             else {"ce": False, "contrastive_weight": 1.0})
    stages = [{"name": "contrastive", "epochs": e1, **first},
              {"name": "joint", "epochs": e2, "ce": True, "contrastive_weight": weight},
              {"name": "pseudo", "epochs": e3, "ce": True, "contrastive_weight": weight,
               "pseudo": head is not None}]
    section = {"queue_length": 32, "embed_dim": 128, "temperature": 0.07, "pseudo_threshold": 0.9,
               "unlabelled_split": "unlabelled", "stages": stages}
    if head is not None:
        section["contrastive_head"] = head
    return {"mode": "semisup", "seed": seed, "epochs": e1 + e2 + e3, "batch_size": 8, "num_workers": 0,
            "model": {"backbone": BACKBONE, "head": "deeplabv3plus", "head_channels": 32},
            "data": {"root": str(data), "test_splits": ["gold-min1"],
                     "preprocess": {"height": args.input, "width": args.input}},
            "optim": {"name": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4, "schedule": "poly"},
            "semisup": section}


def train_head(work: Path, name: str, config: dict) -> dict:
    """One run through the mode's own code path (as `train.py` runs it); the loop's summary + seconds."""
    summary = train(work, name, {**config, "run": {"log_every": 5, "confusion_png": False}})
    summary["seconds"] = round(summary["seconds"], 1)
    print(f"  {name}: {summary['seconds']} s, test mIoU {summary['test_metrics']['miou']:.4f}")
    return summary


def head_parameters(head: str) -> int:
    from marsedge.models.build import ModelConfig, build_model
    from marsedge.train.modes.semisup import SemisupModel

    model = SemisupModel(build_model(ModelConfig(BACKBONE, "deeplabv3plus", head_channels=32)), 128, head)
    return sum(p.numel() for p in model.contrastive_head.parameters())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="runs/semisup_heads")
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--labelled", type=int, default=120, help="labelled synthetic frames (train + test)")
    parser.add_argument("--unlabelled", type=int, default=40)
    parser.add_argument("--size", type=int, default=96, help="synthetic frame size")
    parser.add_argument("--input", type=int, default=64, help="model input size")
    parser.add_argument("--stage-epochs", type=int, nargs=3, default=(3, 6, 3), metavar=("C", "J", "P"))
    parser.add_argument("--weight", type=float, default=0.001, help="lambda of the joint stages")
    parser.add_argument("--seeds", type=int, default=1)
    args = parser.parse_args(argv)

    work, out = Path(args.work), Path(args.out)
    start, load_start = time.perf_counter(), load_1min(1)
    data = synthetic_tree(work / "synth", args.labelled, args.size, test_fraction=0.2,
                          unlabelled=args.unlabelled, workers=2)
    rows = {}
    for label, head in (("CE only", None), ("projection_1x1 (1x1 projection)", "projection_1x1"),
                        ("independent_v3plus (the paper's head)", "independent_v3plus")):
        runs = [train_head(work, f"{head or 'ce'}_s{seed}", semisup_config(data, args, head, seed))
                for seed in range(args.seeds)]
        rows[label] = {"head": head, "head_params": head_parameters(head) if head else 0,
                       "miou_per_seed": [r["test_metrics"]["miou"] for r in runs],
                       "pixel_accuracy_per_seed": [r["test_metrics"]["pixel_accuracy"] for r in runs],
                       "seconds": [r["seconds"] for r in runs]}
    here = machine()
    result = {"cpu": here["cpu"],
              "setup": {"backbone": BACKBONE, "input_px": args.input, "synthetic_px": args.size,
                        "labelled_frames": args.labelled, "unlabelled_frames": args.unlabelled,
                        "stage_epochs": list(args.stage_epochs), "weight": args.weight, "seeds": args.seeds,
                        "machine": here["line"], "load_average": [load_start, load_1min(1)]},
              "rows": rows, "total_seconds": round(time.perf_counter() - start, 1)}
    write_result(out / "semisup_heads", result, report(result))
    print(report(result))
    return 0


def report(r: dict) -> str:
    s = r["setup"]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    lines = ["# Semi-supervised segmentation: the contrastive head (synthetic, CPU)", "",
             f"{s['backbone']} + DeepLabv3+ at {s['input_px']} px; {s['labelled_frames']} labelled + "
             f"{s['unlabelled_frames']} unlabelled synthetic frames; stages {s['stage_epochs']} epochs "
             f"(lambda {s['weight']}); {s['seeds']} seed(s); total {r['total_seconds']} s on {s['machine']} "
             f"(load average {s['load_average'][0]} at start, {s['load_average'][1]} at end: a shared "
             "machine).", "",
             "| contrastive head | head params | test mIoU per seed | mean mIoU | pixel acc | s per run |",
             "|---|---|---|---|---|---|"]
    for label, v in r["rows"].items():
        per_seed = ", ".join(f"{m:.4f}" for m in v["miou_per_seed"])
        lines.append(f"| {label} | {v['head_params']:,} | {per_seed} | {mean(v['miou_per_seed']):.4f} | "
                     f"{mean(v['pixel_accuracy_per_seed']):.4f} | {mean(v['seconds']):.0f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
