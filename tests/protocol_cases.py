"""Protocol scenarios that run on every rank of a RankPool (CPU/gloo or GPU/NCCL alike): wrap
points, a late or absent rank, reset, ranks that disagree. Each builds a fresh group (so a fresh
workspace with its own ``start_epoch`` / ``timeout_s``), releases it at the end, and checks every
result against the float64 sum (outputs poisoned before each call, fresh random inputs)."""

from __future__ import annotations

import time

import torch
import torch.distributed as dist

import reduce_scatterv as rsv
from reduce_scatterv import api
from tests.cases import POISON, assert_close, exact_sum, partials, tolerance
from tests.epilogue_cases import epilogue_inputs

# mode of a call by its rows per rank in the protocol groups (flagged words up to 64 B per
# destination, plain push up to 512 B, then the pull): H = 16 bf16 elements = 32 B per row. The
# gathers: flagged words up to 64 B per source ("gather_ll"), else the pull ("gather").
LIMITS = dict(ll_bytes=64, push_bytes=512)
ROWS_BY_MODE = {"ll": [1, 2], "push": [5, 3], "large": [20, 7], "gather_ll": [1, 2], "gather": [20, 7],
                "gather_packed": [3, 1]}  # packed flagged words (api.PACKED_MIN_BYTES 0)
# calls where a rank has no rows (kept out of ROWS_BY_MODE, whose modes other scenarios cycle)
ZERO_ROW_CALLS = {"ll_zero": [1, 0], "gather_ll_zero": [0, 2], "gather_packed_zero": [0, 3]}
H = 16


def _group(ctx, **keywords):
    group = ctx.new_group()
    return group, rsv.workspace(group, ctx.device, **{**LIMITS, **keywords})


def _close(ctx, group):
    rsv.release(group)
    dist.destroy_process_group(group)


def _late(ctx, seconds: float):
    """Make this rank's next call start late: the host sleeps on CPU, the GPU spins on CUDA."""
    if ctx.device.type == "cuda":
        torch.cuda._sleep(int(seconds * 1.5e9))
    else:
        time.sleep(seconds)


def _call(ctx, group, sizes, seed, dtype=torch.bfloat16, rows=None, width=H, late=None, delay=0.05, faults=False,
          device_sizes=False, gather=False, epilogue=False, packed=False):
    """One call with fresh inputs; returns (result, truth, abs_sum) on this rank. ``late``: the rank
    that starts late; ``rows`` overrides the input's row count (a bad call); ``device_sizes``: sizes
    go as an int32 tensor on the device; ``gather``: an all_gatherv of each rank's first sizes[rank]
    rows (truth: their concatenation, abs_sum None: ``_check_right`` then wants it exactly) instead
    of a reduce_scatterv (``packed``: in packed flagged words); ``epilogue``: the call fuses hc_post
    (``out`` is then its output, not checked against the sum). With ``faults``, a flagged error
    (raised at once on CPU) is returned as a 4th item instead of raised."""
    total = sum(sizes) if rows is None else rows
    parts = partials(seed, ctx.world, total, (width,), dtype)
    n, off = sizes[ctx.rank], sum(sizes[: ctx.rank])
    if gather:
        parts = [p[: sizes[q] if rows is None else rows] for q, p in enumerate(parts)]
        n = sum(sizes)
    out = torch.full((n, width), POISON, dtype=dtype, device=ctx.device)
    if late == ctx.rank:
        _late(ctx, delay)
    error = None
    try:
        sizes_arg = torch.tensor(sizes, dtype=torch.int32, device=ctx.device) if device_sizes else sizes
        if gather:
            with api.overrides(PACKED_MIN_BYTES=0 if packed else None):
                rsv.all_gatherv(parts[ctx.rank].to(ctx.device), out, sizes=sizes_arg, group=group)
        elif epilogue:
            ep, _ = epilogue_inputs("hc_post", seed, n, width, 4, dtype, ctx.device, with_f=False)
            out = ep.out
            rsv.reduce_scatterv(parts[ctx.rank].to(ctx.device), sizes=sizes_arg, group=group, epilogue=ep)
        else:
            rsv.reduce_scatterv(parts[ctx.rank].to(ctx.device), out, sizes=sizes_arg, group=group)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
            rsv.workspace(group, ctx.device).check()
    except RuntimeError as e:
        if not faults:
            raise
        error = str(e)
    if gather:
        truth = torch.cat(parts).double() if rows is None else None
        truth, abs_sum = truth, None if truth is None else torch.zeros_like(truth)
    else:
        truth, abs_sum = exact_sum(parts, off, n) if rows is None else (None, None)
    return (out, truth, abs_sum, error) if faults else (out, truth, abs_sum)


