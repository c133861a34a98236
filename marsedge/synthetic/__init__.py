"""The synthetic data generator: procedural NAVCAM scenes, simulated labelers and whole datasets in
the AI4Mars and MSL surface layouts (`marsedge data synth`, `marsedge data synth-classes`).

    navcam.py     a synthetic AI4Mars release (release 0.1 layout; 0.6 and PDS copies via release.py)
    scene.py      the procedural renderer: one frame and its pixel truth (geometry.py: camera, noise)
    labelers.py   simulated crowd and expert labelers
    classes.py    Curiosity image classes in the MSL surface layout

Used by tests, benchmarks and the export check on the workstation; the rover never imports it.
"""
