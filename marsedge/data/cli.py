"""`marsedge data prepare | synth | merge-labels | stats` (nothing heavy imported until a handler runs).

marsedge data prepare DIR          what a downloaded AI4Mars release needs (merge or not), its splits
marsedge data synth --out DIR --mission msl --n 300 --size 256 --seed 0
marsedge data merge-labels DIR/msl/labels/crowd --out DIR/msl/labels/merged
marsedge data stats DIR --chart DIR/composition.png
marsedge data synth-classes --out DIR --n 600 --size 96 --seed 0 --unlabelled 300
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    data = subparsers.add_parser(
        "data",
        help="synthetic datasets, crowd label merging, dataset statistics",
        description=__doc__.splitlines()[0],
    )
    sub = data.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)

    prepare = sub.add_parser(
        "prepare",
        help="what a downloaded AI4Mars release needs before training (merge or not), and its splits",
        description="Names the release layout (0.1 or 0.6), counts every split, says whether crowd "
        "labels need merging (a published release ships merged labels: nothing to do) and the "
        "data.root to train on. Reads folder listings only; --merge merges what has no merged labels.",
    )
    prepare.add_argument("root", help="the unpacked release (or the folder it was unpacked into)")
    prepare.add_argument("--merge", action="store_true",
                         help="merge crowd labels where no merged labels exist (never over existing ones)")
    prepare.add_argument("--quiet", action="store_true", help="no progress bar")
    prepare.set_defaults(func=run_prepare)

    synth = sub.add_parser(
        "synth",
        help="write a synthetic NAVCAM dataset in the AI4Mars layout",
        description="Procedural NAVCAM frames with crowd labels, merged train labels, "
        "gold test sets and rover/range masks, in the AI4Mars layout.",
    )
    synth.add_argument(
        "--out", required=True, help="dataset root to write (created; an existing one is resumed)"
    )
    synth.add_argument(
        "--mission",
        choices=["msl", "m2020", "mer"],
        default="msl",
        help="msl: greyscale SxS with masks; m2020: colour 4:3, no masks; mer: greyscale "
        "(--release 0.6 only) (default msl)",
    )
    synth.add_argument("--n", type=int, default=100, help="labelled frames (train + test, default 100)")
    synth.add_argument(
        "--size",
        type=int,
        default=None,
        help="MSL: SxS (default 1024); M2020: the long side, S x 3S/4 (default 1280)",
    )
    synth.add_argument("--seed", type=int, default=0, help="dataset seed (same seed, same files)")
    synth.add_argument(
        "--test-fraction",
        type=float,
        default=0.1,
        help="share of the labelled MSL frames in the gold test sets (default 0.1)",
    )
    synth.add_argument("--unlabelled", type=int, default=0, help="extra frames with no label (default 0)")
    synth.add_argument(
        "--labelers",
        type=int,
        nargs=2,
        default=(5, 9),
        metavar=("MIN", "MAX"),
        help="crowd labels per train frame, drawn in [MIN, MAX] (default 5 9)",
    )
    synth.add_argument("--workers", type=int, default=None, help="processes (default: all cores, at most 8)")
    synth.add_argument(
        "--release",
        choices=["0.1", "0.6"],
        default="0.1",
        help="0.1: the merged 0.1 layout (default, unchanged); 0.6: msl/ncam/, real-style names, "
        "MER and M2020 test sets, label_keys.json",
    )
    synth.add_argument(
        "--pds", type=int, default=0, metavar="N", help="also write PDS3 + PDS4 copies of N frames (DIR/pds/)"
    )
    synth.add_argument("--quiet", action="store_true", help="no progress bar")
    synth.set_defaults(func=run_synth)

    merge = sub.add_parser(
        "merge-labels",
        help="merge crowd labels (3 votes, >65%%) and score agreement",
        description="Merge CROWD/<image>/<labeler>.png into OUT/<image><suffix>.png with the "
        "AI4Mars rule and write each label's agreement score (mean Jaccard "
        "index with the image's other labels) to a CSV.",
    )
    merge.add_argument("crowd", help="folder of per-image folders of crowd label PNGs")
    merge.add_argument("--out", required=True, help="folder for the merged labels")
    merge.add_argument("--suffix", default="", help="appended to each merged name, e.g. _merged for M2020")
    merge.add_argument("--min-votes", type=int, default=3, help="votes the winning class needs (default 3)")
    merge.add_argument(
        "--min-agreement",
        type=float,
        default=0.65,
        help="share of the votes the winning class must exceed (default 0.65)",
    )
    merge.add_argument(
        "--scores", default=None, help="agreement CSV (default OUT/../agreement-<OUT name>.csv)"
    )
    merge.add_argument("--overwrite", action="store_true",
                       help="replace merged labels already in OUT (default: refuse them)")
    merge.add_argument("--quiet", action="store_true", help="no progress bar")
    merge.set_defaults(func=run_merge)

    stats = sub.add_parser(
        "stats",
        help="image counts and class composition of an AI4Mars tree",
        description="Image counts and the pixels and percent of each class per split.",
    )
    stats.add_argument("root", help="AI4Mars-layout dataset root")
    stats.add_argument("--chart", default=None, help="bar chart PNG (default ROOT/composition.png)")
    stats.add_argument(
        "--json", default=None, help="also write the numbers as JSON (default ROOT/stats.json)"
    )
    stats.add_argument("--four-class", action="store_true", help="masks as unlabelled instead of classes 4/5")
    stats.set_defaults(func=run_stats)

    classes = sub.add_parser(
        "synth-classes",
        help="write synthetic Curiosity image classes in the MSL surface (v2.1) layout",
        description="Procedural, class-imbalanced Curiosity-like image classes with sol-ordered "
        "train/val/test splits, in the msl-labeled-data-set-v2.1 layout (marsedge.data.synthetic_classes).",
    )
    classes.add_argument("--out", required=True, help="folder to write (an interrupted run resumes)")
    classes.add_argument("--n", type=int, default=600, help="labelled images (default 600)")
    classes.add_argument("--size", type=int, default=96, help="image side in pixels (default 96)")
    classes.add_argument("--seed", type=int, default=0, help="dataset seed (same seed, same files)")
    classes.add_argument("--val-fraction", type=float, default=0.1, help="share in val (default 0.1)")
    classes.add_argument(
        "--test-fraction", type=float, default=0.2, help="share in test, the last sols (default 0.2)"
    )
    classes.add_argument(
        "--unlabelled", type=int, default=0, help="extra images without a label, in OUT/unlabelled/"
    )
    classes.add_argument("--quiet", action="store_true", help="no progress bar")
    classes.set_defaults(func=run_synth_classes)


def run_synth(args: argparse.Namespace) -> int:
    from marsedge.data.synthetic import SynthOptions, generate, summary_line

    opts = SynthOptions(
        out=args.out,
        mission=args.mission,
        n=args.n,
        size=args.size,
        seed=args.seed,
        test_fraction=args.test_fraction,
        unlabelled=args.unlabelled,
        labelers=tuple(args.labelers),
        workers=args.workers,
        release=args.release,
        pds=args.pds,
    )
    summary = generate(opts, progress=not args.quiet)
    print(summary_line(summary))
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from marsedge.data.prepare import prepare

    print("\n".join(prepare(args.root, merge=args.merge, progress=not args.quiet)))
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from marsedge.data.labels import merge_crowd_folder
    from marsedge.ownership import refuse_existing, refuse_same_path

    out = Path(args.out)
    scores = Path(args.scores) if args.scores else out.parent / f"agreement-{out.name}.csv"
    refuse_same_path(args.crowd, out, "merged label folder")
    if out.is_dir() and any(out.glob("*.png")):  # merged labels (a release's own train labels, say)
        refuse_existing(out, args.overwrite, "merged label folder with labels")
    summary = merge_crowd_folder(
        Path(args.crowd),
        out,
        scores,
        suffix=args.suffix,
        min_votes=args.min_votes,
        min_agreement=args.min_agreement,
        progress=not args.quiet,
    )
    print(
        f"merged {summary['images']} images ({summary['labels']} labels) into {out}; "
        f"labelled {summary['labelled_percent']:.1f}% of pixels; "
        f"agreement mean {summary['agreement_mean']:.3f}, bottom 20% below {summary['agreement_p20']:.3f}; "
        f"scores in {scores}"
    )
    return 0


def run_stats(args: argparse.Namespace) -> int:
    from marsedge.data.stats import dataset_stats, format_stats, plot_composition
    from marsedge.io import atomic_write_json

    root = Path(args.root)
    stats = dataset_stats(root, four_class=args.four_class, progress=sys.stderr.isatty())
    print(format_stats(stats))
    json_path = Path(args.json) if args.json else root / "stats.json"
    atomic_write_json(json_path, stats)
    if stats["splits"]:
        chart = plot_composition(stats, Path(args.chart) if args.chart else root / "composition.png")
        print(f"chart: {chart}  numbers: {json_path}")
    return 0


def run_synth_classes(args: argparse.Namespace) -> int:
    from marsedge.data.msl_surface import describe
    from marsedge.data.synthetic_classes import ClassSynthOptions, generate_classes

    opts = ClassSynthOptions(out=args.out, n=args.n, size=args.size, seed=args.seed,
                             val_fraction=args.val_fraction, test_fraction=args.test_fraction,
                             unlabelled=args.unlabelled)
    summary = generate_classes(opts, progress=not args.quiet)
    for split, info in describe(summary["root"]).items():
        print(f"{split}: {info['images']} images, sols {info['sols']}, per class {info['per_class']}")
    print(f"{len(summary['classes'])} classes, {summary['unlabelled']} unlabelled, in {summary['root']} "
          f"({summary['seconds']} s)")
    return 0
