"""The engine plugins' shared path (``plugins/common.py``) driven as the engines drive it, on every
rank of a RankPool, without an engine installed: meet the group (switch on), reserve at start-up,
get ready for capture, then calls with the engines' shapes. Runs on GPUs (NCCL, symmetric memory;
``tests/test_plugins_gpu.py``) and in CPU emulation (gloo; ``tests/test_plugins_common.py``), where
the engines' own tests cover the rest (``tests/test_engine_*.py``)."""

from __future__ import annotations

import contextlib
import os

import torch
import torch.distributed as dist

import reduce_scatterv as rsv
from reduce_scatterv.plugins import common
from tests.cases import (DTYPES, MANTISSA_BITS, POISON, assert_close, exact_sum, partials,
                         reference_reduce_scatter, tolerance)

CAP_MB = 64


def _check(name, ctx, group, got, parts, sizes, dtype_t) -> float:
    """``got`` against the float64 sum (one rounding) and against NCCL's (gloo's) reduce_scatter."""
    W, rank = ctx.world, ctx.rank
    n, off = sizes[rank], sum(sizes[:rank])
    truth, abs_sum = exact_sum(parts, off, n)
    worst = assert_close(f"{name} vs float64", got[:n], truth, tolerance(dtype_t, truth, abs_sum, W))
    ref = reference_reduce_scatter(parts[rank].to(ctx.device), sizes, group)
    nccl_tol = tolerance(dtype_t, truth, abs_sum, W, slack=2) + 2.0 ** -MANTISSA_BITS[dtype_t] * (W - 1) * abs_sum
    return max(worst, assert_close(f"{name} vs the reference collective", got[:n], ref.double().cpu(), nccl_tol))


def plugin_path_case(ctx, *, hidden: int = 7168, dtype: str = "bfloat16", seed: int = 0,
                     decode_rows: tuple = (1, 2, 4, 8, 32), prefill: tuple = (5, 0, 130, 1)) -> dict:
    """One engine group through the plugin path:

    - SGLang's decode shapes: even host sizes ``[k] * W``, eagerly and (GPUs) in a captured CUDA graph
      replayed with new inputs, as SGLang captures its decode graphs;
    - vLLM's even split: ``sizes=None``;
    - an uneven prefill list with an idle rank;
    - (GPUs) a call on a side stream (SGLang's overlap stream), ordered by the caller's events;
    - refusals from rank-agreed facts: float64, an input over the reservation.
    Every result against the float64 sum and the reference collective. Returns what the plugin said."""
    dtype_t, W, rank, dev = DTYPES[dtype], ctx.world, ctx.rank, ctx.device
    backend = ctx.backend
    said: dict = {}
    with _engine_env(dev):
        group = ctx.new_group()  # the engine's device group
        cpu_group = dist.new_group(list(range(W)), backend="gloo")  # and its CPU group
        try:
            _serve_and_call(ctx, group, cpu_group, backend, said, dtype_t, hidden, decode_rows, prefill, seed)
        finally:
            rsv.release(group)
            dist.destroy_process_group(group)
            dist.destroy_process_group(cpu_group)
    return said


