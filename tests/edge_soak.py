"""Soak edge-run: 10,000 frames with 5% broken ones mixed in; memory flat, every failure named once.

    python tests/edge_soak.py --frames 10000 --model runs/demo/edge/student.int8.onnx
    python tests/edge_soak.py --frames 300 --out /tmp/soak      # a quick check of the harness

A folder of --files frames (96x96 NAVCAM-like PNG/JPEG) of which --broken-fraction are broken in
the ways the edge meets (truncated JPEG, empty file, text named .png, a PNG declaring 40000x40000,
a PDS3 label whose LINES lie about the bytes, a PDS4 label without its data file) is run through
`edge-run --loop --max-frames N` as a child process. While it runs, its RSS (/proc/PID/status) is
sampled together with the number of frames.jsonl lines written, so RSS is known per frame range.

Checks (exit 1 if any fails): peak RSS of the last --window frames <= first --window frames'
+ --rss-slack-mb; every broken input named exactly as often as it was fed (frames.jsonl and one
stderr "failed" line each), no good input ever failing; frames ok + failed == frames seen == N.
Writes edge_soak.json and edge_soak.md under --out (default benchmarks/results/). Without
--model a narrow 64-px student is built and exported (tests/edge_support.py; needs torch).
`tests/test_edge_soak.py` runs it (`MARSEDGE_SOAK_FRAMES`, default 2000) under `pytest -m long`.
"""

from __future__ import annotations

import argparse
import json
import platform
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from marsedge.bench.environment import cpu_model

REPO = Path(__file__).resolve().parents[1]


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


BROKEN = {  # kind -> (suffix, bytes) built from the formats' descriptions
    "truncated": (".jpg", None),  # filled from a good JPEG below
    "empty": (".png", b""),
    "text": (".png", b"this is not a PNG, just text with the wrong name\n"),
    "bomb": (".png", b"\x89PNG\r\n\x1a\n"
             + _chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 0, 0, 0, 0))
             + _chunk(b"IDAT", zlib.compress(b"\x00" * 40001 * 2)) + _chunk(b"IEND", b"")),
    "pds3_lies": (".IMG", b"PDS_VERSION_ID = PDS3\r\nRECORD_TYPE = FIXED_LENGTH\r\nRECORD_BYTES = 192\r\n"
                  b"FILE_RECORDS = 97\r\nLABEL_RECORDS = 1\r\n^IMAGE = 2\r\nOBJECT = IMAGE\r\n"
                  b"  LINES = 960\r\n"
                  b"  LINE_SAMPLES = 96\r\n  SAMPLE_TYPE = MSB_UNSIGNED_INTEGER\r\n  SAMPLE_BITS = 16\r\n"
                  b"  BANDS = 1\r\nEND_OBJECT = IMAGE\r\nEND\r\n".ljust(192, b" ") + bytes(192 * 10)),
    "pds4_no_data": (".xml", b'<?xml version="1.0"?><Product_Observational xmlns="http://pds.nasa.gov/pds4/pds/v1">'
                     b"<File_Area_Observational><File><file_name>missing.img</file_name></File><Array_2D_Image>"
                     b"<offset unit=\"byte\">0</offset><axes>2</axes><Element_Array><data_type>UnsignedMSB2"
                     b"</data_type></Element_Array><Axis_Array><axis_name>Line</axis_name><elements>96</elements>"
                     b"<sequence_number>1</sequence_number></Axis_Array><Axis_Array><axis_name>Sample</axis_name>"
                     b"<elements>96</elements><sequence_number>2</sequence_number></Axis_Array></Array_2D_Image>"
                     b"</File_Area_Observational></Product_Observational>"),
}


