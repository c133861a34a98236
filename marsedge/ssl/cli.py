"""Commands around learning from unlabelled frames:

    marsedge cluster --checkpoint runs/simclr/best.pt --k 8 --data data/ai4mars -o clusters_k8.json
    marsedge fn-rate --preset curiosity --batch-size 128 [--plot fig6.png]
    marsedge class-folder --data data/synth --out data/synth_classes --crop 64

Pretraining, semi-supervised training and linear evaluation themselves are `marsedge train` modes
(`mode: pretrain | semisup | linear_eval`). Nothing heavy is imported at module level.
"""

from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    p = subparsers.add_parser("cluster", help="k-means frames on a model's features (cluster-aware SimCLR)",
                              description=(
                                  "Cluster unlabelled frames on a checkpoint's pooled backbone features and "
                                  "write {frame name: cluster id} for pretrain.clusters."))
    p.add_argument("--checkpoint", required=True, help="a marsedge checkpoint with backbone weights")
    p.add_argument("--k", type=int, required=True, help="number of clusters K")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", nargs="+", metavar="DIR",
                     help="AI4Mars trees (their unlabelled split) or folders/globs of frames")
    src.add_argument("--config", help="a pretrain config: cluster exactly its frame sources")
    p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="overrides for --config")
    p.add_argument("--split", default="unlabelled", help="AI4Mars split for --data trees")
    p.add_argument("-o", "--out", required=True, help="clusters JSON file to write")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=handle_cluster)

    p = subparsers.add_parser("fn-rate", help="false negative view pairs per SimCLR batch (simulation)",
                              description="Simulate the share of false-negative view pairs in SimCLR "
                                          "batches for a class distribution (homogeneous-Mars app. B).")
    dist = p.add_mutually_exclusive_group(required=True)
    dist.add_argument("--classes", type=int, help="K balanced classes")
    dist.add_argument("--weights", help="comma-separated class weights, e.g. 5,3,1,1")
    dist.add_argument("--preset", help="curiosity (MSL v2.1-like, 19 classes) or imagenet (1000 balanced)")
    p.add_argument("--batch-size", type=int, default=128, help="frames per batch (2 views each)")
    p.add_argument("--batches", type=int, default=1000)
    p.add_argument("--dataset-size", type=int,
                   help="sample a finite dataset of this size without replacement")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--plot", help="also write the Figure-6-style PNG here (balanced classes)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=handle_fn_rate)

    p = subparsers.add_parser("class-folder", help="cut a classification folder (crops by majority class)",
                              description="Write OUT/{train,test}/<class>/*.png crops of a labelled "
                                          "AI4Mars-layout tree, for linear evaluation.")
    p.add_argument("--data", required=True, help="AI4Mars-layout tree (real or `marsedge data synth`)")
    p.add_argument("--out", required=True)
    p.add_argument("--crop", type=int, default=64, help="crop size in native pixels")
    p.add_argument("--train-split", default="train")
    p.add_argument("--test-split", default="gold-min1")
    p.add_argument("--min-labelled", type=float, default=0.5, help="labelled share a crop needs")
    p.add_argument("--min-majority", type=float, default=0.6,
                   help="share of the labelled pixels the top class needs")
    p.set_defaults(func=handle_class_folder)


def _sources_from_args(args: argparse.Namespace):
    from pathlib import Path

    from marsedge.data.frame_sources import SourceConfig, mix_sources

    if args.config:
        from marsedge.train.config import load_train_config
        from marsedge.train.modes.pretrain import PretrainConfig, pretrain_frames

        return pretrain_frames(load_train_config(PretrainConfig, args.config, args.overrides))
    sources = [SourceConfig(root=d, kind="ai4mars" if _is_ai4mars(Path(d)) else "folder", split=args.split)
               for d in args.data]
    return mix_sources(sources, None, args.seed)


def _is_ai4mars(path) -> bool:
    return path.is_dir() and any((path / sub).is_dir() for sub in ("msl", "m2020", "mer"))


def handle_cluster(args: argparse.Namespace) -> int:
    from marsedge.ssl.cluster import cluster_frames

    frames = _sources_from_args(args)
    result = cluster_frames(args.checkpoint, frames, args.k, args.out, args.batch_size, args.seed,
                            args.device)
    print(f"{result['frames']} frames -> {args.k} clusters, sizes {result['sizes']}; wrote {args.out}")
    return 0


def handle_fn_rate(args: argparse.Namespace) -> int:
    from marsedge.ssl.fn_rate import expected_fn_rate, parse_distribution, plot_figure6, simulate_fn_rate

    probs = parse_distribution(args.classes, args.weights, args.preset)
    rate = simulate_fn_rate(probs, args.batch_size, args.batches, args.dataset_size, args.seed)
    result = {"classes": len(probs), "batch_size": args.batch_size, "batches": args.batches,
              "dataset_size": args.dataset_size, "fn_rate": rate,
              "expected_iid": expected_fn_rate(probs, args.batch_size)}
    if args.plot:
        result["figure"] = args.plot
        result["series"] = plot_figure6(args.plot, seed=args.seed)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"false negative view pairs per batch: {100 * rate:.3f} % ({len(probs)} classes, batch "
              f"{args.batch_size}, {args.batches} batches; i.i.d. expectation "
              f"{100 * result['expected_iid']:.3f} %)" + (f"; figure {args.plot}" if args.plot else ""))
    return 0


def handle_class_folder(args: argparse.Namespace) -> int:
    from marsedge.ssl.class_folder import build_class_folder

    counts = build_class_folder(args.data, args.out, args.crop, args.train_split, args.test_split,
                                args.min_labelled, args.min_majority)
    for part, per_class in counts.items():
        shown = ", ".join(f"{name} {n}" for name, n in sorted(per_class.items()))
        print(f"{part}: {sum(per_class.values())} crops ({shown})")
    return 0
