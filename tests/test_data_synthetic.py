"""The synthetic NAVCAM generator: layout, determinism, labels that need merging, fairness."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
import pytest

from marsedge.cli import main
from marsedge.data.ai4mars import AI4MarsDataset, list_items
from marsedge.data.labels import merge_labels
from marsedge.errors import ConfigError
from marsedge.synthetic.navcam import SynthOptions, generate, plan_frames
from marsedge.terrain import BEDROCK, BIG_ROCK, IGNORE_INDEX, SAND, SOIL


def tree_digest(root) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith("synth-")
    }


def small(out, **kw) -> SynthOptions:
    args = {"mission": "msl", "n": 6, "size": 64, "seed": 5, "test_fraction": 0.34, "unlabelled": 1}
    args.update(kw)
    return SynthOptions(str(out), **args)


def test_same_seed_identical_files_for_any_worker_count(tmp_path):
    generate(small(tmp_path / "a", workers=1), progress=False)
    generate(small(tmp_path / "b", workers=2), progress=False)
    a, b = tree_digest(tmp_path / "a"), tree_digest(tmp_path / "b")
    assert len(a) > 20 and a == b
    generate(small(tmp_path / "c", seed=6, workers=1), progress=False)
    assert tree_digest(tmp_path / "c") != a


def test_interrupted_run_resumes_the_missing_frames(tmp_path):
    generate(small(tmp_path, workers=1), progress=False)
    before = tree_digest(tmp_path)
    victim = sorted((tmp_path / "msl/images/edr").iterdir())[2]
    victim.unlink()
    summary = generate(small(tmp_path, workers=1), progress=False)
    assert summary["resumed"] == 6 and tree_digest(tmp_path) == before


def test_layout_names_and_roles(tiny_ai4mars):
    edr = sorted(p.name for p in (tiny_ai4mars / "msl/images/edr").iterdir())
    assert len(edr) == 25 and all("EDR" in n and n.endswith(".JPG") for n in edr)
    rng_masks = list((tiny_ai4mars / "msl/images/rng-30m").iterdir())
    assert len(rng_masks) == 25 and all("RNG" in p.name for p in rng_masks)
    assert all("MXY" in p.name for p in (tiny_ai4mars / "msl/images/mxy").iterdir())
    gold = list((tiny_ai4mars / "msl/labels/test/masked-gold-min3-100agree").iterdir())
    assert len(gold) == 6 and all(p.name.endswith("_merged.png") for p in gold)
    m2020 = list((tiny_ai4mars / "m2020/labels/NAV").iterdir())
    assert len(m2020) == 6 and all(p.name.endswith("_merged.png") for p in m2020)
    assert not (tiny_ai4mars / "m2020/images/mxy").exists()


def test_train_label_is_the_merge_of_noisy_crowd_labels(tiny_ai4mars):
    disagreeing = 0
    for item in list_items(tiny_ai4mars, "train")[:6]:
        crowd_dir = tiny_ai4mars / "msl/labels/crowd" / item.name
        crowd = [cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(crowd_dir.glob("*.png"))]
        assert 5 <= len(crowd) <= 9
        train = cv2.imread(str(item.label), cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(train, merge_labels(crowd))
        labelled = np.stack(crowd) != IGNORE_INDEX
        assert 0.05 < labelled.mean() < 0.95  # crowd labels are sparse
        disagreeing += int((np.stack(crowd)[0] != np.stack(crowd)[1])[labelled[0] & labelled[1]].sum())
    assert disagreeing > 0  # ... and partly wrong, so merging has work to do


def test_gold_sets_grow_sparser_from_min1_to_min3(tiny_ai4mars):
    coverage = {}
    for split in ("gold-min1", "gold-min2", "gold-min3"):
        labels = [s.label for s in AI4MarsDataset(tiny_ai4mars, split, four_class=True)]
        coverage[split] = np.mean([(lab != IGNORE_INDEX).mean() for lab in labels])
    assert coverage["gold-min1"] > coverage["gold-min2"] > coverage["gold-min3"] > 0.05
    one = AI4MarsDataset(tiny_ai4mars, "gold-min1")[0].label
    three = AI4MarsDataset(tiny_ai4mars, "gold-min3")[0].label
    kept = three != IGNORE_INDEX
    np.testing.assert_array_equal(three[kept], one[kept])  # min3 pixels agree with min1


def test_missions_differ_in_size_colour_and_mix(tiny_ai4mars):
    msl = AI4MarsDataset(tiny_ai4mars, "train")
    m2020 = AI4MarsDataset(tiny_ai4mars, "m2020-train")
    assert msl[0].image.shape == (96, 96)
    colour = m2020[0].image
    assert colour.shape == (96, 128, 3) and np.abs(colour[..., 0].astype(int) - colour[..., 2]).mean() > 5

    def share(ds):
        h = np.bincount(np.concatenate([s.label.ravel() for s in ds]), minlength=256)[:4]
        return h / h.sum()

    msl_share, m2020_share = share(msl), share(m2020)
    assert m2020_share[SOIL] > 0.5 > msl_share[SOIL]  # M2020 soil dominant
    assert msl_share[BEDROCK] > m2020_share[BEDROCK]
    assert msl_share[BIG_ROCK] == min(msl_share) and msl_share[BIG_ROCK] < 0.05  # big rock rarest


def test_brightness_alone_does_not_separate_the_classes(tiny_ai4mars):
    """Fit the best class per grey level on train; on the gold test it stays near the majority rate."""
    votes = np.zeros((256, 4))
    for s in AI4MarsDataset(tiny_ai4mars, "train", four_class=True):
        keep = s.label != IGNORE_INDEX
        np.add.at(votes, (s.image[keep], s.label[keep]), 1)
    best = votes.argmax(axis=1)
    correct = total = 0
    for s in AI4MarsDataset(tiny_ai4mars, "gold-min1", four_class=True):
        keep = s.label != IGNORE_INDEX
        correct += int((best[s.image[keep]] == s.label[keep]).sum())
        total += int(keep.sum())
    assert correct / total < 0.6
    # the per-class brightness ranges overlap heavily
    means = {c: [] for c in (SOIL, BEDROCK, SAND)}
    for s in AI4MarsDataset(tiny_ai4mars, "train", four_class=True):
        for c in means:
            if (s.label == c).sum() > 50:
                means[c].append(s.image[s.label == c].mean())
    lo, hi = max(min(v) for v in means.values()), min(max(v) for v in means.values())
    assert lo < hi


def test_plan_roles_and_option_errors(tmp_path):
    plans = plan_frames(SynthOptions(str(tmp_path), n=20, test_fraction=0.25, unlabelled=3))
    roles = [p.role for p in plans]
    assert roles.count("test") == 5 and roles.count("train") == 15 and roles[-3:] == ["unlabelled"] * 3
    assert len({p.stem for p in plans}) == 23
    assert SynthOptions(str(tmp_path), mission="m2020", size=256).frame_size == (192, 256)
    assert SynthOptions(str(tmp_path), mission="m2020").frame_size == (960, 1280)
    assert SynthOptions(str(tmp_path)).frame_size == (1024, 1024)
    with pytest.raises(ConfigError, match="--mission"):
        SynthOptions(str(tmp_path), mission="mer")
    with pytest.raises(ConfigError, match="--labelers"):
        SynthOptions(str(tmp_path), labelers=(2, 4))


def test_synth_cli(tmp_path, capsys):
    rc = main(
        [
            "data",
            "synth",
            "--out",
            str(tmp_path),
            "--mission",
            "m2020",
            "--n",
            "2",
            "--size",
            "64",
            "--unlabelled",
            "1",
            "--workers",
            "1",
            "--quiet",
        ]
    )
    assert rc == 0 and "wrote 2 train, 0 test, 1 unlabelled m2020 frames" in capsys.readouterr().out
    assert len(list((tmp_path / "m2020/images/ncam").glob("*.png"))) == 3
    assert main(["data", "synth", "--out", str(tmp_path), "--test-fraction", "2"]) == 2
    assert "--test-fraction" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["data", "synth", "--out", str(tmp_path), "--mission", "mars"])
    assert exit_.value.code == 2
