"""What an ONNX model says about itself: the class table, THE preprocessing, the model config.

Every model marsedge writes carries these as ONNX `metadata_props` (string -> string, JSON values),
so the rover needs nothing but the model file to prepare frames and name classes:

    marsedge.class_table    [{"id": 0, "name": "soil", "colour": [r, g, b]}, ...]
    marsedge.preprocess     {"height": 512, "width": 512, "channels": 1, "gain": 1.5,
                             "bit_depth_mapping": "linear", "colour_to_grey": "bt601", ...}: every
                             PreprocessSpec field, so the edge converts colour (channels 1:
                             colour_to_grey luminance; 3: grey replicated) and maps bit depth
                             exactly as training did
    marsedge.model_config   the ModelConfig the network was built from
    marsedge.source_sha256  sha256 of the checkpoint (or FP32 ONNX) the file was made from
    marsedge.trained_size   [height, width] the checkpoint was trained at, only when the file was
                            exported at another size (`marsedge export --size`)
    marsedge.quantization   method, calibration set, accuracy-gate results (quantized models only)
    marsedge.runtime        the runtime `marsedge quantize --target cpu` gated and timed the file on
                            and chose (a name of `marsedge.runtimes`): `open_backend` runs it there unless
                            told otherwise (`recorded_runtime` reads it without onnx or a runtime)

Reading needs only ONNX Runtime (the rover); writing needs the `onnx` package (the workstation).
`ModelMetadata` is also THE parse of a checkpoint's fields (`ModelMetadata.from_checkpoint`), so a
checkpoint, an ONNX file and an engine sidecar describe a model the same way.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marsedge.data.preprocess import PreprocessSpec
from marsedge.errors import ConfigError, ModelError
from marsedge.io import non_finite
from marsedge.terrain import class_table as default_class_table

PREFIX = "marsedge."
CLASS_TABLE = PREFIX + "class_table"
PREPROCESS = PREFIX + "preprocess"
MODEL_CONFIG = PREFIX + "model_config"
SOURCE_SHA256 = PREFIX + "source_sha256"
QUANTIZATION = PREFIX + "quantization"
TRAINED_SIZE = PREFIX + "trained_size"
RUNTIME = PREFIX + "runtime"
REQUIRED = (CLASS_TABLE, PREPROCESS)


@dataclass
class ModelMetadata:
    """The parsed marsedge metadata of one model file."""

    class_table: list[dict]
    preprocess: PreprocessSpec
    model_config: dict = field(default_factory=dict)
    source_sha256: str | None = None
    quantization: dict | None = None
    trained_size: list[int] | None = None  # [h, w] when exported at another size than trained
    runtime: str | None = None  # the runtime quantize chose for the file (see the module doc)

    @classmethod
    def from_checkpoint(cls, checkpoint: Any, source: str | Path | None = None,
                        source_sha256: str | None = None) -> ModelMetadata:
        """From a `marsedge.models.checkpoints.Checkpoint` (or anything with its `class_table`,
        `preprocess` and `model_config` fields): the one parse of a checkpoint's description. A
        checkpoint without a class table gets the project's table for its `num_classes`; a malformed
        preprocessing spec, or one whose `channels` differ from the network's `in_channels` (the
        edge would feed it grey frames for a colour model or the reverse), is a ModelError naming
        `source`."""
        config = dict(checkpoint.model_config or {})
        table = checkpoint.class_table or default_class_table(int(config.get("num_classes", 6)))
        try:
            spec = PreprocessSpec.from_dict(dict(checkpoint.preprocess))
        except (TypeError, ValueError, KeyError, ConfigError) as exc:
            raise ModelError(f"{source or 'checkpoint'}: bad preprocessing spec {checkpoint.preprocess!r} "
                             f"({exc})") from None
        if int(config.get("in_channels", spec.channels)) != spec.channels:
            raise ModelError(f"{source or 'checkpoint'}: model_config.in_channels {config['in_channels']} "
                             f"but preprocess.channels {spec.channels}")
        return cls(class_table=list(table), preprocess=spec, model_config=config, source_sha256=source_sha256)

    @property
    def num_classes(self) -> int:
        """Classes the model predicts: the length of its class table (ids 0..num_classes-1)."""
        return len(self.class_table)

    @property
    def class_names(self) -> list[str]:
        return [str(c["name"]) for c in self.class_table]

    def to_dict(self) -> dict:
        """The `Backend.metadata` dict (plain JSON data)."""
        return {
            "class_table": self.class_table,
            "preprocess": self.preprocess.to_dict(),
            "model_config": self.model_config,
            "source_sha256": self.source_sha256,
            "quantization": self.quantization,
            "trained_size": self.trained_size,
            "runtime": self.runtime,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ModelMetadata:
        """Inverse of `to_dict` (an engine sidecar stores the metadata this way)."""
        return cls(class_table=list(data["class_table"]),
                   preprocess=PreprocessSpec.from_dict(dict(data["preprocess"])),
                   model_config=dict(data.get("model_config") or {}),
                   source_sha256=data.get("source_sha256"), quantization=data.get("quantization"),
                   trained_size=data.get("trained_size"), runtime=data.get("runtime"))

    def to_props(self) -> dict[str, str]:
        """As ONNX metadata_props (every value JSON text, absent values left out)."""
        props = {
            CLASS_TABLE: json.dumps(self.class_table),
            PREPROCESS: json.dumps(self.preprocess.to_dict()),
            MODEL_CONFIG: json.dumps(self.model_config),
        }
        if self.source_sha256:
            props[SOURCE_SHA256] = self.source_sha256
        if self.quantization is not None:
            props[QUANTIZATION] = json.dumps(self.quantization)
        if self.trained_size is not None:
            props[TRAINED_SIZE] = json.dumps(self.trained_size)
        if self.runtime is not None:
            props[RUNTIME] = self.runtime
        return props

    def class_id(self, name: str) -> int | None:
        """The id of the class called `name` in this model's table, or None if it has no such class."""
        return next((int(c["id"]) for c in self.class_table if c["name"] == name), None)


