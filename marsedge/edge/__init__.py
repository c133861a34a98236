"""The rover runtime: edge-run, its pipeline, frame sources and sinks, hazards, predict (one
resolution policy). The inference runtimes it opens models with (ONNX Runtime, and the others
installed) live in `marsedge.runtimes`, one package each.

Torch-free: the rover computer may have only numpy, OpenCV and its inference runtime. The public
entry point for other areas is `marsedge.runtimes.choice.open_backend(model_path, backend=None,
threads=None)`. The workstation's export and quantize live in marsedge.deploy.
"""
