"""Fuzz the frame readers and edge-run's input handling with mutated real frames (hypothesis).

    python tests/fuzz_frames.py --seconds 600 --seed 1 --json fuzz_frames.json --findings findings/

Seeds are real frames built from the formats' public descriptions: an 8-bit grey PNG and a 16-bit
PNG with an sBIT chunk (chunks written by hand), a baseline JPEG (libjpeg through OpenCV), a PDS3
product with an attached label and a PDS4 label with its raw data file. Hypothesis draws a seed and
a list of mutations: byte flips, overwrites, inserts, deletes, truncation, 32-bit "interesting"
values, and structured lies (PNG IHDR / JPEG SOF dimensions with valid CRCs, PDS3 keyword values,
PDS4 element values). Each mutated file goes through

    1. `marsedge.data.frames.read_frame`: must return a uint8 HxW / HxWx3 frame or raise FrameError;
    2. `marsedge.edge.pipeline.decode` (what edge-run's reader stage does): must never raise;

and any other outcome is a finding (kept under --findings with the mutation list). Never a hang:
every execution is watched by faulthandler (--hang seconds: a traceback and exit 3). Memory below a
bound: the process's own peak RSS (VmHWM; not ru_maxrss, which on Linux keeps the RSS of the parent
it was forked from) must stay under --max-rss-mb (a finding, then exit 1). Exit 0: no findings.
Torch-free. `tests/test_edge_run_fuzz.py` runs a seeded 12-second version in every test run and a
long one (`MARSEDGE_FUZZ_SECONDS`, default 120) under `pytest -m long`.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from test_data_pds import pds4_label

from marsedge.bench.latency import peak_rss_mb
from marsedge.data import frames
from marsedge.data.preprocess import PreprocessSpec
from marsedge.edge.pipeline import decode
from marsedge.edge.sources import Item
from marsedge.errors import FrameError

INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 40000, 65535, 1 << 20]
PDS3_KEYS = ["LINES", "LINE_SAMPLES", "RECORD_BYTES", "FILE_RECORDS", "LABEL_RECORDS", "^IMAGE",
             "SAMPLE_BITS", "BANDS", "SAMPLE_TYPE", "SAMPLE_BIT_MASK"]
PDS4_TAGS = ["elements", "offset", "axes", "data_type", "file_name", "img:sample_bits"]
LIE_VALUES = ["0", "-1", "1", "3", "7", "65535", "100000", "2147483648", "99999999999", "abc", "",
              "LSB_INTEGER", "IEEE_REAL", "UnsignedLSB2", "SignedMSB4", "IEEE754MSBDouble", "2#1111#"]


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png(samples: np.ndarray, sbit: int | None = None) -> bytes:
    """A grey PNG (8 or 16 bit) written chunk by chunk from the PNG specification."""
    h, w = samples.shape
    depth = 16 if samples.dtype == np.uint16 else 8
    rows = samples.astype(">u2").tobytes() if depth == 16 else samples.tobytes()
    stride = w * depth // 8
    raw = b"".join(b"\x00" + rows[i * stride:(i + 1) * stride] for i in range(h))
    extra = _chunk(b"sBIT", bytes([sbit])) if sbit else b""
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, 0, 0, 0, 0)) + extra
            + _chunk(b"IDAT", zlib.compress(raw)) + _chunk(b"IEND", b""))


def pds3(samples: np.ndarray) -> bytes:
    """A PDS3 image with an attached label (PDS3 Standards Reference, ch. 5 and appendix A.23)."""
    lines, cols = samples.shape
    record = 2 * cols
    label_records = 1
    while True:
        text = "\r\n".join(["PDS_VERSION_ID = PDS3", "RECORD_TYPE = FIXED_LENGTH", f"RECORD_BYTES = {record}",
                            f"FILE_RECORDS = {label_records + lines}", f"LABEL_RECORDS = {label_records}",
                            f"^IMAGE = {label_records + 1}", "OBJECT = IMAGE", f"  LINES = {lines}",
                            f"  LINE_SAMPLES = {cols}", "  SAMPLE_TYPE = MSB_UNSIGNED_INTEGER",
                            "  SAMPLE_BITS = 16", "  SAMPLE_BIT_MASK = 2#0000111111111111#", "  BANDS = 1",
                            "END_OBJECT = IMAGE", "END", ""]).encode()
        if len(text) <= label_records * record:
            return text.ljust(label_records * record, b" ") + samples.astype(">u2").tobytes()
        label_records += 1


def pds4(samples: np.ndarray, data_name: str) -> bytes:
    """A PDS4 Product_Observational label for a raw 2-D image (PDS4 Information Model, Array_2D_Image)."""
    return pds4_label(samples.shape, data_name, identifier="fuzz:seed").encode()


def make_seeds() -> dict[str, tuple[str, bytes, bytes | None]]:
    """kind -> (file suffix, bytes, companion raw data for PDS4)."""
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (48, 64), dtype=np.uint8)
    twelve = rng.integers(0, 4096, (40, 48), dtype=np.uint16)
    return {
        "png8": (".png", png(grey), None),
        "png16": (".png", png(twelve << 4, sbit=12), None),
        "jpeg": (".jpg", cv2.imencode(".jpg", grey)[1].tobytes(), None),
        "pds3": (".IMG", pds3(twelve), None),
        "pds4": (".xml", pds4(twelve, "seed.img"), twelve.astype(">u2").tobytes()),
    }


# ----------------------------------------------------------------------------------- mutations
def _op_strategy():
    pos = st.integers(0, 1 << 16)
    return st.one_of(
        st.tuples(st.just("flip"), pos, st.integers(0, 7)),
        st.tuples(st.just("set"), pos, st.integers(0, 255)),
        st.tuples(st.just("insert"), pos, st.binary(min_size=1, max_size=64)),
        st.tuples(st.just("delete"), pos, st.integers(1, 256)),
        st.tuples(st.just("truncate"), pos),
        st.tuples(st.just("int32"), pos, st.sampled_from(INTERESTING)),
        st.tuples(st.just("dims"), st.sampled_from(INTERESTING), st.sampled_from(INTERESTING)),
        st.tuples(st.just("keyword"), st.sampled_from(PDS3_KEYS + PDS4_TAGS), st.sampled_from(LIE_VALUES)),
        st.tuples(st.just("data"), st.sampled_from(["truncate", "extend", "empty"]), st.integers(0, 4096)),
    )


def _set_dims(data: bytearray, w: int, h: int) -> None:
    """Lie about the size in the header, keeping the checksums valid (PNG IHDR, JPEG SOFn)."""
    w, h = w & 0xFFFFFFFF, h & 0xFFFFFFFF
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 33:
        data[16:24] = struct.pack(">II", w, h)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    i = 2
    while data[:2] == b"\xff\xd8" and i + 9 < len(data):
        if data[i] != 0xFF:
            break
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            data[i + 5:i + 9] = struct.pack(">HH", h & 0xFFFF, w & 0xFFFF)
            break
        i += 2 + length


def _keyword(data: bytearray, key: str, value: str) -> bytearray:
    text = bytes(data)
    if key.islower() or ":" in key:  # a PDS4 element
        start = text.find(f"<{key}".encode())
        if start < 0:
            return data
        open_end, close = text.find(b">", start), text.find(f"</{key}>".encode(), start)
        if not 0 < open_end < close:
            return data
        return bytearray(text[:open_end + 1] + value.encode() + text[close:])
    start = text.find(f"{key} = ".encode())
    if start < 0:
        return data
    end = text.find(b"\r\n", start)
    return bytearray(text[:start] + f"{key} = {value}".encode() + text[end:]) if end > 0 else data


def mutate(data: bytes, companion: bytes | None, ops: list) -> tuple[bytes, bytes | None]:
    buf, raw = bytearray(data), None if companion is None else bytearray(companion)
    for op in ops:
        kind, n = op[0], max(1, len(buf))
        if kind == "flip":
            buf[op[1] % n:op[1] % n + 1] = bytes([(buf[op[1] % n] if buf else 0) ^ (1 << op[2])])
        elif kind == "set" and buf:
            buf[op[1] % n] = op[2]
        elif kind == "insert":
            buf[op[1] % n:op[1] % n] = op[2]
        elif kind == "delete":
            del buf[op[1] % n:op[1] % n + op[2]]
        elif kind == "truncate":
            del buf[op[1] % n:]
        elif kind == "int32" and len(buf) >= 4:
            p = op[1] % (len(buf) - 3)
            buf[p:p + 4] = struct.pack(">I", op[2] & 0xFFFFFFFF)
        elif kind == "dims":
            _set_dims(buf, op[1], op[2])
        elif kind == "keyword":
            buf = _keyword(buf, op[1], op[2])
        elif kind == "data" and raw is not None:
            changed = {"empty": bytearray(), "truncate": raw[:op[2]], "extend": raw + bytes(op[2])}
            raw = changed[op[1]]
    return bytes(buf), None if raw is None else bytes(raw)


# --------------------------------------------------------------------------------------- harness
class Harness:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.seeds = make_seeds()
        self.work = Path(tempfile.mkdtemp(prefix="marsedge-fuzz-"))
        self.findings: list[dict] = []
        self.counts = {"executions": 0, "frames": 0, "frame_errors": 0}
        self.per_kind = dict.fromkeys(self.seeds, 0)
        self.slowest_ms = 0.0
        self.deadline = time.monotonic() + args.seconds
        self.spec = PreprocessSpec(32, 32)
        self.report_to = sys.stderr
        if not args.verbose:  # libpng/libjpeg print every complaint to fd 2: keep it for our own lines
            self.report_to = os.fdopen(os.dup(2), "w")
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 2)
            os.close(devnull)

    def finding(self, kind: str, ops: list, data: bytes, companion: bytes | None, what: str) -> None:
        folder = Path(self.args.findings)
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{kind}-{len(self.findings):04d}"
        (folder / f"{stem}{self.seeds[kind][0]}").write_bytes(data)
        if companion is not None:
            (folder / f"{stem}.img").write_bytes(companion)
        self.findings.append({"seed": kind, "what": what, "ops": repr(ops), "file": str(folder / stem)})

    def execute(self, kind: str, ops: list) -> None:
        suffix, data, companion = self.seeds[kind]
        data, companion = mutate(data, companion, ops)
        path = self.work / f"frame{suffix}"
        path.write_bytes(data)
        if companion is not None:
            (self.work / "seed.img").write_bytes(companion)
        faulthandler.dump_traceback_later(self.args.hang, exit=True, file=self.report_to)
        start = time.perf_counter()
        try:
            frame = frames.read_frame(path)
            if not (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim in (2, 3)):
                what = f"read_frame returned {type(frame).__name__} {getattr(frame, 'shape', '')}"
                self.finding(kind, ops, data, companion, what)
            self.counts["frames"] += 1
        except FrameError:
            self.counts["frame_errors"] += 1
        except BaseException as exc:  # the point of the harness: anything else is a finding
            what = f"read_frame raised {type(exc).__name__}: {str(exc)[:200]}"
            self.finding(kind, ops, data, companion, what)
        try:
            decoded = decode(Item(path.name, path=path), 0, self.spec)
            if decoded.error is None and decoded.tensor.shape != (1, 1, 32, 32):
                self.finding(kind, ops, data, companion, f"decode gave a tensor of {decoded.tensor.shape}")
        except BaseException as exc:
            self.finding(kind, ops, data, companion, f"edge-run decode raised {type(exc).__name__}: {exc}")
        faulthandler.cancel_dump_traceback_later()
        self.slowest_ms = max(self.slowest_ms, 1000 * (time.perf_counter() - start))
        self.counts["executions"] += 1
        self.per_kind[kind] += 1
        rss_mb = peak_rss_mb()
        if rss_mb > self.args.max_rss_mb:
            what = f"peak RSS {rss_mb:.0f} MB over {self.args.max_rss_mb} MB"
            self.finding(kind, ops, data, companion, what)
            self.deadline = 0.0

    def run(self) -> dict:
        ops = st.lists(_op_strategy(), min_size=1, max_size=6)
        started, round_ = time.monotonic(), 0
        while time.monotonic() < self.deadline:
            @seed(self.args.seed * 1_000_003 + round_)
            @settings(max_examples=200, deadline=None, database=None, phases=[Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(kind=st.sampled_from(sorted(self.seeds)), ops=ops)
            def one(kind, ops):
                if time.monotonic() < self.deadline:
                    self.execute(kind, ops)

            one()
            round_ += 1
        seconds = round(time.monotonic() - started, 1)
        return {"command": " ".join(sys.argv), "seed": self.args.seed, "seconds": seconds,
                "rounds": round_, **self.counts, "per_seed": self.per_kind,
                "slowest_execution_ms": round(self.slowest_ms, 1),
                "peak_rss_mb": round(peak_rss_mb(), 1),
                "max_rss_mb": self.args.max_rss_mb, "hang_seconds": self.args.hang,
                "pixel_limit": frames.max_pixels(), "findings": self.findings}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=600.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hang", type=float, default=10.0, help="seconds one execution may take")
    ap.add_argument("--max-rss-mb", type=float, default=1024.0)
    ap.add_argument("--json", default=None, help="write the report here")
    ap.add_argument("--findings", default="fuzz-findings", help="folder for the inputs of findings")
    ap.add_argument("--verbose", action="store_true", help="let the decoders' own messages through")
    args = ap.parse_args(argv)
    report = Harness(args).run()
    text = json.dumps(report, indent=2)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text + "\n")
    print(f"{report['executions']} executions in {report['seconds']} s: {report['frames']} frames, "
          f"{report['frame_errors']} FrameErrors, {len(report['findings'])} findings, slowest "
          f"{report['slowest_execution_ms']} ms, peak RSS {report['peak_rss_mb']} MB")
    for f in report["findings"][:20]:
        print(f"  finding [{f['seed']}] {f['what']} ({f['file']})")
    return 1 if report["findings"] else 0


if __name__ == "__main__":
    sys.exit(main())