def parse_props(props: dict[str, str], source: str | Path) -> ModelMetadata:
    """ONNX metadata_props -> ModelMetadata; a missing or malformed key is an error naming the file."""
    missing = [k for k in REQUIRED if k not in props]
    if missing:
        raise ModelError(
            f"{source}: no marsedge metadata ({', '.join(missing)}); export it with `marsedge export`"
        )

    def load(key: str) -> Any:
        try:
            value = json.loads(props[key])
        except json.JSONDecodeError as exc:
            raise ModelError(f"{source}: metadata {key} is not valid JSON ({exc})") from None
        where = non_finite(value)  # Python's JSON reads NaN, Infinity and 1e999 as numbers
        if where is not None:
            raise ModelError(f"{source}: metadata {key}{where} is not a finite number")
        return value

    def spec() -> PreprocessSpec:  # a bad spec is the model file's fault: named, like a bad JSON
        data = load(PREPROCESS)
        try:
            return PreprocessSpec.from_dict(dict(data))
        except (TypeError, ValueError) as exc:  # ConfigError is a ValueError
            raise ModelError(f"{source}: metadata {PREPROCESS}: {exc}") from None

    return ModelMetadata(
        class_table=load(CLASS_TABLE),
        preprocess=spec(),
        model_config=load(MODEL_CONFIG) if MODEL_CONFIG in props else {},
        source_sha256=props.get(SOURCE_SHA256),
        quantization=load(QUANTIZATION) if QUANTIZATION in props else None,
        trained_size=load(TRAINED_SIZE) if TRAINED_SIZE in props else None,
        runtime=props.get(RUNTIME),
    )


def read_onnx_metadata(path: str | Path) -> ModelMetadata:
    """Read the metadata of an ONNX file with the `onnx` package (workstation side)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return parse_props({p.key: p.value for p in model.metadata_props}, path)


_MODEL_METADATA_PROPS = 14  # ModelProto.metadata_props (onnx.proto)
_LENGTH_DELIMITED = 2


def _varint(f) -> int:
    value = shift = 0
    while True:
        byte = f.read(1)
        if not byte or shift > 63:
            raise ValueError("truncated varint")
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
        shift += 7


def _entry(data: bytes) -> tuple[str, str]:
    """A StringStringEntryProto (key = 1, value = 2) -> (key, value)."""
    fields, f = {}, io.BytesIO(data)
    while f.tell() < len(data):
        tag = _varint(f)
        if tag & 7 != _LENGTH_DELIMITED:
            raise ValueError("unexpected field type in a metadata entry")
        fields[tag >> 3] = f.read(_varint(f)).decode()
    return fields.get(1, ""), fields.get(2, "")


def file_props(path: str | Path) -> dict[str, str]:
    """The metadata_props of an ONNX file, read straight from its protobuf encoding: the top-level
    fields are walked and every other one (the graph, its weights) is skipped by seeking, so no onnx
    package, no runtime and no model-sized read is needed (the backend choice reads it before a
    runtime is picked). Raises ValueError for bytes that are not a ModelProto."""
    props = {}
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(0)
        while f.tell() < size:
            tag = _varint(f)
            kind = tag & 7
            if kind == 0:
                _varint(f)
            elif kind in (1, 5):  # fixed 64 / 32 bits
                f.seek(8 if kind == 1 else 4, 1)
            elif kind == _LENGTH_DELIMITED:
                length = _varint(f)
                if f.tell() + length > size:
                    raise ValueError("a field runs past the end of the file")
                if tag >> 3 == _MODEL_METADATA_PROPS:
                    key, value = _entry(f.read(length))
                    props[key] = value
                else:
                    f.seek(length, 1)
            else:
                raise ValueError(f"wire type {kind} is not a ModelProto's")
    return props


def recorded_runtime(path: str | Path) -> str | None:
    """The runtime an ONNX file's metadata names (`marsedge.runtime`), or None: none recorded, or a
    file this cannot read (the runtime that opens it then says what is wrong with it)."""
    try:
        return file_props(path).get(RUNTIME)
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def set_props(model: Any, props: dict[str, str]) -> None:
    """Set (replace) metadata_props on an onnx.ModelProto in place."""
    keep = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    for p in keep:
        model.metadata_props.add(key=p.key, value=p.value)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)


