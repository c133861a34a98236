"""Crowd label merging (the paper's worked examples), gold rules, agreement scores, merge CLI."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from marsedge.cli import main
from marsedge.data.labels import (
    GOLD_RULES,
    agreement_scores,
    merge_crowd_folder,
    merge_labels,
    pairwise_jaccard,
    vote_counts,
)
from marsedge.errors import DataError
from marsedge.terrain import BEDROCK, IGNORE_INDEX, SAND, SOIL

U = IGNORE_INDEX


def stack_of_votes(votes: list[int]) -> np.ndarray:
    """One 1x1 label per labeler."""
    return np.array(votes, dtype=np.uint8).reshape(len(votes), 1, 1)


def test_pixel_x_of_the_paper_becomes_soil():
    # 10 labelers: 2 unlabelled, 6 soil, 1 sand, 1 bedrock -> soil (6 votes, 75% of the 8 given)
    votes = [U, U] + [SOIL] * 6 + [SAND, BEDROCK]
    assert merge_labels(stack_of_votes(votes))[0, 0] == SOIL


def test_pixel_y_of_the_paper_stays_unlabelled():
    # 9 labelers: 3 unlabelled, 3 soil, 2 sand, 1 bedrock -> 3 soil votes but only 50%
    votes = [U, U, U] + [SOIL] * 3 + [SAND, SAND, BEDROCK]
    assert merge_labels(stack_of_votes(votes))[0, 0] == U


@pytest.mark.parametrize(
    "votes, expected",
    [
        ([SOIL, SOIL, U, U], U),  # 100% but only 2 votes
        ([SOIL, SOIL, SOIL], SOIL),  # 3 votes, 100%
        ([SOIL, SOIL, SOIL, SAND, SAND], U),  # 60% is not over 65%
        ([SAND] * 7 + [SOIL] * 3, SAND),  # 70%
        ([U] * 5, U),  # nobody labelled it
    ],
)
def test_crowd_rule_edges(votes, expected):
    assert merge_labels(stack_of_votes(votes))[0, 0] == expected


def test_gold_rules_need_unanimity_and_k_votes():
    experts = np.array(
        [
            [[SOIL, SOIL, SOIL, SOIL]],
            [[U, SOIL, SOIL, SAND]],
            [[U, U, SOIL, U]],
        ],
        dtype=np.uint8,
    )
    gold = {name: merge_labels(experts, **rule)[0].tolist() for name, rule in GOLD_RULES.items()}
    assert gold["gold-min1"] == [SOIL, SOIL, SOIL, U]  # last pixel: experts disagree
    assert gold["gold-min2"] == [U, SOIL, SOIL, U]
    assert gold["gold-min3"] == [U, U, SOIL, U]


def test_merge_is_vectorised_over_an_image():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, (32, 48)).astype(np.uint8)
    labels = np.repeat(truth[None], 6, axis=0)
    labels[0] = U  # one labeler left everything blank
    labels[1, :, :10] = SAND  # one labeler wrong on a strip
    merged = merge_labels(labels)
    np.testing.assert_array_equal(merged, truth)  # 5 of 5 or 4 of 5 (80%) votes everywhere
    counts = vote_counts(labels)
    assert counts.shape == (4, 32, 48) and counts.sum(axis=0).max() == 5


def test_labels_outside_the_class_range_are_refused():
    with pytest.raises(ValueError, match="label value 7"):
        merge_labels(np.full((3, 2, 2), 7, np.uint8))


def test_agreement_scores_hand_computed():
    a = np.array([[SOIL, SOIL], [BEDROCK, U]], np.uint8)
    b = np.array([[SOIL, BEDROCK], [BEDROCK, U]], np.uint8)
    c = np.full((2, 2), U, np.uint8)
    jac = pairwise_jaccard([a, b, c])
    # soil: |{(0,0)}| / |{(0,0),(0,1)}| = 1/2; bedrock: 1/2 -> J(a, b) = 0.5; the empty label shares nothing
    assert jac[0, 1] == pytest.approx(0.5) and jac[1, 0] == pytest.approx(0.5)
    assert jac[0, 2] == 0.0 and np.isnan(jac[2, 2])
    np.testing.assert_allclose(agreement_scores([a, b, c]), [0.25, 0.25, 0.0])
    assert np.isnan(agreement_scores([a])[0])  # a lone label has no one to agree with


def write_crowd(root, stem, labels):
    folder = root / stem
    folder.mkdir(parents=True)
    for i, lab in enumerate(labels):
        cv2.imwrite(str(folder / f"u{i:04d}.png"), lab)


def test_merge_crowd_folder_writes_labels_and_scores(tmp_path):
    truth = np.array([[SOIL, SAND], [BEDROCK, BEDROCK]], np.uint8)
    write_crowd(tmp_path / "crowd", "imgA", [truth, truth, truth, np.full_like(truth, SAND)])
    summary = merge_crowd_folder(
        tmp_path / "crowd", tmp_path / "train", tmp_path / "scores.csv", suffix="_merged", progress=False
    )
    merged = cv2.imread(str(tmp_path / "train" / "imgA_merged.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(merged, [[SOIL, SAND], [BEDROCK, BEDROCK]])  # 3 of 4 = 75%
    rows = (tmp_path / "scores.csv").read_text().splitlines()
    assert rows[0] == "image,labeler,agreement" and len(rows) == 5
    # the odd labeler (all sand) scores lowest
    scores = {r.split(",")[1]: float(r.split(",")[2]) for r in rows[1:]}
    assert min(scores, key=scores.get) == "u0003"
    assert summary["images"] == 1 and summary["labels"] == 4


def test_merge_crowd_folder_names_a_bad_label(tmp_path):
    good = np.zeros((4, 4), np.uint8)
    write_crowd(tmp_path / "crowd", "imgA", [good, good, np.full((4, 4), 9, np.uint8)])
    with pytest.raises(DataError, match="u0002.png.*value 9"):
        merge_crowd_folder(tmp_path / "crowd", tmp_path / "out", tmp_path / "s.csv", progress=False)
    write_crowd(tmp_path / "crowd2", "imgB", [good, np.zeros((5, 4), np.uint8)])
    with pytest.raises(DataError, match="u0001.png is 4x5"):
        merge_crowd_folder(tmp_path / "crowd2", tmp_path / "out", tmp_path / "s.csv", progress=False)


def test_merge_labels_cli(tmp_path, capsys):
    lab = np.array([[SOIL, SAND]], np.uint8)
    write_crowd(tmp_path / "crowd", "img", [lab] * 3)
    rc = main(["data", "merge-labels", str(tmp_path / "crowd"), "--out", str(tmp_path / "train"), "--quiet"])
    assert rc == 0
    assert "merged 1 images (3 labels)" in capsys.readouterr().out
    assert (tmp_path / "agreement-train.csv").is_file()
    assert main(["data", "merge-labels", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 1
    assert "crowd label folder not found" in capsys.readouterr().err
