"""The MSL surface reader on trees built from the published description, and the synthetic classes.

Published v2.1 layout (Zenodo 4033453): msl-labeled-data-set-v2.1/{images/, class_map.csv with
`id,name` lines, train-set-v2.1.txt / val-set-v2.1.txt / test-set-v2.1.txt with `<file> <id>`
lines}. The earlier release: msl_synset_words-indexed.txt (`id name`), *-calibrated-shuffled.txt.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from marsedge.data.msl_surface import MSLSurfaceDataset, read_class_map, sol_of
from marsedge.errors import DataError
from marsedge.synthetic.classes import CLASS_PRIORS, ClassSynthOptions, _plan, generate_classes

V21_CLASSES = [
    "Arm cover",
    "Other rover part",
    "Artifact",
    "Nearby surface",
    "Close-up rock",
    "DRT",
    "DRT spot",
    "Distant landscape",
    "Drill hole",
    "Night sky",
    "Float",
    "Layers",
    "Light-toned veins",
    "Mastcam cal target",
    "Sand",
    "Sun",
    "Wheel",
    "Wheel joint",
    "Wheel tracks",
]


def _jpg(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((8, 8, 3), value, np.uint8))


def _v21_tree(root: Path) -> Path:
    folder = root / "msl-labeled-data-set-v2.1"
    (folder / "images").mkdir(parents=True)
    (folder / "class_map.csv").write_text("".join(f"{i},{n}\n" for i, n in enumerate(V21_CLASSES)))
    splits = {
        "train": [("0003ML0000000110100031E01_DRCL.JPG", 16), ("0010MR0000480000100309E01_DRCL.JPG", 3)],
        "val": [("0600MH0002640000203542C00_DRCL.JPG", 8)],
        "test": [("1001ML0044330400403834E01_DRCL.JPG", 18), ("1060MH0004780000304042R00_DRCL.JPG", 0)],
    }
    for split, lines in splits.items():
        for name, _ in lines:
            _jpg(folder / "images" / name, 100)
        (folder / f"{split}-set-v2.1.txt").write_text("".join(f"{n} {c}\n" for n, c in lines))
    return folder


def test_reads_the_published_v21_layout(tmp_path):
    folder = _v21_tree(tmp_path)
    train = MSLSurfaceDataset(tmp_path, "train")  # the parent of the release folder
    assert train.classes == V21_CLASSES and len(train.classes) == 19
    assert train.targets == [16, 3]
    image, target = train[0]
    assert image.shape == (8, 8, 3) and target == 16
    assert [it.sol for it in train.items] == [3, 10]
    test = MSLSurfaceDataset(folder, "test")  # or the release folder itself
    assert test.sol_range() == (1001, 1060)
    assert test.class_counts()[18] == 1 and test.class_counts()[0] == 1 and sum(test.class_counts()) == 2


def test_earlier_release_class_count_comes_from_its_class_map(tmp_path):
    folder = tmp_path / "msl-images"
    names = [f"class {i}" for i in range(24)]
    folder.mkdir()
    (folder / "msl_synset_words-indexed.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(names)))
    _jpg(folder / "calibrated" / "0077ML0005780000102730I01_DRCL.JPG", 50)
    for split in ("train", "val", "test"):
        (folder / f"{split}-calibrated-shuffled.txt").write_text(
            "calibrated/0077ML0005780000102730I01_DRCL.JPG 23\n"
        )
    ds = MSLSurfaceDataset(tmp_path, "train")
    assert len(ds.classes) == 24 and ds.classes[23] == "class 23" and ds.targets == [23]
    assert ds.items[0].sol == 77


@pytest.mark.parametrize(
    "line, message",
    [
        ("0003ML0000000110100031E01_DRCL.JPG", "train-set-v2.1.txt:2: expected '<file name> <class id>'"),
        ("0003ML0000000110100031E01_DRCL.JPG wheel", "train-set-v2.1.txt:2: expected"),
        ("0003ML0000000110100031E01_DRCL.JPG 19", "train-set-v2.1.txt:2: class id 19 outside"),
        ("0099ML_MISSING.JPG 4", "train-set-v2.1.txt:2: image"),
    ],
)
def test_bad_split_lines_name_file_and_line(tmp_path, line, message):
    folder = _v21_tree(tmp_path)
    split = folder / "train-set-v2.1.txt"
    split.write_text(split.read_text().splitlines()[0] + "\n" + line + "\n")
    with pytest.raises(DataError, match=re.escape(message)) as err:
        MSLSurfaceDataset(tmp_path, "train")
    if "MISSING" in line:
        assert "0099ML_MISSING.JPG" in str(err.value) and "not found" in str(err.value)


def test_bad_class_maps(tmp_path):
    bad = tmp_path / "class_map.csv"
    bad.write_text("0,Arm cover\n2,Wheel\n")
    with pytest.raises(DataError, match=r"class ids must be 0..1; missing \[1\]"):
        read_class_map(bad)
    bad.write_text("0,Arm cover\nwheel\n")
    with pytest.raises(DataError, match=r"class_map.csv:2: expected"):
        read_class_map(bad)
    with pytest.raises(DataError, match="not an MSL surface dataset"):
        MSLSurfaceDataset(tmp_path / "nothing", "train")
    assert sol_of("0421MR0017010000302186E01_DRCL.JPG") == 421 and sol_of("x.jpg") is None


def test_synthetic_plan_is_imbalanced_and_drifts_by_sol():
    plan = _plan(ClassSynthOptions(out="unused", n=4000, seed=0))
    names = list(CLASS_PRIORS)
    by_split = {
        s: np.bincount([t for sp, _, t in plan if sp == s], minlength=len(names)) for s in ("train", "test")
    }
    sols = {s: [sol for sp, sol, _ in plan if sp == s] for s in ("train", "val", "test")}
    assert max(sols["train"]) <= min(sols["val"]) and max(sols["val"]) <= min(sols["test"])  # chronological
    share = {s: c / c.sum() for s, c in by_split.items()}
    surface, arm, drill, tracks = (
        names.index(n) for n in ("nearby surface", "arm cover", "drill hole", "wheel tracks")
    )
    assert share["train"][surface] > 0.25 and share["train"][arm] < 0.015  # imbalanced
    assert share["train"][drill] > 2 * share["test"][drill]  # drill holes fade out of the test sols
    assert share["test"][tracks] > 1.5 * share["train"][tracks]


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.suffix != ".json":
            h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


def test_synthetic_classes_round_trip_through_the_reader(tmp_path):
    opts = ClassSynthOptions(out=str(tmp_path / "a"), n=40, size=24, seed=3, unlabelled=4)
    summary = generate_classes(opts, progress=False)
    train, val, test = (MSLSurfaceDataset(tmp_path / "a", s) for s in ("train", "val", "test"))
    assert train.classes == list(CLASS_PRIORS) == summary["classes"]
    assert (len(train), len(val), len(test)) == (28, 4, 8)
    assert train.sol_range()[1] <= val.sol_range()[0] and val.sol_range()[1] <= test.sol_range()[0]
    image, _ = test[0]
    assert image.shape == (24, 24, 3) and image.dtype == np.uint8 and image.std() > 0
    assert len(list((tmp_path / "a" / "unlabelled").glob("*.JPG"))) == 4
    # same seed, same bytes; an interrupted run (an image missing) resumes to the same files
    generate_classes(ClassSynthOptions(**{**opts.__dict__, "out": str(tmp_path / "b")}), progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    train.items[5].path.unlink()
    generate_classes(opts, progress=False)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")


def test_synth_classes_command(tmp_path, capsys):
    from marsedge.cli import main

    argv = ["data", "synth-classes", "--out", str(tmp_path), "--n", "30", "--size", "16", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "train: 21 images" in out and "12 classes" in out
    assert main(["data", "synth-classes", "--out", str(tmp_path), "--n", "2"]) == 2  # a usage error