def _mode_call(ctx, group, mode, seed, **kw):
    """``_call`` with ``mode``'s row counts (rank r takes ROWS_BY_MODE[mode][(r + shift) % 2])."""
    shift = kw.pop("shift", 0)
    rows = {**ROWS_BY_MODE, **ZERO_ROW_CALLS}[mode]
    sizes = [rows[(r + shift) % 2] for r in range(ctx.world)]
    return _call(ctx, group, sizes, seed, gather=mode.startswith("gather"), packed="packed" in mode, **kw)


def _check_right(ctx, what, out, truth, abs_sum, dtype=torch.bfloat16):
    """Within one rounding of the float64 sum; a gather's result (``abs_sum`` None) exactly."""
    if abs_sum is None:
        if not torch.equal(out.double().cpu(), truth):
            raise AssertionError(f"{what}: not the concatenation of every rank's rows")
        return
    assert_close(what, out, truth, tolerance(dtype, truth, abs_sum, ctx.world))


def wrap_case(ctx, *, start_epoch: int, calls: int, late_rank: int, seed: int):
    """Calls of every mode (flagged words, plain push, pull; the gather's flagged words and pull) in
    turn across ``start_epoch`` + a few, one rank late on every other call: all right, and the epoch
    counted on (modulo 2^64). Also calls where a rank has no rows."""
    group, ws = _group(ctx, start_epoch=start_epoch, timeout_s=60)
    try:
        modes = list(ROWS_BY_MODE) + list(ZERO_ROW_CALLS)
        for i in range(calls):
            mode = modes[i % len(modes)]
            out, truth, abs_sum = _mode_call(ctx, group, mode, seed * 100 + i, shift=i,
                                             late=late_rank if i % 2 else None)
            _check_right(ctx, f"call {i} ({mode}) from epoch {start_epoch}", out, truth, abs_sum)
        ws.check()
        want = (start_epoch + calls) % 2**64
        assert ws.epoch == want, f"epoch {ws.epoch}, expected {want}"
    finally:
        _close(ctx, group)


