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


def graph_samples(body: Callable[[], object], calls: int, replays: int, stream=None,
                  before_replays: Callable[[], object] | None = None) -> list[float]:
    """Capture ``body`` (``calls`` calls of something) in one CUDA graph (on ``stream``, if given),
    replay it once, call ``before_replays``, then replay it ``replays`` times back to back: the
    microseconds per call of each replay (CUDA events between the replays)."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        body()
    graph.replay()
    torch.cuda.synchronize()
    if before_replays is not None:
        before_replays()
    events = [torch.cuda.Event(enable_timing=True) for _ in range(replays + 1)]
    events[0].record()
    for i in range(replays):
        graph.replay()
        events[i + 1].record()
    events[-1].synchronize()
    del graph
    return [a.elapsed_time(b) * 1e3 / calls for a, b in zip(events, events[1:])]


def time_call(fn: Callable[[], object], device: torch.device, calls_per_graph: int = 10, replays: int = 15,
              warmup: int = 2, in_step: Callable[[], object] | None = None) -> float:
    """Microseconds per call of ``fn`` (a collective every rank runs), median over replays, max over ranks.

    Back to back, a collective whose ranks carry unequal loads overlaps consecutive calls (a lightly
    loaded rank starts its next call early). With ``in_step`` (a small collective that brings the
    ranks back in step, as the layers between two calls do in a model) every call of ``fn`` follows
    one ``in_step`` call, and the time of ``in_step`` alone is subtracted."""
    if in_step is not None:
        both = time_call(lambda: (in_step(), fn()), device, calls_per_graph, replays, warmup)
        return both - time_call(in_step, device, calls_per_graph, replays, warmup)
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
    # back to back: the ranks stay in step, no host gap between replays
    samples = graph_samples(lambda: [fn() for _ in range(calls_per_graph)], calls_per_graph, replays,
                            before_replays=dist.barrier)
    return _max_over_ranks(statistics.median(samples), device)
