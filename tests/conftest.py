"""Shared test fixtures.

`tiny_ai4mars`: a small synthetic AI4Mars tree generated once per test session (seed 0, 96 px):
MSL 16 train frames (with crowd labels) + 6 gold test frames (min1/min2/min3) + 3 unlabelled
frames, and 6 M2020 train frames (96x128 colour). Read it with
`marsedge.data.ai4mars.AI4MarsDataset(tiny_ai4mars, split)`. Treat it as read-only.
"""

from __future__ import annotations

from pathlib import Path

import pytest

TINY_SIZE = 96


@pytest.fixture(scope="session")
def tiny_ai4mars(tmp_path_factory) -> Path:
    from marsedge.synthetic.navcam import SynthOptions, generate

    root = tmp_path_factory.mktemp("ai4mars")
    generate(
        SynthOptions(
            str(root), "msl", n=22, size=TINY_SIZE, seed=0, test_fraction=6 / 22, unlabelled=3, workers=1
        ),
        progress=False,
    )
    generate(SynthOptions(str(root), "m2020", n=6, size=128, seed=0, workers=1), progress=False)
    return root


@pytest.fixture(scope="session")
def edge_student(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint, verified ONNX export) of a narrow 64-px MobileNetV2-DeepLabv3+ student
    (tests/edge_support.py). Treat as read-only."""
    from edge_support import make_student

    return make_student(tmp_path_factory.mktemp("edge_student"))
