"""The peer-bandwidth ceilings, measured in the same run: every rank pulls a large block from every
peer (reads), or writes one into every peer (writes).

A Triton kernel reads ``nbytes`` from each peer's symmetric workspace and folds it into registers
(one small store per program, so nothing is elided): no reduction traffic to memory, no barrier,
no uneven split. Each tile is read from every peer in the same iteration, so all links are busy at
once (the runs of 2026-11-27 used a version that read the peers one after another; at W=4 that
measured one link at a time, 226 GB/s, and the fused kernel's "% of ceiling" there exceeded 100).
Its best inbound rate over a few launch shapes is the ceiling the fused kernel's achieved rate is
compared with. The write ceiling (stores of register values into every peer's
workspace, all peers per iteration) is reported beside it: NVLink writes are posted, and the push
modes move data that way.
"""

from __future__ import annotations

import triton
import triton.language as tl
import torch

import reduce_scatterv as rsv
from reduce_scatterv.timing import time_call


@triton.jit
def peer_read_kernel(table_addr, offset, n_elems, rank, sink_addr, W: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    table = table_addr.to(tl.int64).to(tl.pointer_type(tl.int64))
    acc = tl.zeros([BLOCK], tl.float32)
    for t in range(pid, tl.cdiv(n_elems, BLOCK), tl.num_programs(0)):
        start = tl.cast(t, tl.int64) * BLOCK
        live = tl.arange(0, BLOCK) < tl.multiple_of(n_elems - start, 8)
        for r in tl.static_range(W):  # every peer in the same iteration: all links busy at once
            if r != rank:
                src = (tl.load(table + r) + offset).to(tl.pointer_type(tl.bfloat16))
                acc += tl.load(tl.multiple_of(src + start, 16) + tl.arange(0, BLOCK), mask=live,
                               other=0.0).to(tl.float32)
    sink = sink_addr.to(tl.int64).to(tl.pointer_type(tl.float32))
    tl.store(sink + pid * BLOCK + tl.arange(0, BLOCK), acc)


@triton.jit
def peer_write_kernel(table_addr, offset, n_elems, rank, W: tl.constexpr, BLOCK: tl.constexpr):
    """Writes n_elems bf16 into every peer's workspace at ``offset`` + this rank's share (the
    writers' regions are disjoint): outbound traffic only, values from registers."""
    pid = tl.program_id(0)
    table = table_addr.to(tl.int64).to(tl.pointer_type(tl.int64))
    vals = (tl.arange(0, BLOCK) + pid).to(tl.bfloat16)
    for t in range(pid, tl.cdiv(n_elems, BLOCK), tl.num_programs(0)):
        start = tl.cast(t, tl.int64) * BLOCK
        live = tl.arange(0, BLOCK) < tl.multiple_of(n_elems - start, 8)
        for r in tl.static_range(W):  # every peer in the same iteration
            if r != rank:
                dst = (tl.load(table + r) + offset).to(tl.pointer_type(tl.bfloat16)) + rank * n_elems
                tl.store(tl.multiple_of(dst + start, 16) + tl.arange(0, BLOCK), vals, mask=live)


def measure(device: torch.device, nbytes: int = 256 << 20, write: bool = False) -> tuple[float, dict]:
    """Best peer rate in GB/s per GPU (max over ranks of time) and the launch shape that gave it:
    inbound reads of ``nbytes`` from every peer, or (``write``) outbound writes of ``nbytes`` into
    every peer."""
    ws = rsv.workspace(device=device)
    n = nbytes // 2
    ws.reserve(max_input_bytes=nbytes * (ws.world_size if write else 1))
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    best = (0.0, {})
    for block in (2048, 4096, 8192, 16384):
        for warps in (4, 8, 16):
            for per_sm in (1, 2, 4):
                programs = sms * per_sm
                sink = None if write else torch.empty(programs * block, dtype=torch.float32, device=device)

                def call():
                    if write:
                        peer_write_kernel[(programs,)](ws.table_addr, ws.layout.scratch_offset, n, ws.rank,
                                                       W=ws.world_size, BLOCK=block, num_warps=warps)
                    else:
                        peer_read_kernel[(programs,)](ws.table_addr, ws.layout.scratch_offset, n, ws.rank,
                                                      sink.data_ptr(), W=ws.world_size, BLOCK=block,
                                                      num_warps=warps)
                us = time_call(call, device, calls_per_graph=3, replays=5)
                gbps = (ws.world_size - 1) * nbytes / us / 1e3
                if gbps > best[0]:
                    best = (gbps, dict(block=block, num_warps=warps, programs=programs, us=us))
    return best
