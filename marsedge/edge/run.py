"""`edge-run`: NAVCAM frames in, terrain masks, overlays and hazard facts out.

    edge-run /data/sol1234/ runs/sol1234 --model student.int8.onnx --threads 2 --stats
    edge-run v4l2:///dev/video0 out/ --model student.fp16.engine --input-loop --visualize overlay
    edge-run /data/sol1234/ runs/sol1234 --model student.int8.onnx --resume     (after a power cut)

INPUT is a file, folder (sorted), glob (`**` for subfolders), video, `/dev/videoN`, or a URI
as jetson-utils writes them: file://, v4l2:///dev/videoN, csi://N (GStreamer), rtsp://
(`marsedge.edge.sources`), a recorded bag with `--topic` (frames named by their stamps), or a
folder that fills, with `--follow`. OUTPUT gets masks/, overlays/, frames.jsonl and summary.json,
named from each frame's path relative to INPUT (`marsedge.edge.sinks`), and run.json, what
`--resume` must find unchanged (`marsedge.edge.run_record`); `--visualize confidence` and
`--min-confidence` add the per-pixel confidence (`marsedge.edge.confidence`, docs/rover-bus.md).
The run holds OUTPUT's lock (`marsedge.ownership`) from before it reads or changes anything there
until it ends. What each fault does: docs/fault-behaviour.md.

Everything about the model comes from the model file: THE preprocessing spec (size, channels,
bit-depth mapping; a one-channel model sees colour frames through the spec's `colour_to_grey`
luminance, a three-channel model sees a greyscale frame replicated to RGB) and the class table, by
which masks, overlay colours, frames.jsonl class fractions and the hazard rules are read: a
4-class terrain model and a 6-class model run alike. A hazard rule whose class the model lacks is
skipped with one note at the start (or refused: `missing_class: error`, `marsedge.edge.hazards`).
An image classifier (an MSL surface model of `mode: classify`) runs the same way: its frames.jsonl
lines carry the frame's class, probability and top 5 instead of masks, overlays and hazards.

It is a supervised pipeline (`marsedge.edge.pipeline`): a bad frame costs one log line and one
summary entry, never the run; a failing OUTPUT or model stops the run with one line and the exit
code below; SIGINT/SIGTERM end it within 2 s, and the summary is written in every case (its room
is reserved when the run starts).

Speed: on a CPU runtime with two cores or more, two frames are inferred at once, each on half the
threads (`--streams`, default 2 there; `--streams 1` for the lowest latency per frame): a frame on
one thread never waits for a sibling thread that decoding or encoding preempted, so the writer's
work costs the run only its own CPU time. summary.json's `fps` is end to end (frames written / wall
time); `backend_fps` is the backend alone, timed for `--backend-probe` seconds after a complete run
with nothing else running in the process and as many calls at once as the run had streams, and
`fps_vs_backend` their ratio (aim: >= 0.90 with the default outputs).
`backend_fps_in_pipeline` (from the in-pipeline inference time) is slowed by the very contention
the ratio measures, so it is reported but never the baseline. What the writer costs and what each
choice bought: python -m benchmarks.edge_latency --writer-study. Where inference leaves cores idle (a
GPU engine), `--encoders N` postprocesses and encodes N frames at once beside the one writer
(benchmarks/encoder_pool.py: 155 -> 214 FPS of the other stages with 2 on 2 cores).

Needs only numpy, OpenCV and the model's runtime (`marsedge.runtimes`): no torch.
"""

from __future__ import annotations

import argparse
import math
import signal
import sys
import time
import traceback
from pathlib import Path

import cv2

