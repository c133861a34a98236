"""Wang et al.'s segmentation stream as written: per-image class means in the memory bank, the batch
scored against the bank before it is enqueued, and a contrastive head of its own at stride 4."""

import math

import pytest
import torch

from marsedge.models.build import ModelConfig, build_model
from marsedge.ssl.elementwise import ClassMemoryBank, ElementwiseContrastiveLoss
from marsedge.ssl.embedding_heads import IndependentV3PlusHead, Projection1x1Head
from marsedge.train.modes.semisup import SemisupConfig, SemisupModel


def unit(*v):
    t = torch.tensor(v, dtype=torch.float32)
    return t / t.norm()


def maps(*images):
    """N x 2 x 1 x w feature maps from per-image lists of 2-d vectors."""
    return torch.stack([torch.tensor(v, dtype=torch.float32).T[:, None, :] for v in images])


def test_bank_holds_one_mean_per_image_and_class():
    # image 0: class 0 at (1,0) and (0,3) -> mean of the unit vectors (0.5, 0.5); class 1 at (0,2)
    # image 1: class 0 at (2,2) -> unit(1,1); one ignored element
    features = maps([[1, 0], [0, 3], [0, 2]], [[2, 2], [5, 5], [9, -9]])
    labels = torch.tensor([[[0, 0, 1]], [[0, 255, 255]]])
    bank = ClassMemoryBank(num_classes=3, dim=2, length=4)
    bank.push(features, labels)
    assert bank.filled.tolist() == [2, 1, 0]  # a batch-wide mean would give one class-0 entry
    torch.testing.assert_close(bank.queue[0, 0], torch.tensor([0.5, 0.5]))  # image 0 first
    torch.testing.assert_close(bank.queue[0, 1], unit(1, 1))
    torch.testing.assert_close(bank.queue[1, 0], unit(0, 1))
    means, seen = bank.prototypes()
    torch.testing.assert_close(means[0], (torch.tensor([0.5, 0.5]) + unit(1, 1)) / 2)
    assert seen.tolist() == [True, True, False]


def test_batch_is_scored_against_the_bank_before_it_is_enqueued():
    bank = ClassMemoryBank(num_classes=2, dim=2, length=8)
    bank.enqueue(0, unit(1, 0))
    bank.enqueue(1, unit(0, 1))
    # one element of class 0 at (0, 1): cos to prototype 0 is 0, to prototype 1 is 1 (t = 1)
    loss = ElementwiseContrastiveLoss(bank, temperature=1.0)(maps([[0, 1]]), torch.tensor([[[0]]]))
    # scoring after enqueueing would see prototype 0 = (0.5, 0.5) and give -log(e^0.707 / (e^0.707 + e))
    assert loss.item() == pytest.approx(math.log(1 + math.e), rel=1e-6)
    assert bank.filled.tolist() == [2, 1]  # ... and the batch is in the bank afterwards
    torch.testing.assert_close(bank.queue[0, 1], unit(0, 1))


def test_first_batch_meets_an_empty_bank():
    bank = ClassMemoryBank(num_classes=2, dim=2)
    loss_fn = ElementwiseContrastiveLoss(bank, temperature=1.0)
    features = maps([[1, 0], [0, 1]]).requires_grad_()
    labels = torch.tensor([[[0, 1]]])
    first = loss_fn(features, labels)
    assert first.item() == 0.0  # nothing to score against yet
    first.backward()
    assert features.grad is not None
    # the second step sees the first one's means: each element is its own class's prototype
    second = loss_fn(maps([[1, 0], [0, 1]]), labels)
    assert second.item() == pytest.approx(-math.log(math.e / (math.e + 1)), rel=1e-6)


def test_a_class_new_to_the_bank_waits_for_the_next_step():
    bank = ClassMemoryBank(num_classes=2, dim=2)
    bank.enqueue(0, unit(1, 0))
    loss = ElementwiseContrastiveLoss(bank, temperature=1.0)(maps([[1, 0], [0, 1]]), torch.tensor([[[0, 1]]]))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)  # only class 0 scored, one prototype: log 1
    assert bank.filled.tolist() == [2, 1]


