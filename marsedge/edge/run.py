"""`edge-run`: NAVCAM frames in, terrain masks, overlays and hazard facts out.

    edge-run /data/sol1234/ runs/sol1234 --model student.int8.onnx --threads 2 --stats
    edge-run /dev/video0 out/ --model student.fp16.engine --loop --visualize overlay

INPUT is a file, folder (sorted), glob, video or `/dev/videoN` (`marsedge.data.frames.iter_frames`,
PDS3/PDS4 products included). OUTPUT gets:

    masks/<frame>.png       class ids at the frame's own size (nearest), 255-free
    overlays/<frame>.jpg    class colours blended over the frame (--alpha)
    frames.jsonl            one line per frame: name, class fractions, hazards, per-stage milliseconds
                            (decode, preprocess, infer, postprocess, write), or the error
    summary.json            frames ok/failed (with reasons), latency mean/p50/p90/p99, FPS,
                            backend, model metadata; written at the end, also after Ctrl-C

It is a pipeline, not a loop (like jetson-inference's segnet camera path): a reader thread decodes
and preprocesses, the main thread runs the model and the postprocessing, a writer thread encodes
and writes; bounded queues between them (and a fixed-size latency sample, `StageStats`) keep memory
flat on endless camera runs, and the backend is never idle waiting for disk. A bad frame (corrupt,
empty, truncated, wrong size) costs one log line and one summary entry, never the run.
SIGINT/SIGTERM finish the frame in hand, flush, write the summary and exit 128+signal. Exit 1 when
setup fails or every frame failed.

Needs only numpy, OpenCV, ONNX Runtime (and TensorRT for engines): no torch.
"""

from __future__ import annotations

import argparse
import contextlib
import queue
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from marsedge.data.frames import iter_frames
from marsedge.data.preprocess import PreprocessSpec, preprocess
from marsedge.edge.backends import BACKENDS, open_backend
from marsedge.edge.hazards import HazardConfig, assess, class_fractions, load_hazard_config
from marsedge.errors import FrameError, MarsedgeError
from marsedge.io import append_jsonl, atomic_write, atomic_write_json, safe_join, safe_name
from marsedge.terrain import palette

VISUALS = ("overlay", "mask")
MAX_ASPECT_CHANGE = 2.5  # a frame whose aspect ratio is this far from the model's is a wrong-size frame
MIN_SIDE = 16
MAX_RECORDED_FAILURES = 1000  # the summary lists this many failure reasons, then only counts
RESERVOIR = 10_000  # latency samples kept per stage: exact percentiles up to this many frames
_DONE = object()


@dataclass
class Frame:
    """One frame's way through the pipeline."""

    index: int
    name: str
    image: np.ndarray | None = None
    tensor: np.ndarray | None = None
    mask: np.ndarray | None = None
    record: dict = field(default_factory=dict)
    ms: dict = field(default_factory=dict)
    error: str | None = None


def check_frame(image: np.ndarray, spec: PreprocessSpec) -> None:
    """Reject frames the model cannot meaningfully see (tiny, or of a very different shape)."""
    if image.ndim not in (2, 3) or image.size == 0:
        raise FrameError(f"empty or malformed frame, shape {image.shape}")
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise FrameError(f"wrong size: {w}x{h} is smaller than {MIN_SIDE} px")
    change = (w / h) / (spec.width / spec.height)
    if not 1 / MAX_ASPECT_CHANGE <= change <= MAX_ASPECT_CHANGE:
        raise FrameError(f"wrong size: {w}x{h} does not fit the model's {spec.width}x{spec.height}")


