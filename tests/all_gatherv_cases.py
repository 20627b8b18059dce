"""all_gatherv scenarios that run on every rank of a RankPool (CPU/gloo or GPU/NCCL): the result
must equal the concatenation of every rank's rows bit for bit, and the reference collective's
all-gather of the same rows (gloo or NCCL, over rows padded to the largest rank's count)."""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

import reduce_scatterv as rsv
from reduce_scatterv import api
from reduce_scatterv.validation import check_call
from tests.cases import DTYPES, POISON, partials, raised


def gather_rows(seed: int, world: int, sizes: list, rest: tuple, dtype: torch.dtype) -> list[torch.Tensor]:
    """Every rank's rows (CPU, fresh per call, never zero): rank r's are the first sizes[r] rows of
    its partials."""
    parts = partials(seed, world, max(sizes + [1]), rest, dtype)
    return [parts[r][: sizes[r]] for r in range(world)]


def reference_gather(rows: torch.Tensor, sizes: list, group) -> torch.Tensor:
    """The reference collective's all-gather of this rank's ``rows`` (padded to the largest count,
    gathered, compacted), on the rows' device."""
    m, world = max(sizes + [1]), len(sizes)
    padded = torch.zeros((m, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
    padded[: rows.shape[0]].copy_(rows)
    got = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(got, padded, group=group)
    return torch.cat([got[r][: sizes[r]] for r in range(world)])


def gather_case(ctx, *, sizes: list, rest: tuple, dtype: str, seed: int, with_output: bool = True,
                resident: bool = False, device_sizes: bool = False, spare_rows: int = 0, group: str = "world",
                repeat: int = 1, chaos_seed: int = 0, packed: bool = False) -> None:
    """One all_gatherv call per repeat with fresh rows: the output equals the concatenation (exactly)
    and the reference collective's gather; with device sizes, rows past sum(sizes) keep their poison.
    ``chaos_seed``: stall random programs of random ranks (schedule fuzzing); ``packed``: flagged-word
    calls move packed words (``api.PACKED_MIN_BYTES`` 0)."""
    dtype_t = DTYPES[dtype]
    grp = ctx.groups[group]
    W, r, dev = ctx.world, ctx.rank, ctx.device
    for k in range(repeat):
        rows = gather_rows(seed + k, W, sizes, rest, dtype_t)
        want = torch.cat(rows)
        cap_in, cap_out = (max(sizes + [0]) + spare_rows, sum(sizes) + spare_rows) if device_sizes else (sizes[r], None)
        if resident:  # Workspace.empty is collective: every rank asks for the same shape, then slices
            inp = rsv.workspace(grp, dev).empty(max(sizes + [0]) + spare_rows, *rest, dtype=dtype_t)[:cap_in]
        else:
            inp = torch.empty((cap_in, *rest), dtype=dtype_t, device=dev)
        inp.fill_(POISON)
        inp[: sizes[r]].copy_(rows[r])
        out = None
        if with_output or device_sizes:
            out = torch.full((cap_out if device_sizes else sum(sizes), *rest), POISON, dtype=dtype_t, device=dev)
        arg = torch.tensor(sizes, dtype=torch.int32, device=dev) if device_sizes else list(sizes)
        with api.overrides(CHAOS_SEED=chaos_seed * 1000 + k if chaos_seed else 0,
                           PACKED_MIN_BYTES=0 if packed else None):
            got = rsv.all_gatherv(inp, out, sizes=arg, group=grp)
        if dev.type == "cuda":
            torch.cuda.synchronize()
            rsv.workspace(grp, dev).check()
        n = sum(sizes)
        if not torch.equal(got[:n].cpu(), want):
            bad = (got[:n].cpu() != want).nonzero()[:5].tolist()
            raise AssertionError(f"all_gatherv {sizes} call {k}: not the concatenation at {bad}")
        if device_sizes and not torch.isnan(got[n:].float()).all():
            raise AssertionError(f"all_gatherv {sizes}: rows past sum(sizes) were written")
        ref = reference_gather(rows[r].to(dev), sizes, grp)
        if not torch.equal(got[:n], ref):
            raise AssertionError(f"all_gatherv {sizes} call {k}: differs from the reference collective's gather")


BIT_DTYPES = {"int64": torch.int64, "int32": torch.int32, "int16": torch.int16, "uint8": torch.uint8,
              "bool": torch.bool, "float64": torch.float64, "float8_e4m3fn": torch.float8_e4m3fn}


def _random_bits(seed: int, rank: int, rows: int, rest: tuple, dtype: torch.dtype) -> torch.Tensor:
    """Rows of uniformly random bytes (every bit pattern: NaN and signalling-NaN words of the float
    words that carry them included), as ``dtype``; bool rows get 0/1 bytes, its only valid values."""
    g = torch.Generator().manual_seed(seed * 1000 + rank)
    nbytes = rows * math.prod(rest) * dtype.itemsize
    high = 2 if dtype == torch.bool else 256
    return torch.randint(0, high, (nbytes,), generator=g, dtype=torch.uint8).view(dtype).view(rows, *rest)


def gather_bits_case(ctx, *, sizes: list, rest: tuple, dtype: str, seed: int, with_output: bool = True,
                     device_sizes: bool = False, spare_rows: int = 0, group: str = "world", strided_output=False,
                     ranks_per_node: int | None = None):
    """all_gatherv of a dtype the kernels do not compute in (int64 token ids, uint8, float64...): the
    rows travel as words of the same bits and come back bit for bit, in the caller's dtype.
    ``ranks_per_node``: on a group split into nodes of that many ranks (the hierarchy)."""
    dtype_t = BIT_DTYPES[dtype]
    W, r, dev = ctx.world, ctx.rank, ctx.device
    if ranks_per_node is None:
        grp = ctx.groups[group]
    else:
        from tests.hierarchy_cases import hier_group

        grp = hier_group(ctx, ranks_per_node)
    rows = [_random_bits(seed, q, sizes[q], rest, dtype_t) for q in range(W)]
    want = torch.cat(rows)
    cap_in, cap_out = (max(sizes + [0]) + spare_rows, sum(sizes) + spare_rows) if device_sizes else (sizes[r], sum(sizes))
    inp = torch.zeros((cap_in, *rest), dtype=dtype_t, device=dev)
    inp[: sizes[r]].copy_(rows[r])
    out = None
    if with_output or device_sizes:
        poison = _random_bits(seed + 1, 99, cap_out * (2 if strided_output else 1), rest, dtype_t).to(dev)
        out = poison[::2] if strided_output else poison
        before = out.clone()
    arg = torch.tensor(sizes, dtype=torch.int32, device=dev) if device_sizes else list(sizes)
    got = rsv.all_gatherv(inp, out, sizes=arg, group=grp)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    rsv.workspace(grp, dev).check()
    n = sum(sizes)
    if got.dtype != dtype_t or tuple(got.shape[1:]) != tuple(rest):
        raise AssertionError(f"all_gatherv of {dtype}: result {got.dtype} {tuple(got.shape)}")
    if out is not None and got.data_ptr() != out.data_ptr():
        raise AssertionError("all_gatherv: the result is not the output passed in")
    if not torch.equal(got[:n].cpu().view(torch.uint8), want.view(torch.uint8)):
        raise AssertionError(f"all_gatherv of {dtype} {sizes}: not the concatenation, bit for bit")
    if device_sizes and not torch.equal(got[n:].cpu().view(torch.uint8), before[n:].cpu().view(torch.uint8)):
        raise AssertionError(f"all_gatherv of {dtype} {sizes}: rows past sum(sizes) were written")


def mixed_case(ctx, *, calls: int, seed: int) -> None:
    """Calls of all_gatherv and reduce_scatterv (every mode) back to back on one workspace, each
    checked: the two collectives share the epochs and the CALL words without confusing them."""
    from tests.cases import assert_close, exact_sum, tolerance

    W, r, dev = ctx.world, ctx.rank, ctx.device
    grp = ctx.groups["mixed"]  # flagged words up to 64 B per destination, plain push up to 512 B, then pull
    for i in range(calls):
        sizes = [(i * 5 + q * 3) % 7 * (1, 4, 30)[i % 3] for q in range(W)]
        if i % 2:
            gather_case(ctx, sizes=sizes, rest=(16,), dtype="bfloat16", seed=seed + i, group="mixed")
            continue
        parts = partials(seed + i, W, sum(sizes), (16,), torch.bfloat16)
        out = rsv.reduce_scatterv(parts[r].to(dev), sizes=sizes, group=grp)
        truth, abs_sum = exact_sum(parts, sum(sizes[:r]), sizes[r])
        assert_close(f"reduce_scatterv call {i} {sizes}", out.cpu(), truth, tolerance(torch.bfloat16, truth, abs_sum, W))


def gather_disagree_case(ctx, *, timeout_s: float, kind: str = "sizes") -> list:
    """Rank 1 passes other sizes with the same total (``kind="sizes"``), or rows of another dtype
    with the same bytes (``"dtype"``: int64 against float64, both copied as the same words): every
    rank must get an error (the digests differ), never a silent result. Returns what each rank saw."""
    group = ctx.new_group()
    ws = rsv.workspace(group, ctx.device, timeout_s=timeout_s)
    sizes = [2, 3] + [1] * (ctx.world - 2)
    dtype = torch.bfloat16 if kind == "sizes" else torch.int64
    if ctx.rank == 1:
        if kind == "sizes":
            sizes = [3, 2] + [1] * (ctx.world - 2)
        else:
            dtype = torch.float64
    seen = []
    try:
        x = torch.ones((sizes[ctx.rank], 8), dtype=dtype, device=ctx.device)
        try:
            rsv.all_gatherv(x, sizes=sizes, group=group)
            if ctx.device.type == "cuda":
                torch.cuda.synchronize()
            ws.check()
        except RuntimeError as e:
            seen.append(str(e))
    finally:
        rsv.release(group)
        dist.destroy_process_group(group)
    return seen


def bad_gather_input_case(ctx, *, kind: str):
    """A bad call on every rank: (exception type, message), or None if nothing was raised."""
    W, dev = ctx.world, ctx.device
    x = torch.ones((2, 8), dtype=torch.bfloat16, device=dev)
    call = {
        "rows_vs_sizes": lambda: rsv.all_gatherv(x, sizes=[3] * W),
        "negative": lambda: rsv.all_gatherv(x, sizes=[2, -1] + [2] * (W - 2)),
        "output_rows": lambda: rsv.all_gatherv(x, torch.empty((2 * W + 1, 8), dtype=x.dtype, device=dev),
                                                   sizes=[2] * W),
        # rows of a dtype copied as words: an odd byte count, an output of another dtype or row shape
        "odd_row_bytes": lambda: rsv.all_gatherv(torch.ones((2, 3), dtype=torch.uint8, device=dev), sizes=[2] * W),
        "output_dtype": lambda: rsv.all_gatherv(x.long(), torch.empty((2 * W, 8), dtype=torch.int32, device=dev),
                                                    sizes=[2] * W),
        "output_row_shape": lambda: rsv.all_gatherv(x.long(), torch.empty((2 * W, 2, 4), dtype=torch.int64,
                                                                          device=dev), sizes=[2] * W),
    }[kind]
    return raised(call)


def gather_graph_case(ctx, *, per_rank_capacity: int, hidden: int, size_sets: list, seed: int,
                      ranks_per_node: int | None = None) -> None:
    """CUDA: one all_gatherv call with device sizes captured in a graph, replayed with new sizes and
    rows written into the captured buffers; each replay equals the concatenation, rows past
    sum(sizes) untouched. ``ranks_per_node``: on a group split into nodes (the hierarchy; its input
    is an ordinary tensor, since the hierarchy copies it into its blocks anyway); otherwise the
    input lies in the workspace."""
    W, r, dev = ctx.world, ctx.rank, ctx.device
    if ranks_per_node is None:
        group = ctx.groups["world"]
        ws = rsv.workspace(group, dev)
        ws.reserve(max_input_bytes=per_rank_capacity * hidden * 2, arena_bytes=per_rank_capacity * hidden * 2)
        inp = ws.empty(per_rank_capacity, hidden, dtype=torch.bfloat16)
    else:
        from tests.hierarchy_cases import hier_group

        group = hier_group(ctx, ranks_per_node)
        ws = rsv.workspace(group, dev)
        inp = torch.zeros(per_rank_capacity, hidden, dtype=torch.bfloat16, device=dev)
    out = torch.empty((W * per_rank_capacity, hidden), dtype=torch.bfloat16, device=dev)
    sizes_dev = torch.ones(W, dtype=torch.int32, device=dev)
    rsv.all_gatherv(inp, out, sizes=sizes_dev, group=group)  # compile, plan and grow outside the graph
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        rsv.all_gatherv(inp, out, sizes=sizes_dev, group=group)
    for i, sizes in enumerate(size_sets):
        rows = gather_rows(seed + i, W, sizes, (hidden,), torch.bfloat16)
        inp[: sizes[r]].copy_(rows[r].to(dev))
        sizes_dev.copy_(torch.tensor(sizes, dtype=torch.int32))
        out.fill_(POISON)
        graph.replay()
        torch.cuda.synchronize()
        ws.check()
        n = sum(sizes)
        if not torch.equal(out[:n].cpu(), torch.cat(rows)):
            raise AssertionError(f"replay {i} {sizes}: not the concatenation")
        if not torch.isnan(out[n:].float()).all():
            raise AssertionError(f"replay {i} {sizes}: rows past sum(sizes) were written")


def gather_limit_case(ctx, *, sizes: list, seed: int) -> dict:
    """On the "gather_ll" group (flagged words up to 64 B per destination for the reduce-scatter, up to
    1 KiB per source for the gather): which gather kernel ran, and the mode the reduce-scatter of one
    such row per rank would take. The gather's result is checked as in ``gather_case``."""
    kern = api.kernel_module(ctx.device.type)
    ran = []
    saved = kern.gather_ll_launch, kern.gather_launch
    kern.gather_ll_launch = lambda *a, **k: (ran.append("gather_ll"), saved[0](*a, **k))
    kern.gather_launch = lambda *a, **k: (ran.append("gather"), saved[1](*a, **k))
    try:
        gather_case(ctx, sizes=sizes, rest=(40,), dtype="bfloat16", seed=seed, group="gather_ll")
    finally:
        kern.gather_ll_launch, kern.gather_launch = saved
    grp = ctx.groups["gather_ll"]
    ws = rsv.workspace(grp, ctx.device)
    inp = torch.randn((ctx.world, 40), device=ctx.device).to(torch.bfloat16)  # 80 B per destination
    call = check_call(inp, None, [1] * ctx.world, ctx.world, ctx.rank)
    return dict(gather=ran, reduce_scatterv=api.plan_call(ws, call, inp).mode)


def tune_arguments_case(ctx, *, group: str, hidden: int = 16, rows: int = 3) -> list:
    """``bench.tune``'s gather calls: for each gather mode, whether the group's workspace serves an
    even call of ``rows`` rows with it, and where it does, one launch of the kernel with the
    arguments the tuner times, checked against the reference collective's gather."""
    from reduce_scatterv import configs

    kern = api.kernel_module(ctx.device.type)  # fixes the Triton mode before bench.tune imports triton
    from bench.tune import gather_arguments

    grp = ctx.groups[group]
    ws = rsv.workspace(grp, ctx.device)
    served = []
    for mode in ("gather_ll", "gather"):
        found = gather_arguments(ws, mode, hidden, rows, torch.bfloat16)
        if found is None:
            continue
        fn, args, constexprs, max_rows, (inp, out) = found
        cfg = configs.CPU_DEFAULT
        grid = kern.grid_size(max_rows, hidden, cfg.block, cfg.programs_per_sm, cfg.tiles_per_program, 2)
        fn[(grid,)](*args, cfg.programs_per_sm, cfg.tiles_per_program, **constexprs, BLOCK=cfg.block,
                    num_warps=cfg.num_warps)
        ws.check()
        if not torch.equal(out, reference_gather(inp.clone(), [rows] * ctx.world, grp)):
            raise AssertionError(f"{mode}: the tuner's launch is not the gather")
        served.append(mode)
    return served