from marsedge.edge.confidence import Confidence
from marsedge.edge.follow import DEFAULT_SETTLE
from marsedge.edge.hazards import HazardRules, load_hazard_config
from marsedge.edge.pipeline import Pipeline, backend_alone, describe
from marsedge.edge.predict import is_classifier
from marsedge.edge.run_record import holds_files, make_record, record_name
from marsedge.edge.run_summary import print_summary
from marsedge.edge.sinks import (
    JSONL,
    SUMMARY,
    VISUALS,
    Writer,
    prepare_output,
    sink_error,
    write_summary,
)
from marsedge.edge.sources import input_folder, open_source
from marsedge.errors import ConfigError, MarsedgeError, ModelError
from marsedge.ownership import OutputLock, refuse_same_path
from marsedge.runtimes import RUNTIMES, backend_names
from marsedge.runtimes.choice import default_streams, open_backend

EPILOG = """\
OUTPUT must be empty or new, and never INPUT itself; one edge-run at a time owns it (a lock held
for the whole run: a second one is refused). A non-empty OUTPUT is refused unless:
  --resume     continue an earlier run: frames whose frames.jsonl line and outputs are complete are
               skipped, the rest appended (failed frames are tried again, a torn last line is repaired).
               Only the same work continues (OUTPUT/run.json records it); a difference is refused.
               Must match: the model file's content (sha256), INPUT, --visualize, --alpha,
               --overlay-every, --hazards (the corridor and thresholds it holds).
               May change: the model's path, --backend, --threads, --streams, --encoders, --queue,
               --cv-threads, --max-frames, --loop, --backend-probe, --stats, --rebuild-stale.
  --overwrite  first delete what an earlier edge-run wrote there (the files its frames.jsonl names,
               frames.jsonl, summary.json, run.json); other files are never touched

A frame the model gives NaN or infinite logits is a failed frame (never "no hazard"); a video that
ends before the frame count its header declares ends the run with status "incomplete" and exit 1.

exit status:
  0    at least one frame ok (or all already done with --resume), the input read to its end
  1    setup failed (model, input), OUTPUT in use by another run, every frame failed, or a video
       ended before its declared frame count (the frames read are written)
  2    usage error (an option, OUTPUT not empty, OUTPUT a file or INPUT itself, --resume with
       another model or options)
  3    OUTPUT failed during the run (disk full, read-only, permission, a symlink planted in OUTPUT)
  4    the model failed frame after frame
  128+N  stopped by signal N (130 SIGINT, 143 SIGTERM)
"""


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line, like every other edge-run error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def alpha_value(text: str) -> float:
    """--alpha is an opacity 0..1; segnet users write 0-255, so say how to convert."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (overlay opacity 0..1)") from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        hint = (f"; jetson-inference segnet's 0-255 alpha {text} is --alpha {value / 255:.2f} here"
                if 1.0 < value <= 255.0 else "")
        raise argparse.ArgumentTypeError(f"{text} is outside 0..1{hint}")
    return value


def probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (a probability 0..1)") from None
    if not (math.isfinite(value) and 0.0 <= value <= 1.0):
        raise argparse.ArgumentTypeError(f"{text} is outside 0..1")
    return value


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return value


def seconds_value(text: str) -> float:
    """A duration: a finite number of seconds, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more seconds (0: skip)")
    return value


def open_model(args: argparse.Namespace):
    """The backend (checked at open: `marsedge.runtimes.model_check`); anything a broken model file
    raises becomes one ModelError line."""
    try:
        streams = args.streams or default_streams(args.model, args.backend, args.threads)
        backend = open_backend(args.model, args.backend, threads=args.threads,
                               rebuild_stale=args.rebuild_stale, streams=streams)
    except MarsedgeError:
        raise
    except Exception as exc:  # a malformed sidecar, a foreign runtime error
        raise ModelError(f"{args.model}: cannot open the model: {describe(exc)}") from None
    return backend