def _put(q: queue.Queue, item, stop: threading.Event) -> bool:
    """Put unless stopping; a blocked producer wakes up to notice a stop."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def read_frames(source, spec: PreprocessSpec, out: queue.Queue, stop: threading.Event) -> None:
    """Reader thread: decode (inside the frame iterator) and preprocess, one frame at a time."""
    index = 0
    try:
        tick = time.perf_counter()
        for name, image in source:
            frame = Frame(index, str(name))
            frame.ms["decode"] = 1000 * (time.perf_counter() - tick)
            index += 1
            try:
                if isinstance(image, Exception):
                    raise image
                check_frame(image, spec)
                start = time.perf_counter()
                frame.tensor = preprocess(image, spec)[None]
                frame.ms["preprocess"] = 1000 * (time.perf_counter() - start)
                frame.image = image
            except FrameError as exc:
                frame.error = str(exc)
            if not _put(out, frame, stop):
                break
            tick = time.perf_counter()
    except MarsedgeError as exc:  # the source itself broke (camera unplugged, folder vanished)
        _put(out, Frame(index, "<source>", error=str(exc)), stop)
    finally:
        with contextlib.suppress(queue.Full):  # full only when the consumer already stopped
            out.put(_DONE, timeout=1.0)


class StageStats:
    """Running mean plus a fixed-size uniform sample (reservoir sampling) for percentiles, so that
    memory stays flat however long a camera run lasts."""

    def __init__(self, size: int = RESERVOIR, seed: int = 0) -> None:
        self.count, self.total = 0, 0.0
        self.sample = np.empty(size, np.float64)
        self.rng = np.random.default_rng(seed)

    def add(self, value: float) -> None:
        if self.count < self.sample.size:
            self.sample[self.count] = value
        else:
            slot = int(self.rng.integers(0, self.count + 1))
            if slot < self.sample.size:
                self.sample[slot] = value
        self.count += 1
        self.total += value

    def summary(self) -> dict:
        if not self.count:
            return {}
        kept = self.sample[: min(self.count, self.sample.size)]
        p50, p90, p99 = np.percentile(kept, [50, 90, 99])
        return {"mean": round(self.total / self.count, 3), "p50": round(float(p50), 3),
                "p90": round(float(p90), 3), "p99": round(float(p99), 3)}


class Writer:
    """Writer thread: masks, overlays, frames.jsonl lines, and the running statistics."""

    def __init__(self, root: Path, visuals: set[str], alpha: float, class_table: list[dict]) -> None:
        self.root, self.visuals, self.alpha = root, visuals, alpha
        self.lut = palette(class_table)
        self.jsonl = root / "frames.jsonl"
        self.ok = 0
        self.failed = 0
        self.failures: list[dict] = []
        self.stage_ms: dict[str, StageStats] = {}
        for sub in visuals:
            (root / f"{sub}s").mkdir(parents=True, exist_ok=True)

    def _write_image(self, path: Path, image: np.ndarray) -> None:
        def encode(tmp: Path) -> None:
            if not cv2.imwrite(str(tmp), image):
                raise OSError(f"cannot write {path}")

        atomic_write(path, encode)

    def write(self, frame: Frame) -> None:
        if frame.error is None:
            try:
                start = time.perf_counter()
                self._write_outputs(frame)
                frame.ms["write"] = 1000 * (time.perf_counter() - start)
            except (OSError, cv2.error) as exc:
                frame.error = f"write failed: {exc}"
        if frame.error is not None:
            self.failed += 1
            if len(self.failures) < MAX_RECORDED_FAILURES:
                self.failures.append({"name": frame.name, "reason": frame.error})
            print(f"skipped {frame.name}: {frame.error}", file=sys.stderr, flush=True)
            append_jsonl(self.jsonl, {"name": frame.name, "index": frame.index, "error": frame.error})
            return
        self.ok += 1
        for stage, ms in {**frame.ms, "total": sum(frame.ms.values())}.items():
            self.stage_ms.setdefault(stage, StageStats()).add(ms)
        append_jsonl(self.jsonl, {"name": frame.name, "index": frame.index, **frame.record,
                                  "ms": {k: round(v, 3) for k, v in frame.ms.items()}})

    def _write_outputs(self, frame: Frame) -> None:
        h, w = frame.image.shape[:2]
        mask = cv2.resize(frame.mask, (w, h), interpolation=cv2.INTER_NEAREST)
        stem = Path(safe_name(frame.name)).stem
        if "mask" in self.visuals:
            self._write_image(safe_join(self.root / "masks", f"{stem}.png"), mask)
        if "overlay" in self.visuals:
            rgb = frame.image if frame.image.ndim == 3 else np.repeat(frame.image[:, :, None], 3, axis=2)
            blend = cv2.addWeighted(rgb, 1 - self.alpha, self.lut[mask], self.alpha, 0)
            path = safe_join(self.root / "overlays", f"{stem}.jpg")
            self._write_image(path, cv2.cvtColor(blend, cv2.COLOR_RGB2BGR))

    def run(self, q: queue.Queue) -> None:
        while (frame := q.get()) is not _DONE:
            self.write(frame)


def process(backend, frame: Frame, table: list[dict], hazards: HazardConfig) -> None:
    """Model, argmax, class fractions and hazards for one decoded frame (fills frame in place)."""
    start = time.perf_counter()
    try:
        logits = backend.infer(frame.tensor)
    except Exception as exc:  # a runtime's own error types (ORT Fail, TensorRT): log the frame, go on
        frame.error = f"inference failed: {type(exc).__name__}: {str(exc)[:200]}"
        return
    frame.ms["infer"] = 1000 * (time.perf_counter() - start)
    start = time.perf_counter()
    frame.mask = logits[0].argmax(0).astype(np.uint8)
    frame.record = {"classes": class_fractions(frame.mask, table),
                    "hazards": assess(frame.mask, table, hazards)}
    frame.ms["postprocess"] = 1000 * (time.perf_counter() - start)
    frame.tensor = None


def infer_frames(backend, hazards: HazardConfig, inbox: queue.Queue, outbox: queue.Queue,
                 stop: threading.Event) -> None:
    """Main thread: every frame the reader hands over, until the reader is done or a signal came."""
    table = backend.metadata["class_table"]
    while (frame := inbox.get()) is not _DONE:
        if frame.error is None:
            process(backend, frame, table, hazards)
        outbox.put(frame)
        if stop.is_set():
            break


def run(args: argparse.Namespace) -> int:
    out = Path(args.output)
    visuals = {v.strip() for v in args.visualize.split(",") if v.strip()}
    unknown = visuals - set(VISUALS)
    if unknown:
        raise MarsedgeError(f"--visualize: unknown {sorted(unknown)} (choose from {', '.join(VISUALS)})")
    hazards = load_hazard_config(args.hazards)
    backend = open_backend(args.model, args.backend, threads=args.threads, rebuild_stale=args.rebuild_stale)
    out.mkdir(parents=True, exist_ok=True)
    (out / "frames.jsonl").unlink(missing_ok=True)
    source = iter_frames(args.input, max_frames=args.max_frames, loop=args.loop)

    stop = threading.Event()
    caught: list[int] = []

    def on_signal(signum, _frame) -> None:
        caught.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    inbox: queue.Queue = queue.Queue(maxsize=args.queue)
    outbox: queue.Queue = queue.Queue(maxsize=args.queue)
    writer = Writer(out, visuals, args.alpha, backend.metadata["class_table"])
    threads = [threading.Thread(target=read_frames, args=(source, backend.spec, inbox, stop), daemon=True),
               threading.Thread(target=writer.run, args=(outbox,), daemon=True)]
    start = time.perf_counter()
    try:
        for t in threads:
            t.start()
        infer_frames(backend, hazards, inbox, outbox, stop)
    finally:
        stop.set()
        outbox.put(_DONE)
        threads[1].join()
        wall = time.perf_counter() - start
        for s, handler in previous.items():
            signal.signal(s, handler)
        backend.close()
    summary = make_summary(args, backend, writer, wall, caught)
    atomic_write_json(out / "summary.json", summary)
    print_summary(summary, args.stats)
    if caught:
        return 128 + caught[0]
    return 0 if writer.ok > 0 else 1


def make_summary(args, backend, writer: Writer, wall: float, caught: list[int]) -> dict:
    infer = writer.stage_ms.get("infer")
    return {
        "input": str(args.input), "model": str(args.model),
        "backend": {"name": backend.name, "precision": backend.precision,
                    "providers": getattr(backend, "providers", None), "threads": args.threads},
        "frames_ok": writer.ok, "frames_failed": writer.failed, "failures": writer.failures,
        "interrupted": bool(caught),
        "wall_seconds": round(wall, 3),
        "fps": round(writer.ok / wall, 3) if wall > 0 else None,
        "backend_fps": round(1000 * infer.count / infer.total, 3) if infer and infer.total else None,
        "latency_ms": writer.stage_ms["total"].summary() if "total" in writer.stage_ms else {},
        "stages_ms": {k: v.summary() for k, v in writer.stage_ms.items() if k != "total"},
        "model_metadata": backend.metadata,
    }


def print_summary(summary: dict, stats: bool) -> None:
    print(f"{summary['frames_ok']} frames ok, {summary['frames_failed']} failed, "
          f"{summary['fps'] or 0:.2f} FPS end-to-end ({summary['backend']['name']} "
          f"{summary['backend']['precision']}, backend alone {summary['backend_fps'] or 0:.2f} FPS)")
    if stats:
        for stage, p in summary["stages_ms"].items():
            print(f"  {stage:<12} mean {p['mean']:8.2f} ms  p50 {p['p50']:8.2f}  p90 {p['p90']:8.2f}  "
                  f"p99 {p['p99']:8.2f}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edge-run", description=__doc__.splitlines()[0])
    p.add_argument("input", help="file, folder, glob, video file or /dev/videoN")
    p.add_argument("output", help="output folder")
    p.add_argument("--model", required=True, help="model file: .onnx, .engine or .pt")
    p.add_argument("--backend", choices=sorted(BACKENDS), help="default: from the model file's suffix")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for ONNX Runtime / torch")
    p.add_argument("--visualize", default="overlay,mask", help="comma list of: overlay, mask (or '')")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity of the class colours")
    p.add_argument("--hazards", default=None, help="YAML with the corridor and thresholds (HazardConfig)")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--loop", action="store_true", help="start over at the end of the input")
    p.add_argument("--queue", type=int, default=4, help="frames buffered between pipeline stages")
    p.add_argument("--rebuild-stale", action="store_true",
                   help="rebuild a stale TensorRT engine from the ONNX beside it")
    p.add_argument("--stats", action="store_true", help="print per-stage latency percentiles")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except MarsedgeError as exc:
        print(f"edge-run: error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
