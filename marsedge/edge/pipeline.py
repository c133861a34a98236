"""edge-run's supervised pipeline: read -> infer -> write, each stage a thread, the main thread a
supervisor that only waits, so that a signal is always seen at once.

    reader   next input, decode (`marsedge.data.frames.read_frame`), check, preprocess
    infer    backend.infer, nothing else; one thread per backend stream (`--streams`), so that
             with two streams two frames are inferred at once, each on its own core
    writer   mask at frame size (`marsedge.edge.predict`), class fractions, hazards (both by the
             model's own class table, from its metadata), the confidence beside the argmax only
             when asked for (`Pipeline.confidence`); PNG/JPEG encoding; masks, overlays,
             frames.jsonl (`marsedge.edge.sinks.Writer`). An image classifier's frame gets its
             class, probability and top 5 in frames.jsonl instead, and no mask.
    encoders (`--encoders N`, N > 1) the writer's per-frame CPU work (postprocessing and encoding)
             on N threads, frames in parallel; the writer then only names, writes and logs them,
             in input order. For hosts whose cores inference leaves idle (a GPU or DLA backend):
             on a CPU runtime the cores are the model's (2 encoders: 0.86 of the backend alone
             against 0.92 for one, benchmarks/results/edge_writer_study.md).

Why postprocessing is the writer's: the inference stage is the bottleneck, so whatever it does
besides `backend.infer` adds to every frame's time, while the writer's work overlaps the next
inference (argmax + fractions + hazards took 7.4 ms a 512 px frame with numpy's argmax, 0.9 ms
now, on the 2-core test machine: python -m benchmarks.edge_latency --writer-study). The writer takes
frames in input order whatever order the streams finish them in (a small reorder buffer), so
frames.jsonl, resume and the outputs do not depend on the stream count.

Why this shape: on the rover nobody is there to press Ctrl-C twice. Every stage runs inside a
guard, so anything a frame does (a decoder raising an exception of its own, a MemoryError, a
wrong-sized image) becomes that frame's failure and the run goes on; what belongs to the sink
(disk full, read-only, a planted symlink) or to the model (failing frame after frame) stops the
run with one reason (`fatal`, and the exit code that goes with it). No queue operation blocks
without a timeout that looks at the stop flag, and the supervisor gives the stages JOIN_GRACE
seconds after a stop and then leaves whatever is stuck (a hung disk, a decoder that never returns)
to die with the process: SIGINT/SIGTERM end the run within 2 s in every state.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from marsedge.data import frames
from marsedge.data.preprocess import PreprocessSpec, preprocess
from marsedge.edge.confidence import Confidence
from marsedge.edge.hazards import HazardRules, class_fractions
from marsedge.edge.predict import finite, is_classifier, logits_to_mask, top_classes
from marsedge.edge.sinks import SinkError, Writer
from marsedge.edge.sources import Item
from marsedge.errors import FrameError, ModelError
from marsedge.runtimes.base import streams_of

MAX_ASPECT_CHANGE = 2.5  # a frame whose aspect ratio is this far from the model's is a wrong-size frame
MIN_SIDE = 16
RESERVOIR = 10_000  # latency samples kept per stage: exact percentiles up to this many frames
POLL = 0.1  # seconds a queue operation waits before it looks at the stop flag again
JOIN_GRACE = 0.5  # seconds the stages get to finish after a stop
MAX_MODEL_FAILURES_IN_A_ROW = 5  # then the model, not the frames, is at fault: the run stops
EXIT_SINK, EXIT_MODEL, EXIT_INTERNAL = 3, 4, 1
_DONE = object()


@dataclass
class Frame:
    """One frame's way through the pipeline."""

    index: int
    name: str
    image: np.ndarray | None = None
    tensor: np.ndarray | None = None
    logits: np.ndarray | None = None
    mask: np.ndarray | None = None
    confidence: np.ndarray | None = None  # max softmax probability 0..1, only when asked for
    encoded: dict[str, bytes] | None = None  # visual -> file bytes (`Writer.encode`)
    record: dict = field(default_factory=dict)
    ms: dict = field(default_factory=dict)
    error: str | None = None


