"""CUDA symmetric memory through PyTorch: one buffer per rank, peer pointers for all."""

from __future__ import annotations

import socket
import warnings

import torch
import torch.distributed as dist


def allocate(group: dist.ProcessGroup, nbytes: int, device: torch.device):
    """Collective: every rank gets its zero-filled buffer, the device table of peer base addresses
    and what must stay alive. Returns ``(buffer [nbytes] uint8, table int64 [W] on device, keepalive)``."""
    import torch.distributed._symmetric_memory as symm_mem

    if hasattr(symm_mem, "enable_symm_mem_for_group"):
        with warnings.catch_warnings():  # needed by older releases; deprecated (and a no-op) in newer ones
            warnings.simplefilter("ignore", FutureWarning)
            symm_mem.enable_symm_mem_for_group(group.group_name)
    buffer = symm_mem.empty(nbytes, dtype=torch.uint8, device=device)
    handle = symm_mem.rendezvous(buffer, group)
    buffer.zero_()
    table = torch.tensor(list(handle.buffer_ptrs), dtype=torch.int64, device=device)
    torch.cuda.synchronize(device)
    dist.barrier(group=group)
    return buffer, table, (buffer, handle)


def reachable(group: dist.ProcessGroup, device: torch.device) -> bool:
    """True when every rank of the group is on this host and this GPU can read every peer's GPU.

    Collective; every rank returns the same answer.
    """
    everyone: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(everyone, (socket.gethostname(), device.index), group=group)
    ok = len({host for host, _ in everyone}) == 1 and all(
        index == device.index or torch.cuda.can_device_access_peer(device.index, index) for _, index in everyone)
    verdict = torch.tensor([int(ok)], device=device)
    dist.all_reduce(verdict, op=dist.ReduceOp.MIN, group=group)
    return bool(verdict.item())
