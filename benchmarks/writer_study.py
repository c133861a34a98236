"""Where edge-run's writer cost goes, and what each change bought: run through
`python benchmarks/edge_latency.py --writer-study --model M.onnx --frames-dir DIR`.

Two parts, both on this machine, in one run:
  1. micro-benchmarks (time.perf_counter, mean of 40 calls) of each per-frame step the writer
     and the postprocessing do on the first frame at its size: argmax, class fractions, hazards,
     the mask PNG at each zlib level / strategy and as a palette PNG, the overlay blend (before:
     repeat + gather + addWeighted + cvtColor; now: one (class, grey) table lookup) and the JPEG
     at each quality / subsampling. The mask is the frame quantised into 6 smooth regions (a
     randomly initialised model predicts one class nearly everywhere, which no real mask does).
  2. rounds of child processes, alternately the backend alone (nothing else in the process) and
     edge-run with one variant (`VARIANTS`: patches that undo or add one change), so every
     variant's end-to-end FPS is divided by the mean of the two backend-only runs around it.
     The backend alone is timed in both ways it can run: one frame at a time on all threads
     (`--streams 1`, what `marsedge bench` times) and two frames at once on one thread each
     (`--streams 2`); each variant's `ratio` is against the alone run of its own stream count
     (like with like) and `ratio_vs_best_alone` against the faster of the two.
     Every figure carries the 1-minute load average at its start: the machine is shared.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# The behaviour before each change, as patches applied in the child before edge-run starts.
POST_IN_INFER = """
from marsedge.edge import pipeline as P
_process, _post = P.Pipeline.process, P.Pipeline.postprocess
def process(self, frame):
    if not _process(self, frame):
        return False
    _post(self, frame)
    return True
def postprocess(self, frame):
    if frame.logits is not None:
        _post(self, frame)
P.Pipeline.process, P.Pipeline.postprocess = process, postprocess
"""
OLD_BLEND = """
import cv2, numpy as np
from marsedge.edge import sinks
def overlay(self, image, mask):
    rgb = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
    blend = cv2.addWeighted(rgb, 1 - self.alpha, self.bgr_lut[:, ::-1][mask], self.alpha, 0)
    return cv2.cvtColor(blend, cv2.COLOR_RGB2BGR)
sinks.Writer.overlay = overlay
"""
NP_ARGMAX = """
import numpy as np
from marsedge.edge import predict
predict.argmax_ids = lambda logits: np.argmax(logits, axis=1).astype(np.uint8)
"""
NO_SPIN = """
import onnxruntime as ort
_Session = ort.InferenceSession
class Session(_Session):
    def __init__(self, path, options=None, *a, **k):
        options = options or ort.SessionOptions()
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        super().__init__(path, options, *a, **k)
ort.InferenceSession = Session
"""
# ORT's dynamic block sizing of its parallel loops: a preempted thread holds back a smaller share
DYNAMIC_BLOCKS = NO_SPIN.replace('"session.intra_op.allow_spinning", "0"',
                                 '"session.dynamic_block_base", "4"')
# reader and writer threads at a lower CPU priority (Linux: per-thread nice through the thread id),
# so the scheduler hands the cores to ONNX Runtime's threads first and the I/O work fills the gaps
NICE_IO = """
import os, threading
from marsedge.edge import pipeline as P
_guarded = P.Pipeline._guarded
def guarded(self, name, stage, code):
    if name == "inference":
        return _guarded(self, name, stage, code)
    def niced():
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        stage()
    return _guarded(self, name, niced, code)
P.Pipeline._guarded = guarded
"""
# the per-frame work before the per-frame cuts: (class, grey) table blend, bitwise argmax, np.bincount
BEFORE_CUTS = """
import cv2, numpy as np
from marsedge.edge import hazards, predict, sinks
def overlay(self, image, mask):
    if image.ndim == 2 and image.dtype == np.uint8 and mask.dtype == np.uint8:
        if getattr(self, "_table", None) is None:
            grey = np.repeat(np.tile(np.arange(256, dtype=np.uint8), 256)[:, None], 3, axis=1)
            colour = np.repeat(self.bgr_lut, 256, axis=0)
            self._table = cv2.addWeighted(grey, 1 - self.alpha, colour, self.alpha, 0)
        return np.take(self._table, (mask.astype(np.uint16) << 8) | image, axis=0)
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR if image.ndim == 3 else cv2.COLOR_GRAY2BGR)
    return cv2.addWeighted(bgr, 1 - self.alpha, self.bgr_lut[mask], self.alpha, 0)
