"""How distillation draws its batches: every step trains on `batch_size` labelled frames and their share
of unlabelled ones (never a batch of unlabelled frames alone, whatever the ratio of the two sets), an
epoch is one pass over the labels, and the unlabelled frames are all seen before any is seen twice."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import torch
from torch.utils.data import Dataset

from marsedge.distill.config import DistillConfig
from marsedge.distill.data import DistillFrames
from marsedge.distill.mode import Distill
from marsedge.distill.sampling import BalancedFrames, flatten_groups
from marsedge.models.build import ModelConfig, build_model
from marsedge.models.checkpoints import save_checkpoint
from marsedge.train.config import load_train_config
from marsedge.train.engine.distributed import DistContext
from marsedge.train.engine.loop import build_train_loader

REPO = Path(__file__).resolve().parents[1]


class Numbered(Dataset):
    """Frames whose pixels hold their own index (so a batch says which frames it holds)."""

    def __init__(self, n: int, labelled: bool) -> None:
        self.n, self.labelled, self.epoch = n, labelled, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        label = torch.full((4, 4), i % 6 if self.labelled else 255, dtype=torch.int64)
        return {"image": torch.full((1, 4, 4), float(i)), "label": label, "index": i}


def balanced(n_labelled: int, n_unlabelled: int, ratio: int, seed: int = 0) -> BalancedFrames:
    frames = DistillFrames(Numbered(n_labelled, True), Numbered(n_unlabelled, False))
    return BalancedFrames(frames, ratio, seed)


def test_every_step_holds_the_batch_size_of_labelled_frames_and_an_epoch_is_one_pass_over_them(tmp_path):
    frames = balanced(n_labelled=6, n_unlabelled=40, ratio=2)
    cfg = DistillConfig(name="s", batch_size=3, num_workers=0)
    loader = build_train_loader(frames, cfg, DistContext())
    seen_labelled: Counter = Counter()
    seen_unlabelled: Counter = Counter()
    for epoch in range(3):
        loader.sampler.set_epoch(epoch)
        frames.set_epoch(epoch)
        for batch in loader:
            batch = flatten_groups(batch)
            assert batch["image"].shape == (9, 1, 4, 4)
            labelled = batch["labelled"]
            assert int(labelled.sum()) == 3 and (batch["label"][~labelled] == 255).all()
            if epoch == 0:
                seen_labelled.update(batch["image"][labelled, 0, 0, 0].int().tolist())
            seen_unlabelled.update(batch["image"][~labelled, 0, 0, 0].int().tolist())
    assert seen_labelled == Counter(range(6))  # epoch 0: each labelled frame once
    # 3 epochs x 6 items x 2 = 36 draws from 40 frames: no frame twice before all were seen
    assert max(seen_unlabelled.values()) == 1 and sum(seen_unlabelled.values()) == 36


def test_an_item_is_the_same_whenever_and_wherever_it_is_read():
    a, b = balanced(5, 7, ratio=3, seed=1), balanced(5, 7, ratio=3, seed=1)
    a.set_epoch(3)
    first = a[1]
    a.set_epoch(0)
    _ = [a[i] for i in range(5)]
    a.set_epoch(3)
    b.set_epoch(3)
    assert torch.equal(a[1]["image"], first["image"]) and torch.equal(b[1]["image"], first["image"])
    # draws 48..50 of the unlabelled stream (7 frames): the end of pass 6 and the start of pass 7
    assert [cycle for cycle, _ in a.unlabelled_positions(1)] == [6, 7, 7]
    assert not torch.equal(balanced(5, 7, ratio=3, seed=2)[0]["image"], balanced(5, 7, 3, seed=1)[0]["image"])


def test_distillation_trains_on_balanced_batches_by_default(tiny_ai4mars, tmp_path):
    """The distill mode's training set: each step `batch_size` labelled frames with as many unlabelled
    ones. Pooled batches (labelled and unlabelled frames drawn together) leave steps with few or no
    labelled frames when unlabelled frames outnumber them, which starves the ground-truth term."""
    teacher_cfg = ModelConfig(backbone="r18_0.25x_sk0", head="deeplabv3", head_channels=16)
    teacher = tmp_path / "teacher.pt"
    cfg = load_train_config(DistillConfig, REPO / "configs/demo/student.yaml", [
        f"data.root={tiny_ai4mars}", "data.max_train=4", "data.test_splits=[gold-min1]",
        "data.preprocess={height: 64, width: 64, channels: 1, gain: 1.5}", "batch_size=2",
        "num_workers=0", f"distill.teacher={teacher}", "distill.cache_dir=null",
        f"distill.unlabelled=[{{root: {tiny_ai4mars}, split: unlabelled}}]", f"run.out_dir={tmp_path}"])
    save_checkpoint(teacher, build_model(teacher_cfg), teacher_cfg, cfg.data.preprocess)
    job = Distill(cfg, DistContext())
    job.prepare()
    plan = job.build()
    loader = build_train_loader(plan.train_set, cfg, DistContext())
    batches = [flatten_groups(batch) for batch in loader]
    assert len(batches) == 2  # 4 labelled frames, 2 a step: one pass over the labels
    assert all(int(batch["labelled"].sum()) == 2 and len(batch["labelled"]) == 4 for batch in batches)
