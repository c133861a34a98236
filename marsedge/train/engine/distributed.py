"""DDP plumbing: process-group setup from torchrun's env://, samplers, and cross-rank reductions.

`torchrun --nproc_per_node=N train.py ...` sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT; `init_distributed` reads them (NCCL on GPUs, gloo on CPU). A plain `python train.py`
gets a `DistContext` of world size 1 and the same code path, so there is one loop, not two.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler, Sampler


@dataclass(frozen=True)
class DistContext:
    """Where this process sits: rank, world size and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Only the main process writes files and shows progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def pick_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        from marsedge.errors import ConfigError

        raise ConfigError("config key 'run.device' is 'cuda' but no CUDA device is available")
    return torch.device("cuda", local_rank)


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group torchrun describes in the environment (or run alone when it does not)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        _import_what_ddp_imports()
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", init_method="env://")
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def _import_what_ddp_imports() -> None:
    """Import torch._dynamo (DDP's constructor imports it) before the default group exists.

    Through it, torch.distributed.nn.functional binds `group=group.WORLD` as default arguments when
    it is imported. Imported after init_process_group, those defaults hold the default group for the
    life of the process: destroy_process_group cannot free it, gloo's worker threads outlive it and
    are torn down during interpreter shutdown, where one can abort the rank (SIGABRT, "terminate
    called without an active exception") after a run that succeeded. Imported first, the defaults
    are None. Seen in CI twice; tests/test_train_ddp_teardown.py checks that the threads stop.
    """
    import torch._dynamo  # noqa: F401


def shutdown_distributed() -> None:
    """Leave the process group so that its threads stop now, while the interpreter is whole.

    The collection first: a DDP wrapper left in a reference cycle (the training loop's run state)
    holds the group through its reducer until the cycle is collected, which may be at exit.
    """
    if dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum a tensor over ranks (in place, also returned). No-op alone."""
    if ctx.distributed:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def mean_over_ranks(values: dict[str, float], ctx: DistContext) -> dict[str, float]:
    """Average a dict of scalars over ranks (same keys on every rank)."""
    if not ctx.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=ctx.device)
    all_reduce_sum(t, ctx)
    return {k: v / ctx.world_size for k, v in zip(keys, t.tolist(), strict=True)}


def gather_objects(obj: object, ctx: DistContext) -> list:
    """Every rank's `obj`, in rank order (used to checkpoint each rank's RNG state)."""
    if not ctx.distributed:
        return [obj]
    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


class ResumableDistributedSampler(DistributedSampler):
    """DistributedSampler that can start part-way through an epoch, for an exact mid-epoch resume.

    The order of an epoch depends only on (seed, epoch), so skipping the first `start` samples of
    this rank's share after a resume replays exactly what the interrupted run would have seen.
    The start applies to the next epoch only; `set_epoch` resets it.
    """

    def __init__(self, dataset, num_replicas: int, rank: int, shuffle: bool = True, seed: int = 0,
                 drop_last: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed,
                         drop_last=drop_last)
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.start = 0

    def set_start(self, start: int) -> None:
        self.start = start

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.start:])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


class ShardSampler(Sampler[int]):
    """Evaluation sharding without padding: rank r takes items r, r+W, r+2W, ... (no duplicates,
    so the confusion matrices summed over ranks count every test pixel exactly once)."""

    def __init__(self, length: int, num_replicas: int = 1, rank: int = 0) -> None:
        self.indices = list(range(rank, length, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)

