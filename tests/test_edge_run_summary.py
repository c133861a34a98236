"""edge-run's closing lines: a run below the backend alone says where the rest of each frame went."""

from marsedge.edge.run_summary import print_summary, why_below_backend

STAGES = {"decode": {"mean": 0.9}, "preprocess": {"mean": 0.1}, "infer": {"mean": 2.5},
          "postprocess": {"mean": 0.6}, "encode": {"mean": 1.2}, "write": {"mean": 0.3}}


def test_the_other_stages_named_largest_first_and_inference_apart():
    line = why_below_backend(STAGES)
    assert "(encode 1.20, decode 0.90, postprocess 0.60, write 0.30, preprocess 0.10 ms)" in line
    assert "inference (2.50 ms a frame)" in line


def summary(ratio):
    return {"skipped_inputs": [], "backend_fps": 400.0, "fps_vs_backend": ratio, "fps": 400.0 * ratio,
            "frames_ok": 10, "frames_failed": 0, "backend": {"name": "onnxruntime", "precision": "int8"},
            "backend_fps_in_pipeline": 350.0, "stages_ms": {k: {**v, "p50": 0, "p90": 0, "p99": 0}
                                                             for k, v in STAGES.items()}}


def test_explained_only_below_nine_tenths(capsys):
    print_summary(summary(0.38), stats=False)
    assert "below the backend alone: each frame's other work" in capsys.readouterr().out
    print_summary(summary(0.95), stats=False)
    assert "below the backend alone" not in capsys.readouterr().out
