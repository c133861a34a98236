"""The lines edge-run prints when a run ends: the counts, the speed against the backend alone, and
why end to end falls below the backend alone when it does."""

from __future__ import annotations


def why_below_backend(stages_ms: dict) -> str:
    """Why end to end is below the backend alone: a frame's other work shares the cores with
    inference (the reader decodes and preprocesses, the writer postprocesses, encodes and writes)."""
    mean = {stage: p["mean"] for stage, p in stages_ms.items()}
    other = {stage: ms for stage, ms in mean.items() if stage != "infer"}
    parts = ", ".join(f"{stage} {ms:.2f}" for stage, ms in sorted(other.items(), key=lambda kv: -kv[1]))
    return (f"  below the backend alone: each frame's other work ({parts} ms) runs on the same cores as "
            f"inference ({mean.get('infer', 0):.2f} ms a frame); small frames make it a larger share "
            "(--stats per stage; docs/edge-run.md)")


def print_summary(summary: dict, stats: bool) -> None:
    skipped = f", {len(summary['skipped_inputs'])} inputs skipped" if summary["skipped_inputs"] else ""
    if summary["backend_fps"]:
        alone = (f"{summary['fps_vs_backend']:.2f} of the backend alone, {summary['backend_fps']:.2f} FPS "
                 "measured unloaded after the run")
    else:
        alone = "backend alone not measured"
    inside = summary["backend_fps_in_pipeline"]
    print(f"{summary['frames_ok']} frames ok, {summary['frames_failed']} failed{skipped}, "
          f"{summary['fps'] or 0:.2f} FPS end-to-end = {alone} ({summary['backend']['name']} "
          f"{summary['backend']['precision']}; inference inside the pipeline {inside or 0:.2f} FPS)")
    if summary["backend_fps"] and (summary["fps_vs_backend"] or 1) < 0.9:
        print(why_below_backend(summary["stages_ms"]))
    if stats:
        for stage, p in summary["stages_ms"].items():
            print(f"  {stage:<12} mean {p['mean']:8.2f} ms  p50 {p['p50']:8.2f}  p90 {p['p90']:8.2f}  "
                  f"p99 {p['p99']:8.2f}")
