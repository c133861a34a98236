"""What an ONNX model says about itself: the class table, THE preprocessing, the model config.

Every model marsedge writes carries these as ONNX `metadata_props` (string -> string, JSON values),
so the rover needs nothing but the model file to prepare frames and name classes:

    marsedge.class_table    [{"id": 0, "name": "soil", "colour": [r, g, b]}, ...]
    marsedge.preprocess     {"height": 512, "width": 512, "channels": 1, "gain": 1.5}
    marsedge.model_config   the ModelConfig the network was built from
    marsedge.source_sha256  sha256 of the checkpoint (or FP32 ONNX) the file was made from
    marsedge.quantization   method, calibration set, accuracy-gate results (quantized models only)

Reading needs only ONNX Runtime (the rover); writing needs the `onnx` package (the workstation).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from marsedge.data.preprocess import PreprocessSpec
from marsedge.errors import ModelError
from marsedge.terrain import class_table as default_class_table

PREFIX = "marsedge."
CLASS_TABLE = PREFIX + "class_table"
PREPROCESS = PREFIX + "preprocess"
MODEL_CONFIG = PREFIX + "model_config"
SOURCE_SHA256 = PREFIX + "source_sha256"
QUANTIZATION = PREFIX + "quantization"
REQUIRED = (CLASS_TABLE, PREPROCESS)


@dataclass
class ModelMetadata:
    """The parsed marsedge metadata of one model file."""

    class_table: list[dict]
    preprocess: PreprocessSpec
    model_config: dict = field(default_factory=dict)
    source_sha256: str | None = None
    quantization: dict | None = None

    def to_dict(self) -> dict:
        """The `Backend.metadata` dict (plain JSON data)."""
        return {
            "class_table": self.class_table,
            "preprocess": self.preprocess.to_dict(),
            "model_config": self.model_config,
            "source_sha256": self.source_sha256,
            "quantization": self.quantization,
        }

    @classmethod
    def from_dict(cls, data: dict) -> ModelMetadata:
        """Inverse of `to_dict` (an engine sidecar stores the metadata this way)."""
        return cls(class_table=list(data["class_table"]),
                   preprocess=PreprocessSpec.from_dict(dict(data["preprocess"])),
                   model_config=dict(data.get("model_config") or {}),
                   source_sha256=data.get("source_sha256"), quantization=data.get("quantization"))

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
            return json.loads(props[key])
        except json.JSONDecodeError as exc:
            raise ModelError(f"{source}: metadata {key} is not valid JSON ({exc})") from None

    return ModelMetadata(
        class_table=load(CLASS_TABLE),
        preprocess=PreprocessSpec.from_dict(load(PREPROCESS)),
        model_config=load(MODEL_CONFIG) if MODEL_CONFIG in props else {},
        source_sha256=props.get(SOURCE_SHA256),
        quantization=load(QUANTIZATION) if QUANTIZATION in props else None,
    )


def from_checkpoint_fields(class_table: list | None, preprocess: dict, model_config: dict,
                           source_sha256: str | None = None) -> ModelMetadata:
    """Metadata from the fields a marsedge checkpoint holds."""
    return ModelMetadata(
        class_table=list(class_table or default_class_table(int(model_config.get("num_classes", 6)))),
        preprocess=PreprocessSpec.from_dict(dict(preprocess)),
        model_config=dict(model_config),
        source_sha256=source_sha256,
    )


def read_onnx_metadata(path: str | Path) -> ModelMetadata:
    """Read the metadata of an ONNX file with the `onnx` package (workstation side)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return parse_props({p.key: p.value for p in model.metadata_props}, path)


def set_props(model: Any, props: dict[str, str]) -> None:
    """Set (replace) metadata_props on an onnx.ModelProto in place."""
    keep = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    for p in keep:
        model.metadata_props.add(key=p.key, value=p.value)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)


