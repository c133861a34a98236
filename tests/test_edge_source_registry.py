"""A new input is one registration: a `fake://N` source defined here, in the test, is read by
edge-run (and by iter_frames) without touching any other module, and its `resumable` decides
whether --resume leaves out the frames OUTPUT already holds."""

from __future__ import annotations

import json
from urllib.parse import urlparse

import numpy as np
import pytest

from marsedge.data import inputs
from marsedge.data.inputs import Item, Request, Source, iter_frames, register_source
from marsedge.edge import sources
from marsedge.edge.run import main
from marsedge.errors import ConfigError


def _fake_frame(i: int) -> np.ndarray:
    image = np.full((64, 64), 30 * i % 256, np.uint8)
    image[: 4 * (i + 1)] = 255  # each frame different
    return image


@pytest.fixture
def fake_source():
    """fake://N yields N generated frames named fake_0000.png, ...; registered for one test only."""

    @register_source("fake", resumable=True, schemes=("fake",))
    def fake(request: Request) -> Source:
        count = int(urlparse(request.uri).netloc)

        def passes():
            for i in range(count):
                yield Item(f"fake_{i:04d}.png", image=_fake_frame(i))

        return Source(request.uri, passes)

    yield fake
    del inputs.SOURCES["fake"]


def _names(out):
    return [json.loads(line)["name"] for line in (out / "frames.jsonl").read_text().splitlines()]


@pytest.mark.timeout(120)
def test_edge_run_reads_a_source_registered_in_a_test(fake_source, edge_student, tmp_path):
    out = tmp_path / "out"
    model = str(edge_student[1])
    assert main(["fake://4", str(out), "--model", model, "--threads", "1", "--max-frames", "2"]) == 0
    assert _names(out) == ["fake_0000.png", "fake_0001.png"]
    # resumable: the second run leaves out the two frames OUTPUT holds and reads the other two
    assert main(["fake://4", str(out), "--model", model, "--threads", "1", "--resume"]) == 0
    assert _names(out) == [f"fake_{i:04d}.png" for i in range(4)]


def test_iter_frames_and_the_unknown_scheme_message_see_the_registration(fake_source):
    got = list(iter_frames("fake://3", max_frames=5, loop=True))
    assert [n for n, _ in got] == ["fake_0000.png", "fake_0001.png", "fake_0002.png", "fake_0000.png",
                                   "fake_0001.png"]
    assert np.array_equal(got[2][1], _fake_frame(2))
    with pytest.raises(ConfigError, match=r"known: .*fake"):
        sources.open_source("http://example.org/x.png")


def test_each_input_kind_is_registered_once_and_declares_resumable():
    kinds = {kind.name: kind.resumable for kind in inputs.SOURCES.values()}
    assert kinds == {"files": True, "video": False, "bag": True, "follow": True, "csi": False, "rtsp": False}
    assert inputs.find_source(Request("/dev/video3")).name == "video"
    assert inputs.find_source(Request("v4l2:///dev/video3")).name == "video"
    assert inputs.find_source(Request("run.mcap")).name == "bag"
    assert inputs.find_source(Request("frames/", follow=True)).name == "follow"
    assert inputs.find_source(Request("run.mp4", topic="/cam")).name == "bag"  # --topic: a bag or an error
    assert inputs.find_source(Request("file:///data/x.png")).name == "files"


def test_calibration_and_training_list_frame_files_through_the_registry(tmp_path):
    for i in range(2):
        (tmp_path / f"f{i}.png").write_bytes(b"")  # listed, not decoded
    assert [p.name for p in inputs.frame_files(tmp_path)] == ["f0.png", "f1.png"]
    with pytest.raises(ConfigError, match="not a file, folder or glob of frames"):
        inputs.frame_files("/dev/video0")  # never opens the camera to list it