def run(args: argparse.Namespace, backend=None) -> int:
    """The run of parsed ARGS. `backend`: one already open to run instead of opening --model (which
    still names the model in run.json and the summary), e.g. a benchmark's stand-in that replays
    the model's logits (benchmarks/encoder_pool.py); it must describe the same model."""
    out = Path(args.output)
    visuals = {v.strip() for v in args.visualize.split(",") if v.strip()}
    if visuals - set(VISUALS):
        raise ConfigError(f"--visualize: unknown {sorted(visuals - set(VISUALS))} "
                          f"(choose from {', '.join(VISUALS)})")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"OUTPUT {out} is a file, not a folder")
    folder = input_folder(str(args.input))
    if folder is not None:
        refuse_same_path(folder, out, "OUTPUT")
    # a quick refusal before a slow model load; checked again under OUTPUT's lock (prepare_output)
    if holds_files(out) and not (args.resume or args.overwrite):
        raise ConfigError(f"OUTPUT {out} is not empty: pass --resume to continue the earlier run "
                          "or --overwrite to replace what it wrote")
    hazard_config = load_hazard_config(args.hazards)
    backend = open_model(args) if backend is None else backend
    classifier = is_classifier(backend)
    if classifier:  # a class per frame: nothing to draw, no terrain to assess
        print(f"edge-run: note: {args.model} is an image classifier: frames.jsonl gets each frame's "
              "class, probability and top 5; no masks, overlays or hazards", file=sys.stderr)
        visuals = set()
    try:
        hazards = HazardRules.for_model(hazard_config, [] if classifier else backend.metadata["class_table"])
        source = open_source(args.input, exclude=out, topic=args.topic, follow=args.follow,
                             settle=args.settle)
        try:  # OUTPUT is ours from here to the end: a second edge-run (or --overwrite) is refused
            lock = OutputLock(out, "edge-run").acquire()
        except OSError as exc:
            raise sink_error(exc, out) from None
    except BaseException:
        backend.close()
        raise
    try:
        return owned_run(args, out, visuals, backend, classifier, hazards, source)
    finally:
        lock.release()


def owned_run(args: argparse.Namespace, out: Path, visuals: set[str], backend, classifier: bool,
              hazards: HazardRules, source) -> int:
    """The run, with OUTPUT's lock held: the rerun rule, then the pipeline."""
    try:
        record = make_record(args, backend, visuals, hazards.config)
        namer, kept = prepare_output(out, visuals, args.resume, args.overwrite, record)
    except BaseException:
        backend.close()
        raise
    namer.remember_new = source.resumable
    cv2.setNumThreads(args.cv_threads)  # the stages are the parallelism; the cores are the runtime's
    for note in [] if classifier else hazards.notes():  # once per run, not per frame
        print(f"edge-run: note: {note}", file=sys.stderr)
    writer = Writer(out, visuals, args.alpha, backend.metadata["class_table"], namer, args.overlay_every)
    skip = {record_name(r) for r in kept} if source.resumable else set()
    pipeline = Pipeline(source.items(args.loop, args.max_frames, skip), backend, writer, hazards, args.queue,
                        args.encoders)
    pipeline.stop = source.stop  # one flag: a signal or a fatal error also ends a followed folder
    if not classifier and ("confidence" in visuals or args.min_confidence):  # else no softmax at all
        pipeline.confidence = Confidence(backend.metadata["class_table"], args.min_confidence)
    caught: list[int] = []

    def on_signal(signum, _frame) -> None:
        caught.append(signum)
        pipeline.stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    start = time.perf_counter()
    alone, wall = None, None
    try:
        pipeline.run()
        wall = time.perf_counter() - start
        if not (caught or pipeline.fatal or pipeline.stuck) and writer.ok:  # signals: no time for it
            alone = backend_alone(backend, args.backend_probe, lambda: bool(caught))
    finally:
        wall = time.perf_counter() - start if wall is None else wall
        for s, handler in previous.items():
            signal.signal(s, handler)
        if not pipeline.stuck:  # a stage stuck in a call keeps its objects; the process exit frees them
            writer.close()
            backend.close()
    code = exit_code(pipeline, caught, writer.ok + len(kept))
    code = 1 if code == 0 and source.ended_early else code  # the input did not hold what it declared
    summary = make_summary(args, backend, pipeline, source, kept, wall, caught, code, alone)
    summary["model_sha256"] = record["model_sha256"]
    problem = write_summary(out / SUMMARY, summary)
    print_summary(summary, args.stats)
    if pipeline.fatal:
        print(f"edge-run: error: {pipeline.fatal[0]} (run stopped; {writer.ok} frames written, "
              f"see {out / JSONL})", file=sys.stderr)
    elif caught:
        print(f"edge-run: stopped by {signal.Signals(caught[0]).name}", file=sys.stderr)
    elif source.ended_early:
        print(f"edge-run: error: {source.ended_early[0]} (the frames read are written: {writer.ok} ok; "
              f"status incomplete in {out / SUMMARY})", file=sys.stderr)
    if problem:
        print(f"edge-run: error: {problem}", file=sys.stderr)
    return code


