"""What edge-run records about a run in OUTPUT, and how it writes text into JSON.

    OUTPUT/run.json    the work this run does: the model file's sha256 (and its path), INPUT, the
                       options that shape the outputs, and the backend that ran. `--resume`
                       continues only the same work: every key of MUST_MATCH must equal the
                       earlier run's, else one line names what differs (`check_resume`). The
                       model's path, the backend and the speed options (threads, streams,
                       encoders, queue) may change.

Names and messages: a Linux file name may hold bytes that are not UTF-8; Python carries them as
lone surrogates, which JSON then writes as `"\\udcff"`, text most readers refuse. Everything edge-run
writes as JSON goes through `json_safe` (each such byte as the four characters `\\xNN`), and a
frame's record carries the exact bytes of such a name in `name_hex` (`name_fields`), so that
`--resume` finds the frame again (`record_name`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from marsedge.config import to_dict
from marsedge.errors import ConfigError
from marsedge.io import sha256_file
from marsedge.ownership import LOCK_NAME

RUN_RECORD = "run.json"
# run.json keys --resume compares, in the words its refusal uses (all else may change on resume)
MUST_MATCH = {"model_sha256": "model", "input": "INPUT", "visualize": "--visualize", "alpha": "--alpha",
              "overlay_every": "--overlay-every", "hazards": "--hazards"}


def json_text(text: str) -> str:
    """Text as valid UTF-8 JSON takes it: the bytes of a path that are not UTF-8 (which Python
    holds as lone surrogates) as `\\xNN`."""
    if text.isascii():
        return text
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that no file name made
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def json_safe(value: object) -> object:
    """`json_text` applied to every string in JSON data (an error message may quote a path)."""
    if isinstance(value, str):
        return json_text(value)
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def name_fields(name: str) -> dict[str, str]:
    """A frame's name for JSON: itself when it is valid Unicode, else (bytes that are not UTF-8)
    `json_text`, with the exact bytes in `name_hex`."""
    text = json_text(name)
    if text == name:
        return {"name": name}
    return {"name": text, "name_hex": name.encode("utf-8", "surrogateescape").hex()}


def record_name(record: dict) -> str:
    """Inverse of `name_fields`: the frame's name as the source gives it."""
    if isinstance(record.get("name_hex"), str):
        try:
            return bytes.fromhex(record["name_hex"]).decode("utf-8", "surrogateescape")
        except ValueError:
            pass
    return record["name"]


def make_record(args, backend, visuals: set[str], hazard_config) -> dict:
    """run.json of an edge-run (its parsed arguments, backend, outputs and hazard config)."""
    text = str(args.input)
    return {"model": str(args.model), "model_sha256": sha256_file(args.model), "backend": backend.name,
            "input": text if "://" in text else os.path.abspath(text), "visualize": sorted(visuals),
            "alpha": args.alpha, "overlay_every": args.overlay_every, "hazards": to_dict(hazard_config)}


def holds_files(root: Path) -> bool:
    """OUTPUT has something in it besides the lock of a run."""
    return root.is_dir() and any(p.name != LOCK_NAME for p in root.iterdir())


def check_resume(root: Path, record: dict, records: list[dict]) -> None:
    """--resume continues only the same work: everything in MUST_MATCH as the earlier run recorded
    it in run.json, else one ConfigError naming what differs."""
    path = root / RUN_RECORD
    if not path.is_file():
        if records:
            raise ConfigError(f"--resume: {root} holds frames but no {RUN_RECORD}, so nothing tells which "
                              "model made them; pass --overwrite to start again")
        return
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(earlier, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--resume: cannot read {path} ({exc}); pass --overwrite to start again") from None
    for key, words in MUST_MATCH.items():
        then, now = earlier.get(key), record.get(key)
        if then != now:
            if key == "model_sha256":  # the file names, and the hashes that tell them apart
                then = f"{earlier.get('model')} sha256 {str(then)[:12]}"
                now = f"{record['model']} sha256 {str(now)[:12]}"
            raise ConfigError(f"--resume: the {words} differs from the earlier run in {root}: {now} now, "
                              f"{then} then (edge-run --help: what must match; --overwrite starts again)")
