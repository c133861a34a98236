"""marsedge: Mars rover terrain segmentation from the workstation to the rover.

Torch-free at import: `terrain`, `data`, `metrics`, `runtimes`, `edge` and `bench` run on a rover
computer that has only numpy, OpenCV and its inference runtimes (`marsedge.runtimes`). `models`,
`train` and `distill` need torch.
"""

__version__ = "0.1.0"