def argmax_ids(logits):
    logits = np.ascontiguousarray(logits)
    if logits.dtype != np.float32 or np.isnan(logits.max()):
        return np.argmax(logits, axis=1).astype(np.uint8)
    out = np.zeros((logits.shape[0], *logits.shape[2:]), np.uint8)
    for n, planes in enumerate(logits):
        best, ids = planes[0].copy(), out[n]
        for c in range(1, planes.shape[0]):
            greater = cv2.compare(planes[c], best, cv2.CMP_GT)
            cv2.bitwise_and(ids, cv2.bitwise_not(greater), dst=ids)
            cv2.bitwise_or(ids, cv2.bitwise_and(greater, c), dst=ids)
            cv2.max(best, planes[c], dst=best)
    return out
def class_counts(mask, where=None):
    return np.bincount(mask.reshape(-1) if where is None else mask[where.astype(bool)], minlength=256)
sinks.Writer.overlay, predict.argmax_ids, hazards.class_counts = overlay, argmax_ids, class_counts
"""
# the interpreter hands the GIL over after 0.5 ms instead of 5 ms: the inference thread, back from
# ONNX Runtime, waits less for a writer that holds it
SWITCH_FAST = "import sys\nsys.setswitchinterval(0.0005)\n"
CV_CORES = ["--cv-threads", str(os.cpu_count() or 1)]  # OpenCV's default thread count (before)
PNG_FILTER_BEFORE = """
from marsedge.edge import sinks
sinks.MASK_PNG[:] = []
"""
PREPROCESS_BEFORE = """
import numpy as np
from marsedge.data import preprocess as pre
from marsedge.edge import pipeline
def preprocess(image, spec):  # steps 3 and 4 as two array passes, as before the lookup table
    image = pre.to_grey(image, spec.colour_to_grey)
    x = image.astype(np.float32) / 255.0
    return np.clip(x * np.float32(spec.gain), 0.0, 1.0, out=x)[None]
pipeline.preprocess = preprocess  # (grey frames at the model size: this study's frames)
"""
ONE = ["--streams", "1"]  # one frame at a time on all threads: edge-run before --streams
ENCODE_IN_STREAMS = """
from marsedge.edge import pipeline as P
# after POST_IN_INFER, in the same namespace: its own names (_process, process) are left alone
_postprocessed = P.Pipeline.process
def process_and_encode(self, frame):
    if not _postprocessed(self, frame):
        return False
    if frame.error is None:
        self.writer.encode(frame)  # frame.encoded: the writer then writes it without encoding again
    return True
