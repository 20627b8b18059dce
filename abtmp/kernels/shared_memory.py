"""CPU emulation of symmetric memory: one shared-memory file per rank, mapped by every rank.

Each process maps all W files and builds its own table of base addresses, exactly the shape of
what PyTorch symmetric memory gives on CUDA (``buffer_ptrs``), so the same kernel code runs in
Triton's interpreter, with real cross-process atomics on the shared pages.
"""

from __future__ import annotations

import os
import tempfile
import uuid

import torch
import torch.distributed as dist


def _shm_dir() -> str:
    return "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()


def allocate(group: dist.ProcessGroup, nbytes: int) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """Collective: every rank gets its zero-filled buffer, the address table and the peers' mappings.

    Returns ``(own buffer [nbytes] uint8, table int64 [W] of base addresses in this process, keepalive)``.
    """
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    tag = [uuid.uuid4().hex if rank == 0 else None]
    dist.broadcast_object_list(tag, src=dist.get_global_rank(group, 0), group=group)
    paths = [os.path.join(_shm_dir(), f"rsv-{tag[0]}-{r}") for r in range(world)]
    with open(paths[rank], "wb") as f:
        f.truncate(nbytes)  # a new file reads as zeros
    dist.barrier(group=group)
    maps = [torch.from_file(p, shared=True, size=nbytes, dtype=torch.uint8) for p in paths]
    dist.barrier(group=group)
    os.unlink(paths[rank])  # the mappings stay valid; nothing is left behind in /dev/shm
    table = torch.tensor([m.data_ptr() for m in maps], dtype=torch.int64)
    return maps[rank], table, maps


def reachable(group: dist.ProcessGroup) -> bool:
    """True when every rank of the group runs on this host (shared memory reaches them all)."""
    import socket

    hosts = [None] * dist.get_world_size(group)
    dist.all_gather_object(hosts, socket.gethostname(), group=group)
    return len(set(hosts)) == 1
