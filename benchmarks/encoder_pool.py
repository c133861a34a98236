"""What `edge-run --encoders N` buys where inference leaves the CPU idle (a GPU or DLA backend).

    python -m benchmarks.encoder_pool --model student.int8.onnx --frames-dir DIR --frames 120 \\
        --encoders 1,2,3 --rounds 3

No GPU here, so inference is taken off the CPU the one honest way there is: the real model's logits
for every frame are computed first (ONNX Runtime, in this process), and the edge-run children replay
them (`ReplayBackend`, handed to `marsedge.edge.run.main` as its backend: each frame's logits looked
up by a fingerprint of its preprocessed tensor instead of computed). Everything else is edge-run as
shipped: decoding, preprocessing, postprocessing, PNG/JPEG encoding, the atomic writes and
frames.jsonl. So each FPS is the ceiling edge-run's other stages allow, i.e. the most a backend that
costs the CPU nothing could reach; it says nothing about any backend's own speed. Rounds alternate
the encoder counts; every figure carries the 1-minute load average at its start.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.common import RESULTS, command, load_1min, machine
from benchmarks.writer_study import child, filesystem


def fingerprint(batch: np.ndarray) -> bytes:
    """A few hundred samples of a preprocessed frame: tells the frames of one folder apart for
    next to no CPU (hashing the whole tensor would cost the pipeline what this measures without)."""
    flat = np.ascontiguousarray(batch, np.float32).reshape(-1)
    return flat[:: max(1, flat.size // 509)].tobytes()


class ReplayBackend:
    """The real model's description (metadata, spec, streams) with `infer` replaced by a lookup of
    the logits the real model gave the same frame (cache/i.npy, keyed by `fingerprint`)."""

    def __init__(self, real, cache: Path) -> None:
        self.real, self.name, self.precision = real, real.name, real.precision
        self.metadata, self.spec, self.streams = real.metadata, real.spec, getattr(real, "streams", 1)
        self.logits = {bytes.fromhex(key): np.load(cache / f"{index}.npy")
                       for index, key in enumerate(json.loads((cache / "keys.json").read_text()))}

    def infer(self, batch: np.ndarray) -> np.ndarray:
        return self.logits[fingerprint(batch)]

    def close(self) -> None:
        self.real.close()


def cache_logits(model: Path, frames: list[Path], cache: Path, threads: int) -> None:
    """Frame i's logits as cache/i.npy, from the real backend and THE preprocessing."""
    from marsedge.data.frames import read_frame
    from marsedge.data.preprocess import preprocess
    from marsedge.runtimes.choice import open_backend

    backend, keys = open_backend(model, threads=threads), []
    try:
        for index, path in enumerate(frames):
            batch = preprocess(read_frame(path), backend.spec)[None]
            np.save(cache / f"{index}.npy", np.ascontiguousarray(backend.infer(batch), np.float32))
            keys.append(fingerprint(batch).hex())
        (cache / "keys.json").write_text(json.dumps(keys))
    finally:
        backend.close()


def edge_run(frames: Path, model: Path, cache: Path, encoders: int, n: int, out_root: Path) -> dict:
    out = Path(tempfile.mkdtemp(prefix="encoder_pool_", dir=out_root)) / "out"
    start = load_1min()
    child("benchmarks.encoder_pool", ["replay", str(cache), str(frames), str(out), "--model", str(model),
                                      "--streams", "1", "--threads", "1", "--encoders", str(encoders),
                                      "--max-frames", str(n), "--backend-probe", "0"])
    s = json.loads((out / "summary.json").read_text())
    return {"load": start, "fps": s["fps"], "frames_ok": s["frames_ok"],
            "stages_mean_ms": {k: v.get("mean") for k, v in s["stages_ms"].items()}}


def replay(argv: list[str]) -> int:
    """`python -m benchmarks.encoder_pool replay CACHE EDGE-RUN-ARGS...`: edge-run with the logits
    in CACHE replayed (the child of each measurement)."""
    from marsedge.edge.run import build_parser
    from marsedge.edge.run import main as edge_run_main
    from marsedge.runtimes.choice import open_backend

    cache, edge_args = Path(argv[0]), argv[1:]
    args = build_parser().parse_args(edge_args)
    real = open_backend(args.model, args.backend, threads=args.threads, streams=args.streams or 1)
    return edge_run_main(edge_args, backend=ReplayBackend(real, cache))


def main() -> int:
    if sys.argv[1:2] == ["replay"]:
        return replay(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="the ONNX model whose logits are replayed")
    ap.add_argument("--frames-dir", required=True, help="folder of frames (sorted; the first --frames)")
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--encoders", default="1,2,3", help="comma list of --encoders values")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads for the logits")
    ap.add_argument("--out", default=str(RESULTS / "edge_encoder_pool.json"))
    ap.add_argument("--out-root", help="where edge-run writes (default: the temp folder)")
    args = ap.parse_args()
    from marsedge.io import atomic_write_json, atomic_write_text

    frames_dir, model = Path(args.frames_dir), Path(args.model)
    frames = sorted(p for p in frames_dir.iterdir() if p.is_file())[: args.frames]
    counts = [int(c) for c in args.encoders.split(",")]
    out_root = Path(args.out_root) if args.out_root else Path(tempfile.gettempdir())
    runs: dict[int, list[dict]] = {k: [] for k in counts}
    with tempfile.TemporaryDirectory(prefix="encoder_pool_cache_") as cache:
        cache_logits(model, frames, Path(cache), args.threads)
        for r in range(args.rounds):
            for k in counts if r % 2 == 0 else counts[::-1]:
                runs[k].append(edge_run(frames_dir, model, Path(cache), k, len(frames), out_root))
                last = runs[k][-1]
                print(f"round {r + 1} encoders {k}: {last['fps']:.1f} FPS (load {last['load']})")
    rows = {k: {"median_fps": statistics.median(x["fps"] for x in v), "runs": v} for k, v in runs.items()}
    result = {"command": command("encoder_pool", sys.argv[1:]), "cpu": machine()["cpu"],
              "frames": len(frames), "model": str(model), "output_filesystem": filesystem(out_root),
              "note": "inference replayed from cached real logits: the ceiling of the other stages",
              "encoders": rows}
    out = Path(args.out)
    atomic_write_json(out, result)
    lines = ["# edge-run --encoders: the other stages' ceiling with inference off the CPU\n",
             f"`{result['command']}`  \nCPU: {result['cpu']}; {len(frames)} frames; OUTPUT on "
             f"{result['output_filesystem']}. {result['note']}.\n",
             "| --encoders | median FPS | rounds (FPS) | mean ms: postprocess / encode / write |",
             "|---|---|---|---|"]
    for k, row in rows.items():
        stages = [statistics.mean(x["stages_mean_ms"].get(s) or 0 for x in row["runs"])
                  for s in ("postprocess", "encode", "write")]
        fps = " ".join(f"{x['fps']:.1f}" for x in row["runs"])
        ms = " / ".join(f"{s:.2f}" for s in stages)
        lines.append(f"| {k} | {row['median_fps']:.1f} | {fps} | {ms} |")
    atomic_write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
