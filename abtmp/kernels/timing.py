"""Timing a collective the way it runs in inference: many calls captured in a CUDA graph, replayed.

The per-call time is the median over replays of (graph time / calls per graph), and the reported
number is the maximum over ranks (a collective is as slow as its slowest rank). On CPU emulation
the calls run eagerly and the numbers only show that the path works.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable

import torch
import torch.distributed as dist


def _max_over_ranks(value: float, device: torch.device) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def time_call(fn: Callable[[], object], device: torch.device, calls_per_graph: int = 10, replays: int = 15,
              warmup: int = 2) -> float:
    """Microseconds per call of ``fn`` (a collective every rank runs), median over replays, max over ranks."""
    if device.type != "cuda":
        samples = []
        for _ in range(max(2, replays // 5)):
            dist.barrier()
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1e6)
        return _max_over_ranks(statistics.median(samples), device)
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream(device).wait_stream(stream)
    torch.cuda.synchronize(device)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls_per_graph):
            fn()
    graph.replay()
    torch.cuda.synchronize(device)
    dist.barrier()
    events = [torch.cuda.Event(enable_timing=True) for _ in range(replays + 1)]
    events[0].record()
    for i in range(replays):  # back to back: the ranks stay in step, no host gap between replays
        graph.replay()
        events[i + 1].record()
    events[-1].synchronize()
    samples = [a.elapsed_time(b) * 1e3 / calls_per_graph for a, b in zip(events, events[1:])]
    del graph
    return _max_over_ranks(statistics.median(samples), device)