def make_folder(folder: Path, files: int, broken_fraction: float,
                seed: int = 0) -> tuple[list[str], set[str]]:
    """The input folder; returns the names in edge-run's (sorted) order and the broken ones."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_broken = max(1, round(files * broken_fraction))
    broken_at = set(np.linspace(0, files - 1, n_broken).round().astype(int).tolist())
    contents: dict[str, bytes | None] = {}
    for i in range(files):
        if i in broken_at:
            kind = list(BROKEN)[len([n for n in contents if contents[n] is None]) % len(BROKEN)]
            contents[f"f{i:05d}_{kind}{BROKEN[kind][0]}"] = None
        else:
            image = cv2.GaussianBlur(rng.integers(0, 256, (96, 96), dtype=np.uint8), (7, 7), 2)
            suffix = ".png" if i % 2 else ".jpg"
            contents[f"f{i:05d}{suffix}"] = cv2.imencode(suffix, image)[1].tobytes()
    good_jpeg = next(data for name, data in contents.items() if data and name.endswith(".jpg"))
    broken = {name for name, data in contents.items() if data is None}
    for name, data in contents.items():
        if data is None:
            kind = name.split("_", 1)[1].rsplit(".", 1)[0]
            data = BROKEN[kind][1] if kind != "truncated" else good_jpeg[: len(good_jpeg) // 2]
        (folder / name).write_bytes(data)
    return sorted(contents), broken


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def soak(args: argparse.Namespace, model: Path, work: Path) -> dict:
    names, broken = make_folder(work / "frames", args.files, args.broken_fraction)
    out = work / "out"
    cmd = [sys.executable, "-m", "marsedge.edge.run", str(work / "frames"), str(out), "--model", str(model),
           "--loop", "--max-frames", str(args.frames), "--threads", str(args.threads)]
    err_path = work / "stderr.txt"
    start = time.monotonic()
    with err_path.open("w") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True)
        samples, lines, offset = [], 0, 0
        jsonl = out / "frames.jsonl"
        while proc.poll() is None:
            if jsonl.exists():
                with jsonl.open("rb") as f:
                    f.seek(offset)
                    chunk = f.read()
                offset += len(chunk)
                lines += chunk.count(b"\n")
            rss = rss_mb(proc.pid)
            if rss is not None:
                samples.append((lines, rss))
            time.sleep(args.sample_s)
        stdout = proc.stdout.read()
    wall = time.monotonic() - start
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    fed = Counter(names[i % len(names)] for i in range(args.frames))
    failed = Counter(r["name"] for r in records if "error" in r)
    stderr_named = Counter(line.split(": ", 1)[0][len("failed "):]
                           for line in err_path.read_text().splitlines() if line.startswith("failed "))
    window = min(args.window, args.frames)
    first = [r for n, r in samples if n <= window]
    last = [r for n, r in samples if n >= args.frames - window]
    checks = {
        "exit_code_0": proc.returncode == 0,
        "ok_plus_failed_equals_seen": summary["frames_ok"] + summary["frames_failed"]
        == summary["frames_seen"] == args.frames == len(records),
        "every_broken_frame_named_once_per_feed": all(failed[n] == fed[n] == stderr_named[n] for n in broken),
        "no_good_frame_failed": not (set(failed) - broken),
        "rss_flat": bool(first and last) and max(last) <= max(first) + args.rss_slack_mb,
    }
    return {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "edge_run": " ".join(cmd[1:]),
        "cpu": cpu_model(), "python": platform.python_version(),
        "frames": args.frames, "files": args.files, "broken_files": len(broken),
        "broken_frames_fed": sum(fed[n] for n in broken), "frames_ok": summary["frames_ok"],
        "frames_failed": summary["frames_failed"], "frames_seen": summary["frames_seen"],
        "wall_seconds": round(wall, 1), "fps": summary["fps"],
        "rss_mb": {"first_window_peak": round(max(first), 1) if first else None,
                   "last_window_peak": round(max(last), 1) if last else None,
                   "overall_peak": round(max(r for _, r in samples), 1) if samples else None,
                   "window_frames": window, "samples": len(samples)},
        "failures_by_kind": dict(Counter(n.split("_", 1)[1].rsplit(".", 1)[0] for n in failed.elements())),
        "checks": checks, "edge_run_stdout": stdout.strip().splitlines()[-1:],
    }


def write_report(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "edge_soak.json").write_text(json.dumps(result, indent=2) + "\n")
    rss = result["rss_mb"]
    rows = "\n".join(f"| {k} | {'pass' if v else 'FAIL'} |" for k, v in result["checks"].items())
    (out / "edge_soak.md").write_text(
        f"# edge-run soak\n\n`{result['command']}` ({result['cpu']}, Python {result['python']})\n\n"
        f"{result['frames']} frames (`{result['edge_run']}`), {result['broken_files']} of "
        f"{result['files']} files broken, {result['broken_frames_fed']} broken frames fed: "
        f"{result['frames_ok']} ok, "
        f"{result['frames_failed']} failed, {result['frames_seen']} seen, {result['wall_seconds']} s.\n\n"
        f"Peak RSS: first {rss['window_frames']} frames {rss['first_window_peak']} MB, last "
        f"{rss['window_frames']} frames {rss['last_window_peak']} MB (overall {rss['overall_peak']} MB, "
        f"{rss['samples']} samples).\n\nFailures by kind: {result['failures_by_kind']}\n\n"
        f"| check | result |\n|---|---|\n{rows}\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--files", type=int, default=200, help="input folder size (looped)")
    ap.add_argument("--broken-fraction", type=float, default=0.05)
    ap.add_argument("--model", default=None, help="ONNX student (default: build a tiny one; needs torch)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--window", type=int, default=1000, help="frames in the first/last RSS window")
    ap.add_argument("--rss-slack-mb", type=float, default=20.0)
    ap.add_argument("--sample-s", type=float, default=0.05)
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--out", default=str(REPO / "benchmarks/results"))
    args = ap.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="marsedge-soak-"))
    model = Path(args.model) if args.model else None
    if model is None:
        from edge_support import make_student  # beside this file: run as `python tests/edge_soak.py`

        model = make_student(work / "model")[1]
    result = soak(args, model, work)
    write_report(result, Path(args.out))
    keys = ("frames_ok", "frames_failed", "frames_seen", "rss_mb", "checks")
    print(json.dumps({k: result[k] for k in keys}))
    return 0 if all(result["checks"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
