"""Process-group set-up for entry points (bench, tune, the DeepSeek demo): torchrun or spawned ranks."""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

# NVLink multicast stays off on shared machines: never change these, also in child processes.
MULTICAST_OFF = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def init(device_type: str | None = None) -> torch.device:
    """Join the default group from torchrun's environment; NCCL on GPUs when there is one per rank,
    else gloo (CPU emulation). Returns this rank's device."""
    for k, v in MULTICAST_OFF.items():
        os.environ[k] = v
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))
    if device_type is None:
        device_type = "cuda" if torch.cuda.is_available() and torch.cuda.device_count() >= world else "cpu"
    if device_type == "cuda":
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
        dist.init_process_group("nccl", device_id=device, timeout=timedelta(minutes=5))
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo", timeout=timedelta(minutes=5))
    return device


def card_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu-emulation (Triton interpreter; timings meaningless)"


def spawn(fn, world: int, *args) -> int:
    """Run ``fn(*args)`` on ``world`` fresh rank processes that can call :func:`init`; returns 0 if
    every rank returned normally, else the first non-zero exit code (1 for an exception)."""
    import multiprocessing as mp
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_rank_main, args=(r, world, port, fn, args)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return next((p.exitcode for p in procs if p.exitcode), 0)


def _rank_main(rank: int, world: int, port: int, fn, args) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world))
    raise SystemExit(fn(*args) or 0)