def exit_code(pipeline: Pipeline, caught: list[int], ok: int) -> int:
    if pipeline.fatal:
        return pipeline.fatal[1]
    if caught:
        return 128 + caught[0]
    return 0 if ok > 0 else 1


def make_summary(args, backend, pipeline: Pipeline, source, kept: list[dict], wall: float,
                 caught: list[int], code: int, alone: dict | None = None) -> dict:
    """summary.json. FPS: `fps` end to end (frames written / wall time), `backend_fps` the backend
    alone, measured unloaded after the run (`pipeline.backend_alone`, null when interrupted or
    `--backend-probe 0`), `fps_vs_backend` their ratio, and `backend_fps_in_pipeline` (inferences /
    the time at least one was running), which the contention slows and so is no baseline for the ratio."""
    writer = pipeline.writer
    with writer.lock:
        ok, failed, failures = writer.ok, writer.failed, list(writer.failures)
        stats = {k: v.summary() for k, v in pipeline.stage_ms.items()}
    with pipeline.failures_lock:  # calls over busy time: never more than the streams really overlapped
        busy, calls = pipeline.infer_busy_s, pipeline.infer_calls
    in_pipeline = round(calls / busy, 3) if busy > 0 else None
    fps = round(ok / wall, 3) if wall > 0 else None
    backend_fps = alone["fps"] if alone else None
    status = ("stopped" if pipeline.fatal else "interrupted" if caught
              else "incomplete" if source.ended_early else "complete")
    reason = (pipeline.fatal[0] if pipeline.fatal else signal.Signals(caught[0]).name if caught
              else source.ended_early[0] if source.ended_early else None)
    return {
        "status": status, "exit_code": code, "reason": reason,
        "input": str(args.input), "model": str(args.model),
        "backend": {"name": backend.name, "precision": backend.precision,
                    "providers": getattr(backend, "providers", None), "threads": args.threads,
                    "streams": backend.streams},
        "frames_ok": ok + len(kept), "frames_failed": failed, "failures": failures,
        "frames_seen": pipeline.seen, "frames_resumed": len(kept),
        "frames_dropped": max(0, pipeline.seen - ok - failed),  # in the queues when the run stopped
        "skipped_inputs": source.skipped,
        "interrupted": bool(caught), "stuck_stages": pipeline.stuck,
        "wall_seconds": round(wall, 3),
        "fps": fps,
        "backend_fps": backend_fps,
        "fps_vs_backend": round(fps / backend_fps, 3) if fps and backend_fps else None,
        "backend_fps_in_pipeline": in_pipeline,
        "backend_probe": alone,
        "overlay_every": args.overlay_every,
        "encoders": pipeline.encoders,
        "latency_ms": stats.pop("total", {}),
        "stages_ms": stats,
        "model_metadata": backend.metadata,
        "hazards": pipeline.hazards.describe(),
    }


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="edge-run", description=__doc__.splitlines()[0], epilog=EPILOG,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="file, folder, glob, video, /dev/videoN, file://, v4l2://, csi://N, "
                   "rtsp://, a bag (--topic)")
    p.add_argument("output", help="output folder (new or empty; see --resume, --overwrite)")
    p.add_argument("--model", required=True, help="model file: .onnx, .engine or .pt")
    p.add_argument("--backend", choices=sorted(backend_names()),
                   help="default: the runtime the model's metadata names, else the file's suffix")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for ONNX Runtime / torch")
    p.add_argument("--visualize", default="overlay,mask",
                   help="comma list of: overlay, mask, confidence (max softmax probability x 255) (or '')")
    p.add_argument("--min-confidence", type=probability, default=None, metavar="P",
                   help="pixels whose max softmax probability is below P become 255 (unknown) in masks, "
                        "class fractions and hazards")
    p.add_argument("--topic", default=None, help="the sensor_msgs/Image topic of a bag INPUT "
                   "(.mcap, .db3, rosbag2 folder, ROS 1 .bag)")
    p.add_argument("--follow", action="store_true",
                   help="keep watching the INPUT folder: each new frame once complete, until SIGINT/SIGTERM "
                        "(with --resume: continue after a restart)")
    p.add_argument("--settle", type=float, default=DEFAULT_SETTLE, metavar="SECONDS",
                   help="--follow: a file is complete once its size and time held still this long")
    p.add_argument("--streams", type=positive_int, default=None, metavar="N",
                   help="frames inferred at once, the --threads split between them ("
                        + ", ".join(name for name, r in RUNTIMES.items() if r.cpu_streams)
                        + "; default 2 on a CPU with 2+ cores, else 1): more frames per second "
                        "beside the writer, each frame slower; 1 for the lowest latency per frame")
    p.add_argument("--cv-threads", type=positive_int, default=1, metavar="N",
                   help="OpenCV's own threads (resize, colour conversion); 1 leaves the cores to the "
                        "model runtime (python -m benchmarks.edge_latency --writer-study)")
    p.add_argument("--overlay-every", type=positive_int, default=1, metavar="N",
                   help="write the overlay of every Nth frame only (masks: always); 4 took edge-run "
                        "from 0.85 to 0.90 of its backend alone on 2 CPU cores at 512 px (docs/edge-run.md)")
    p.add_argument("--encoders", type=positive_int, default=1, metavar="N",
                   help="threads that postprocess and encode frames (argmax, class fractions, hazards, "
                        "PNG/JPEG) beside the one that writes them in order: for a GPU or DLA backend "
                        "that leaves cores idle (a CPU runtime's cores are the model's: keep 1)")
    p.add_argument("--backend-probe", type=seconds_value, default=1.0, metavar="SECONDS",
                   help="after the run, time the backend alone this long for summary.json's "
                        "backend_fps and fps_vs_backend (0: skip)")
    p.add_argument("--alpha", type=alpha_value, default=0.5,
                   help="overlay opacity of the class colours, 0..1 (segnet's 0-255: divide by 255)")
    p.add_argument("--hazards", default=None,
                   help="YAML with the corridor, thresholds and missing_class: skip|error (HazardConfig)")
    p.add_argument("--max-frames", type=positive_int, default=None, metavar="N",
                   help="stop after N frames (at least 1)")
    p.add_argument("--loop", "--input-loop", dest="loop", action="store_true",
                   help="start over at the end of the input")
    p.add_argument("--queue", type=positive_int, default=4, help="frames buffered between pipeline stages")
    p.add_argument("--rebuild-stale", action="store_true",
                   help="rebuild a stale engine (one built on another machine or from an older ONNX) "
                        "from the ONNX beside it")
    p.add_argument("--stats", action="store_true", help="print per-stage latency percentiles")
    rerun = p.add_mutually_exclusive_group()
    rerun.add_argument("--resume", action="store_true", help="continue the earlier run in OUTPUT (see below)")
    rerun.add_argument("--overwrite", action="store_true",
                       help="replace what an earlier edge-run wrote in OUTPUT, nothing else (see below)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    return p


def main(argv: list[str] | None = None, backend=None) -> int:
    """edge-run with ARGV; `backend` as `run` takes it."""
    args = build_parser().parse_args(argv)
    try:
        return run(args, backend)
    except MarsedgeError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"edge-run: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # a bug still ends in one line (and the traceback on --debug)
        if args.debug:
            traceback.print_exc()
        print(f"edge-run: error: internal error: {describe(exc)} (--debug shows the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
