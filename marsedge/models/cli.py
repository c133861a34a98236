"""`marsedge models ...`: list the zoo, summarise a model, import foreign weights.

    marsedge models list
    marsedge models summary r101_2x_sk1 --head deeplabv3 --size 512
    marsedge models table --size 512
    marsedge models import r50_2x_sk1.pth --format simclrv2 --backbone r50_2x_sk1 -o r50_2x_sk1.pt

Torch is imported inside the handlers only.
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    models = subparsers.add_parser("models", help="model zoo: list, summary, table, import",
                                   description=__doc__.splitlines()[0])
    sub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    listing = sub.add_parser("list", help="registered backbones and heads")
    listing.set_defaults(func=run_list)

    summary = sub.add_parser("summary", help="parameters, MACs and stage shapes of one model")
    summary.add_argument("backbone", metavar="NAME", help="backbone name, e.g. r101_2x_sk1 or mnv2_1.0")
    _add_model_options(summary, head_default=None)
    summary.add_argument("--size", type=int, default=512, help="square input size (default 512)")
    summary.set_defaults(func=run_summary)

    table = sub.add_parser("table", help="markdown table: teachers and student with every head")
    table.add_argument("--size", type=int, default=512, help="square input size (default 512)")
    table.add_argument("--output-stride", type=int, default=16, choices=(8, 16, 32))
    table.set_defaults(func=run_table)

    imp = sub.add_parser("import", help="torchvision / SimCLRv2 weights -> a marsedge checkpoint")
    imp.add_argument("weights", help="foreign .pth file (read with weights_only=True)")
    imp.add_argument("--format", required=True, choices=("torchvision", "simclrv2"))
    imp.add_argument("--backbone", required=True, help="backbone the weights belong to, e.g. r50_2x_sk1")
    _add_model_options(imp, head_default="deeplabv3")
    imp.add_argument("--size", type=int, default=512, help="preprocessing size stored in the checkpoint")
    imp.add_argument("-o", "--out", required=True, help="output checkpoint (.pt)")
    imp.set_defaults(func=run_import)


def _add_model_options(parser: argparse.ArgumentParser, head_default: str | None) -> None:
    parser.add_argument("--head", default=head_default,
                        help=f"segmentation head (default: {head_default or 'none, backbone only'})")
    parser.add_argument("--output-stride", type=int, default=16, choices=(8, 16, 32))
    parser.add_argument("--num-classes", type=int, default=6)
    parser.add_argument("--in-channels", type=int, default=1, choices=(1, 3))
    parser.add_argument("--head-channels", type=int, default=256)
    parser.add_argument("--separable", action="store_true", help="depthwise-separable 3x3 convs in the head")


def _model_config(args: argparse.Namespace):
    from marsedge.models.build import ModelConfig

    return ModelConfig(args.backbone, args.head, args.output_stride, args.num_classes, args.in_channels,
                       args.head_channels, args.separable)


def run_list(args: argparse.Namespace) -> int:
    from marsedge.models.build import BACKBONES, HEADS

    resnets = [n for n in BACKBONES if n.startswith("r")]
    print("backbones (ResNet r{depth}_{width}x_sk{0|1}):")
    for depth in sorted({n.split("_")[0] for n in resnets}, key=lambda d: int(d[1:])):
        print("  " + " ".join(n for n in resnets if n.split("_")[0] == depth))
    print("backbones (MobileNetV2):\n  " + " ".join(n for n in BACKBONES if n.startswith("mnv2")))
    print("heads:\n  " + " ".join(HEADS))
    return 0


def run_summary(args: argparse.Namespace) -> int:
    from marsedge.models.summary import summarize

    if args.head is None:
        print(summarize(args.backbone, args.size).format())
    else:
        print(summarize(_model_config(args), args.size).format())
    return 0


def run_table(args: argparse.Namespace) -> int:
    from marsedge.models.summary import zoo_table

    print(zoo_table(args.size, args.output_stride))
    return 0


def run_import(args: argparse.Namespace) -> int:
    from marsedge.data.preprocess import PreprocessSpec
    from marsedge.models.build import build_model
    from marsedge.models.checkpoints import load_weights, save_checkpoint
    from marsedge.models.importers import import_file

    cfg = _model_config(args)
    if args.format == "simclrv2":  # TF-trained weights: the stem pool must pad as TF did (resnet.py)
        cfg.stem_pool_padding = "tf_same"
    model = build_model(cfg)
    backbone_sd, projection_sd = import_file(args.weights, args.format, model.backbone)
    load_weights(model.backbone, backbone_sd, strict=True, source=args.weights)
    extra = {"imported_from": str(args.weights), "format": args.format, "projection_head": projection_sd}
    save_checkpoint(args.out, model, cfg, PreprocessSpec(args.size, args.size, args.in_channels), extra)
    print(f"wrote {args.out}: {cfg.backbone} weights from {args.weights} ({args.format}); "
          f"{cfg.head} head freshly initialised")
    return 0
