"""The teacher-logit cache: run a big teacher once, reuse its logits across student runs.

What is cached, and why only that. A cached logit map is the teacher's answer for one input. It is
only a valid target when the student sees *that same input*, so the cache holds the teacher's logits
for each frame **preprocessed without augmentation** (THE preprocessing, the student's input size).
Training with a cache therefore reads un-augmented frames; random photometric or geometric
augmentation of the student's input would silently mismatch the cached targets, so the distillation
config refuses `cache_dir` together with augmentation (marsedge.distill.config). Feature distillation
needs the teacher's intermediate maps, which are far too large to store, so it always runs the
teacher live.

Layout: one float16 `.npy` per frame (K,H,W), written atomically, named after the frame's key
(its image path, size and modification time: a rewritten frame is recomputed; the name is made safe
and suffixed with a hash of the raw key, so two keys that sanitise alike do not collide), plus
`manifest.json` holding the key: the teacher checkpoint's SHA-256, the preprocessing spec and the
class count. A cache written for another teacher or another spec is refused, never reused.

float16 keeps a 6 x 512 x 512 map at 3 MiB; logits are O(10) in magnitude, where float16 has ~3
significant digits, far below what softening at temperature T can resolve.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from marsedge.data.preprocess import PreprocessSpec
from marsedge.errors import DataError, ModelError
from marsedge.io import atomic_write, atomic_write_json, safe_name

MANIFEST = "manifest.json"


class LogitCache:
    """Teacher logits per frame on disk, keyed by (teacher checkpoint hash, preprocessing spec, frame)."""

    def __init__(self, root: str | Path, teacher_sha256: str, spec: PreprocessSpec, num_classes: int) -> None:
        self.root = Path(root)
        self.key = {
            "teacher_sha256": teacher_sha256,
            "preprocess": spec.to_dict(),
            "num_classes": int(num_classes),
            "format": "float16 .npy, K,H,W, teacher logits of the un-augmented preprocessed frame",
        }
        self.shape = (int(num_classes), spec.height, spec.width)
        self._check_or_write_manifest()

    def _check_or_write_manifest(self) -> None:
        manifest = self.root / MANIFEST
        if not manifest.exists():
            atomic_write_json(manifest, self.key)
            return
        try:
            stored = json.loads(manifest.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{manifest}: unreadable logit-cache manifest ({exc})") from None
        for field in ("teacher_sha256", "preprocess", "num_classes"):
            if stored.get(field) != self.key[field]:
                raise ModelError(
                    f"logit cache {self.root} is stale: its {field} is {stored.get(field)!r}, this run needs "
                    f"{self.key[field]!r}; delete the folder or point cache_dir elsewhere"
                )

    def path(self, name: str) -> Path:
        tag = hashlib.sha1(name.encode()).hexdigest()[:8]
        return self.root / f"{safe_name(name)[-120:]}-{tag}.npy"  # names are image paths: keep the tail

    def __contains__(self, name: str) -> bool:
        return self.path(name).exists()

    def get(self, name: str) -> np.ndarray:
        """The cached float16 K,H,W logits of one frame (a DataError names the file if it is bad)."""
        path = self.path(name)
        try:
            logits = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise DataError(f"{path}: no cached teacher logits for frame {name!r}") from None
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: corrupt cached teacher logits ({exc})") from None
        if logits.shape != self.shape or logits.dtype != np.float16:
            raise DataError(
                f"{path}: cached logits are {logits.dtype} {logits.shape}, expected float16 {self.shape}"
            )
        return logits

    def put(self, name: str, logits: np.ndarray) -> Path:
        """Store one frame's K,H,W logits as float16, atomically (a crash never leaves half a file)."""
        if tuple(logits.shape) != self.shape:
            raise ValueError(f"logits for {name!r} are {tuple(logits.shape)}, the cache holds {self.shape}")
        array = np.ascontiguousarray(logits, dtype=np.float16)

        def write(tmp: Path) -> None:
            with tmp.open("wb") as f:
                np.save(f, array, allow_pickle=False)

        return atomic_write(self.path(name), write)

    def missing(self, names: Iterable[str]) -> list[int]:
        """Positions of the names not cached yet (filling resumes where a crash stopped it)."""
        return [i for i, name in enumerate(names) if name not in self]


def fill_cache(
    cache: LogitCache,
    names: list[str],
    load_input: Callable[[int], np.ndarray],
    teacher_logits: Callable[[np.ndarray], np.ndarray],
    batch_size: int = 8,
    progress: bool = True,
    shard: tuple[int, int] = (0, 1),
) -> int:
    """Run the teacher over every frame not yet cached; returns how many frames were computed.

    `load_input(i)` gives frame i preprocessed (C,H,W float32, no augmentation);
    `teacher_logits(batch N,C,H,W) -> N,K,H,W` runs the frozen teacher. `shard=(rank, world)`
    splits the work between DDP processes: each computes the frames i with i % world == rank.
    """
    from tqdm import tqdm

    rank, world = shard
    todo = [i for i in cache.missing(names) if i % world == rank]
    bar = tqdm(total=len(todo), desc="teacher logits -> cache", unit="frame", disable=not progress)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        batch = np.stack([load_input(i) for i in chunk])
        for i, logits in zip(chunk, teacher_logits(batch), strict=True):
            cache.put(names[i], logits)
        bar.update(len(chunk))
    bar.close()
    return len(todo)