@contextlib.contextmanager
def _engine_env(dev):
    """The plugin switched on with a ``CAP_MB`` cap (CPU emulation allowed on CPU), restored after."""
    saved = {k: os.environ.get(k) for k in ("KERNELS_ENGINE_PLUGIN", "KERNELS_ENGINE_WORKSPACE_MB")}
    os.environ.update(KERNELS_ENGINE_PLUGIN="1", KERNELS_ENGINE_WORKSPACE_MB=str(CAP_MB))
    common.allow_cpu_emulation(dev.type == "cpu")
    try:
        yield
    finally:
        common.allow_cpu_emulation(False)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _serve_and_call(ctx, group, cpu_group, backend, said, dtype_t, hidden, decode_rows, prefill, seed) -> None:
    """Meet, reserve, get ready for capture, then the calls (see ``plugin_path_case``); fills ``said``."""
    W, rank, dev = ctx.world, ctx.rank, ctx.device
    meeting = common.meet("sglang", "tp", cpu_group=cpu_group, world_size=W, device=dev, backend=backend,
                          engine_modes={})
    if not meeting.on or meeting.reason is not None:
        raise AssertionError(f"the plugin does not serve a {W}-rank {backend} group: {meeting}")
    served = common.reserve("sglang", "tp", [group], dev)
    if served is None:
        raise AssertionError("no workspace was reserved")
    common.ready_for_capture(served)
    said["max_input_bytes"] = served.max_input_bytes
    worst = 0.0
    calls = [("decode", [k] * W) for k in decode_rows] + [("vllm even", None),
                                                            ("prefill", list(prefill[:W]))]
    for i, (name, sizes) in enumerate(calls):
        rows = [4] * W if sizes is None else sizes
        parts = partials(seed * 100 + i, W, sum(rows), (hidden,), dtype_t)
        inp = parts[rank].to(dev)
        if common.refusal(served, inp, 0, {}) is not None:
            raise AssertionError(f"{name}: refused: {common.refusal(served, inp, 0, {})}")
        got = common.run(served, inp, None, sizes)
        worst = max(worst, _check(f"{name} {rows}", ctx, group, got, parts, rows, dtype_t))
    if dev.type == "cuda":
        worst = max(worst, _side_stream(ctx, served, group, hidden, dtype_t, seed))
        worst = max(worst, _graph(ctx, served, group, hidden, dtype_t, seed, W))
    said["worst"] = worst
    big_rows = served.max_input_bytes // (hidden * dtype_t.itemsize) + W
    said["refusals"] = [common.refusal(served, torch.zeros(8, hidden, dtype=torch.float64, device=dev), 0, {}),
                        common.refusal(served, torch.empty(big_rows, hidden, dtype=dtype_t, device=dev), 0, {}),
                        common.refusal(served, torch.zeros(8, hidden, dtype=dtype_t, device=dev), 1, {})]
    rsv.workspace(group, dev).check()
    said["gather_ll_bytes"] = rsv.workspace(group, dev).layout.gather_ll_limit


def existing_workspace_case(ctx) -> dict:
    """A group whose workspace the application made (library defaults) before the plugin reserved
    it: the plugin uses it as it is (a workspace's keywords are fixed at creation) instead of
    raising; returns whether it was served and the workspace's gather limit."""
    dev = ctx.device
    with _engine_env(dev):
        group = ctx.new_group()
        try:
            rsv.workspace(group, dev)
            served = common.reserve("sglang", "tp", [group], dev)
            return dict(served=served is not None, gather_ll_bytes=rsv.workspace(group, dev).layout.gather_ll_limit)
        finally:
            rsv.release(group)
            dist.destroy_process_group(group)


def _side_stream(ctx, served, group, hidden, dtype_t, seed) -> float:
    """SGLang's overlap: the call on another stream, after the producer's work on the main stream."""
    W, rank = ctx.world, ctx.rank
    sizes = [(3 * r + 2) % 7 for r in range(W)]
    parts = partials(seed * 100 + 50, W, sum(sizes), (hidden,), dtype_t)
    main, side = torch.cuda.current_stream(), torch.cuda.Stream()
    inp = parts[rank].to(ctx.device) * 1  # produced on the main stream
    side.wait_stream(main)
    with torch.cuda.stream(side):
        got = common.run(served, inp, None, sizes)
    main.wait_stream(side)
    torch.cuda.synchronize()
    return _check(f"side stream {sizes}", ctx, group, got, parts, sizes, dtype_t)


def _graph(ctx, served, group, hidden, dtype_t, seed, W) -> float:
    """A decode graph as SGLang captures it: even host sizes, static buffers, replayed with new inputs."""
    rank, dev = ctx.rank, ctx.device
    k = 4
    sizes = [k] * W
    inp = torch.zeros(k * W, hidden, dtype=dtype_t, device=dev)
    out = torch.full((k, hidden), POISON, dtype=dtype_t, device=dev)
    common.run(served, inp, out, sizes)  # warm up (compile) outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        common.run(served, inp, out, sizes)
    worst = 0.0
    for i in range(3):
        parts = partials(seed * 100 + 70 + i, W, k * W, (hidden,), dtype_t)
        inp.copy_(parts[rank].to(dev))
        out.fill_(POISON)
        graph.replay()
        torch.cuda.synchronize()
        worst = max(worst, _check(f"graph replay {i}", ctx, group, out, parts, sizes, dtype_t))
    return worst
