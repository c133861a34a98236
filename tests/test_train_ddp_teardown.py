"""Leaving the process group stops gloo's threads while the interpreter is whole.

A rank whose gloo threads outlive `shutdown_distributed` tears them down during interpreter
shutdown, where one can abort the process (SIGABRT, "terminate called without an active exception")
after a run that succeeded: seen twice in CI as a failed torchrun. Two causes, both checked here
on the real gloo backend: torch.distributed.nn.functional, imported by DDP's constructor, binds the
default group as a default argument when it is imported after the group exists; and a DDP wrapper
left in a reference cycle (the training loop's run state is one) keeps the group until collected.
"""

import json
import os
from pathlib import Path

import pytest
import torch.multiprocessing as mp
from ddp_support import free_port, set_rank_env

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads Linux /proc")


def _native_threads() -> list[str]:
    """The names of this process's OS threads (gloo names its own pt_gloo_runloop, gloo_tcp_loop)."""
    names = []
    for task in os.listdir("/proc/self/task"):
        try:
            names.append(Path("/proc/self/task", task, "comm").read_text().strip())
        except FileNotFoundError:  # the thread ended between the listing and the read
            continue
    return sorted(names)


def _rank(rank: int, world: int, port: int, out_dir: str) -> None:
    import gc

    import torch
    from torch.nn.parallel import DistributedDataParallel

    from marsedge.train.engine.distributed import init_distributed, shutdown_distributed

    set_rank_env(rank, world, port)
    torch.set_num_threads(1)
    gc.disable()  # the wrapper's cycle below then lives until shutdown_distributed collects it
    try:
        init_distributed("cpu")
        wrapper = DistributedDataParallel(torch.nn.Linear(4, 2))
        wrapper(torch.randn(8, 4)).sum().backward()
        cycle: dict = {"wrapper": wrapper}
        cycle["self"] = cycle
        del wrapper, cycle
        joined = _native_threads()
        shutdown_distributed()
        left = _native_threads()
    finally:
        gc.enable()
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps({"joined": joined, "left": left}))


@pytest.mark.slow
def test_shutdown_stops_the_gloo_threads_ddp_started(tmp_path):
    mp.spawn(_rank, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        threads = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert any("gloo" in name for name in threads["joined"]), threads  # the probe sees them
        assert not any("gloo" in name for name in threads["left"]), threads
