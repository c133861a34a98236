"""Training throughput (images/s) and whether the data loader keeps up.

    python -m benchmarks.train_throughput                      # CPU: the demo teacher at 128 px
    python -m benchmarks.train_throughput --gpu-steps 30       # + GPU: r101_2x_sk1 + deeplabv3 at 512 px

What it measures, each in this one run so that ratios compare like with like:
- the training step of the loop (`marsedge.train.engine.loop`: forward under autocast, loss, backward,
  optimiser step) on batches already in memory, in images/s:
    CPU  demo teacher (configs/demo/teacher.yaml), fp32 eager and bf16 autocast;
    GPU  r101_2x_sk1 + deeplabv3 at 512 px, fp32 eager vs bf16 autocast + channels_last
         (the aim: the mixed-precision path at least 2x the fp32 one);
- the data loader alone (AI4Mars reader + joint augmentation + THE preprocessing, real-size
  1024 px synthetic frames), in images/s with the given workers. The loader is not the
  bottleneck when its rate exceeds the step's.

Writes benchmarks/results/train_throughput.json and .md.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import DEMO_TEACHER, RESULTS, machine, synthetic_tree, write_result
from marsedge.data.preprocess import PreprocessSpec
from marsedge.models.build import ModelConfig, build_model, count_parameters
from marsedge.train.config import TrainConfig, load_train_config
from marsedge.train.engine.distributed import DistContext
from marsedge.train.engine.loop import autocast_context, build_train_loader
from marsedge.train.engine.optim import build_optimizer
from marsedge.train.engine.precision import cpu_has_native_bf16, resolve_amp
from marsedge.train.losses import CrossEntropyLoss
from marsedge.train.supervised import SegmentationFrames, training_set


def step_throughput(model_cfg: ModelConfig, size: int, batch: int, steps: int, device: torch.device,
                    amp: str, channels_last: bool, warmup: int = 3) -> float:
    """Images/s of full training steps (the loop's hot path) on one in-memory batch."""
    torch.manual_seed(0)
    model = build_model(model_cfg).to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    cfg = TrainConfig()
    cfg.run.amp = amp
    optimizer = build_optimizer(model.named_parameters(), cfg.optim)
    loss_fn = CrossEntropyLoss()
    x = torch.rand(batch, model_cfg.in_channels, size, size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, model_cfg.num_classes, (batch, size, size), device=device)

    def one_step() -> None:
        with autocast_context(cfg, device):
            loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(warmup):
        one_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


def loader_throughput(root: Path, size: int, batch: int, workers: int, batches: int) -> float:
    """Images/s of the training DataLoader alone (read, augment, preprocess, collate)."""
    cfg = TrainConfig(batch_size=batch, num_workers=workers)
    cfg.data.root = str(root)
    cfg.data.preprocess = PreprocessSpec(size, size)
    frames = SegmentationFrames(training_set(cfg.data, 0), cfg.data.preprocess, cfg.data.augment, 0)
    loader = build_train_loader(frames, cfg, DistContext())
    loader.sampler.set_epoch(0)
    it = iter(loader)
    next(it)  # workers started
    start, seen = time.perf_counter(), 0
    for _, b in zip(range(batches), it, strict=False):
        seen += len(b["image"])
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-steps", type=int, default=8)
    parser.add_argument("--gpu-steps", type=int, default=20)
    parser.add_argument("--gpu-batch", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2, help="CPU loader workers")
    parser.add_argument("--gpu-workers", type=int, default=8)
    parser.add_argument("--data", type=Path, help="AI4Mars tree for the loader test (default: synthesised)")
    args = parser.parse_args()

    demo = load_train_config(TrainConfig, DEMO_TEACHER, [])
    cpu_dev = torch.device("cpu")
    size, batch = demo.data.preprocess.height, demo.batch_size
    results: dict = {"host": platform.node(), "cpu": machine()["cpu"], "torch": torch.__version__,
                     "cpu_threads": torch.get_num_threads(),
                     # what run.amp: auto picks on this CPU (marsedge.train.engine.precision)
                     "cpu_native_bf16": cpu_has_native_bf16(),
                     "amp_auto_on_cpu": resolve_amp("auto", cpu_dev)}
    cpu = cpu_dev
    results["cpu_demo_teacher"] = {
        "model": f"{demo.model.backbone} + {demo.model.head}",
        "params": count_parameters(build_model(demo.model)),
        "input": f"{batch} x 1 x {size} x {size}",
        "fp32_img_s": step_throughput(demo.model, size, batch, args.cpu_steps, cpu, "none", False),
        "bf16_img_s": step_throughput(demo.model, size, batch, args.cpu_steps, cpu, "bf16", False),
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = args.data or synthetic_tree(Path(tmp), 32, 1024, test_fraction=0.0)
        results["cpu_demo_teacher"]["loader_img_s"] = loader_throughput(root, size, batch, args.workers, 3)
        results["cpu_demo_teacher"]["loader_workers"] = args.workers
        results["loader_frames"] = str(args.data) if args.data else "synthetic 1024 px MSL frames"
        if torch.cuda.is_available():
            results["gpu"] = gpu_results(args, root)
        else:
            results["gpu"] = "no CUDA device here: r101_2x_sk1 fp32 vs bf16 not measured"
    write(results)


def gpu_results(args, root: Path) -> dict:
    dev = torch.device("cuda")
    torch.backends.cudnn.benchmark = True
    teacher = ModelConfig(backbone="r101_2x_sk1", head="deeplabv3", output_stride=16)
    fp32 = step_throughput(teacher, 512, args.gpu_batch, args.gpu_steps, dev, "none", False)
    bf16 = step_throughput(teacher, 512, args.gpu_batch, args.gpu_steps, dev, "bf16", True)
    return {
        "device": torch.cuda.get_device_name(),
        "model": f"r101_2x_sk1 + deeplabv3 ({count_parameters(build_model(teacher))} params)",
        "input": f"{args.gpu_batch} x 1 x 512 x 512",
        "fp32_eager_img_s": fp32,
        "bf16_channels_last_img_s": bf16,
        "speedup": bf16 / fp32,
        "loader_img_s": loader_throughput(root, 512, args.gpu_batch, args.gpu_workers, 12),
        "loader_workers": args.gpu_workers,
    }


def write(results: dict) -> None:
    c, g = results["cpu_demo_teacher"], results["gpu"]
    rows = [(f"CPU {c['model']} fp32 eager, {c['input']}", f"{c['fp32_img_s']:.1f}"),
            ("CPU same, bf16 autocast", f"{c['bf16_img_s']:.1f}"),
            (f"CPU loader ({results['loader_frames']}), augment + preprocess, {c['loader_workers']} workers",
             f"{c['loader_img_s']:.1f}")]
    if isinstance(g, dict):
        rows += [(f"GPU {g['device']}: {g['model']} fp32 eager, {g['input']}",
                  f"{g['fp32_eager_img_s']:.1f}"),
                 ("GPU same, bf16 autocast + channels_last",
                  f"{g['bf16_channels_last_img_s']:.1f} ({g['speedup']:.2f}x)"),
                 (f"GPU-host loader: 512 px, {g['loader_workers']} workers", f"{g['loader_img_s']:.1f}")]
    header = (f"{results['cpu']}, torch {results['torch']}, {results['cpu_threads']} CPU threads; "
              f"native bf16 on this CPU: {'yes' if results['cpu_native_bf16'] else 'no'}, so `run.amp: "
              f"auto` trains in {'bf16' if results['amp_auto_on_cpu'] == 'bf16' else 'fp32'} here")
    lines = ["# Training throughput", "", header, "",
             "| path | images/s |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)]
    if not isinstance(g, dict):
        lines += ["", f"GPU: {g}"]
    text = "\n".join(lines) + "\n"
    write_result(RESULTS / "train_throughput", results, text)
    print(text)


if __name__ == "__main__":
    main()
