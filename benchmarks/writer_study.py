"""Where edge-run's writer cost goes, and what each output option costs: run through
`python -m benchmarks.edge_latency --writer-study --model M.onnx --frames-dir DIR`.

Two parts, both on this machine, in one run:
  1. micro-benchmarks (time.perf_counter, mean of 40 calls) of each per-frame step the writer
     and the postprocessing do on the first frame at its size: argmax, class fractions, hazards,
     the mask PNG at each zlib level / strategy and as a palette PNG, the overlay blend (numpy
     repeat + gather + addWeighted + cvtColor against `Writer.overlay`'s (class, grey) table lookup)
     and the JPEG at each quality / subsampling. The mask is the frame quantised into 6 smooth
     regions (a randomly initialised model predicts one class nearly everywhere, which no real mask
     does).
  2. rounds of child processes, alternately the backend alone (nothing else in the process) and
     `python -m marsedge.edge.run` with one variant (`VARIANTS`: edge-run's own options), so every
     variant's end-to-end FPS is divided by the mean of the two backend-only runs around it.
     The backend alone is timed in both ways it can run: one frame at a time on all threads
     (`--streams 1`, what `marsedge bench` times) and two frames at once on one thread each
     (`--streams 2`); each variant's `ratio` is against the alone run of its own stream count
     (like with like) and `ratio_vs_best_alone` against the faster of the two.
     Every figure carries the 1-minute load average at its start: the machine is shared.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import REPO, load_1min, machine

ONE = ["--streams", "1"]  # one frame at a time on all threads
CV_CORES = ["--cv-threads", str(os.cpu_count() or 1)]  # OpenCV's own default thread count
VARIANTS: dict[str, list[str]] = {  # name -> edge-run options
    "0 default: 2 streams (two frames at once, one thread each)": [],
    "1 default + --visualize '' (no images)": ["--visualize", ""],
    "2 default + --visualize mask (no overlays)": ["--visualize", "mask"],
    "3 default + --overlay-every 2": ["--overlay-every", "2"],
    "4 default + --overlay-every 4": ["--overlay-every", "4"],
    "5 default + --encoders 2 (on a CPU runtime)": ["--encoders", "2"],
    "6 default + --cv-threads CORES (OpenCV's own default)": CV_CORES,
    "7 one stream (--streams 1)": ONE,
    "8 one stream + --visualize '' (no images)": ["--visualize", "", *ONE],
    "9 one stream + --overlay-every 2": ["--overlay-every", "2", *ONE],
    "10 one stream + --cv-threads CORES": CV_CORES + ONE,
}


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
    out: dict = {"frame": str(frame_path), "shape": list(image.shape), "load": load_1min(), "ms": {},
                 "bytes": {}}

    def record(name: str, fn, size=None) -> None:
        out["ms"][name] = timed(fn)
        if size is not None:
            out["bytes"][name] = len(size())

    spec = backend.spec
    record("preprocess, edge-run (one lookup table)", lambda: preprocess(image, spec))
    record("preprocess as array passes (astype, divide, multiply, clip)",
           lambda: np.clip(image.astype(np.float32) / 255.0 * np.float32(spec.gain), 0.0, 1.0)[None])
    record("argmax numpy", lambda: np.argmax(logits, axis=1).astype(np.uint8))
    record("argmax, edge-run (logits_to_mask)", lambda: logits_to_mask(logits, image.shape[:2]))
    record("class_fractions", lambda: class_fractions(mask, table))
    record("hazards.assess", lambda: hazards.assess(mask))
    png = {"edge-run (filter none)": MASK_PNG, "opencv default": [],
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

    record("overlay blend numpy (repeat, gather, addWeighted, cvtColor)", old_blend)
    record("overlay blend, edge-run (Writer.overlay)", lambda: writer.overlay(image, mask))
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


def child(module: str, args: list[str]) -> str:
    """`python -m MODULE ARGS` from the repository root; its stdout."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env,
                          cwd=REPO, check=False)
    if done.returncode != 0:
        raise SystemExit(f"child failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return done.stdout


def alone(model: Path, threads: int, streams: int, backend: str | None, seconds: float = 5.0) -> dict:
    """The backend alone in a child process of its own (`backend_alone_main`)."""
    start = load_1min()
    args = ["alone", str(model), "--threads", str(threads), "--seconds", str(seconds), "--streams",
            str(streams), *(["--backend", backend] if backend else [])]
    return {**json.loads(child("benchmarks.writer_study", args).splitlines()[-1]), "load": start}


def backend_alone_main(argv: list[str]) -> int:
    """`python -m benchmarks.writer_study alone MODEL ...`: after a warm-up (arena growth, first-run
    allocations, like edge-run's own probe), `marsedge.edge.pipeline.backend_alone` as one json line."""
    from marsedge.edge.pipeline import backend_alone
    from marsedge.runtimes.choice import open_backend

    p = argparse.ArgumentParser(description=backend_alone_main.__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--streams", type=int, default=1)
    p.add_argument("--backend", default=None)
    args = p.parse_args(argv)
    b = open_backend(args.model, args.backend, threads=args.threads, streams=args.streams)
    backend_alone(b, 1.0)
    print(json.dumps(backend_alone(b, args.seconds)))
    return 0


def edge_run(model: Path, frames: Path, threads: int, extra: list[str], backend: str | None,
             out_root: Path | None = None) -> dict:
    out = Path(tempfile.mkdtemp(prefix="writer_study_", dir=out_root)) / "out"
    start = load_1min()
    child("marsedge.edge.run", [str(frames), str(out), "--model", str(model), "--threads", str(threads),
                                "--backend-probe", "3", *(["--backend", backend] if backend else []), *extra])
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
    from marsedge.io import atomic_write_json

    first = sorted(p for p in frames.iterdir() if p.is_file())[0]
    result: dict = {"command": " ".join(["python -m benchmarks.edge_latency", *sys.argv[1:]]),
                    "cpu": machine()["cpu"], "cores": os.cpu_count(), "threads": threads, "model": str(model),
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
            run = edge_run(model, frames, threads, VARIANTS[name], backend, out_root)
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


if __name__ == "__main__":
    if sys.argv[1:2] != ["alone"]:
        raise SystemExit("the writer study runs as `python -m benchmarks.edge_latency --writer-study ...`")
    raise SystemExit(backend_alone_main(sys.argv[2:]))
