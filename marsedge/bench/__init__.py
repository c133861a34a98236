"""Benchmarks a mission reviewer reads: latency, accuracy and pictures of models on every backend.

    runner       `marsedge bench`: each model in its own process -> OUT/results.json + report
    latency      warm-up, per-stage timing (preprocess / infer / postprocess), percentiles
    accuracy     marsedge.metrics on a labelled split, per-frame scores, agreement between models
    modelinfo    size on disk, parameters and MACs
    environment  CPU, GPU, clocks, library versions, Jetson power mode
    results      the versioned results.json schema
    report       `marsedge report`: report.md + self-contained report.html, run-vs-baseline comparison
    compare      deltas and regressions between two runs
    plots        the pictures;  browser: headless Chromium screenshot and page check

Torch-free at import (the .pt backend imports torch itself, inside the child that runs it).
"""
