"""What the two-process gloo tests share: a free loopback port, the env:// rendezvous torchrun sets,
one rank's worker around a training function, and an objective that fails at a chosen step."""

import os
import socket


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def set_rank_env(rank: int, world: int, port: int) -> None:
    """The variables torchrun sets for one rank, so env:// initialisation works under mp.spawn."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))


def ddp_worker(rank: int, world: int, port: int, train, *args) -> None:
    """`mp.spawn(ddp_worker, args=(world, port, train, *args))`: one gloo rank runs `train(ctx, *args)`
    (a module-level function, so that spawn can pickle it)."""
    import torch

    from marsedge.train.engine.distributed import barrier, init_distributed, shutdown_distributed

    set_rank_env(rank, world, port)
    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    try:
        train(ctx, *args)
        barrier(ctx)  # every rank done before any leaves the group, as run_job does
    finally:
        shutdown_distributed()


class FailAt:
    """A training objective that raises `error` at one optimiser step, as a Ctrl-C or crash would."""

    def __init__(self, objective, step: int, error: type[BaseException] = KeyboardInterrupt) -> None:
        self.objective, self.step, self.error = objective, step, error

    def __call__(self, model, batch, state):
        if state.step == self.step:
            raise self.error("simulated")
        return self.objective(model, batch, state)
