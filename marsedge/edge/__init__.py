"""The edge: export, quantize, build engines, and run on the rover (`edge-run`).

Torch-free except `export` (the workstation side): the rover computer may have only numpy, OpenCV,
ONNX Runtime and TensorRT. The public entry point for other areas is
`marsedge.edge.backends.open_backend(model_path, backend=None, threads=None)`.
"""
