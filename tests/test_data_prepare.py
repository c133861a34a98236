"""`marsedge data prepare` on release-0.6 and 0.1 trees written from the published layout, and
merge-labels never replacing merged labels unasked."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
from release_layout import write_release_06

from marsedge.cli import main


def crowd_labels(msl, stems: list[str]) -> None:
    """Three labelers per frame under msl/labels/crowd/<stem>/ (what a crowd-label tree holds)."""
    for stem in stems:
        label = cv2.imread(str(msl / "labels/train" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        for k in range(3):
            (msl / "labels/crowd" / stem).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(msl / "labels/crowd" / stem / f"u{k:04d}.png"), label)


def test_a_published_release_needs_no_merge(tmp_path, capsys):
    root = write_release_06(tmp_path / "ai4mars-dataset-merged-0.6", train=4, gold=1, unlabelled=1, m2020=1)
    assert main(["data", "prepare", str(tmp_path)]) == 0  # the folder it was unpacked into
    out = capsys.readouterr().out
    assert f"{root}: AI4Mars release 0.6 layout (msl/ncam/, m2020/, label_keys.json)" in out
    assert "train                 4 labelled frames" in out and "m2020-train           1" in out
    assert "unlabelled            1 frames without a label" in out
    assert "nothing to merge" in out and f"ready: train with data.root={root}" in out
    # the same frames in the 0.1 layout (msl/ without ncam/)
    old = tmp_path / "old"
    shutil.copytree(root / "msl/ncam", old / "msl")
    assert main(["data", "prepare", str(old)]) == 0
    assert "AI4Mars release 0.1 layout" in capsys.readouterr().out
    assert main(["data", "prepare", str(tmp_path / "old/msl")]) == 1
    assert "no AI4Mars release here" in capsys.readouterr().err


def test_crowd_labels_are_merged_only_where_no_merged_labels_exist(tmp_path, capsys):
    root = write_release_06(tmp_path / "rel", train=3, gold=1, unlabelled=0, m2020=0)
    msl = root / "msl/ncam"
    stems = sorted(p.stem for p in (msl / "labels/train").glob("*.png"))
    crowd_labels(msl, stems)
    merged = {p: p.read_bytes() for p in (msl / "labels/train").glob("*.png")}
    assert main(["data", "prepare", str(root), "--merge", "--quiet"]) == 0
    assert "crowd labels too" in capsys.readouterr().out
    assert {p: p.read_bytes() for p in merged} == merged  # the release's labels untouched
    shutil.rmtree(msl / "labels/train")
    assert main(["data", "prepare", str(root)]) == 0
    out = capsys.readouterr().out
    assert (f"needs merging: {msl / 'labels/crowd'} has crowd labels and {msl / 'labels/train'} none; run "
            f"`marsedge data merge-labels {msl / 'labels/crowd'} --out {msl / 'labels/train'}`") in out
    assert "ready:" not in out
    assert main(["data", "prepare", str(root), "--merge", "--quiet"]) == 0
    assert f"merged 3 images of {msl / 'labels/crowd'}" in capsys.readouterr().out
    assert sorted(p.stem for p in (msl / "labels/train").glob("*.png")) == stems


def test_merge_labels_refuses_merged_labels_without_overwrite(tmp_path, capsys):
    root = write_release_06(tmp_path / "rel", train=2, gold=1, unlabelled=0, m2020=0)
    msl = root / "msl/ncam"
    crowd_labels(msl, sorted(p.stem for p in (msl / "labels/train").glob("*.png")))
    first = next((msl / "labels/train").glob("*.png"))
    first.write_bytes(cv2.imencode(".png", np.full((8, 8), 2, np.uint8))[1].tobytes())  # a label by hand
    before = first.read_bytes()
    args = ["data", "merge-labels", str(msl / "labels/crowd"), "--out", str(msl / "labels/train"), "--quiet"]
    assert main(args) == 2
    assert capsys.readouterr().err.strip() == (f"error: {msl / 'labels/train'}: merged label folder with "
                                               "labels exists; pass --overwrite to replace it")
    assert first.read_bytes() == before
    assert main([*args, "--overwrite"]) == 0 and first.read_bytes() != before
    assert main(["data", "merge-labels", str(msl / "labels/crowd"), "--out", str(msl / "labels/crowd")]) == 2