def check_frame(image: np.ndarray, spec: PreprocessSpec) -> None:
    """Reject frames the model cannot meaningfully see (tiny, or of a very different shape)."""
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or image.size == 0:
        raise FrameError(f"empty or malformed frame, shape {getattr(image, 'shape', None)}")
    h, w = image.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise FrameError(f"wrong size: {w}x{h} is smaller than {MIN_SIDE} px")
    change = (w / h) / (spec.width / spec.height)
    if not 1 / MAX_ASPECT_CHANGE <= change <= MAX_ASPECT_CHANGE:
        raise FrameError(f"wrong size: {w}x{h} does not fit the model's {spec.width}x{spec.height}")


def describe(exc: BaseException) -> str:
    """A foreign exception as one short line (our own errors already are one)."""
    if isinstance(exc, FrameError):
        return str(exc)
    return f"{type(exc).__name__}: {str(exc)[:200]}".rstrip(": ")


def decode(item: Item, index: int, spec: PreprocessSpec) -> Frame:
    """Reader work for one input; never raises: whatever goes wrong is the frame's error."""
    frame = Frame(index, item.name)
    start = time.perf_counter()
    try:
        if item.error is not None:
            raise FrameError(item.error)
        image = item.image if item.image is not None else frames.read_frame(item.path)
        frame.ms["decode"] = 1000 * (time.perf_counter() - start)
        check_frame(image, spec)
        start = time.perf_counter()
        frame.tensor = preprocess(image, spec)[None]
        frame.ms["preprocess"] = 1000 * (time.perf_counter() - start)
        frame.image = image
    except Exception as exc:  # any decoder error (cv2.error, MemoryError, ...) is the frame's
        frame.error, frame.tensor = describe(exc), None
    return frame


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


