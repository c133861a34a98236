"""The gathered NT-Xent gives the same gradients on 2 gloo processes as on 1 process with the whole
batch, and the well-known pitfall (gathering without gradient, keeping only the local slice live)
does not: so the test can tell the two apart."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from ddp_support import free_port, set_rank_env
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from marsedge.ssl.contrastive import ClusterAwareNTXentLoss, NTXentLoss
from marsedge.train.engine.distributed import init_distributed, shutdown_distributed

WORLD = 2
N_PER_RANK = 3
TEMPERATURE = 0.5
CLUSTERS = torch.tensor([0, 1, 2, 0, 3, 1])  # shared across ranks; some pairs span the two ranks


def _data():
    g = torch.Generator().manual_seed(0)
    x_a = torch.randn(WORLD * N_PER_RANK, 5, generator=g)
    x_b = torch.randn(WORLD * N_PER_RANK, 5, generator=g)
    return x_a, x_b


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 4))


def _loss(model, x_a, x_b, clusters, cluster_aware):
    z = model(torch.cat([x_a, x_b]))  # one forward per step, as DDP expects
    z_a, z_b = z.chunk(2)
    if cluster_aware:
        return ClusterAwareNTXentLoss(TEMPERATURE)(z_a, z_b, clusters)
    return NTXentLoss(TEMPERATURE)(z_a, z_b)


def _naive_loss(model, x_a, x_b):
    """The pitfall: all_gather (no autograd) and splice the live local slice back in."""
    z_a, z_b = model(torch.cat([x_a, x_b])).chunk(2)
    rank = dist.get_rank()

    def gather(z):
        parts = [torch.empty_like(z) for _ in range(WORLD)]
        dist.all_gather(parts, z.detach())
        parts[rank] = z
        return torch.cat(parts)

    za_n, zb_n = nn.functional.normalize(z_a, dim=1), nn.functional.normalize(z_b, dim=1)
    keys = nn.functional.normalize(torch.cat([gather(z_a), gather(z_b)]), dim=1)
    anchors = torch.cat([za_n, zb_n])
    frames = torch.arange(N_PER_RANK) + rank * N_PER_RANK
    n_all = WORLD * N_PER_RANK
    self_col, pos_col = torch.cat([frames, frames + n_all]), torch.cat([frames + n_all, frames])
    logits = (anchors @ keys.T / TEMPERATURE).masked_fill(
        nn.functional.one_hot(self_col, 2 * n_all).bool(), float("-inf")
    )
    return nn.functional.cross_entropy(logits, pos_col)


MODES = ("plain", "cluster", "naive")


def _worker(rank, port, out_dir):
    set_rank_env(rank, WORLD, port)
    init_distributed("cpu")  # and shutdown_distributed below: the group's threads stop before exit
    try:
        for mode in MODES:  # one process group for every case: spawning costs seconds
            x_a, x_b = _data()
            rows = slice(rank * N_PER_RANK, (rank + 1) * N_PER_RANK)
            x_a = x_a[rows].clone().requires_grad_(True)
            x_b = x_b[rows].clone().requires_grad_(True)
            model = DistributedDataParallel(_model())
            if mode == "naive":
                loss = _naive_loss(model, x_a, x_b)
            else:
                loss = _loss(model, x_a, x_b, CLUSTERS[rows], cluster_aware=mode == "cluster")
            loss.backward()  # DDP averages parameter gradients over ranks here
            result = {
                "loss": loss.detach(),
                "grads": [p.grad for p in model.module.parameters()],
                "x_a": x_a.grad,
                "x_b": x_b.grad,
            }
            torch.save(result, f"{out_dir}/{mode}_rank{rank}.pt")
        dist.barrier()  # every rank done before any leaves the group
    finally:
        shutdown_distributed()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    """{mode: [rank0 result, rank1 result]} from one real 2-process gloo run."""
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(free_port(), str(out)), nprocs=WORLD, join=True)
    return {
        mode: [torch.load(out / f"{mode}_rank{r}.pt", weights_only=True) for r in range(WORLD)]
        for mode in MODES
    }


def _single_process(cluster_aware):
    x_a, x_b = _data()
    x_a.requires_grad_(True)
    x_b.requires_grad_(True)
    model = _model()
    loss = _loss(model, x_a, x_b, CLUSTERS, cluster_aware)
    loss.backward()
    return loss.detach(), [p.grad for p in model.parameters()], x_a.grad, x_b.grad


@pytest.mark.parametrize("cluster_aware", [False, True], ids=["nt_xent", "cluster_aware"])
def test_two_process_gradients_equal_one_process(two_ranks, cluster_aware):
    ranks = two_ranks["cluster" if cluster_aware else "plain"]
    loss, grads, gx_a, gx_b = _single_process(cluster_aware)
    # the whole-batch mean loss is the mean of the per-rank means (equal ranks)
    assert torch.stack([r["loss"] for r in ranks]).mean().item() == pytest.approx(loss.item(), rel=1e-5)
    for r in ranks:  # after DDP's average every rank holds the whole-batch gradient
        for got, want in zip(r["grads"], grads, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    # per-rank input gradients are of the SUM of the rank losses (DDP then divides by WORLD),
    # i.e. WORLD times the gradient of the whole-batch mean
    for rank, r in enumerate(ranks):
        rows = slice(rank * N_PER_RANK, (rank + 1) * N_PER_RANK)
        torch.testing.assert_close(r["x_a"] / WORLD, gx_a[rows], rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(r["x_b"] / WORLD, gx_b[rows], rtol=1e-5, atol=1e-7)


def test_the_pitfall_is_detected(two_ranks):
    ranks = two_ranks["naive"]
    loss, grads, _, _ = _single_process(cluster_aware=False)
    # same loss value: the forward pass is right, only the gradient is wrong
    assert torch.stack([r["loss"] for r in ranks]).mean().item() == pytest.approx(loss.item(), rel=1e-5)
    pairs = zip(ranks[0]["grads"], grads, strict=True)
    assert not all(torch.allclose(g, w, rtol=1e-3, atol=1e-6) for g, w in pairs)
