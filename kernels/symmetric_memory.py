"""CUDA symmetric memory through PyTorch: one buffer per rank, peer pointers for all."""

from __future__ import annotations

import os
import socket
import warnings

import torch
import torch.distributed as dist


def use_backend(backend: str, device: torch.device) -> None:
    """Make PyTorch's symmetric memory allocate on ``backend`` ("cuda" or "nvshmem") in this process,
    or raise saying why it cannot (PyTorch fixes the backend at the first symmetric allocation)."""
    import torch.distributed._symmetric_memory as symm_mem

    want = backend.upper()
    have = symm_mem.get_backend(device) if hasattr(symm_mem, "get_backend") else None
    if have is not None and str(have).upper() == want:
        return
    if want == "NVSHMEM":
        if not (hasattr(symm_mem, "set_backend") and symm_mem.is_nvshmem_available()):
            raise RuntimeError("reduce_scatterv.workspace(backend='nvshmem'): this PyTorch build has no NVSHMEM backend of "
                               "symmetric memory, or NVSHMEM is not installed (pip install -e '.[nvshmem]': "
                               "nvidia-nvshmem-cu12, or nvidia-nvshmem-cu13 for CUDA 13 builds of torch)")
    elif have is None:
        return  # PyTorch's default is the CUDA backend
    try:
        symm_mem.set_backend(want)
    except Exception as e:  # noqa: BLE001 - PyTorch refuses once a symmetric tensor exists
        raise RuntimeError(f"reduce_scatterv.workspace(backend={backend!r}): this process's symmetric memory already uses "
                           f"the {have} backend, which PyTorch cannot change after the first allocation; create every "
                           f"workspace of a process with the same backend ({e})") from None


def allocate(group: dist.ProcessGroup, nbytes: int, device: torch.device, backend: str = "cuda"):
    """Collective: every rank gets its zero-filled buffer, the device table of peer base addresses
    and what must stay alive. Returns ``(buffer [nbytes] uint8, table int64 [W] on device, keepalive)``.
    ``backend``: "cuda" (PyTorch's default) or "nvshmem" (``use_backend``)."""
    import torch.distributed._symmetric_memory as symm_mem

    use_backend(backend, device)
    if hasattr(symm_mem, "enable_symm_mem_for_group"):
        with warnings.catch_warnings():  # needed by older releases; deprecated (and a no-op) in newer ones
            warnings.simplefilter("ignore", FutureWarning)
            symm_mem.enable_symm_mem_for_group(group.group_name)
    buffer = symm_mem.empty(nbytes, dtype=torch.uint8, device=device)
    try:
        handle = symm_mem.rendezvous(buffer, group)
    except RuntimeError as e:
        if backend == "nvshmem" and "Failed to create a new team" in str(e):
            raise RuntimeError(out_of_teams_message(group)) from e
        raise
    buffer.zero_()
    table = torch.tensor(list(handle.buffer_ptrs), dtype=torch.int64, device=device)
    torch.cuda.synchronize(device)
    dist.barrier(group=group)
    return buffer, table, (buffer, handle)


def out_of_teams_message(group: dist.ProcessGroup) -> str:
    """Why NVSHMEM could not take another group, and what to do (the same on every rank)."""
    limit = os.environ.get("NVSHMEM_MAX_TEAMS")
    return (f"reduce_scatterv.workspace(backend='nvshmem'): NVSHMEM has no team left for process group "
            f"{group.group_name!r}. PyTorch's NVSHMEM backend makes one NVSHMEM team per process group that "
            "allocates symmetric memory and never frees it (destroy_process_group does not), and NVSHMEM allows "
            f"NVSHMEM_MAX_TEAMS per process ({'default 32' if limit is None else f'now {limit}'}; a few are its own). "
            "Create fewer groups over the process's life, or set NVSHMEM_MAX_TEAMS higher in the environment "
            "before NVSHMEM starts (the first symmetric allocation)")


def reachable(group: dist.ProcessGroup, device: torch.device) -> bool:
    """True when every rank of the group is on this host and this GPU can read every peer's GPU.

    Collective; every rank returns the same answer.
    """
    everyone: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(everyone, (socket.gethostname(), device.index), group=group)
    ok = len({host for host, _ in everyone}) == 1 and all(
        index == device.index or torch.cuda.can_device_access_peer(device.index, index) for _, index in everyone)
    verdicts: list = [None] * len(everyone)
    dist.all_gather_object(verdicts, ok, group=group)  # objects: any backend (NCCL's or gloo's)
    return all(verdicts)
