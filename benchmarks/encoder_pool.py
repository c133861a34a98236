"""What `edge-run --encoders N` buys where inference leaves the CPU idle (a GPU or DLA backend).

    python benchmarks/encoder_pool.py --model student.int8.onnx --frames-dir DIR --frames 120 \\
        --encoders 1,2,3 --rounds 3

No GPU here, so inference is taken off the CPU the one honest way there is: the real model's logits
for every frame are computed first (ONNX Runtime, in this process), and the edge-run children replay
them (`Pipeline.process` looks the frame's logits up instead of calling the backend). Everything
else is edge-run as shipped: decoding, preprocessing, postprocessing, PNG/JPEG encoding, the atomic
writes and frames.jsonl. So each FPS is the ceiling edge-run's other stages allow, i.e. the most a
backend that costs the CPU nothing could reach; it says nothing about any backend's own speed.
Rounds alternate the encoder counts; every figure carries the 1-minute load average at its start.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from writer_study import ROOT, child, filesystem, load  # noqa: E402

REPLAY = """
import json, pathlib, numpy as np
from marsedge.edge import pipeline as P
CACHE = {{int(p.stem): np.load(p) for p in pathlib.Path({cache!r}).glob("*.npy")}}
NAMES = json.loads((pathlib.Path({cache!r}) / "names.json").read_text())
def process(self, frame):  # the logits the real model gave this frame, computed before the run
    assert frame.name == NAMES[frame.index], (frame.name, NAMES[frame.index])
    frame.logits, frame.tensor = CACHE[frame.index], None
    frame.ms["infer"] = 0.0
    return True
P.Pipeline.process = process
from marsedge.edge.run import main
import sys
sys.exit(main(sys.argv[1:]))
"""


def cache_logits(model: Path, frames: list[Path], cache: Path, threads: int) -> None:
    """Frame i's logits as cache/i.npy, from the real backend and THE preprocessing."""
    from marsedge.data.frames import read_frame
    from marsedge.data.preprocess import preprocess
    from marsedge.runtimes.choice import open_backend

    backend = open_backend(model, threads=threads)
    try:
        for index, path in enumerate(frames):
            logits = backend.infer(preprocess(read_frame(path), backend.spec)[None])
            np.save(cache / f"{index}.npy", np.ascontiguousarray(logits, np.float32))
        (cache / "names.json").write_text(json.dumps([p.name for p in frames]))
    finally:
        backend.close()


def edge_run(frames: Path, model: Path, cache: Path, encoders: int, n: int, out_root: Path) -> dict:
    out = Path(tempfile.mkdtemp(prefix="encoder_pool_", dir=out_root)) / "out"
    start = load()
    child(REPLAY.format(cache=str(cache)), [str(frames), str(out), "--model", str(model), "--streams", "1",
                                            "--threads", "1", "--encoders", str(encoders),
                                            "--max-frames", str(n), "--backend-probe", "0"])
    s = json.loads((out / "summary.json").read_text())
    return {"load": start, "fps": s["fps"], "frames_ok": s["frames_ok"],
            "stages_mean_ms": {k: v.get("mean") for k, v in s["stages_ms"].items()}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="the ONNX model whose logits are replayed")
    ap.add_argument("--frames-dir", required=True, help="folder of frames (sorted; the first --frames)")
    ap.add_argument("--frames", type=int, default=120)
    ap.add_argument("--encoders", default="1,2,3", help="comma list of --encoders values")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime threads for the logits")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/edge_encoder_pool.json"))
    ap.add_argument("--out-root", help="where edge-run writes (default: the temp folder)")
    args = ap.parse_args()
    from marsedge.bench.environment import cpu_model
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
    result = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "cpu": cpu_model(),
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
