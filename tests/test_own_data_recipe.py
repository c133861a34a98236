"""The own-data recipe exactly as docs/own-data.md and the README print it (the fenced block whose
first line is `# own-data recipe`), on a tiny release-0.6 tree written from the published layout
(tests/release_layout.py), through train, distill, export, quantize, edge-run and bench; then the
report's verdict block, and the refusals a new user meets on the way. Changing a command on the page
changes what this test runs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from release_layout import write_release_06

REPO = Path(__file__).resolve().parents[1]
MARK = "# own-data recipe"
# the page's documented trial knobs, at test size: 64 px, one epoch, one thread, a lenient verdict
TRIAL = ("data.preprocess.height=64 data.preprocess.width=64 epochs=1 batch_size=8 num_workers=0 "
         "data.eval_batch_size=16 run.progress=false")
QUANTIZE_OPTS = "--recipe qop-u8s8 --min-speedup 0 --tolerance 1 --threads 1 --quiet"
BENCH_OPTS = "--iters 3 --warmup 1 --threads 1 --samples 2"


def recipe(page: str = "docs/own-data.md") -> str:
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / page).read_text(), re.S)
    marked = [b for b in blocks if b.startswith(MARK + "\n")]
    assert len(marked) == 1, f"{page} must hold one bash block starting with {MARK!r}"
    return marked[0]


def test_the_readme_prints_the_recipe_the_test_runs():
    assert recipe("README.md") == recipe()


@pytest.fixture(scope="module")
def ran(tmp_path_factory):
    base = tmp_path_factory.mktemp("own")
    root, out = write_release_06(base / "ai4mars-dataset-merged-0.6"), base / "runs"
    env = {**os.environ, "ROOT": str(root), "OUT": str(out), "TRIAL": TRIAL, "QUANTIZE_OPTS": QUANTIZE_OPTS,
           "BENCH_OPTS": BENCH_OPTS, "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", recipe()], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=900)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return root, out, done.stdout


@pytest.mark.slow
def test_the_recipe_ends_in_a_verdict_on_the_student(ran):
    root, out, printed = ran
    assert "AI4Mars release 0.6 layout" in printed and "nothing to merge" in printed  # data prepare
    # train and distill: the val size, and every scored split, in fractions
    assert re.search(r"\d+ val frames; test gold-min1 6, gold-min3 6 frames", printed)
    assert printed.count("final test (fractions, scored once with best.pt): gold-min1 ") == 2
    assert "; gold-min3 miou 0." in printed
    # bench exported the teacher's checkpoint itself, so both meet on ONNX Runtime
    assert (out / "bench" / "own_teacher.onnx").is_file()
    report = (out / "bench" / "report.md").read_text()
    verdict = report.split("## Verdict", 1)[1].split("\n## ", 1)[0]
    assert re.search(r"Student student\.onnx keeps \d\.\d\d of the teacher's mIoU: 0\.\d{4} against "
                     r"teacher own_teacher\.onnx 0\.\d{4}", verdict)
    assert re.search(r"like for like \(onnxruntime fp32, end-to-end p50\): \d+\.\d\dx", verdict)
    # INT8: quantize's verdict (on val) as recorded, and the same rule on the bench split
    assert re.search(r"student\.int8\.onnx: quantize: INT8 accepted on val: mIoU 0\.\d{4} -> 0\.\d{4} "
                     r"\(drop [+-]0\.\d{4} <= tolerance 1\.0000\); the same rule on this split against "
                     r"student\.onnx: INT8 accepted on gold-min3", verdict)
    assert "Intensity-only baseline of this split" in verdict
    # one epoch on 36 frames learns less than brightness alone tells: the page says so
    warning = next(line for line in verdict.splitlines() if "WARNING: below the intensity-only" in line)
    assert "student.int8.onnx (mIoU, pixel accuracy)" in warning


@pytest.mark.slow
def test_distill_refuses_a_missing_teacher_and_a_teacher_of_other_data(ran, tiny_ai4mars, tmp_path, capsys):
    from marsedge.distill.cli import main

    root, out, _ = ran
    own = ["--config", "configs/own/student_cpu_trial.yaml", f"data.root={root}", f"run.out_dir={tmp_path}",
           "distill.unlabelled=[]"]
    assert main(own) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: config key 'distill.teacher' is required: give distill.teacher=VALUE"
    assert main([*own, f"distill.teacher={tmp_path / 'none.pt'}"]) == 2
    assert "config key 'distill.teacher'" in capsys.readouterr().err
    # the demo's student config with a teacher trained on another tree: refused before any work
    demo = ["--config", "configs/demo/student.yaml", f"data.root={tiny_ai4mars}", f"run.out_dir={tmp_path}",
            f"distill.teacher={out / 'own_teacher/best.pt'}", "distill.unlabelled=[]"]
    assert main(demo) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a teacher of this data" in err[0]
    assert f"it was trained on {root}" in err[0] and "distill.allow_other_data=true" in err[0]
    assert not (tmp_path / "demo_student").exists()


def test_configs_outside_the_demo_name_no_demo_file():
    from marsedge.distill.config import DistillSection

    outside = [p for p in (REPO / "configs").rglob("*.yaml") if "demo" not in p.relative_to(REPO).parts]
    assert outside and not [p for p in outside if "runs/demo" in p.read_text() or "demo_" in p.read_text()]
    assert DistillSection().teacher == "???"  # no default teacher: it is named or refused
