"""The workstation's way from a checkpoint to the rover: export (torch, imported lazily), quantize
with its calibration and accuracy gate, and the `marsedge export | quantize | build | inspect`
commands.

Nothing here runs on the rover: marsedge.edge (the rover runtime) never imports this package, while
this package uses the runtime's backends, predict and metadata to measure what it makes.
"""