class Pipeline:
    """Runs `items` through backend and writer; `run()` returns when done, stopped or fatal."""

    def __init__(self, items: Iterable[Item], backend, writer: Writer, hazards: HazardRules,
                 queue_size: int = 4, encoders: int = 1) -> None:
        self.items, self.backend, self.writer, self.hazards = items, backend, writer, hazards
        self.spec: PreprocessSpec = backend.spec
        self.table = backend.metadata["class_table"]
        self.classifier = is_classifier(backend)  # an image classifier: a class per frame, no mask
        self.confidence: Confidence | None = None  # set when confidence is wanted (masks, --min-confidence)
        self.names = [str(c["name"]) for c in self.table]
        self.inbox: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self.outbox: queue.Queue = queue.Queue(maxsize=max(1, queue_size))
        self.streams = streams_of(backend)
        self.streams_left = self.streams  # the last stream to finish tells the next stage
        self.encoders = max(1, int(encoders))
        self.encoded: queue.Queue = queue.Queue(maxsize=max(1, queue_size))  # encoders -> writer
        self.stop = threading.Event()
        self.fatal: tuple[str, int] | None = None
        self.model_failures = 0  # in a row, over all streams
        self.failures_lock = threading.Lock()  # the streams' shared counters (model_failures, streams_left)
        self.seen = 0
        self.stage_ms: dict[str, StageStats] = {}
        self.inferring = 0  # calls in progress, over all streams (under failures_lock)
        self.infer_calls = 0
        self.infer_busy_s = 0.0  # wall time during which at least one call was in progress
        self._busy_since = 0.0
        self.threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ stop flag and queues
    def fail(self, reason: str, code: int) -> None:
        """A fatal stop: the first reason wins."""
        if self.fatal is None:
            self.fatal = (reason, code)
        self.stop.set()

    def _put(self, q: queue.Queue, item) -> bool:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=POLL)
                return True
            except queue.Full:
                continue
        return False

    def _get(self, q: queue.Queue):
        while not self.stop.is_set():
            try:
                return q.get(timeout=POLL)
            except queue.Empty:
                continue
        return None

    def _guarded(self, name: str, stage, code: int):
        def target() -> None:
            try:
                stage()
            except SinkError as exc:
                self.fail(str(exc), exc.exit_code)
            except ModelError as exc:  # one line already, about the model
                self.fail(str(exc), code)
            except BaseException as exc:  # a stage must never die silently
                self.fail(f"{name} stage failed: {describe(exc)}", code)

        return threading.Thread(target=target, name=f"edge-run {name}", daemon=True)

    # ------------------------------------------------------------------------------ stages
    def _read(self) -> None:
        source: Iterator[Item] = iter(self.items)
        while not self.stop.is_set():
            try:
                item = next(source)
            except StopIteration:
                break
            except Exception as exc:  # the source itself broke (camera unplugged)
                frame = Frame(self.seen, "<source>", error=f"input stopped: {describe(exc)}")
                self.seen += 1
                self._put(self.inbox, frame)
                break
            frame = decode(item, self.seen, self.spec)
            self.seen += 1
            if not self._put(self.inbox, frame):
                return
        self._put(self.inbox, _DONE)

    def _infer(self) -> None:
        while (frame := self._get(self.inbox)) is not None:
            if frame is _DONE:  # left in the inbox for the sibling streams; the last one tells the next stage
                self._put(self.inbox, _DONE)
                with self.failures_lock:
                    self.streams_left -= 1
                    last = self.streams_left == 0
                if last:  # every stream's frames are in the outbox already, so _DONE comes after them all
                    self._put(self.outbox, _DONE)
                return
            if frame.error is None:
                ok = self.process(frame)
                with self.failures_lock:
                    self.model_failures = 0 if ok else self.model_failures + 1
                    in_a_row = self.model_failures
                if in_a_row >= MAX_MODEL_FAILURES_IN_A_ROW:
                    raise ModelError(f"the model failed on {in_a_row} frames in a row, last: {frame.error}")
            if not self._put(self.outbox, frame):
                return

    def process(self, frame: Frame) -> bool:
        """The model on one frame (logits kept for `postprocess`); False when inference failed or
        gave a NaN or infinite logit: garbage in every pixel's argmax, never a result."""
        self._busy(+1)
        start = time.perf_counter()
        try:
            frame.logits = np.asarray(self.backend.infer(frame.tensor))
        except Exception as exc:  # a runtime's own error types
            frame.error = f"inference failed: {describe(exc)}"
            return False
        finally:
            frame.tensor = None
            self._busy(-1)
        frame.ms["infer"] = 1000 * (time.perf_counter() - start)
        if not finite(frame.logits):
            frame.error = "inference failed: the model gave non-finite logits (NaN or Inf)"
            frame.logits = None
            return False
        return True

    def _busy(self, change: int) -> None:
        """A call in (+1) or out (-1). The in-pipeline inference rate is calls / the time at least one
        ran: streams overlap only as much as the reader feeds them (streams / mean call overstates)."""
        with self.failures_lock:
            now = time.perf_counter()
            if change > 0 and self.inferring == 0:
                self._busy_since = now
            self.inferring += change
            if change < 0:
                self.infer_calls += 1
                if self.inferring == 0:
                    self.infer_busy_s += now - self._busy_since

    def prepare(self, frame: Frame) -> None:
        """An encoder's work on a frame: postprocessing, then its files' bytes (`Writer.encode`; with
        one writer, `Writer.write` encodes as it writes)."""
        if frame.error is None:
            self.postprocess(frame)
        if frame.error is None:
            self.writer.encode(frame)

    def _encode_frames(self) -> None:
        """One of `--encoders` threads: frames from the outbox, prepared, to the writer in any order."""
        while (frame := self._get(self.outbox)) is not None:
            if frame is _DONE:  # left in the outbox for the sibling encoders; each tells the writer
                self._put(self.outbox, _DONE)
                self._put(self.encoded, _DONE)
                return
            self.prepare(frame)
            if not self._put(self.encoded, frame):
                return

    def postprocess(self, frame: Frame) -> None:
        """Argmax at the frame's size, class fractions and hazards (in the writer's thread); for a
        classifier the frame's class, its probability and the top 5."""
        start = time.perf_counter()
        try:
            if self.classifier:
                top = top_classes(frame.logits, self.names)
                frame.record = {"class": top[0]["class"], "p": top[0]["p"], "top5": top}
            elif self.confidence is not None:
                frame.mask, frame.confidence, means = self.confidence.apply(frame.logits,
                                                                            frame.image.shape[:2])
                frame.record = {"classes": class_fractions(frame.mask, self.table),
                                "hazards": self.hazards.assess(frame.mask), "mean_confidence": means}
            else:
                frame.mask = logits_to_mask(frame.logits, frame.image.shape[:2])[0]  # THE resolution policy
                frame.record = {"classes": class_fractions(frame.mask, self.table),
                                "hazards": self.hazards.assess(frame.mask)}
        except Exception as exc:  # a malformed output is this frame's failure
            frame.error = f"postprocessing failed: {describe(exc)}"
        frame.logits = None
        frame.ms["postprocess"] = 1000 * (time.perf_counter() - start)

    def _write(self) -> None:
        """Frames in input order: the streams (and encoders) may finish them out of order, so a
        frame waits in `early` until every frame before it is written (about one per thread waits)."""
        source, senders = (self.encoded, self.encoders) if self.encoders > 1 else (self.outbox, 1)
        early: dict[int, Frame] = {}
        following, done = 0, 0
        while done < senders and (frame := self._get(source)) is not None:
            if frame is _DONE:
                done += 1
                continue
            early[frame.index] = frame
            while following in early:
                self._write_one(early.pop(following))
                following += 1
        if done == senders:  # complete: nothing may stay behind, even after a gap in the indices
            for index in sorted(early):
                self._write_one(early.pop(index))

    def _write_one(self, frame: Frame) -> None:
        if self.encoders == 1 and frame.error is None:  # else an encoder has prepared it
            self.postprocess(frame)
        self.writer.write(frame)  # encodes it unless an encoder has
        if frame.error is None:
            with self.writer.lock:
                for stage, ms in {**frame.ms, "total": sum(frame.ms.values())}.items():
                    if stage not in self.stage_ms:  # (not setdefault: a StageStats per call is not free)
                        self.stage_ms[stage] = StageStats()
                    self.stage_ms[stage].add(ms)

    # --------------------------------------------------------------------------- supervisor
    def run(self) -> None:
        streams = [self._guarded("inference" if self.streams == 1 else f"inference {i + 1}", self._infer,
                                 EXIT_MODEL) for i in range(self.streams)]
        encoders = [self._guarded(f"encoder {i + 1}", self._encode_frames, EXIT_INTERNAL)
                    for i in range(self.encoders if self.encoders > 1 else 0)]
        self.threads = [self._guarded("reader", self._read, EXIT_INTERNAL), *streams, *encoders,
                        self._guarded("writer", self._write, EXIT_SINK)]
        for t in self.threads:
            t.start()
        writer = self.threads[-1]
        while writer.is_alive() and not self.stop.is_set():
            writer.join(POLL)
        self.stop.set()  # done, signalled or fatal: the other stages stop too
        deadline = time.monotonic() + JOIN_GRACE
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))

    @property
    def stuck(self) -> list[str]:
        """Stages still running after the grace time (left behind: daemon threads)."""
        return [t.name for t in self.threads if t.is_alive()]


