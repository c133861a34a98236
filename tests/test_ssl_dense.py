"""The dense contrastive loss (marsedge.ssl.dense) against a loop over its formula, its use of the
feature correspondence, its gradients, and `pretrain.objective: densecl` end to end on the tiny
synthetic tree (r18 at width 0.25, 64 px views): its best.pt feeds finetuning's backbone init."""

import json
import math
from pathlib import Path

import pytest
import torch
from pretrain_support import write_pretrain_config
from torch import nn

from marsedge.cli import main
from marsedge.errors import ConfigError
from marsedge.models.build import ModelConfig, build_backbone, build_model
from marsedge.models.checkpoints import load_checkpoint
from marsedge.ssl.dense import DenseContrastiveLoss, dense_correspondence
from marsedge.train.config import InitConfig, load_train_config
from marsedge.train.modes.pretrain import (
    DenseCLModel,
    DenseCLObjective,
    Pretrain,
    PretrainConfig,
    SimCLRModel,
    SimCLRObjective,
)
from marsedge.train.supervised import initialise

BACKBONE = "r18_0.25x_sk0"
REPO = Path(__file__).resolve().parents[1]


def reference_loss(q_a, q_b, f_a, f_b, t):
    """The docstring's formula, one image and one location at a time."""

    def unit(v):
        return v / v.norm()

    n = q_a.shape[0]
    pooled = {v: [unit(q[j].flatten(1).mean(dim=1)) for j in range(n)] for v, q in (("a", q_a), ("b", q_b))}

    def one_way(q, t_map, f, f_other):
        total, count = 0.0, 0
        for i in range(n):
            locs, other_locs = q[i].flatten(1), t_map[i].flatten(1)
            feats, other_feats = f[i].flatten(1), f_other[i].flatten(1)
            negatives = [pooled[v][j] for j in range(n) if j != i for v in ("a", "b")]
            for r in range(locs.shape[1]):
                sims = [float(unit(feats[:, r]) @ unit(other_feats[:, s]))
                        for s in range(other_locs.shape[1])]
                s_star = max(range(len(sims)), key=sims.__getitem__)
                anchor = unit(locs[:, r])
                pos = math.exp(float(anchor @ unit(other_locs[:, s_star])) / t)
                neg = sum(math.exp(float(anchor @ k) / t) for k in negatives)
                total += -math.log(pos / (pos + neg))
                count += 1
        return total / count

    return (one_way(q_a, q_b, f_a, f_b) + one_way(q_b, q_a, f_b, f_a)) / 2


@pytest.mark.parametrize("t", [0.2, 0.7])
def test_loss_equals_a_loop_over_the_formula(t):
    g = torch.Generator().manual_seed(0)
    q_a, q_b = torch.randn(3, 5, 2, 3, generator=g), torch.randn(3, 5, 2, 3, generator=g)
    f_a, f_b = torch.randn(3, 7, 2, 3, generator=g), torch.randn(3, 7, 2, 3, generator=g)
    got = DenseContrastiveLoss(t)(q_a, q_b, f_a, f_b)
    assert got.item() == pytest.approx(reference_loss(q_a, q_b, f_a, f_b, t), rel=1e-5)


def test_views_of_different_sizes_follow_the_same_formula():
    g = torch.Generator().manual_seed(1)
    q_a, q_b = torch.randn(2, 4, 3, 3, generator=g), torch.randn(2, 4, 2, 2, generator=g)
    f_a, f_b = torch.randn(2, 6, 3, 3, generator=g), torch.randn(2, 6, 2, 2, generator=g)
    got = DenseContrastiveLoss(0.5)(q_a, q_b, f_a, f_b)
    assert got.item() == pytest.approx(reference_loss(q_a, q_b, f_a, f_b, 0.5), rel=1e-5)


