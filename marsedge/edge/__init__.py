"""The rover runtime: edge-run, its pipeline, frame sources and sinks, hazards, predict (one
resolution policy), the backends (ONNX Runtime, OpenVINO, TensorRT, and torch where installed), the
TensorRT engine builder and its sidecar (engines are built on the GPU that runs them).

Torch-free: the rover computer may have only numpy, OpenCV, ONNX Runtime and TensorRT. The public
entry point for other areas is `marsedge.edge.backends.open_backend(model_path, backend=None,
threads=None)`. The workstation's export and quantize live in marsedge.deploy.
"""