TINY = ModelConfig("r18_0.25x_sk0", "deeplabv3plus", head_channels=16, output_stride=16)


@pytest.mark.parametrize(("head", "stride", "kind"), [("independent_v3plus", 4, IndependentV3PlusHead),
                                                      ("projection_1x1", 16, Projection1x1Head)])
def test_contrastive_head_resolution_and_independence(head, stride, kind):
    torch.manual_seed(0)
    model = SemisupModel(build_model(TINY), embed_dim=128, head=head)
    assert isinstance(model.contrastive_head, kind)
    logits, embed = model.forward_train(torch.randn(2, 1, 64, 64))
    assert logits.shape == (2, 6, 64, 64) and embed.shape == (2, 128, 64 // stride, 64 // stride)
    # the two streams share the backbone only: the contrastive term reaches the backbone and its own
    # head, never the segmentation head
    embed.square().mean().backward()
    assert all(p.grad is None for p in model.segmentation.head.parameters())
    backbone = model.segmentation.backbone.parameters()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone)
    assert all(p.grad is not None for p in model.contrastive_head.parameters() if p.requires_grad)


def test_independent_head_is_a_deeplabv3plus_head_reading_low_and_out():
    model = SemisupModel(build_model(TINY), embed_dim=128)
    head = model.contrastive_head
    assert head.reduce_low[0].in_channels == model.segmentation.backbone.out_channels["low"]
    assert head.classifier.out_channels == 128
    keys = SemisupModel(build_model(TINY), head="projection_1x1").state_dict()
    assert "contrastive_head.0.weight" in keys and "contrastive_head.3.bias" in keys  # first variant's names


def test_config_default_and_the_paper_config(tmp_path):
    from marsedge import config
    from marsedge.errors import ConfigError
    from marsedge.train.config import load_train_config

    assert SemisupConfig().semisup.contrastive_head == "independent_v3plus"
    paper = load_train_config(SemisupConfig, "configs/semisup/three_stage_r101_deeplabv3plus.yaml", [])
    assert paper.semisup.contrastive_head == "independent_v3plus"
    with pytest.raises(ConfigError, match="semisup.contrastive_head"):
        config.from_dict(SemisupConfig, {"semisup": {"contrastive_head": "mlp"}})


def _push_on_rank(ctx, out):
    """Rank 0 holds images 0 and 1, rank 1 image 2 (a short last batch); each saves its bank."""
    features, labels = _three_images()
    mine = slice(0, 2) if ctx.rank == 0 else slice(2, 3)
    bank = ClassMemoryBank(num_classes=2, dim=2, length=4)
    bank.push(features[mine], labels[mine])
    torch.save(bank.state_dict(), f"{out}/bank{ctx.rank}.pt")


def _three_images():
    features = maps([[1, 0], [0, 1]], [[1, 1], [1, 1]], [[0, 1], [-1, 0]])
    return features, torch.tensor([[[0, 1]], [[1, 1]], [[0, 255]]])


def test_two_ranks_hold_the_bank_one_process_would(tmp_path):
    import torch.multiprocessing as mp
    from ddp_support import ddp_worker, free_port

    mp.spawn(ddp_worker, args=(2, free_port(), _push_on_rank, str(tmp_path)), nprocs=2, join=True)
    single = ClassMemoryBank(num_classes=2, dim=2, length=4)
    single.push(*_three_images())
    for rank in (0, 1):
        state = torch.load(tmp_path / f"bank{rank}.pt", weights_only=True)
        for key, value in single.state_dict().items():
            torch.testing.assert_close(state[key], value)
    assert single.filled.tolist() == [2, 2]  # class 0 from images 0 and 2, class 1 from images 0 and 1
