"""Test cases that run on every rank of a RankPool (CPU/gloo or GPU/NCCL alike).

Each function takes the rank's context and plain keyword arguments drawn by the parent, builds
every rank's partial sums from the same seed (so each rank can also form the float64 truth),
runs ``rsv.reduce_scatterv``, and checks it against the reference collective (gloo or NCCL,
on float32 copies: ``reference_reduce_scatter``) and against the float64 sum, elementwise,
within one rounding of the dtype.
"""

from __future__ import annotations


import torch
import torch.distributed as dist

import reduce_scatterv as rsv
from reduce_scatterv import api

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
MANTISSA_BITS = {torch.bfloat16: 7, torch.float16: 10, torch.float32: 23}
POISON = float("nan")


def raised(call) -> tuple[str, str] | None:
    """(exception type, message) of what ``call()`` raised, or None: bad-input cases return it so the
    test (in the pytest process) can inspect what every rank saw."""
    try:
        call()
    except Exception as e:  # noqa: BLE001 - the test inspects what was raised
        return type(e).__name__, str(e)
    return None


def partials(seed: int, world: int, rows: int, rest: tuple, dtype: torch.dtype) -> list[torch.Tensor]:
    """Every rank's partial sums (CPU): random, never zero, magnitudes spread over a few octaves."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(world):
        x = torch.randn((rows, *rest), generator=g) * torch.exp2(torch.randint(-2, 3, (rows, *[1] * len(rest)),
                                                                              generator=g).float())
        out.append(x.to(dtype))
    return out


def reference_reduce_scatter(mine: torch.Tensor, sizes, group=None) -> torch.Tensor:
    """This rank's rows of the reference collective's sum of every rank's ``mine`` ([sum(sizes), ...]),
    reduced in ``mine``'s dtype, on ``mine``'s device: NCCL's reduce_scatter where the group is NCCL's;
    gloo's all-reduce of CPU copies where it is gloo's (CPU emulation, and ranks that share one GPU:
    ``tests/gpus.py``), this rank's rows of it."""
    rank = dist.get_rank(group)
    if dist.get_backend(group) == "nccl":
        out = torch.empty((sizes[rank], *mine.shape[1:]), dtype=mine.dtype, device=mine.device)
        dist.reduce_scatter(out, list(mine.split(list(sizes))), group=group)
        return out
    total = mine[: sum(sizes)].cpu().clone()
    dist.all_reduce(total, group=group)
    off = sum(sizes[:rank])
    return total[off: off + sizes[rank]].to(mine.device)