def backend_alone(backend, seconds: float, stopped=lambda: False) -> dict | None:
    """Backend-only FPS with nothing else running in the process: what end-to-end FPS is judged
    against. The in-pipeline inference time is no such figure: the reader and the writer share the
    cores with the runtime's threads, so it is slowed by exactly the contention it would hide
    (33 FPS end to end read as 0.90 of it, but 0.69 of the unloaded backend). Like with
    like: as many threads calling `infer` at once as the backend has streams, as in the run. One
    warm-up call each, then calls until `seconds` have passed (at least 3 each); None when stopped
    or failing."""
    if seconds <= 0:
        return None
    spec = backend.spec
    x = np.random.default_rng(0).random((1, spec.channels, spec.height, spec.width), dtype=np.float32)
    streams = streams_of(backend)
    calls, failed = [0] * streams, []

    def calling(slot: int, deadline: float) -> None:
        try:
            while (calls[slot] < 3 or time.perf_counter() < deadline) and not stopped():
                backend.infer(x)
                calls[slot] += 1
        except Exception as exc:  # the run is over and written; a probe failure only loses the figure
            failed.append(exc)

    try:
        for _ in range(streams):
            backend.infer(x)
    except Exception:
        return None
    start = time.perf_counter()
    workers = [threading.Thread(target=calling, args=(i, start + seconds), daemon=True)
               for i in range(streams)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    if failed or stopped() or not sum(calls):
        return None
    return {"fps": round(sum(calls) / elapsed, 3), "calls": sum(calls), "seconds": round(elapsed, 3),
            "streams": streams}