def test_the_correspondence_finds_the_same_location_and_lowers_the_loss():
    # 3 images x 2 x 2 locations, each projection its own orthonormal direction: well separated
    n, h, w, d = 3, 2, 2, 16
    basis = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(2)))[0]
    q = basis[: n * h * w].reshape(n, h * w, d).transpose(1, 2).reshape(n, d, h, w).contiguous()
    f = q.clone()  # view b is view a, backbone maps included
    a_to_b, b_to_a = dense_correspondence(f, f)
    assert torch.equal(a_to_b, torch.arange(h * w).expand(n, -1)) and torch.equal(b_to_a, a_to_b)
    loss = DenseContrastiveLoss(0.2)
    matched, cos = loss.terms(q, q, f, f)
    assert cos.item() == pytest.approx(1.0)
    # features that point each location at another one of the same image: the positives are wrong
    shuffled_f = f.flatten(2)[:, :, [1, 2, 3, 0]].reshape(n, d, h, w)
    shuffled, shuffled_cos = loss.terms(q, q, f, shuffled_f)
    assert shuffled_cos.item() == pytest.approx(0.0, abs=1e-6)
    assert matched.item() < shuffled.item() - 1.0


def test_one_image_has_no_negatives_and_a_zero_loss():
    q, f = torch.randn(1, 4, 2, 2), torch.randn(1, 6, 2, 2)
    assert DenseContrastiveLoss(0.5)(q, q.flip(2), f, f).item() == pytest.approx(0.0, abs=1e-6)


def test_shape_mismatches_are_refused():
    loss, r = DenseContrastiveLoss(0.5), torch.randn
    with pytest.raises(ValueError, match="N x D x h x w"):
        loss(r(2, 4, 2, 2), r(3, 4, 2, 2), r(2, 6, 2, 2), r(3, 6, 2, 2))
    with pytest.raises(ValueError, match="backbone maps"):
        loss(r(2, 4, 2, 2), r(2, 4, 2, 2), r(2, 6, 3, 3), r(2, 6, 2, 2))
    with pytest.raises(ValueError, match="positive"):
        DenseContrastiveLoss(0.0)


def test_gradients_of_the_dense_term_reach_the_dense_head_and_the_backbone():
    torch.manual_seed(0)
    model = DenseCLModel(build_backbone(BACKBONE, 16, 1), projection_dim=8)
    batch = {"view1": torch.randn(3, 1, 64, 64), "view2": torch.randn(3, 1, 64, 64)}
    loss, logs = DenseCLObjective(0.5, dense_weight=1.0)(model, batch, None)  # the dense term alone
    loss.backward()
    assert {"pos_cos", "dense_pos_cos", "global_loss", "dense_loss"} <= logs.keys()
    assert loss.item() == pytest.approx(logs["dense_loss"])

    def grad_norm(module: nn.Module) -> float:
        return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)

    assert grad_norm(model.dense_projection[0]) > 0 and grad_norm(model.dense_projection[2]) > 0
    assert grad_norm(model.backbone) > 0
    assert grad_norm(model.projection) == 0  # weight 1: the global term contributes nothing


# ---- across processes --------------------------------------------------------------------------

WORLD, N_PER_RANK = 2, 2


def _ddp_data():
    g = torch.Generator().manual_seed(3)
    shape = (WORLD * N_PER_RANK, 6, 2, 2)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def _ddp_head():
    torch.manual_seed(0)
    return nn.Conv2d(6, 4, 1)


def _dense_worker(rank, port, out_dir):
    import torch.distributed as dist
    from ddp_support import set_rank_env
    from torch.nn.parallel import DistributedDataParallel

    from marsedge.train.engine.distributed import init_distributed, shutdown_distributed

    set_rank_env(rank, WORLD, port)
    init_distributed("cpu")
    try:
        f_a, f_b = _ddp_data()
        rows = slice(rank * N_PER_RANK, (rank + 1) * N_PER_RANK)
        head = DistributedDataParallel(_ddp_head())
        q = head(torch.cat([f_a[rows], f_b[rows]]))
        loss = DenseContrastiveLoss(0.5)(q[:N_PER_RANK], q[N_PER_RANK:], f_a[rows], f_b[rows])
        loss.backward()
        torch.save({"loss": loss.detach(), "grads": [p.grad for p in head.module.parameters()]},
                   f"{out_dir}/rank{rank}.pt")
        dist.barrier()
    finally:
        shutdown_distributed()