def exact_sum(parts: list[torch.Tensor], off: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(float64 sum over ranks, float64 sum of magnitudes) of rows [off, off + n) of the partials:
    the truth a rank's result is checked against, formed from its rows only."""
    rows = [p[off:off + n].double() for p in parts]
    return torch.stack(rows).sum(0), torch.stack([r.abs() for r in rows]).sum(0)


def tolerance(dtype: torch.dtype, truth: torch.Tensor, abs_sum: torch.Tensor, world: int, slack: int = 1,
              hops: int = 0):
    """One spacing of ``dtype`` at the true value (covers round-to-nearest on the GPU and the
    interpreter's truncation) plus the float32 accumulation error of ``world`` terms; plus, for a
    chain that rounds its running sum to ``dtype`` ``hops`` times (NCCL's grouped reduce), one
    spacing of the partial sums per hop."""
    rel = 2.0 ** -MANTISSA_BITS[dtype]
    tiny = 2.0 ** -24 if dtype == torch.float16 else 1e-30
    return rel * truth.abs() + (slack * world * 2.0 ** -23 + hops * rel) * abs_sum + tiny


def assert_close(name: str, got: torch.Tensor, want: torch.Tensor, tol: torch.Tensor) -> float:
    """Elementwise |got - want| <= tol; returns the worst ratio err/tol."""
    got64 = got.double().cpu()
    if torch.isnan(got64).any():
        bad = torch.isnan(got64).nonzero()[:5].tolist()
        raise AssertionError(f"{name}: {int(torch.isnan(got64).sum())} elements left unwritten (poison) at {bad}")
    err = (got64 - want).abs()
    ratio = (err / tol).max().item() if err.numel() else 0.0
    if ratio > 1.0:
        at = (err / tol).argmax().item()
        raise AssertionError(f"{name}: error {err.flatten()[at].item():.3g} > tolerance {tol.flatten()[at].item():.3g} "
                             f"(got {got64.flatten()[at].item()!r}, want {want.flatten()[at].item()!r})")
    return ratio


def _input_tensor(ctx, ws, mine: torch.Tensor, capacity: int, resident: bool, noncontig: bool, seed: int):
    """This rank's input_: in the workspace arena or not, contiguous or not, with spare rows
    (filled with junk that must not leak into the result) when ``capacity`` exceeds the rows."""
    rows, rest = mine.shape[0], tuple(mine.shape[1:])
    junk = torch.randn((capacity - rows, *rest), generator=torch.Generator().manual_seed(seed + 7)).to(mine.dtype)
    full = torch.cat([mine, junk]).to(ctx.device)
    if resident:
        t = ws.empty(capacity, *rest, dtype=mine.dtype)
        t.copy_(full)
        return t
    if noncontig:
        t = torch.empty((capacity, *rest, 2), dtype=mine.dtype, device=ctx.device)[..., 1]
        t.copy_(full)
        return t
    return full


def reduce_scatterv_case(ctx, *, sizes, rest=(16,), dtype="bfloat16", seed=0, with_output=True, resident=False,
                         device_sizes=False, spare_rows=0, noncontig=False, group="world", repeat=1,
                         int32_sizes=False, chaos_seed=0):
    """One call (``repeat`` times, fresh inputs each) checked on this rank. ``chaos_seed``: stall
    random programs of random ranks at signal, wait and tile boundaries (schedule fuzzing)."""
    dtype_t = DTYPES[dtype]
    rest = tuple(rest)
    grp = ctx.groups[group]
    ws = rsv.workspace(grp, ctx.device)
    total, n = sum(sizes), sizes[ctx.rank]
    off = sum(sizes[: ctx.rank])
    worst = 0.0
    for i in range(repeat):
        parts = partials(seed * 1000 + i, ctx.world, total, rest, dtype_t)
        truth, abs_sum = exact_sum(parts, off, n)
        capacity = total + (spare_rows if device_sizes else 0)
        inp = _input_tensor(ctx, ws, parts[ctx.rank], capacity, resident, noncontig, seed * 1000 + i)
        before = inp.clone()
        out = None
        if with_output or device_sizes:
            out = torch.full((n + (spare_rows if device_sizes else 0), *rest), POISON, dtype=dtype_t, device=ctx.device)
        sizes_arg = sizes
        if device_sizes:
            sizes_arg = torch.tensor(sizes, dtype=torch.int32 if int32_sizes else torch.int64, device=ctx.device)
        with api.overrides(CHAOS_SEED=chaos_seed * 1000 + i if chaos_seed else 0):
            result = rsv.reduce_scatterv(inp, out, sizes=sizes_arg, group=grp)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
            ws.check()
        if out is not None and result.data_ptr() != out.data_ptr():
            raise AssertionError("result is not the output tensor that was passed")
        if not torch.equal(inp, before):
            raise AssertionError("input_ was modified")
        if tuple(result.shape) != ((n + (spare_rows if device_sizes else 0)), *rest):
            raise AssertionError(f"result shape {tuple(result.shape)}")
        if device_sizes and spare_rows and not torch.isnan(result[n:].float()).all():
            raise AssertionError("rows past sizes[rank] were written")
        got = result[:n]
        # the kernels round once
        worst = max(worst, assert_close("vs float64 sum", got, truth, tolerance(dtype_t, truth, abs_sum, ctx.world)))
        # the reference collective on float32 copies: gloo on CPU, NCCL on GPU
        ref64 = reference_reduce_scatter(parts[ctx.rank].float().to(ctx.device), sizes, grp).double().cpu()
        worst = max(worst, assert_close("vs reference collective", got, ref64,
                                        tolerance(dtype_t, ref64, abs_sum, ctx.world, slack=2)))
    return worst


def bad_input_case(ctx, *, kind: str):
    """Call with a bad argument of ``kind``; return (exception type, message) or None if nothing was raised."""
    dev = ctx.device
    W, H = ctx.world, 8
    x = torch.randn(2 * W, H, device=dev).to(torch.bfloat16)
    sizes = [2] * W
    args = {
        "rows_mismatch": lambda: rsv.reduce_scatterv(x, sizes=[2] * (W - 1) + [3]),
        "negative_size": lambda: rsv.reduce_scatterv(x, sizes=[-1, 2 * W + 1] + [0] * (W - 2)),
        "too_many_sizes": lambda: rsv.reduce_scatterv(x, sizes=sizes + [0]),
        "too_few_sizes": lambda: rsv.reduce_scatterv(x[:2 * (W - 1)] if W > 1 else x[:0], sizes=[2] * (W - 1)),
        "float_sizes": lambda: rsv.reduce_scatterv(x, sizes=[2.0] * W),
        "dtype_float64": lambda: rsv.reduce_scatterv(x.double(), sizes=sizes),
        "dtype_int32": lambda: rsv.reduce_scatterv(x.to(torch.int32), sizes=sizes),
        "output_rows": lambda: rsv.reduce_scatterv(x, torch.empty(3, H, dtype=x.dtype, device=dev), sizes=sizes),
        "output_width": lambda: rsv.reduce_scatterv(x, torch.empty(2, H + 1, dtype=x.dtype, device=dev), sizes=sizes),
        "output_dtype": lambda: rsv.reduce_scatterv(x, torch.empty(2, H, device=dev), sizes=sizes),
        "output_device": lambda: rsv.reduce_scatterv(x, torch.empty(2, H, dtype=x.dtype, device="meta"), sizes=sizes),
        "sizes_tensor_dtype": lambda: rsv.reduce_scatterv(x, torch.empty(2, H, dtype=x.dtype, device=dev),
                                                              sizes=torch.full((W,), 2.0, device=dev)),
        "sizes_tensor_length": lambda: rsv.reduce_scatterv(x, torch.empty(2, H, dtype=x.dtype, device=dev),
                                                               sizes=torch.full((W + 1,), 2, device=dev)),
        "sizes_tensor_device": lambda: rsv.reduce_scatterv(x, torch.empty(2, H, dtype=x.dtype, device=dev),
                                                               sizes=torch.full((W,), 2, device="meta")),
        "device_sizes_no_output": lambda: rsv.reduce_scatterv(x, sizes=torch.full((W,), 2, device=dev)),
        "uneven_default_split": lambda: rsv.reduce_scatterv(x[: 2 * W - 1]),
        "zero_dim": lambda: rsv.reduce_scatterv(torch.tensor(1.0, device=dev)),
        "not_a_tensor": lambda: rsv.reduce_scatterv([1.0, 2.0], sizes=sizes),
        # caught on the device: flagged by the kernel, raised by Workspace.check (automatic on CPU)
        "device_sizes_exceed_input": lambda: _flagged(ctx, lambda: rsv.reduce_scatterv(
            x, torch.empty(2 * W, H, dtype=x.dtype, device=dev), sizes=torch.full((W,), 3, device=dev))),
        "device_sizes_negative": lambda: _flagged(ctx, lambda: rsv.reduce_scatterv(
            x, torch.empty(2 * W, H, dtype=x.dtype, device=dev),
            sizes=torch.tensor([-1] + [1] * (W - 1), device=dev))),
        "device_size_exceeds_output": lambda: _flagged(ctx, lambda: rsv.reduce_scatterv(
            x, torch.empty(1, H, dtype=x.dtype, device=dev), sizes=torch.full((W,), 2, device=dev))),
    }[kind]
    try:
        args()
    except Exception as e:  # noqa: BLE001 - the test inspects what was raised
        return type(e).__name__, str(e)
    return None


def short_output_case(ctx, *, sizes: list, short_rank: int, group: str = "world", seed: int = 0):
    """Device ``sizes``; ``short_rank``'s output holds one row fewer than its count. That rank must get
    the capacity error and no write past its output (the row after it keeps its poison); every other
    rank must get its rows right, with no hang. Returns the error message (None where nothing raised)."""
    grp = ctx.groups[group]
    parts = partials(seed, ctx.world, sum(sizes), (16,), torch.bfloat16)
    n, off = sizes[ctx.rank], sum(sizes[: ctx.rank])
    buf = torch.full((n, 16), POISON, dtype=torch.bfloat16, device=ctx.device)
    out = buf[: n - 1] if ctx.rank == short_rank else buf
    got = None
    try:
        _flagged(ctx, lambda: rsv.reduce_scatterv(parts[ctx.rank].to(ctx.device), out,
                                                      sizes=torch.tensor(sizes, device=ctx.device), group=grp),
                 group)
    except RuntimeError as e:
        got = str(e)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    if ctx.rank == short_rank:
        if not torch.isnan(buf[n - 1:].float()).all():
            raise AssertionError("the row past the short output was written")
        return got
    truth, abs_sum = exact_sum(parts, off, n)
    assert_close("vs float64 sum", buf, truth, tolerance(torch.bfloat16, truth, abs_sum, ctx.world))
    return got


def _flagged(ctx, call, group: str = "world"):
    out = call()
    if ctx.device.type == "cuda":
        rsv.workspace(ctx.groups[group], ctx.device).check()
    return out


def graph_case(ctx, *, per_rank_capacity: int, hidden: int, dtype: str, size_sets: list, resident: bool, seed: int):
    """Capture one call with device sizes in a CUDA graph, then replay it with new sizes and new
    inputs written into the captured buffers: each replay must match NCCL and the float64 sum."""
    dtype_t = DTYPES[dtype]
    W, dev = ctx.world, ctx.device
    ws = rsv.workspace(device=dev)
    capacity = W * per_rank_capacity
    ws.reserve(max_input_bytes=capacity * hidden * 4, arena_bytes=capacity * hidden * 4)
    inp = ws.empty(capacity, hidden, dtype=dtype_t) if resident else torch.empty(capacity, hidden, dtype=dtype_t,
                                                                                  device=dev)
    inp.normal_()
    out = torch.empty(per_rank_capacity, hidden, dtype=dtype_t, device=dev)
    sizes_dev = torch.full((W,), 1, dtype=torch.int32, device=dev)
    rsv.reduce_scatterv(inp, out, sizes=sizes_dev)  # compile and warm up outside the graph
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        rsv.reduce_scatterv(inp, out, sizes=sizes_dev)
    return replay_with_new_sizes(ctx, graph, ws, inp, out, sizes_dev, size_sets, seed, against_nccl=True)


def replay_with_new_sizes(ctx, graph, ws, inp, out, sizes_dev, size_sets: list, seed: int,
                          against_nccl: bool) -> float:
    """Replay ``graph`` (one captured call reading ``inp`` and ``sizes_dev``, writing ``out``) once
    per entry of ``size_sets``, with fresh inputs and a poisoned output each time; check the rows
    against the float64 sum (and NCCL's reduce_scatter when ``against_nccl``) and that no row past
    sizes[rank] was written. Returns the worst relative error."""
    W, rank, dev = ctx.world, ctx.rank, ctx.device
    hidden, dtype_t = inp.shape[1], inp.dtype
    worst = 0.0
    for i, sizes in enumerate(size_sets):
        total, n, off = sum(sizes), sizes[rank], sum(sizes[:rank])
        parts = partials(seed * 100 + i, W, total, (hidden,), dtype_t)
        inp[:total].copy_(parts[rank].to(dev))
        sizes_dev.copy_(torch.tensor(sizes, dtype=torch.int32))
        out.fill_(POISON)
        graph.replay()
        torch.cuda.synchronize()
        ws.check()
        truth, abs_sum = exact_sum(parts, off, n)
        worst = max(worst, assert_close(f"replay {i} {sizes} vs float64", out[:n], truth,
                                        tolerance(dtype_t, truth, abs_sum, W)))
        if not torch.isnan(out[n:].float()).all():
            raise AssertionError(f"replay {i}: rows past sizes[rank] were written")
        if against_nccl:
            # NCCL in the input dtype: the real baseline
            ref64 = reference_reduce_scatter(parts[rank].to(dev), sizes).double().cpu()
            # NCCL reduces in the dtype, rounding each of its W-1 partial sums: allow that on top
            nccl_tol = (tolerance(dtype_t, ref64, abs_sum, W, slack=2)
                        + 2.0 ** -MANTISSA_BITS[dtype_t] * (W - 1) * abs_sum)
            worst = max(worst, assert_close(f"replay {i} {sizes} vs NCCL ({dtype_t})", out[:n], ref64, nccl_tol))
    return worst


def fallback_case(ctx, *, sizes: list[int], seed: int):
    """A group whose ranks cannot reach each other's memory (simulated): the call must warn once and
    still give the right sums, through the reference collective's grouped reduce."""
    import warnings

    from reduce_scatterv.workspace import Workspace

    reachable = Workspace._reachable
    Workspace._reachable = lambda self: False
    try:
        group = dist.new_group(list(range(ctx.world)), backend="nccl" if ctx.device.type == "cuda" else "gloo")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            parts = partials(seed, ctx.world, sum(sizes), (16,), torch.bfloat16)
            off, n = sum(sizes[: ctx.rank]), sizes[ctx.rank]
            got = rsv.reduce_scatterv(parts[ctx.rank].to(ctx.device), sizes=sizes, group=group)
            got2 = rsv.reduce_scatterv(parts[ctx.rank].to(ctx.device), sizes=sizes, group=group)
    finally:
        Workspace._reachable = reachable
    truth, abs_sum = exact_sum(parts, off, n)
    tol = tolerance(torch.bfloat16, truth, abs_sum, ctx.world) + 2.0 ** -7 * (ctx.world - 1) * abs_sum
    assert_close("fallback vs float64", got, truth, tol)
    assert torch.equal(got, got2)
    return [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def plan_case(ctx, *, size_sets: list, hidden: int, group: str = "world"):
    """The mode (and whether it relays) the planner picks for each host-size set, bf16 rows of
    ``hidden``; nothing is launched."""
    ws = rsv.workspace(ctx.groups[group], ctx.device)
    picked = []
    for sizes in size_sets:
        x = torch.empty(sum(sizes), hidden, dtype=torch.bfloat16, device=ctx.device)
        plan = api.plan_call(ws, api.check_call(x, None, sizes, ctx.world, ctx.rank), x)
        picked.append((plan.mode, bool(plan.variant is not None and plan.variant.relay)))
    return picked


def backend_case(ctx) -> str | None:
    """The symmetric-memory backend PyTorch reports for this rank's GPU once the default workspace
    exists (``KERNELS_SYMM_MEM_BACKEND`` chooses it)."""
    import torch.distributed._symmetric_memory as symm_mem

    ws = rsv.workspace(ctx.groups["world"], ctx.device)
    got = symm_mem.get_backend(ctx.device) if hasattr(symm_mem, "get_backend") else None
    return ws.backend, None if got is None else str(got)
