"""The project's checkpoint format: one file that describes itself.

A checkpoint is a `torch.save`d dict of tensors and plain Python values only, so that it loads
with `torch.load(weights_only=True)` (no pickled code runs):

    format_version   int (FORMAT_VERSION)
    state_dict       the model's tensors (CPU)
    model_config     ModelConfig as a dict: load_model rebuilds the network from it
    class_table      marsedge.terrain.class_table(num_classes)
    preprocess       PreprocessSpec.to_dict(): the edge preprocesses frames with exactly this
    extra            free dict: epoch, metrics, optimizer state, ... (tensors and plain values)

Writes are atomic (marsedge.io.atomic_write): a crash mid-save leaves the previous file intact.
Partial loads (`load_weights(..., part="backbone")`) report missing and unexpected keys; a tensor
of the wrong shape fails naming the key, except the first conv of a colour checkpoint loaded into a
greyscale model, which is summed over its input channels (and reported as adapted).
"""

from __future__ import annotations

import dataclasses
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from marsedge.data.preprocess import PreprocessSpec
from marsedge.errors import ModelError
from marsedge.io import atomic_write
from marsedge.models.build import ModelConfig, SegmentationModel, build_model
from marsedge.models.importers import adapt_first_conv, first_conv_key
from marsedge.terrain import class_table

FORMAT_VERSION = 1
PARTS = ("all", "backbone", "head")


@dataclass
class Checkpoint:
    path: Path
    state_dict: dict[str, torch.Tensor]
    model_config: dict
    class_table: list[dict]
    preprocess: dict
    extra: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION


@dataclass
class LoadReport:
    """What a (partial) load did: keys copied, keys the model expected but did not get, keys unused."""

    loaded: list[str]
    missing: list[str]
    unexpected: list[str]
    adapted: list[str] = field(default_factory=list)  # first conv summed 3 -> 1 channel (or split 1 -> 3)

    def __str__(self) -> str:
        return (f"loaded {len(self.loaded)} tensors; missing {len(self.missing)} {self.missing[:5]}; "
                f"unexpected {len(self.unexpected)} {self.unexpected[:5]}")


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DistributedDataParallel / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _plain(value: Any, key: str) -> Any:
    """`value` as tensors and plain Python types only (what weights_only loading accepts)."""
    if value is None or isinstance(value, (bool, int, float, str, torch.Tensor)):
        return value.detach().cpu() if isinstance(value, torch.Tensor) else value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {str(k): _plain(v, f"{key}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{key}[{i}]") for i, v in enumerate(value)]
    raise ModelError(f"checkpoint key {key!r}: cannot store a {type(value).__name__} "
                     "(tensors and plain values only)")


def save_checkpoint(path: str | Path, model: nn.Module, model_config: ModelConfig | dict,
                    preprocess: PreprocessSpec | dict, extra: dict | None = None,
                    classes: list[dict] | None = None) -> Path:
    """Write model weights plus everything needed to use them, atomically. `classes` is the class
    table (id, name, colour per output); None: the terrain classes (marsedge.terrain)."""
    cfg = model_config if isinstance(model_config, ModelConfig) else ModelConfig.from_dict(model_config)
    spec = preprocess if isinstance(preprocess, PreprocessSpec) else PreprocessSpec.from_dict(preprocess)
    if classes is not None and len(classes) != cfg.num_classes:
        raise ModelError(f"{path}: {len(classes)} classes in the table for a model of {cfg.num_classes}")
    payload = {
        "format_version": FORMAT_VERSION,
        "state_dict": {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()},
        "model_config": cfg.to_dict(),
        "class_table": classes if classes is not None else class_table(cfg.num_classes),
        "preprocess": spec.to_dict(),
        "extra": _plain(extra or {}, "extra"),
    }
    return atomic_write(path, lambda tmp: _save_through_python(payload, tmp))