def stale_flag_case(ctx, *, seed: int):
    """Regression (finding 2; failed on main before flagged words got slots of their own): plain
    push data whose 8-byte words look like the flagged words of the next same-parity call, then
    that flagged call with a late rank. The flag is written in the current and the old encoding."""
    group, ws = _group(ctx, timeout_s=60)
    try:
        e = ws.epoch
        sizes = ROWS_BY_MODE["push"][: ctx.world] + [3] * (ctx.world - 2)
        for new_encoding in (True, False):
            flag = (((e + 3) & 0x7FFFFFFF) | 0x80000000) if new_encoding else (e + 3) & 0xFFFFFFFF  # call e+2's
            words = torch.full((sum(sizes), H // 2), flag, dtype=torch.int64)
            crafted = (words & 0xFFFFFFFF).to(torch.int32).view(torch.bfloat16).reshape(sum(sizes), H)
            rsv.reduce_scatterv(crafted.to(ctx.device), None, sizes=sizes, group=group)  # call e: push
            out, truth, abs_sum = _call(ctx, group, [1] * ctx.world, seed)  # e + 1: flagged, other parity
            _check_right(ctx, "flagged call after crafted push data", out, truth, abs_sum)
            for late in range(ctx.world):  # e + 2: flagged, the parity the push wrote; one rank late
                out, truth, abs_sum = _call(ctx, group, [1] * ctx.world, seed + 1 + late, late=late)
                _check_right(ctx, f"flagged call two calls after crafted push data, rank {late} late", out, truth,
                             abs_sum)
                rsv.reduce_scatterv(crafted.to(ctx.device), None, sizes=sizes, group=group)  # push again
            e = ws.epoch
        ws.check()
    finally:
        _close(ctx, group)


def reset_case(ctx, *, seed: int, calls: int):
    """Regression (finding 3; failed on main, whose reset zeroed the epochs but not the slots):
    flagged-word calls, reset(), then flagged calls again with a late rank: all right, and the epoch
    moved forward, never back."""
    group, ws = _group(ctx, timeout_s=60)
    try:
        for i in range(4):
            out, truth, abs_sum = _call(ctx, group, [2] * ctx.world, seed + i)
        before = ws.epoch
        ws.reset()
        after = ws.epoch
        assert after > before, f"reset moved the epoch from {before} to {after}"
        for i in range(calls):
            out, truth, abs_sum = _call(ctx, group, [2] * ctx.world, seed + 10 + i, late=i % ctx.world)
            _check_right(ctx, f"call {i} after reset", out, truth, abs_sum)
        ws.check()
    finally:
        _close(ctx, group)


def dead_peer_case(ctx, *, absent_rank: int, mode: str, timeout_s: float, calls_after: int, seed: int):
    """One rank skips a call. The others' outputs are NaN and every rank's check() raises (the
    absent rank's too: the others report the fault to it); the next call of every rank is NaN too
    (the failed state is sticky); reset() recovers and the next ``calls_after`` calls are right.
    Returns each phase's error text for the parent to inspect."""
    group, ws = _group(ctx, timeout_s=timeout_s)
    ws.reserve(max_input_bytes=1 << 16)  # no growth inside the calls: the absent rank meets the kernel's waits
    got = {}
    try:
        if ctx.rank != absent_rank:
            t0 = time.perf_counter()
            out, _, _, got["call"] = _mode_call(ctx, group, mode, seed, faults=True)
            got["waited_s"] = time.perf_counter() - t0
            got["nan"] = bool(torch.isnan(out.float()).all()) if out.numel() else True
        dist.barrier(group=group)  # the callers' kernels have ended (CPU: returned; CUDA: synchronised)
        got["check"] = _check_text(ws)
        out, _, _, got["sticky_call"] = _mode_call(ctx, group, mode, seed + 1, faults=True)
        got["sticky_nan"] = bool(torch.isnan(out.float()).all()) if out.numel() else True
        got["sticky_check"] = _check_text(ws)
        ws.reset()
        for i in range(calls_after):
            out, truth, abs_sum = (_mode_call(ctx, group, mode, seed + 2 + i) if i % 2
                                   else _call(ctx, group, [2] * ctx.world, seed + 2 + i))
            _check_right(ctx, f"call {i} after reset", out, truth, abs_sum)
        ws.check()
        return got
    finally:
        _close(ctx, group)


def _check_text(ws) -> str | None:
    try:
        ws.check()
    except RuntimeError as e:
        return str(e)
    return None


def disagree_case(ctx, *, kind: str, timeout_s: float, seed: int):
    """Ranks make different calls (``kind``); every rank must get an error, no rank a silent
    result or a wait past the timeout. Returns (seconds, what this rank saw, output all NaN?)."""
    group, ws = _group(ctx, timeout_s=timeout_s)
    W, r = ctx.world, ctx.rank
    sizes, rows, width, dtype, off = [2, 3] + [1] * (W - 2), None, H, torch.bfloat16, {}
    if kind in ("swapped_sizes", "swapped_device_sizes") and r == 1:
        sizes = [3, 2] + [1] * (W - 2)
    elif kind in ("permuted_sizes", "permuted_device_sizes") and r == 1:
        # [2, 3, 1] -> [3, 1, 2]: same total and the same sum of sizes weighted 1, 3, 5 (a digest that
        # folded sizes linearly passed these as agreement)
        sizes = [3, 1, 2] + [1] * (W - 3)
    elif kind == "other_sizes" and r == 1:
        sizes = [2, 2] + [1] * (W - 2)
    elif kind == "other_rows" and r == 1:
        rows = sum(sizes) + 1
    elif kind == "other_width" and r == 1:
        width = H + 8
    elif kind == "other_dtype" and r == 1:
        dtype = torch.float32
    elif kind == "other_collective":
        # flagged words both: a reduce_scatterv against an all_gatherv at the same epoch writes the
        # same flag into the same slots; the mode codes in the digests tell them apart
        sizes = [1, 2] + [1] * (W - 2)
    elif kind == "other_mode" and r == 1:
        # [2, 3] rows of 32 B are a plain push (96 B per destination, past ll_bytes): this rank pulls
        off = dict(MODES_OFF=frozenset({"push"}))
    elif kind == "other_packing":
        # a gather in flagged words on every rank, packed on rank 1 only: the words of one format
        # never complete the other's wait, so only the differing digest can end it before the timeout
        sizes = [1, 2] + [1] * (W - 2)
    got, nan = [], None
    epilogue = kind == "other_epilogue" and r == 1  # hc_post fused on this rank only: the same mode (push)
    t0 = time.perf_counter()
    try:
        with api.overrides(**off):
            out, _, _, error = _call(ctx, group, sizes, seed, dtype=dtype, rows=rows, width=width, faults=True,
                                     device_sizes=kind.endswith("device_sizes"), epilogue=epilogue,
                                     gather=(kind == "other_collective" and r == 1) or kind == "other_packing",
                                     packed=kind == "other_packing" and r == 1)
        nan = bool(torch.isnan(out.float()).all()) if out.numel() else True
        if error:
            got.append(error)
    except ValueError as e:
        got.append(f"{type(e).__name__}: {e}")
    seconds = time.perf_counter() - t0
    dist.barrier(group=group)
    text = _check_text(ws)
    if text:
        got.append(text)
    try:
        ws.reset()
        out, truth, abs_sum = _call(ctx, group, [2, 3] + [1] * (W - 2), seed + 1)
        _check_right(ctx, "call after reset", out, truth, abs_sum)
        ws.check()
    finally:
        _close(ctx, group)
    return seconds, got, nan


def fingerprint_case(ctx, *, setting: str):
    """Ranks that create a workspace with different settings all raise, naming the setting."""
    group = ctx.new_group()
    value = {"ll_bytes": 64 * (1 + ctx.rank), "timeout_s": 5.0 + ctx.rank, "start_epoch": ctx.rank}[setting]
    try:
        rsv.workspace(group, ctx.device, **{setting: value})
    except ValueError as e:
        return str(e)
    finally:
        rsv.release(group)
        dist.destroy_process_group(group)
    return None


def keywords_case(ctx):
    """start_epoch is kept and reported; a creation keyword given again with another value raises."""
    group, ws = _group(ctx, start_epoch=2**32 - 1, timeout_s=30)
    try:
        assert ws.epoch == 2**32 - 1
        assert rsv.workspace(group, ctx.device, start_epoch=2**32 - 1) is ws  # same value: fine
        for kw, value in (("start_epoch", 0), ("timeout_s", 31), ("ll_bytes", 0), ("push_bytes", 1)):
            try:
                rsv.workspace(group, ctx.device, **{kw: value})
            except ValueError as e:
                assert kw in str(e), e
            else:
                raise AssertionError(f"{kw}={value} given again was accepted")
        out, truth, abs_sum = _call(ctx, group, [2] * ctx.world, 1)
        _check_right(ctx, "first call", out, truth, abs_sum)
        assert ws.epoch == 2**32
        ws.reserve(max_input_bytes=1 << 16)  # growth keeps the epoch
        assert ws.epoch == 2**32
    finally:
        _close(ctx, group)


def burst_case(ctx, *, calls: int, replays: int, seed: int):
    """Eager: ``calls`` back-to-back calls cycling the modes of both collectives, a random rank late before many of them
    (the same draw on every rank). CUDA: then a graph of one call per mode with device sizes, where
    a random rank sleeps before each call inside the graph, replayed ``replays`` times with new
    sizes and inputs. Every result checked against the float64 sum."""
    group, ws = _group(ctx, timeout_s=60)
    rng = torch.Generator().manual_seed(seed)
    try:
        modes = list(ROWS_BY_MODE)
        for i in range(calls):
            late = int(torch.randint(0, 2 * ctx.world, (1,), generator=rng))  # >= world: nobody late
            out, truth, abs_sum = _mode_call(ctx, group, modes[i % len(modes)], seed * 1000 + i, shift=i, late=late,
                                             delay=0.002)
            _check_right(ctx, f"burst call {i} ({modes[i % len(modes)]})", out, truth, abs_sum)
        if ctx.device.type == "cuda":
            _graph_burst(ctx, group, ws, replays, rng, seed)
        ws.check()
    finally:
        _close(ctx, group)


def _graph_burst(ctx, group, ws, replays, rng, seed):
    W, dev = ctx.world, ctx.device
    caps = {m: max(ROWS_BY_MODE[m]) for m in ("ll", "push", "large")}  # the reduce_scatterv modes
    bufs = {m: (torch.empty(W * caps[m], H, dtype=torch.bfloat16, device=dev),
                torch.empty(caps[m], H, dtype=torch.bfloat16, device=dev),
                torch.zeros(W, dtype=torch.int32, device=dev)) for m in caps}
    late = int(torch.randint(0, W, (1,), generator=rng))
    for m, (inp, out, sz) in bufs.items():  # warm up (compile) outside the graph
        sz.fill_(1)
        rsv.reduce_scatterv(inp, out, sizes=sz, group=group)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for m, (inp, out, sz) in bufs.items():
            if ctx.rank == late:
                torch.cuda._sleep(2_000_000)
            rsv.reduce_scatterv(inp, out, sizes=sz, group=group)
    for rep in range(replays):
        want = {}
        for m, (inp, out, sz) in bufs.items():
            sizes = [int(torch.randint(0, caps[m] + 1, (1,), generator=rng)) for _ in range(W)]
            parts = partials(seed * 7919 + rep, W, sum(sizes), (H,), torch.bfloat16)
            inp[: sum(sizes)].copy_(parts[ctx.rank].to(dev))
            sz.copy_(torch.tensor(sizes, dtype=torch.int32))
            out.fill_(POISON)
            want[m] = (sizes, exact_sum(parts, sum(sizes[: ctx.rank]), sizes[ctx.rank]))
        graph.replay()
        torch.cuda.synchronize()
        for m, (inp, out, sz) in bufs.items():
            sizes, (truth, abs_sum) = want[m]
            _check_right(ctx, f"replay {rep} {m} {sizes}", out[: sizes[ctx.rank]], truth, abs_sum)
    del graph


def two_streams_case(ctx, *, calls: int, seed: int):
    """CUDA: calls of one group alternate between the current stream and a side stream, the caller
    ordering nothing between them, and a random rank's GPU is busy before many calls
    (``torch.cuda._sleep``), so calls are issued while the previous one still runs. The library makes
    each call wait for the previous one (a call on another stream waits on its event): every result
    right, checked after one synchronisation at the end."""
    group, ws = _group(ctx, timeout_s=60)
    rng = torch.Generator().manual_seed(seed)
    streams = [torch.cuda.current_stream(ctx.device), torch.cuda.Stream(ctx.device)]
    modes, pending = list(ROWS_BY_MODE), []
    try:
        for i in range(calls):
            rows = ROWS_BY_MODE[modes[i % 3]]
            sizes = [rows[(r + i) % 2] for r in range(ctx.world)]
            parts = partials(seed * 1000 + i, ctx.world, sum(sizes), (H,), torch.bfloat16)
            late = int(torch.randint(0, 2 * ctx.world, (1,), generator=rng))  # >= world: nobody late
            with torch.cuda.stream(streams[i % 2]):  # the input and output are made on the call's stream
                inp = parts[ctx.rank].to(ctx.device)
                out = torch.full((sizes[ctx.rank], H), POISON, dtype=torch.bfloat16, device=ctx.device)
                if late == ctx.rank:
                    torch.cuda._sleep(1_000_000)
                rsv.reduce_scatterv(inp, out, sizes=sizes, group=group)
            pending.append((i, out, exact_sum(parts, sum(sizes[: ctx.rank]), sizes[ctx.rank])))
        torch.cuda.synchronize()
        for i, out, (truth, abs_sum) in pending:
            _check_right(ctx, f"call {i} on stream {i % 2}", out, truth, abs_sum)
        ws.check()
    finally:
        _close(ctx, group)
