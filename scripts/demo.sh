#!/usr/bin/env bash
# `make demo`: the whole pipeline on the embedded default (synthetic NAVCAM data), on CPU.
#   generate -> merge crowd labels -> stats -> train a small teacher -> distill a MobileNetV2 student
#   -> export -> quantize INT8 -> edge-run over frames (with broken files) -> benchmark -> report
# Everything lands in runs/demo/ (DEMO=... to change). Steps whose output exists are skipped, so
# a crashed demo resumes where it stopped; `make clean-demo` starts over.
set -euo pipefail
DEMO=${DEMO:-runs/demo}
PY=${PY:-.venv/bin/python}
ME="$PY -m marsedge"
DATA=$DEMO/data
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
SECONDS=0
resume_if_started() { [ -f "$1/last.pt" ] && echo --resume || true; }  # a finished run resumes to a no-op
step() { printf '\n=== [%3ds] %s\n' "$SECONDS" "$*"; }

step "1/7 synthetic NAVCAM data (AI4Mars layout) -> $DATA"
if [ ! -f "$DATA/stats.json" ]; then
  $ME data synth --out "$DATA" --mission msl --n 360 --size 192 --seed 0 --test-fraction 0.1 --unlabelled 60 --quiet
  $ME data synth --out "$DATA" --mission m2020 --n 60 --size 256 --seed 0 --quiet
  # the generator wrote merged train labels already; merging its crowd labels again replaces them
  # with the same result (--overwrite: merge-labels never replaces merged labels unasked)
  $ME data merge-labels "$DATA/msl/labels/crowd" --out "$DATA/msl/labels/train" --overwrite --quiet
  $ME data stats "$DATA"
fi

step "2/7 train the demo teacher (configs/demo/teacher.yaml)"
$PY train.py --config configs/demo/teacher.yaml data.root="$DATA" run.out_dir="$DEMO" \
  $(resume_if_started "$DEMO/demo_teacher")

step "3/7 distill the demo student (configs/demo/student.yaml)"
$PY distill.py --config configs/demo/student.yaml data.root="$DATA" run.out_dir="$DEMO" \
    distill.teacher="$DEMO/demo_teacher/best.pt" \
    "distill.unlabelled=[{root: $DATA, split: unlabelled}]" $(resume_if_started "$DEMO/demo_student")

step "4-5/7 export, quantize (INT8, CPU), edge-run over frames with broken files mixed in"
PY=$PY bash scripts/edge_demo.sh "$DEMO/demo_student/student.pt" "$DATA" "$DEMO/edge"

step "6-7/7 benchmark teacher (.pt/.onnx) and student (.pt/.onnx/INT8) on gold-min3, write the report"
cp "$DEMO/demo_teacher/best.pt" "$DEMO/edge/teacher.pt"  # a name that says what it is, in the report
PY=$PY bash scripts/bench_demo.sh "$DEMO/edge/teacher.pt" "$DEMO/demo_student/student.pt" \
  "$DEMO/edge" "$DATA" "$DEMO/bench"

step "done: report at $DEMO/bench/report.html (table in $DEMO/bench/report.md)"