def _save_through_python(payload: dict, path: Path) -> None:
    """torch.save through a Python file: a failed write (a full disk) then raises the OSError that
    says why, not torch's own writer's "unexpected pos" RuntimeError."""
    with open(path, "wb") as f:
        try:
            torch.save(payload, f)
        except RuntimeError as exc:  # the zip writer's end, failing after the OSError it hides
            if isinstance(exc.__context__, OSError):
                raise exc.__context__ from None
            raise


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read a checkpoint safely (weights_only); a missing, foreign or corrupt file is a ModelError."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such checkpoint file")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: not a readable torch checkpoint ({reason[:200]})") from None
    if not isinstance(data, dict) or "format_version" not in data:
        raise ModelError(f"{path}: not a marsedge checkpoint (no 'format_version'; import foreign weights "
                         "with marsedge.models.importers)")
    if data["format_version"] > FORMAT_VERSION:
        raise ModelError(f"{path}: checkpoint format {data['format_version']} is newer than this marsedge "
                         f"({FORMAT_VERSION})")
    missing = [k for k in ("state_dict", "model_config", "class_table", "preprocess") if k not in data]
    if missing:
        raise ModelError(f"{path}: checkpoint lacks {missing}")
    return Checkpoint(path, data["state_dict"], data["model_config"], data["class_table"], data["preprocess"],
                      data.get("extra", {}), data["format_version"])


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], part: str = "all",
                 strict: bool = False, source: str = "state dict") -> LoadReport:
    """Copy `state_dict` into `model`, restricted to `part` ("all", "backbone" or "head").

    Keys outside the part are ignored. A shape mismatch raises ModelError naming the key; with
    `strict`, so does any missing or unexpected key. Returns what was loaded, missing, unexpected.
    """
    if part not in PARTS:
        raise ModelError(f"unknown part {part!r}; valid: {', '.join(PARTS)}")
    model = unwrap(model)
    prefix = "" if part == "all" else f"{part}."
    expected = {k: v for k, v in model.state_dict().items() if k.startswith(prefix)}
    given = {k: v for k, v in state_dict.items() if k.startswith(prefix)}
    adapted = _adapt_first_conv(model, given, expected)
    for key, tensor in given.items():
        if key in expected and tuple(tensor.shape) != tuple(expected[key].shape):
            raise ModelError(f"{source}: {key} has shape {tuple(tensor.shape)}, the model expects "
                             f"{tuple(expected[key].shape)}")
    report = LoadReport(loaded=sorted(set(given) & set(expected)), missing=sorted(set(expected) - set(given)),
                        unexpected=sorted(set(given) - set(expected)), adapted=adapted)
    if strict and (report.missing or report.unexpected):
        raise ModelError(f"{source}: keys do not match the model: {report}")
    model.load_state_dict({k: given[k] for k in report.loaded}, strict=False)
    return report


def _adapt_first_conv(model: nn.Module, given: dict[str, torch.Tensor],
                      expected: dict[str, torch.Tensor]) -> list[str]:
    """Fit a colour checkpoint's first conv to a greyscale model (or back), in place in `given`."""
    key = first_conv_key(model)
    if key is None or key not in given or key not in expected:
        return []
    want, have = expected[key].shape, given[key].shape
    if have == want or (have[0], *have[2:]) != (want[0], *want[2:]):
        return []
    given[key] = adapt_first_conv(given[key], want[1])
    return [key]


def _build_classifier(config: ModelConfig, state_dict: dict) -> nn.Module:
    from marsedge.models.classifier import build_classifier

    heads = tuple(h for h in ("s", "u") if f"head_{h}.layers.2.weight" in state_dict)
    dim = next((int(state_dict[f"head_{h}.layers.2.weight"].shape[0]) for h in heads), 128)
    return build_classifier(config, heads, dim)


def load_model(path: str | Path,
               map_location: str | torch.device = "cpu") -> tuple[SegmentationModel, Checkpoint]:
    """Rebuild the model a checkpoint describes, load its weights (strictly) and put it in eval mode.
    An image classifier (`head: classifier`) is rebuilt with the contrastive heads it was trained
    with, so the strict load holds; its forward gives the class logits alone (what export runs)."""
    ckpt = load_checkpoint(path, map_location)
    config = ModelConfig.from_dict(ckpt.model_config)
    model = _build_classifier(config, ckpt.state_dict) if config.head == "classifier" else build_model(config)
    load_weights(model, ckpt.state_dict, strict=True, source=str(ckpt.path))
    return model.to(map_location).eval(), ckpt