def test_two_processes_give_the_whole_batch_gradient(tmp_path):
    import torch.multiprocessing as mp
    from ddp_support import free_port

    mp.spawn(_dense_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    f_a, f_b = _ddp_data()
    head = _ddp_head()
    n = WORLD * N_PER_RANK
    q = head(torch.cat([f_a, f_b]))
    loss = DenseContrastiveLoss(0.5)(q[:n], q[n:], f_a, f_b)
    loss.backward()
    assert torch.stack([r["loss"] for r in ranks]).mean().item() == pytest.approx(loss.item(), rel=1e-5)
    for r in ranks:  # negatives from the other rank carry their gradient back (gather_with_grad)
        for got, want in zip(r["grads"], [p.grad for p in head.parameters()], strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)


# ---- the mode end to end -------------------------------------------------------------------------

COMMON = [f"model.backbone={BACKBONE}", "model.output_stride=16", "data.preprocess.height=64",
          "data.preprocess.width=64", "num_workers=0", "run.progress=false", "run.device=cpu",
          "run.log_every=1", "seed=1"]


def pretrain_config(folder, root):
    return write_pretrain_config(folder, root, "dense", "densecl")


def test_densecl_pretraining_feeds_finetuning_backbone_init(tiny_ai4mars, tmp_path):
    config = pretrain_config(tmp_path, tiny_ai4mars)
    assert main(["train", "--config", str(config), *COMMON, f"run.out_dir={tmp_path}"]) == 0
    run_dir = tmp_path / "dense"
    ckpt = load_checkpoint(run_dir / "best.pt")
    prefixes = {key.split(".")[0] for key in ckpt.state_dict}
    assert prefixes == {"backbone", "projection", "dense_projection"}
    log = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [rec for rec in log if "dense_pos_cos" in rec]
    assert steps and all("pos_cos" in rec and math.isfinite(rec["loss"]) for rec in steps)
    # what finetuning does with init.checkpoint + init.backbone_only
    model = build_model(ModelConfig(backbone=BACKBONE, head="deeplabv3", head_channels=16, output_stride=16))
    described = initialise(model, InitConfig(checkpoint=str(run_dir / "best.pt"), backbone_only=True))
    assert described.startswith("backbone from")
    backbone_keys = [k for k in ckpt.state_dict if k.startswith("backbone.")]
    state = model.state_dict()
    assert backbone_keys and all(torch.equal(state[k], ckpt.state_dict[k]) for k in backbone_keys)
    assert {k for k in state if k.startswith("backbone.")} == set(backbone_keys)


@pytest.mark.parametrize("change, key", [
    (["pretrain.objective=dense"], "pretrain.objective"),
    (["pretrain.dense_weight=1.5"], "pretrain.dense_weight"),
    (["pretrain.clusters=clusters.json"], "pretrain.clusters"),  # cluster-aware is SimCLR's alone
])
def test_bad_objective_keys_are_a_one_line_refusal(tiny_ai4mars, tmp_path, capsys, change, key):
    config = pretrain_config(tmp_path, tiny_ai4mars)
    assert main(["train", "--config", str(config), *COMMON, f"run.out_dir={tmp_path}", *change]) == 2
    error = capsys.readouterr().err.strip()
    assert f"'{key}'" in error and len(error.splitlines()) == 1
    assert not (tmp_path / "dense" / "metrics.jsonl").exists()
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_train_config(PretrainConfig, config, [*COMMON, *change]).validate()


@pytest.mark.parametrize("shipped", sorted(p.name for p in (REPO / "configs" / "pretrain").glob("*.yaml")))
def test_shipped_pretrain_configs_resolve_to_simclr(shipped):
    cfg = load_train_config(PretrainConfig, REPO / "configs" / "pretrain" / shipped, [])
    assert cfg.pretrain.objective == "simclr" and cfg.pretrain.dense_weight == 0.5


def test_the_default_objective_builds_simclr(tiny_ai4mars, tmp_path):
    config = write_pretrain_config(tmp_path, tiny_ai4mars, "dense")
    cfg = load_train_config(PretrainConfig, config, COMMON)
    assert cfg.pretrain.objective == "simclr"
    job = Pretrain(cfg, ctx=None)
    job.prepare()
    plan = job.build()
    assert type(plan.model) is SimCLRModel and type(plan.objective) is SimCLRObjective
    cfg.pretrain.objective = "densecl"
    plan = job.build()
    assert type(plan.model) is DenseCLModel and type(plan.objective) is DenseCLObjective
