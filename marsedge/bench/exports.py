"""ONNX files bench makes itself: a `.pt` model given without an ONNX export of it gets one.

The report's like-for-like speed-ups set two models against each other only on the same runtime
and precision (marsedge.bench.report.like_for_like). Given `teacher.pt` and the student's ONNX
files, there would be no teacher row on ONNX Runtime to compare the student with, so bench exports
the checkpoint to OUT/<name>.onnx (a run's best.pt: OUT/<run name>.onnx) with `marsedge export`
(procedural verification frames) and benches that file too. An ONNX file counts as the
checkpoint's export when its metadata names the checkpoint's sha256 as its source (exports and
their quantized files both do). torch is imported only here.
"""

from __future__ import annotations

from pathlib import Path

from marsedge.errors import ConfigError
from marsedge.io import sha256_file


def onnx_sources(models: list[str]) -> set[str]:
    """sha256 of the checkpoints the given ONNX files were made from."""
    from marsedge.edge.onnx_meta import read_onnx_metadata

    sources = set()
    for model in models:
        path = Path(model.rpartition("@")[0] or model)
        if path.suffix == ".onnx" and path.is_file():
            try:
                sha = read_onnx_metadata(path).source_sha256
            except Exception:  # an unreadable file is the bench row's failure to report, not this one's
                continue
            if sha:
                sources.add(sha)
    return sources


def export_missing_onnx(models: list[str], out: Path) -> list[str]:
    """The models to bench: those given plus OUT/<name>.onnx for each `.pt` with no export among
    them (reused when an earlier bench in OUT exported the same checkpoint)."""
    from marsedge.edge.onnx_meta import read_onnx_metadata

    exported = onnx_sources(models)
    added = []
    for model in models:
        path = Path(model)
        if path.suffix != ".pt" or not path.is_file():
            continue
        sha = sha256_file(path)
        if sha in exported:
            continue
        # a run's best.pt / last.pt is named by its run folder (runs/own_teacher/best.pt -> own_teacher.onnx)
        target = out / f"{path.parent.name if path.stem in ('best', 'last') else path.stem}.onnx"
        if target.exists():
            if read_onnx_metadata(target).source_sha256 != sha:
                raise ConfigError(f"{target}: exists and was not exported from {path}; remove it or "
                                  "give bench another -o")
            print(f"bench: reusing {target}, the ONNX export of {path}")
        else:
            from marsedge.edge.export import export

            out.mkdir(parents=True, exist_ok=True)
            print(f"bench: exporting {path} to {target} for a like-for-like ONNX Runtime row")
            export(path, target)
        exported.add(sha)
        added.append(str(target))
    return [*models, *added]
