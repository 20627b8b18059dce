"""The implementations the benchmark compares, each built once per case as a zero-argument call.

fused            kernels.reduce_scatterv, input produced inside the symmetric workspace (the
                 DeepSeek post-path's way: the MoE writes there, nothing is copied)
fused_copy       kernels.reduce_scatterv on an ordinary tensor (copied into the workspace)
nccl_rsv         torch.distributed.reduce_scatter with uneven chunks = NCCL grouped ncclReduce
                 (SGLang's reduce_scatterv, the upstream fix)
nccl_padded      pad every rank's chunk to max(sizes), reduce_scatter_tensor, (padding copies included)
allreduce_slice  all_reduce of the whole buffer in place, then copy this rank's rows out
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist

import kernels

IMPLS = ("fused", "fused_copy", "nccl_rsv", "nccl_padded", "allreduce_slice")


def build(impl: str, partial: torch.Tensor, sizes: list[int], rank: int) -> tuple[Callable[[], object], torch.Tensor]:
    """(call, output) for ``impl`` on this rank's ``partial`` [sum(sizes), H]."""
    H = partial.shape[1]
    off, n = sum(sizes[:rank]), sizes[rank]
    out = torch.empty((n, H), dtype=partial.dtype, device=partial.device)
    if impl in ("fused", "fused_copy"):
        inp = partial
        if impl == "fused":
            inp = kernels.workspace().empty(*partial.shape, dtype=partial.dtype)
            inp.copy_(partial)
        return (lambda: kernels.reduce_scatterv(inp, out, sizes=sizes)), out
    if impl == "nccl_rsv":
        chunks = list(partial.split(sizes))
        return (lambda: dist.reduce_scatter(out, chunks)), out
    if impl == "nccl_padded":
        m = max(sizes)
        padded = torch.zeros((len(sizes) * m, H), dtype=partial.dtype, device=partial.device)
        recv = torch.empty((m, H), dtype=partial.dtype, device=partial.device)
        offs = [sum(sizes[:r]) for r in range(len(sizes))]

        def padded_call():
            for r, s in enumerate(sizes):
                if s:
                    padded[r * m: r * m + s].copy_(partial[offs[r]: offs[r] + s])
            dist.reduce_scatter_tensor(recv, padded)
            out.copy_(recv[:n])
        return padded_call, out
    if impl == "allreduce_slice":
        buf = partial.clone()

        def allreduce_call():
            dist.all_reduce(buf)
            out.copy_(buf[off: off + n])
        return allreduce_call, out
    raise ValueError(f"unknown implementation {impl}")
