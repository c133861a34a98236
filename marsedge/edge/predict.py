"""One way to predict a frame and to score a model on labelled frames (torch-free).

    mask = predict(backend, image)                 # uint8 class ids at the frame's size
    scores = score(backend, dataset)               # Scores: confusion matrix -> every metric

edge-run, the quantization gate (`marsedge.edge.gate`) and `marsedge bench` all go through here,
so they agree on what a model's mIoU on a split is.

The resolution policy (the one place it is decided): the model runs at its own input size (THE
preprocessing resizes the frame), and its logits' argmax is resized back to the frame's size with
nearest neighbour, so class ids stay ids. Scoring compares that mask with the label at the
label's own resolution (an AI4Mars label has its frame's size): labels are never shrunk to the
model input, which would score a different, blurrier truth at every input size.

The classes are the model's: `num_classes` is the length of the model's class table (its
metadata), not `marsedge.terrain.NUM_CLASSES`. Label pixels whose class the model does not have
(ids >= num_classes, e.g. rover 4 and background 5 for a 4-class terrain model) are ignored, like
the 255 "unlabelled" pixels: a model is scored on the classes it can predict.

A classifier (model_config head `classifier`, e.g. an MSL surface model of `mode: classify`) goes
through the same two calls: `predict` gives its class probabilities for the frame (`classify`), and
`score` scores ImageSamples (an image and its class id) into the same `Scores`, whose metrics are
then top-1, top-5, balanced accuracy, per-class recall and the image confusion matrix
(`marsedge.metrics.classification_metrics`, the function training scores with). Its "masks" are one
predicted class id per image, so the agreement between two classifiers is their top-1 agreement.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from marsedge.data.preprocess import PreprocessSpec, preprocess
from marsedge.errors import DataError, ModelError
from marsedge.metrics import ConfusionMatrix, classification_metrics, headline, segmentation_metrics
from marsedge.terrain import IGNORE_INDEX

ARGMAX_ROWS = 128  # rows per band: a band of every class plane and the best-so-far stays in L2


def argmax_ids(logits: np.ndarray) -> np.ndarray:
    """np.argmax(logits, axis=1) as uint8, exactly (first maximum on ties, infinities as numpy;
    NaN: numpy itself), by OpenCV over the class planes: where class c beats the best so far
    (cv2.compare, strictly greater), c is copied in (cv2.copyTo from a constant plane), band of rows
    by band so that each band is read from memory once for all the classes. 0.5 ms for 6x512x512
    logits fresh from the runtime on the 2-core test machine (0.65 ms plane by plane; numpy's argmax
    over a strided axis takes 4-7 ms, a boolean-mask assignment 1.4-5.2 ms: unpredictable
    branches). edge-run pays it per frame."""
    if logits.dtype != np.float32 or not 2 <= logits.shape[1] <= 255 or logits.size == 0:
        return np.argmax(logits, axis=1).astype(np.uint8)
    logits = np.ascontiguousarray(logits)
    out = np.zeros((logits.shape[0], *logits.shape[2:]), np.uint8)
    for n, planes in enumerate(logits):
        best, ids = planes[0].copy(), out[n]
        for top in range(0, planes.shape[1], ARGMAX_ROWS):
            band, band_ids = best[top:top + ARGMAX_ROWS], ids[top:top + ARGMAX_ROWS]
            for c in range(1, planes.shape[0]):
                plane = planes[c, top:top + ARGMAX_ROWS]
                greater = cv2.compare(plane, band, cv2.CMP_GT)  # 255 where class c beats the best so far
                cv2.copyTo(_constant_plane(band_ids.shape, c), greater, band_ids)
                np.maximum(band, plane, out=band)  # NaN spreads into the best (cv2.max would drop it)
        if np.isnan(best.max()):  # a NaN logit anywhere in this image: numpy's own answer
            out[n] = np.argmax(planes, axis=0)
    return out


@lru_cache(maxsize=64)
def _constant_plane(shape: tuple[int, ...], value: int) -> np.ndarray:
    plane = np.full(shape, value, np.uint8)
    plane.setflags(write=False)  # shared through the cache
    return plane


def logits_to_mask(logits: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """float N,K,H,W logits -> uint8 N,h,w class ids at the output size `out_hw` (nearest)."""
    if logits.ndim != 4:
        raise ValueError(f"logits must be N,K,H,W, got shape {logits.shape}")
    ids = argmax_ids(logits)
    h, w = out_hw
    if ids.shape[1:] == (h, w):
        return ids
    return np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in ids])


def finite(logits: np.ndarray) -> bool:
    """Every logit a finite number (two reductions: 0.4 ms for 6x512x512, a NaN anywhere spreads).
    A NaN or infinite logit makes every argmax garbage: such a frame has no result."""
    return not logits.size or bool(np.isfinite(logits.min()) and np.isfinite(logits.max()))


def finite_logits(logits: np.ndarray) -> np.ndarray:
    """`logits`, or a ModelError when any is NaN or infinite."""
    logits = np.asarray(logits)
    if not finite(logits):
        raise ModelError("the model gave non-finite logits (NaN or Inf)")
    return logits


def predict(backend, image: np.ndarray, spec: PreprocessSpec | None = None,
            out_hw: tuple[int, int] | None = None) -> np.ndarray:
    """One frame -> uint8 mask at the frame's size (or `out_hw`), through THE preprocessing with
    the model's own spec (or `spec`); a classifier's: its class probabilities (`classify`)."""
    spec = spec or backend.spec
    if is_classifier(backend):
        return classify(backend, image, spec)
    logits = finite_logits(backend.infer(preprocess(image, spec)[None]))
    return logits_to_mask(logits, out_hw or image.shape[:2])[0]


def is_classifier(backend) -> bool:
    """An image classifier (one logit vector per image), by the model config in its metadata."""
    return (backend.metadata.get("model_config") or {}).get("head") == "classifier"


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities of N x K logits (max subtracted first: no overflow)."""
    z = np.exp(logits - logits.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def classify(backend, image: np.ndarray, spec: PreprocessSpec | None = None) -> np.ndarray:
    """One frame -> the classifier's K class probabilities (float64), through THE preprocessing."""
    return softmax(_image_logits(backend.infer(preprocess(image, spec or backend.spec)[None])))[0]


def top_classes(logits: np.ndarray, names: list[str], k: int = 5) -> list[dict]:
    """The k most probable classes of one image's logits (1 x K): [{"class", "p"}], best first."""
    probs = softmax(_image_logits(logits))[0]
    return [{"class": names[i], "p": round(float(probs[i]), 5)} for i in np.argsort(-probs)[:k]]


def _image_logits(logits: np.ndarray) -> np.ndarray:
    logits = finite_logits(np.asarray(logits, dtype=np.float64))
    if logits.ndim != 2:
        raise ValueError(f"a classifier's logits must be N x K, got shape {logits.shape}")
    return logits


def model_classes(backend) -> list[str]:
    """The class names of a backend's model, from its metadata's class table."""
    return [str(c["name"]) for c in backend.metadata["class_table"]]


def fold_label(label: np.ndarray, num_classes: int) -> np.ndarray:
    """The label with every class the model does not have set to ignore (see the module doc)."""
    if label.size and int(label.max()) >= num_classes:
        label = np.where(label >= num_classes, np.uint8(IGNORE_INDEX), label).astype(label.dtype)
    return label


@dataclass
class Scores:
    """One model on one labelled split: the confusion matrix and what derives from it, each
    frame's own mIoU / pixel accuracy (the report's worst frames) and the masks by frame name
    (for pixel agreement between models)."""

    class_names: list[str]
    confusion: ConfusionMatrix
    per_frame: list[dict] = field(default_factory=list)
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    task: str = "segmentation"  # or "classification"
    logits: list[np.ndarray] = field(default_factory=list)  # a classifier's, per image (top-5 needs them)
    targets: list[int] = field(default_factory=list)

    @property
    def metrics(self) -> dict:
        """marsedge.metrics.segmentation_metrics of the whole split (classification_metrics for a
        classifier)."""
        if self.task == "classification":
            return classification_metrics(np.stack(self.logits), self.targets, self.class_names)
        return segmentation_metrics(self.confusion.matrix, self.class_names)

    @property
    def miou(self) -> float:
        return self.metrics["miou"]

    @property
    def headline(self) -> tuple[str, float]:
        """(label, value) of the task's headline metric: mIoU, or top-1 for a classifier."""
        m = self.metrics
        key, label = headline(m)
        return label, m[key]

    def agreement(self, other: Scores) -> float:
        """Pixel agreement of this model's masks with another's (see `pixel_agreement`)."""
        return pixel_agreement(self.masks, other.masks)


def score(backend, samples: Iterable, class_names: list[str] | None = None) -> Scores:
    """Predict every labelled sample (`Sample`: image, label, name) and score it against its label
    at the label's resolution. `class_names` default to the model's class table."""
    names = list(class_names or model_classes(backend))
    if is_classifier(backend):
        return score_images(backend, samples, names)
    total = ConfusionMatrix(len(names))
    scores = Scores(names, total)
    for sample in samples:
        if sample.label is None:
            raise DataError(f"frame {sample.name} has no label: accuracy needs a labelled split")
        if not isinstance(sample.label, np.ndarray):
            raise DataError(f"frame {sample.name} has a class id, not a label mask: a segmentation "
                            "model is scored on an AI4Mars split, not on an image classification set")
        try:
            mask = predict(backend, sample.image, out_hw=sample.label.shape[:2])
        except ModelError as exc:  # a score of garbage is no score: the frame named, the scoring stopped
            raise ModelError(f"frame {sample.name}: {exc}") from None
        frame = ConfusionMatrix(len(names))
        frame.update(mask, fold_label(sample.label, len(names)))
        total.matrix += frame.matrix
        m = segmentation_metrics(frame.matrix, names)
        scores.per_frame.append({"name": sample.name, "miou": _finite(m["miou"]),
                                 "pixel_accuracy": _finite(m["pixel_accuracy"])})
        scores.masks[sample.name] = mask
    if not scores.per_frame:
        raise DataError("the split has no frames to evaluate")
    return scores


def score_images(backend, samples: Iterable, names: list[str]) -> Scores:
    """A classifier on labelled images (`ImageSample`: image, class id, name)."""
    scores = Scores(names, ConfusionMatrix(len(names)), task="classification")
    for sample in samples:
        if not isinstance(sample.label, (int, np.integer)):
            raise DataError(f"frame {sample.name} has no class label: a classifier is scored on "
                            "labelled images (an MSL surface split), not on label masks")
        if not 0 <= int(sample.label) < len(names):
            raise DataError(f"frame {sample.name}: class id {sample.label} is not one of the model's "
                            f"{len(names)} classes")
        logits = _image_logits(backend.infer(preprocess(sample.image, backend.spec)[None]))[0]
        pred = int(np.argmax(logits))
        scores.confusion.update(np.array([pred]), np.array([int(sample.label)]))
        scores.logits.append(logits)
        scores.targets.append(int(sample.label))
        scores.per_frame.append({"name": sample.name, "truth": names[int(sample.label)],
                                 "predicted": names[pred], "correct": pred == int(sample.label)})
        scores.masks[sample.name] = np.array([pred], np.uint8)
    if not scores.per_frame:
        raise DataError("the split has no images to evaluate")
    return scores


def pixel_agreement(masks: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> float:
    """Fraction of pixels, over all frames both hold, where the two models predict the same class
    (for classifiers, whose masks are one class id per image: the fraction of images)."""
    same = total = 0
    for name, mask in masks.items():
        ref = reference.get(name)
        if ref is None:
            continue
        if ref.shape != mask.shape:
            raise ValueError(f"frame {name}: mask shapes differ {mask.shape} vs {ref.shape}")
        same += int(np.count_nonzero(mask == ref))
        total += mask.size
    if total == 0:
        raise ValueError("the two models share no frames")
    return same / total


def _finite(x: float | None) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)
