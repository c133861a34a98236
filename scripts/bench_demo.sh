#!/usr/bin/env bash
# The bench step of `make demo` (and how benchmarks/results/bench is regenerated): the demo teacher
# (.pt, .onnx) and student (.pt, .onnx FP32, .onnx INT8) on the synthetic gold set -> results.json,
# report.md, report.html and a screenshot of the page.
#   bash scripts/bench_demo.sh TEACHER.pt STUDENT.pt EDGE_DIR DATA_ROOT OUT_DIR
# EDGE_DIR holds student.onnx and student.int8.onnx (scripts/edge_demo.sh); teacher.onnx is exported
# there when missing. DURATION (default 3) is the timed seconds per model; SPLIT defaults to gold-min3.
set -euo pipefail
TEACHER=$1; STUDENT=$2; EDGE=$3; DATA=$4; OUT=$5
PY=${PY:-.venv/bin/python}

if [ ! -f "$EDGE/teacher.onnx" ]; then
  "$PY" -m marsedge export "$TEACHER" -o "$EDGE/teacher.onnx" --frames "$DATA/msl/images/edr"
fi

# bench exits 1 when a model could not run; its report is written all the same, so make it first
status=0
"$PY" -m marsedge bench "$TEACHER" "$EDGE/teacher.onnx" "$STUDENT" "$EDGE/student.onnx" \
    "$EDGE/student.int8.onnx" --data "$DATA" --split "${SPLIT:-gold-min3}" \
    --duration "${DURATION:-3}" --warmup 10 -o "$OUT" || status=$?

if "$PY" -c 'import sys; from marsedge.bench.browser import find_chromium; sys.exit(find_chromium() is None)'; then
  "$PY" -m marsedge report "$OUT/results.json" -o "$OUT" --overwrite --screenshot "$OUT/screenshot.png"
else
  echo "no chromium: report written without a screenshot (scripts/install_chromium.sh)"
fi
echo "benchmark report: $OUT/report.html"
exit "$status"
