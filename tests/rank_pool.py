"""A pool of rank processes that serve test cases sent by the parent (the pytest process).

Each worker is one rank of a process group (gloo on CPU; NCCL on GPU, rank r on cuda:r, or gloo with
every rank on cuda:0 where ``RSV_RANKS_ON_ONE_GPU`` asks: ``tests/gpus.py``) that stays
up for the whole session, so hypothesis can draw many cases in the parent and every case runs on
all ranks at once. A case is a function ``(ctx, **kwargs) -> result`` named as ``module:function``;
the parent gets every rank's result, or the first failure with the rank's traceback.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import socket
import traceback
from dataclasses import dataclass
from importlib import import_module


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class RankContext:
    """What a case function gets on its rank."""

    rank: int
    world: int
    device: "object"  # torch.device
    groups: dict  # "world" (default workspace) and the GROUP_LIMITS groups
    backend: str = "gloo"  # of the process groups: "nccl" with one GPU per rank, else "gloo"

    def new_group(self):
        """A fresh process group of every rank, on this pool's backend."""
        import torch.distributed as dist

        return dist.new_group(list(range(self.world)), backend=self.backend)


# Groups whose workspaces steer calls to one mode (or, "mixed", through all of them by size):
GROUP_LIMITS = {
    "push": dict(ll_bytes=0),  # flagged words off: calls push plain data (or relay, pulling)
    "large": dict(ll_bytes=0, push_bytes=0),  # the pull kernel only
    # flagged words up to 64 B per destination, plain push up to 512 B, then the pull
    "mixed": dict(ll_bytes=64, push_bytes=512),
    # the reduce-scatter's flagged words up to 64 B per destination, the gather's up to 1 KiB per source
    "gather_ll": dict(ll_bytes=64, gather_ll_bytes=1024, push_bytes=512),
}


def ranks_on_one_gpu() -> int:
    """``RSV_RANKS_ON_ONE_GPU`` as asked: N >= 2 GPU-test ranks all on GPU 0, else 0 (a rank per GPU)."""
    asked = int(os.environ.get("RSV_RANKS_ON_ONE_GPU", "0") or 0)
    return asked if asked >= 2 else 0


class RankFailure(AssertionError):
    pass


def _worker(rank: int, world: int, port: int, device_type: str, inbox, outbox, env: dict) -> None:
    if device_type == "cpu":
        # before anything imports triton (torch.compile, custom ops, engines): CPU emulation needs it
        os.environ["TRITON_INTERPRET"] = "1"
    os.environ.update(env)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    import torch
    import torch.distributed as dist

    one_gpu = device_type == "cuda" and ranks_on_one_gpu() > 0
    if one_gpu:  # every rank on GPU 0 (tests/gpus.py): PyTorch's symmetric memory allows it when asked
        os.environ["TORCH_SYMM_MEM_ALLOW_OVERLAPPING_DEVICES"] = "1"
    backend = "nccl" if device_type == "cuda" and not one_gpu else "gloo"
    if device_type == "cuda":
        device = torch.device("cuda", 0 if one_gpu else rank)
        torch.cuda.set_device(device)
        dist.init_process_group(backend, rank=rank, world_size=world,
                                **({"device_id": device} if backend == "nccl" else {}))
    else:
        device = torch.device("cpu")
        dist.init_process_group(backend, rank=rank, world_size=world)
    import reduce_scatterv as rsv

    ctx = RankContext(rank, world, device, {"world": dist.group.WORLD}, backend)
    for name, limits in GROUP_LIMITS.items():
        ctx.groups[name] = ctx.new_group()
        rsv.workspace(ctx.groups[name], device, **limits)
    outbox.put(("ready", None))
    while True:
        job = inbox.get()
        if job is None:
            break
        name, kwargs = job
        module, fn = name.split(":")
        try:
            outbox.put(("ok", getattr(import_module(module), fn)(ctx, **kwargs)))
        except BaseException as e:  # noqa: BLE001 - report everything to the parent
            outbox.put(("fail", f"rank {rank}: {type(e).__name__}: {e}\n{traceback.format_exc()}"))
    dist.destroy_process_group()


class RankPool:
    """``world`` rank processes on ``device_type`` ('cpu' or 'cuda') serving cases."""

    def __init__(self, world: int, device_type: str = "cpu", env: dict | None = None, timeout: float = 600.0):
        self.world, self.device_type, self.timeout = world, device_type, timeout
        ctx = mp.get_context("spawn")
        port = free_port()
        self.inboxes = [ctx.Queue() for _ in range(world)]
        self.outboxes = [ctx.Queue() for _ in range(world)]
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {"PYTHONPATH": here + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
        if device_type == "cuda" and os.environ.get("KERNELS_SYMM_MEM_BACKEND", "").lower() == "nvshmem":
            # these ranks serve a whole session and every case makes its own groups: on NVSHMEM each
            # takes a team that is never freed, beyond NVSHMEM's default 32 (symmetric_memory.py)
            env.setdefault("NVSHMEM_MAX_TEAMS", os.environ.get("NVSHMEM_MAX_TEAMS", "256"))
        self.procs = [ctx.Process(target=_worker, args=(r, world, port, device_type, self.inboxes[r],
                                                        self.outboxes[r], env), daemon=True)
                      for r in range(world)]
        for p in self.procs:
            p.start()
        self._collect()

    def _collect(self) -> list:
        results, failures = [], []
        for r, box in enumerate(self.outboxes):
            try:
                status, value = box.get(timeout=self.timeout)
            except queue.Empty:
                self.close()
                raise RankFailure(f"rank {r} did not answer within {self.timeout:.0f} s (hang?)") from None
            (failures if status == "fail" else results).append(value)
        if failures:
            raise RankFailure("\n".join(failures))
        return results

    def run(self, case: str, **kwargs) -> list:
        """Run case ``module:function`` on every rank with ``kwargs``; return the per-rank results."""
        for box in self.inboxes:
            box.put((case, kwargs))
        return self._collect()

    def close(self) -> None:
        for box in self.inboxes:
            box.put(None)
        for p in self.procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