P.Pipeline.process = process_and_encode
"""
VARIANTS: dict[str, tuple[str, list[str]]] = {  # name -> (patch, extra edge-run options)
    "0 before (postprocess in infer thread, numpy argmax, old blend, cv2 threads = cores)":
        (POST_IN_INFER + NP_ARGMAX + OLD_BLEND, CV_CORES + ONE),
    "1 + postprocess in writer thread": (NP_ARGMAX + OLD_BLEND, CV_CORES + ONE),
    "2 + table blend": (NP_ARGMAX, CV_CORES + ONE),
    "3 + OpenCV argmax": ("", CV_CORES + ONE),
    "4 + cv2 threads 1 (the default of one stream)": ("", ONE),
    "5 one stream + ORT allow_spinning=0": (NO_SPIN, ONE),
    "6 one stream + --overlay-every 2": ("", ["--overlay-every", "2", *ONE]),
    "7 one stream + --visualize '' (no images)": ("", ["--visualize", "", *ONE]),
    "8 one stream + ORT dynamic_block_base 4": (DYNAMIC_BLOCKS, ONE),
    "9 one stream + reader/writer threads at nice 10": (NICE_IO, ONE),
    "10 one stream + nice 10 + ORT allow_spinning=0": (NICE_IO + NO_SPIN, ONE),
    "11 one stream before the per-frame cuts (table blend, bitwise argmax, bincount)": (BEFORE_CUTS, ONE),
    "12 one stream + GIL switch interval 0.5 ms": (SWITCH_FAST, ONE),
    "13 one stream + dynamic_block_base 4 + GIL switch interval 0.5 ms": (DYNAMIC_BLOCKS + SWITCH_FAST, ONE),
    "14 default now: 2 streams (two frames at once, one thread each)": ("", []),
    "15 default + --visualize '' (no images)": ("", ["--visualize", ""]),
    "16 default with the PNG mask filter of before (OpenCV's default)": (PNG_FILTER_BEFORE, []),
    "17 default with the preprocessing of before (two array passes, no table)": (PREPROCESS_BEFORE, []),
    "18 default + --overlay-every 2": ("", ["--overlay-every", "2"]),
    "19 default + --overlay-every 4": ("", ["--overlay-every", "4"]),
    "20 default + --visualize mask (no overlays)": ("", ["--visualize", "mask"]),
    "21 default with postprocessing in the stream threads": (POST_IN_INFER, []),
    "22 default with postprocessing and encoding in the stream threads":
        (POST_IN_INFER + ENCODE_IN_STREAMS, []),
    "23 default + --encoders 2 (on a CPU runtime)": ("", ["--encoders", "2"]),
}
BACKEND_ALONE = """
import json, sys, time
from marsedge.runtimes.choice import open_backend
from marsedge.edge.pipeline import backend_alone
b = open_backend(sys.argv[1], sys.argv[5] or None, threads=int(sys.argv[2]), streams=int(sys.argv[4]))
backend_alone(b, 1.0)  # warm-up (arena growth, first-run allocations), like the run's own probe
print(json.dumps(backend_alone(b, float(sys.argv[3]))))
"""
EDGE_RUN = "import sys\nfrom marsedge.edge.run import main\n{patch}\nsys.exit(main(sys.argv[1:]))\n"


def load() -> float:
    return round(os.getloadavg()[0], 2)


def timed(fn, n: int = 40) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return round(1000 * (time.perf_counter() - start) / n, 3)


def micro(frame_path: Path, model: Path, threads: int) -> dict:
    """Per-step ms of the writer and the postprocessing on one frame (see the module doc)."""
    import cv2
    from PIL import Image

    from marsedge.data.frames import read_frame
    from marsedge.data.preprocess import preprocess
    from marsedge.edge.hazards import HazardRules, class_fractions, load_hazard_config
    from marsedge.edge.predict import logits_to_mask
    from marsedge.edge.sinks import MASK_PNG, OVERLAY_JPEG, Writer
    from marsedge.runtimes.choice import open_backend
    from marsedge.terrain import palette

    backend = open_backend(model, threads=threads)
    table = backend.metadata["class_table"]
    image = read_frame(frame_path)
    grey = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    mask = np.clip(cv2.GaussianBlur(grey, (0, 0), 6) // 43, 0, len(table) - 1).astype(np.uint8)
    logits = np.random.default_rng(0).standard_normal((1, len(table), *image.shape[:2]), dtype=np.float32)
    hazards = HazardRules.for_model(load_hazard_config(None), table)
    writer = Writer(Path(tempfile.mkdtemp()), {"mask", "overlay"}, 0.5, table)
    rgb_lut = palette(table)
    out: dict = {"frame": str(frame_path), "shape": list(image.shape), "load": load(), "ms": {}, "bytes": {}}

    def record(name: str, fn, size=None) -> None:
        out["ms"][name] = timed(fn)
        if size is not None:
            out["bytes"][name] = len(size())

    spec = backend.spec
    record("preprocess now (one lookup table)", lambda: preprocess(image, spec))
    record("preprocess before (astype, divide, multiply, clip)",
           lambda: np.clip(image.astype(np.float32) / 255.0 * np.float32(spec.gain), 0.0, 1.0)[None])
    record("argmax numpy (before)", lambda: np.argmax(logits, axis=1).astype(np.uint8))
    record("argmax now (logits_to_mask)", lambda: logits_to_mask(logits, image.shape[:2]))
    record("class_fractions", lambda: class_fractions(mask, table))
    record("hazards.assess", lambda: hazards.assess(mask))
    png = {"edge-run (filter none)": MASK_PNG, "opencv default (before)": [],
           "filter up": [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP],
           "filter sub": [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB],
           "level 0": [cv2.IMWRITE_PNG_COMPRESSION, 0],
           "level 1": [cv2.IMWRITE_PNG_COMPRESSION, 1], "level 3": [cv2.IMWRITE_PNG_COMPRESSION, 3],
           "level 6": [cv2.IMWRITE_PNG_COMPRESSION, 6], "level 9": [cv2.IMWRITE_PNG_COMPRESSION, 9],
           "level 1 RLE": [cv2.IMWRITE_PNG_COMPRESSION, 1, cv2.IMWRITE_PNG_STRATEGY,
                           cv2.IMWRITE_PNG_STRATEGY_RLE]}
    for name, params in png.items():
        def enc(params=params):
            return cv2.imencode(".png", mask, params)[1].tobytes()
        record(f"mask png {name}", enc, enc)

    def palette_png(level: int = 1) -> bytes:
        im = Image.fromarray(mask, "P")
        im.putpalette(rgb_lut[: len(table)].reshape(-1).tolist())
        buf = io.BytesIO()
        im.save(buf, "PNG", compress_level=level)
        return buf.getvalue()

    record("mask png palette (PIL level 1)", palette_png, palette_png)

    def old_blend():
        rgb = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
        return cv2.cvtColor(cv2.addWeighted(rgb, 0.5, rgb_lut[mask], 0.5, 0), cv2.COLOR_RGB2BGR)

    record("overlay blend before (repeat, gather, addWeighted, cvtColor)", old_blend)
    record("overlay blend now (Writer.overlay)", lambda: writer.overlay(image, mask))
    out["overlay_blend_identical"] = bool(np.array_equal(old_blend(), writer.overlay(image, mask)))
    blend = writer.overlay(image, mask)
    jpeg = {"q95 4:2:0 (edge-run)": OVERLAY_JPEG, "q90 4:2:0": [cv2.IMWRITE_JPEG_QUALITY, 90],
            "q95 4:4:4": [cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_SAMPLING_FACTOR,
                          cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]}
    for name, params in jpeg.items():
        def enc(params=params):
            return cv2.imencode(".jpg", blend, params)[1].tobytes()
        record(f"overlay jpg {name}", enc, enc)
    half = cv2.resize(blend, (blend.shape[1] // 2, blend.shape[0] // 2), interpolation=cv2.INTER_AREA)
    record("overlay jpg q95 at half size", lambda: cv2.imencode(".jpg", half, OVERLAY_JPEG)[1].tobytes())
    backend.close()
    return out


def child(code: str, args: list[str]) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout


def alone(model: Path, threads: int, streams: int, backend: str | None, seconds: float = 5.0) -> dict:
    start = load()
    args = [str(model), str(threads), str(seconds), str(streams), backend or ""]
    return {**json.loads(child(BACKEND_ALONE, args).splitlines()[-1]), "load": start}



def edge_run(model: Path, frames: Path, threads: int, patch: str, extra: list[str],
             backend: str | None, out_root: Path | None = None) -> dict:
    out = Path(tempfile.mkdtemp(prefix="writer_study_", dir=out_root)) / "out"
    start = load()
    child(EDGE_RUN.format(patch=patch), [str(frames), str(out), "--model", str(model), "--threads",
                                         str(threads), "--backend-probe", "3",
                                         *(["--backend", backend] if backend else []), *extra])
    s = json.loads((out / "summary.json").read_text())
    return {"load": start, "fps": s["fps"], "frames_ok": s["frames_ok"], "streams": s["backend"]["streams"],
            "probe_fps_after_run": s["backend_fps"], "ratio_vs_probe_after_run": s["fps_vs_backend"],
            "backend_fps_in_pipeline": s["backend_fps_in_pipeline"],
            "stages_mean_ms": {k: v.get("mean") for k, v in s["stages_ms"].items()}}


def filesystem(path: Path) -> str:
    """The type of the file system `path` is on (/proc/mounts, longest mount point), e.g. ext4."""
    path, best = path.resolve(), ("", "unknown")
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return best[1]
    for line in mounts:
        point, kind = line.split()[1:3]
        if (path == Path(point) or Path(point) in path.parents) and len(point) > len(best[0]):
            best = (point, kind)
    return best[1]


def study(model: Path, frames: Path, threads: int, rounds: int, out_path: Path,
          only: list[int] | None = None, backend: str | None = None, out_root: Path | None = None) -> int:
    from marsedge.bench.environment import cpu_model
    from marsedge.io import atomic_write_json

    first = sorted(p for p in frames.iterdir() if p.is_file())[0]
    result: dict = {"command": " ".join(["python benchmarks/edge_latency.py", *sys.argv[1:]]),
                    "cpu": cpu_model(), "cores": os.cpu_count(), "threads": threads, "model": str(model),
                    "backend": backend or "from the suffix",
                    "output_root": str(out_root or tempfile.gettempdir()),
                    "output_filesystem": filesystem(out_root or Path(tempfile.gettempdir())),
                    "frames": str(frames), "frame_count": sum(1 for p in frames.iterdir() if p.is_file()),
                    "micro": micro(first, model, threads), "rounds": []}
    print(json.dumps(result["micro"], indent=1), flush=True)
    names = [n for i, n in enumerate(VARIANTS) if only is None or i in only]
    result["variants"] = names
    for r in range(rounds):
        before = {n: alone(model, threads, n, backend) for n in (1, 2)}
        runs = []
        for name in names:
            patch, extra = VARIANTS[name]
            run = edge_run(model, frames, threads, patch, extra, backend, out_root)
            after = {n: alone(model, threads, n, backend) for n in (1, 2)}
            base = {n: (before[n]["fps"] + after[n]["fps"]) / 2 for n in (1, 2)}
            own = base[run["streams"]]
            run |= {"variant": name, "backend_alone_fps": round(own, 3),
                    "backend_alone_fps_by_streams": {n: round(v, 3) for n, v in base.items()},
                    "ratio": round(run["fps"] / own, 3),
                    "ratio_vs_best_alone": round(run["fps"] / max(base.values()), 3),
                    "backend_alone_runs": [before, after]}
            print(f"round {r + 1} load {run['load']:5.2f}  {name:<62} {run['fps']:7.2f} FPS end-to-end / "
                  f"{own:7.2f} backend alone = {run['ratio']:.3f}; vs best alone ({base[1]:.2f} / "
                  f"{base[2]:.2f} at 1 / 2 streams) {run['ratio_vs_best_alone']:.3f} (probe after run: "
                  f"{run['ratio_vs_probe_after_run']})", flush=True)
            runs.append(run)
            before = after
        result["rounds"].append(runs)
    for key in ("ratio", "ratio_vs_best_alone", "fps"):
        result[f"{key}_by_variant"] = {name: [rnd[i][key] for rnd in result["rounds"]]
                                       for i, name in enumerate(names)}
    for name in names:
        print(f"median ratio {np.median(result['ratio_by_variant'][name]):.3f}, vs best alone "
              f"{np.median(result['ratio_vs_best_alone_by_variant'][name]):.3f}, end to end "
              f"{np.median(result['fps_by_variant'][name]):.2f} FPS  {name}")
    atomic_write_json(out_path, result)
    write_markdown(result, out_path.with_suffix(".md"))
    print(f"wrote {out_path} and {out_path.with_suffix('.md')}")
    return 0


def write_markdown(result: dict, path: Path) -> None:
    """The study as a table a person reads: per variant the ratio per round and its median, against
    the backend alone at the run's own stream count and against the faster of the two counts."""
    from marsedge.io import atomic_write_text

    def alone_fps(run: dict, n: int) -> float:  # int keys in memory, str keys read back from JSON
        by = run["backend_alone_fps_by_streams"]
        return by[n] if n in by else by[str(n)]

    rows = ["| variant | streams | ratio per round (own streams alone) | median | median vs one-stream "
            "alone | median vs best alone | median end-to-end FPS |", "|---|---|---|---|---|---|---|"]
    for i, name in enumerate(result["variants"]):
        streams = result["rounds"][0][i]["streams"]
        ratios = result["ratio_by_variant"][name]
        best = np.median(result["ratio_vs_best_alone_by_variant"][name])
        one = np.median([rnd[i]["fps"] / alone_fps(rnd[i], 1) for rnd in result["rounds"]])
        fps = np.median(result["fps_by_variant"][name])
        rows.append(f"| {name} | {streams} | {', '.join(f'{r:.3f}' for r in ratios)} | "
                    f"{np.median(ratios):.3f} | {one:.3f} | {best:.3f} | {fps:.1f} |")

    alone = {n: [alone_fps(v, n) for rnd in result["rounds"] for v in rnd] for n in (1, 2)}
    micro = ", ".join(f"{k} {v}" for k, v in result["micro"]["ms"].items())
    text = (f"# edge-run end to end vs the backend alone ({result['cpu']}, {result['cores']} cores)\n\n"
            f"`{result.get('command', '')}`; model {result['model']} ({result['backend']}), "
            f"{result['frame_count']} frames from {result['frames']}, {result['threads']} threads, "
            f"{len(result['rounds'])} interleaved rounds, edge-run writing to "
            f"{result.get('output_root', '?')} "
            f"({result.get('output_filesystem', '?')}). {result.get('note', '')}\n\n"
            "Ratio = end-to-end FPS / mean of the unloaded backend-alone runs (child processes) before "
            "and after it, at the run's own stream count; 'vs best alone' divides by the faster of the "
            "one-stream and two-stream backend-alone runs. Backend alone over the study: one stream "
            f"{min(alone[1]):.1f}-{max(alone[1]):.1f} FPS, two streams {min(alone[2]):.1f}-"
            f"{max(alone[2]):.1f} FPS (a shared VM: compare within a round).\n\n"
            + "\n".join(rows) + f"\n\nPer-step ms on one frame, one thread (micro): {micro}\n")
    atomic_write_text(path, text)
