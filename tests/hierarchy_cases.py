"""Multi-node ``reduce_scatterv`` scenarios (``kernels/hierarchy.py``) that run on every rank of a
RankPool: one host treated as nodes of ``ranks_per_node`` ranks (the workspace keyword), the node
step on the fused kernels, the hop on the group's backend (gloo in CPU emulation, NCCL on GPUs).
Results are checked against the float64 sum of fresh random inputs and against the reference
collective's flat reduce_scatter over the whole group, outputs poisoned first."""

from __future__ import annotations

import time

import torch
import torch.distributed as dist

import reduce_scatterv as rsv
from tests.all_gatherv_cases import gather_rows
from tests.cases import (DTYPES, MANTISSA_BITS, POISON, assert_close, exact_sum, partials, raised,
                         reference_reduce_scatter, tolerance)

_groups: dict = {}


def hier_group(ctx, ranks_per_node: int = 2, **keywords):
    """This process's group (all ranks) whose workspace splits it into nodes of ``ranks_per_node``;
    created collectively on first use per settings, then cached."""
    key = (ranks_per_node, tuple(sorted(keywords.items())))
    if key not in _groups:
        group = ctx.new_group()
        ws = rsv.workspace(group, ctx.device, ranks_per_node=ranks_per_node, **keywords)
        assert ws.hierarchy is not None, "the workspace did not split the group into nodes"
        _groups[key] = group
    return _groups[key]


def hier_tolerance(dtype, truth, abs_sum, world: int, nodes: int, hop_fp32: bool):
    """The design's roundings (``hierarchy.py``): the node partial rounded to the dtype on each of
    ``nodes`` nodes and the hop's adds in the dtype (default), or one rounding (``hop_fp32``)."""
    return tolerance(dtype, truth, abs_sum, world, slack=2, hops=0 if hop_fp32 else nodes)


def node_modes(ctx, *, sizes, hidden):
    """The mode the node step of a call with host ``sizes`` takes in the ``mixed`` group."""
    from reduce_scatterv import api
    from reduce_scatterv.validation import check_call

    group = hier_group(ctx, 2, ll_bytes=512, push_bytes=4096)
    h = rsv.workspace(group, ctx.device).hierarchy
    _, r = h.check_rows(hidden, False)
    node_sizes = [sum(sizes[m * h.G + g] + r for m in range(h.N)) for g in range(h.G)]
    x = torch.empty(sum(node_sizes), hidden, dtype=torch.bfloat16)
    return api.plan_call(h.node_ws, check_call(x, None, node_sizes, h.G, h.local), x).mode


def node_gather_mode(ctx, *, sizes, hidden):
    """The mode the node step of an all_gatherv with host ``sizes`` (bf16) takes in the ``mixed`` group:
    each local rank brings its rail's N blocks of the rail's largest count plus the check rows."""
    group = hier_group(ctx, 2, ll_bytes=512, push_bytes=4096)
    ws = rsv.workspace(group, ctx.device)
    h = ws.hierarchy
    _, r = h.check_rows(hidden, False)
    node_sizes = [h.N * (max(sizes[m * h.G + g] for m in range(h.N)) + r) for g in range(h.G)]
    return "gather_ll" if max(node_sizes) * hidden * 2 <= h.node_ws.layout.gather_ll_limit else "gather"


def hier_case(ctx, *, sizes, rest=(16,), dtype="bfloat16", seed=0, device_sizes=False, spare_rows=0,
              with_output=True, noncontig=False, repeat=1, ranks_per_node=2, hop_fp32=False, mixed=False):
    """One call per repeat (fresh inputs each), checked against the float64 sum and the reference
    collective's flat reduce_scatter; with device sizes, rows past sizes[rank] keep their poison.
    ``mixed``: node workspaces with small push limits (flagged words up to 512 B per destination,
    plain push up to 4 KiB, then the pull), so that small calls take every node mode."""
    keywords = dict(hop_fp32=True) if hop_fp32 else {}
    if mixed:
        keywords.update(ll_bytes=512, push_bytes=4096)
    group = hier_group(ctx, ranks_per_node, **keywords)
    ws = rsv.workspace(group, ctx.device)
    nodes = ctx.world // ranks_per_node
    dtype_t = DTYPES[dtype]
    rest = tuple(rest)
    total, n, off = sum(sizes), sizes[ctx.rank], sum(sizes[: ctx.rank])
    for i in range(repeat):
        parts = partials(seed * 1000 + i, ctx.world, total, rest, dtype_t)
        truth, abs_sum = exact_sum(parts, off, n)
        capacity = total + (spare_rows if device_sizes else 0)
        mine = torch.cat([parts[ctx.rank], torch.randn((capacity - total, *rest)).to(dtype_t)]).to(ctx.device)
        if noncontig:
            inp = torch.empty((capacity, *rest, 2), dtype=dtype_t, device=ctx.device)[..., 1]
            inp.copy_(mine)
        else:
            inp = mine
        before = inp.clone()
        cap_out = max(sizes) + spare_rows if device_sizes else n  # device sizes: one capacity on every rank
        out = torch.full((cap_out, *rest), POISON, dtype=dtype_t, device=ctx.device) if (with_output or device_sizes) \
            else None
        arg = torch.tensor(sizes, dtype=torch.int32, device=ctx.device) if device_sizes else sizes
        result = rsv.reduce_scatterv(inp, out, sizes=arg, group=group)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
        ws.check()
        if out is not None and result.data_ptr() != out.data_ptr():
            raise AssertionError("result is not the output tensor that was passed")
        if not torch.equal(inp, before):
            raise AssertionError("input_ was modified")
        if device_sizes and not torch.isnan(result[n:].float()).all():
            raise AssertionError("rows past sizes[rank] were written")
        got = result[:n]
        assert_close("vs float64 sum", got, truth, hier_tolerance(dtype_t, truth, abs_sum, ctx.world, nodes, hop_fp32))
        ref64 = reference_reduce_scatter(parts[ctx.rank].float().to(ctx.device), sizes, group).double().cpu()
        assert_close("vs the flat reference collective", got, ref64,
                     hier_tolerance(dtype_t, ref64, abs_sum, ctx.world, nodes, hop_fp32))


def hier_disagree_case(ctx, *, kind: str, timeout_s: float = 3.0, seed: int = 0):
    """Ranks make different calls whose NCCL (gloo) counts still match: every rank must get an error
    (NaN output, ``check()`` raises), none a silent result, none a wait past the timeout; after
    ``reset()`` the next call is right. Returns (seconds, what this rank saw, output all NaN?)."""
    W, r = ctx.world, ctx.rank
    group = ctx.new_group()
    ws = rsv.workspace(group, ctx.device, ranks_per_node=2, timeout_s=timeout_s)
    sizes, dev_sizes = [2, 3, 1, 1], False
    if kind == "same_rail_swap_on_one_rank" and r == 1:  # ranks 0 and 2 share rail 0: counts unchanged
        sizes = [1, 3, 2, 1]
    elif kind == "other_node_device_sizes":  # node 1 passes other device sizes (the hop moves capacities)
        dev_sizes = True
        if r >= 2:
            sizes = [3, 2, 1, 1]
    elif kind == "counts_differ" and r == 1:  # rail 1's counts differ: gloo / NCCL behaviour
        sizes = [3, 2, 1, 1]
    dtype = torch.float16 if (kind == "other_node_dtype" and r >= 2) else torch.bfloat16
    if kind == "device_sizes_everywhere":
        dev_sizes = True
    seen, nan = [], None
    t0 = time.perf_counter()
    parts = partials(seed, W, sum(sizes), (16,), dtype)
    try:
        cap = 4
        out = torch.full((cap if dev_sizes else sizes[r], 16), POISON, dtype=dtype, device=ctx.device)
        arg = torch.tensor(sizes, dtype=torch.int64, device=ctx.device) if dev_sizes else sizes
        try:
            rsv.reduce_scatterv(parts[r].to(ctx.device), out, sizes=arg, group=group)
            if ctx.device.type == "cuda":
                torch.cuda.synchronize()
            ws.check()
        except RuntimeError as e:
            seen.append(str(e))
        nan = bool(torch.isnan(out[: sizes[r]].float()).all())
        seconds = time.perf_counter() - t0
        dist.barrier(group=group)
        try:
            ws.check()
        except RuntimeError as e:
            seen.append(str(e))
        ws.reset()
        good = [2, 3, 1, 1]
        parts = partials(seed + 1, W, sum(good), (16,), torch.bfloat16)
        got = rsv.reduce_scatterv(parts[r].to(ctx.device), sizes=good, group=group)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
        ws.check()
        truth, abs_sum = exact_sum(parts, sum(good[:r]), good[r])
        assert_close("call after reset", got, truth, hier_tolerance(torch.bfloat16, truth, abs_sum, W, 2, False))
    finally:
        rsv.release(group)
        dist.destroy_process_group(group)
    return seconds, seen, nan


def hier_bad_input_case(ctx, *, kind: str):
    """Bad input on every rank of a multi-node group: (exception type, message) or None."""
    group = hier_group(ctx)
    W, dev = ctx.world, ctx.device
    x = torch.randn(2 * W, 8, device=dev).to(torch.bfloat16)
    call = {
        "rows_mismatch": lambda: rsv.reduce_scatterv(x, sizes=[2] * (W - 1) + [3], group=group),
        "negative_size": lambda: rsv.reduce_scatterv(x, sizes=[-1, 2 * W + 1] + [0] * (W - 2), group=group),
        "dtype_float64": lambda: rsv.reduce_scatterv(x.double(), sizes=[2] * W, group=group),
        "output_rows": lambda: rsv.reduce_scatterv(x, torch.empty(3, 8, dtype=x.dtype, device=dev), sizes=[2] * W,
                                                       group=group),
        "device_sizes_exceed_capacity": lambda: _checked(ctx, group, lambda: rsv.reduce_scatterv(
            x, torch.empty(2, 8, dtype=x.dtype, device=dev), sizes=torch.full((W,), 3, device=dev), group=group)),
        "device_sizes_negative": lambda: _checked(ctx, group, lambda: rsv.reduce_scatterv(
            x, torch.empty(2, 8, dtype=x.dtype, device=dev), sizes=torch.tensor([-1] + [1] * (W - 1), device=dev),
            group=group)),
    }[kind]
    return raised(call)


def _checked(ctx, group, call):
    out = call()
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
    rsv.workspace(group, ctx.device).check()
    return out


def _error_of(ctx, group, call) -> str | None:
    """What a checked call raised (the workspace's RuntimeError), or None."""
    try:
        _checked(ctx, group, call)
    except RuntimeError as e:
        return str(e)
    return None


def hier_keywords_case(ctx):
    """ranks_per_node is a creation keyword: given again with another value it raises naming it;
    ranks that pass different values all raise at creation, naming it and the ranks."""
    group = hier_group(ctx)
    seen = []
    try:
        rsv.workspace(group, ctx.device, ranks_per_node=1)
    except ValueError as e:
        seen.append(str(e))
    fresh = ctx.new_group()
    try:
        rsv.workspace(fresh, ctx.device, ranks_per_node=2 if ctx.rank else 1)
    except ValueError as e:
        seen.append(str(e))
    finally:
        rsv.release(fresh)
        dist.destroy_process_group(fresh)
    bad = ctx.new_group()
    try:
        rsv.workspace(bad, ctx.device, ranks_per_node=3)
    except ValueError as e:
        seen.append(str(e))
    finally:
        rsv.release(bad)
        dist.destroy_process_group(bad)
    return seen


def hier_graph_case(ctx, *, per_rank_capacity: int, hidden: int, size_sets: list, seed: int, hop_fp32=False,
                    ranks_per_node: int = 2):
    """CUDA: one multi-node call with device sizes captured in a graph, replayed with new sizes and
    inputs: each replay against NCCL's flat reduce_scatter and the float64 sum; rows past
    sizes[rank] untouched."""
    group = hier_group(ctx, ranks_per_node, **({"hop_fp32": True} if hop_fp32 else {}))
    ws = rsv.workspace(group, ctx.device)
    W, rank, dev = ctx.world, ctx.rank, ctx.device
    nodes = W // ws.hierarchy.G
    capacity = W * per_rank_capacity
    ws.reserve(max_input_bytes=capacity * hidden * 2)
    inp = torch.zeros(capacity, hidden, dtype=torch.bfloat16, device=dev)
    out = torch.empty(per_rank_capacity, hidden, dtype=torch.bfloat16, device=dev)
    sizes_dev = torch.ones(W, dtype=torch.int32, device=dev)
    rsv.reduce_scatterv(inp, out, sizes=sizes_dev, group=group)  # warm up outside the graph
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        rsv.reduce_scatterv(inp, out, sizes=sizes_dev, group=group)
    for i, sizes in enumerate(size_sets):
        total, n, off = sum(sizes), sizes[rank], sum(sizes[:rank])
        parts = partials(seed * 100 + i, W, total, (hidden,), torch.bfloat16)
        inp[:total].copy_(parts[rank].to(dev))
        sizes_dev.copy_(torch.tensor(sizes, dtype=torch.int32))
        out.fill_(POISON)
        graph.replay()
        torch.cuda.synchronize()
        ws.check()
        truth, abs_sum = exact_sum(parts, off, n)
        assert_close(f"replay {i} {sizes} vs float64", out[:n], truth,
                     hier_tolerance(torch.bfloat16, truth, abs_sum, W, nodes, hop_fp32))
        if not torch.isnan(out[n:].float()).all():
            raise AssertionError(f"replay {i}: rows past sizes[rank] were written")
        ref64 = reference_reduce_scatter(parts[rank].to(dev), sizes, group).double().cpu()
        nccl_tol = (hier_tolerance(torch.bfloat16, ref64, abs_sum, W, nodes, hop_fp32)
                    + 2.0 ** -MANTISSA_BITS[torch.bfloat16] * (W - 1) * abs_sum)
        assert_close(f"replay {i} {sizes} vs NCCL", out[:n], ref64, nccl_tol)
    del graph


def hier_fault_case(ctx, *, failed_node: int = 0, seed: int = 0):
    """The node step of one node fails (its workspaces put in the failed state, as a timeout there
    leaves them): every rank, on every node, gets NaN and an error from ``check()``, the next call
    too; after ``reset()`` on every rank the next calls are right."""
    from reduce_scatterv import layout as L

    W, r = ctx.world, ctx.rank
    group = ctx.new_group()
    ws = rsv.workspace(group, ctx.device, ranks_per_node=2, timeout_s=5.0)
    seen = {}
    try:
        sizes = [2, 1, 0, 3]
        if ws.hierarchy.node == failed_node:
            ws.hierarchy.node_ws._err_word().bitwise_or_(L.ERR_TIMEOUT)
        dist.barrier(group=group)
        for phase in ("call", "sticky"):
            parts = partials(seed, W, sum(sizes), (16,), torch.bfloat16)
            out = torch.full((sizes[r], 16), POISON, dtype=torch.bfloat16, device=ctx.device)
            seen[phase] = _error_of(ctx, group, lambda: rsv.reduce_scatterv(parts[r].to(ctx.device), out,
                                                                             sizes=sizes, group=group))
            seen[phase + "_nan"] = bool(torch.isnan(out.float()).all())
        ws.reset()
        for i in range(3):
            parts = partials(seed + 1 + i, W, sum(sizes), (16,), torch.bfloat16)
            got = rsv.reduce_scatterv(parts[r].to(ctx.device), sizes=sizes, group=group)
            if ctx.device.type == "cuda":
                torch.cuda.synchronize()
            ws.check()
            truth, abs_sum = exact_sum(parts, sum(sizes[:r]), sizes[r])
            assert_close(f"call {i} after reset", got, truth, hier_tolerance(torch.bfloat16, truth, abs_sum, W, 2,
                                                                             False))
    finally:
        rsv.release(group)
        dist.destroy_process_group(group)
    return seen


def hier_gather_case(ctx, *, sizes: list, rest=(16,), dtype="bfloat16", seed=0, device_sizes=False, spare_rows=0,
                     with_output=True, noncontig=False, repeat=1, ranks_per_node=2, mixed=False):
    """all_gatherv on a multi-node group, one call per repeat with fresh rows: the output (poisoned
    first) equals the concatenation of every rank's rows bit for bit and the reference collective's
    flat all-gather; with device sizes (input and output capacities the same on every rank) rows
    past sum(sizes) keep their poison; the input is not modified; no fallback warning; the node
    step ran (its epoch moved: the call took the hierarchy, not a flat gather)."""
    import warnings

    from tests.all_gatherv_cases import reference_gather

    keywords = dict(ll_bytes=512, push_bytes=4096) if mixed else {}
    group = hier_group(ctx, ranks_per_node, **keywords)
    ws = rsv.workspace(group, ctx.device)
    W, r, dev = ctx.world, ctx.rank, ctx.device
    dtype_t = DTYPES[dtype]
    rest = tuple(rest)
    n = sum(sizes)
    for i in range(repeat):
        rows = gather_rows(seed * 1000 + i, W, sizes, rest, dtype_t)
        want = torch.cat(rows)
        cap_in = max(sizes) + spare_rows if device_sizes else sizes[r]
        mine = torch.cat([rows[r], torch.randn((cap_in - sizes[r], *rest)).to(dtype_t)]).to(dev)  # junk past the rows
        if noncontig:
            inp = torch.empty((cap_in, *rest, 2), dtype=dtype_t, device=dev)[..., 1]
            inp.copy_(mine)
        else:
            inp = mine
        before = inp.clone()
        out = None
        if with_output or device_sizes:
            out = torch.full((n + spare_rows if device_sizes else n, *rest), POISON, dtype=dtype_t, device=dev)
        arg = torch.tensor(sizes, dtype=torch.int32, device=dev) if device_sizes else list(sizes)
        epoch = ws.epoch
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            got = rsv.all_gatherv(inp, out, sizes=arg, group=group)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        ws.check()
        warned = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        if warned:
            raise AssertionError(f"all_gatherv on a multi-node group warned: {warned}")
        if ranks_per_node > 1 and ws.epoch == epoch:
            raise AssertionError("the node step did not run: not the hierarchical gather")
        if out is not None and got.data_ptr() != out.data_ptr():
            raise AssertionError("result is not the output tensor that was passed")
        if not torch.equal(inp, before):
            raise AssertionError("input_ was modified")
        if not torch.equal(got[:n].cpu(), want):
            bad = (got[:n].cpu() != want).nonzero()[:5].tolist()
            raise AssertionError(f"all_gatherv {sizes} call {i}: not the concatenation at {bad}")
        if device_sizes and not torch.isnan(got[n:].float()).all():
            raise AssertionError(f"all_gatherv {sizes}: rows past sum(sizes) were written")
        if not torch.equal(got[:n], reference_gather(rows[r].to(dev), sizes, group)):
            raise AssertionError(f"all_gatherv {sizes} call {i}: differs from the reference collective's gather")


def hier_gather_disagree_case(ctx, *, kind: str, timeout_s: float = 3.0, seed: int = 0):
    """Ranks make different all_gatherv calls whose NCCL (gloo) counts still match, so the hop cannot
    notice: every rank must get an error (NaN output, ``check()`` raises), none a silent result,
    none a wait past the timeout; after ``reset()`` the next call is right. Returns (seconds, what
    this rank saw, output all NaN?).

    ``sizes_swapped_across_nodes``: node 0 passes [2, 3, 1, 1], node 1 [1, 3, 2, 1] (ranks 0 and 2,
    rail 0, swap counts): every rail's largest count, so every hop and node-step count, is the
    same on both nodes, every rank's rows and check rows lie where its node expects them, and each
    node's own ranks agree. Only the digest bits in the check rows tell the nodes apart: with their
    comparison disabled (``hop_gather_check_kernel`` comparing from element DIGEST_BITS on) node 0
    returns 1 of rank 2's 2 rows and node 1 both of rank 0's, silently (checked 2026-11-30: the
    test then fails, "a result that is not NaN"; so does ``other_node_dtype``, whose fp16 bits node
    0 reads as bf16; ``other_node_device_sizes`` is still caught, by the size bits)."""
    W, r, dev = ctx.world, ctx.rank, ctx.device
    group = ctx.new_group()
    ws = rsv.workspace(group, dev, ranks_per_node=2, timeout_s=timeout_s)
    good = [2, 3, 1, 1]
    sizes, dev_sizes, dtype = list(good), False, torch.bfloat16
    if kind == "sizes_swapped_across_nodes" and r >= 2:
        sizes = [1, 3, 2, 1]
    elif kind == "other_node_device_sizes":  # blocks move at the capacity: only the size bits differ
        dev_sizes = True
        if r >= 2:
            sizes = [1, 3, 2, 1]
    elif kind == "other_node_dtype" and r >= 2:
        dtype = torch.float16
    elif kind == "int64_vs_float64_across_nodes":  # the same bytes, copied as the same words
        dtype = torch.int64 if r < 2 else torch.float64
    seen, nan = [], None
    t0 = time.perf_counter()
    try:
        rows = gather_rows(seed, W, sizes, (16,), dtype)
        cap = 4
        inp = rows[r].to(dev)
        if dev_sizes:
            inp = torch.cat([inp, torch.ones((cap - sizes[r], 16), dtype=dtype)]).to(dev)
        out = torch.full((2 * cap if dev_sizes else sum(sizes), 16), POISON if dtype.is_floating_point else 7,
                         dtype=dtype, device=dev)
        arg = torch.tensor(sizes, dtype=torch.int64, device=dev) if dev_sizes else sizes
        try:
            rsv.all_gatherv(inp, out, sizes=arg, group=group)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            ws.check()
        except RuntimeError as e:
            seen.append(str(e))
        poisoned = out[: sum(sizes)]  # other dtypes travel as float32 words, poisoned as such
        nan = bool(torch.isnan(poisoned.float() if dtype in (torch.bfloat16, torch.float16)
                               else poisoned.view(torch.float32)).all())
        seconds = time.perf_counter() - t0
        dist.barrier(group=group)
        try:  # sticky
            ws.check()
        except RuntimeError as e:
            seen.append(str(e))
        ws.reset()
        rows = gather_rows(seed + 1, W, good, (16,), torch.bfloat16)
        got = rsv.all_gatherv(rows[r].to(dev), sizes=good, group=group)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        ws.check()
        if not torch.equal(got.cpu(), torch.cat(rows)):
            raise AssertionError("all_gatherv after reset: not the concatenation")
    finally:
        rsv.release(group)
        dist.destroy_process_group(group)
    return seconds, seen, nan


def hier_gather_fault_case(ctx, *, failed_node: int = 0, seed: int = 0, device_sizes: bool = False):
    """The node workspace of one node is in the failed state (as a timeout there leaves it) when an
    all_gatherv starts: every rank, on every node, gets NaN and an error from ``check()``, the next
    call too (sticky); after ``reset()`` on every rank the next calls are right."""
    from reduce_scatterv import layout as L

    W, r, dev = ctx.world, ctx.rank, ctx.device
    group = ctx.new_group()
    ws = rsv.workspace(group, dev, ranks_per_node=2, timeout_s=5.0)
    seen = {}
    sizes = [2, 1, 0, 3]
    try:
        if ws.hierarchy.node == failed_node:
            ws.hierarchy.node_ws._err_word().bitwise_or_(L.ERR_TIMEOUT)
        dist.barrier(group=group)
        for phase in ("call", "sticky"):
            rows = gather_rows(seed, W, sizes, (16,), torch.bfloat16)
            inp = torch.cat([rows[r], torch.zeros(3 - sizes[r], 16, dtype=torch.bfloat16)]) if device_sizes else rows[r]
            out = torch.full((sum(sizes), 16), POISON, dtype=torch.bfloat16, device=dev)
            arg = torch.tensor(sizes, device=dev) if device_sizes else sizes
            seen[phase] = _error_of(ctx, group, lambda: rsv.all_gatherv(inp.to(dev), out, sizes=arg, group=group))
            seen[phase + "_nan"] = bool(torch.isnan(out.float()).all())
        ws.reset()
        for i in range(3):
            rows = gather_rows(seed + 1 + i, W, sizes, (16,), torch.bfloat16)
            got = rsv.all_gatherv(rows[r].to(dev), sizes=sizes, group=group)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            ws.check()
            if not torch.equal(got.cpu(), torch.cat(rows)):
                raise AssertionError(f"all_gatherv call {i} after reset: not the concatenation")
    finally:
        rsv.release(group)
        dist.destroy_process_group(group)
    return seen


def hier_gather_bad_input_case(ctx, *, kind: str):
    """Bad all_gatherv input on every rank of a multi-node group: (exception type, message) or None.
    The shapes of ``all_gatherv_cases.bad_gather_input_case`` and ``hier_bad_input_case``'s device
    sizes (flagged on the device, raised by ``check()``)."""
    group = hier_group(ctx)
    W, dev = ctx.world, ctx.device
    x = torch.randn(2, 8, device=dev).to(torch.bfloat16)
    out = torch.empty(2 * W, 8, dtype=x.dtype, device=dev)
    call = {
        "rows_vs_sizes": lambda: rsv.all_gatherv(x, sizes=[3] * W, group=group),
        "negative": lambda: rsv.all_gatherv(x, sizes=[2, -1] + [2] * (W - 2), group=group),
        "output_rows": lambda: rsv.all_gatherv(x, torch.empty((2 * W + 1, 8), dtype=x.dtype, device=dev),
                                                sizes=[2] * W, group=group),
        "odd_row_bytes": lambda: rsv.all_gatherv(torch.ones((2, 3), dtype=torch.uint8, device=dev), sizes=[2] * W,
                                                 group=group),
        "device_sizes_exceed_capacity": lambda: _checked(ctx, group, lambda: rsv.all_gatherv(
            x, out, sizes=torch.full((W,), 3, device=dev), group=group)),
        "device_sizes_negative": lambda: _checked(ctx, group, lambda: rsv.all_gatherv(
            x, out, sizes=torch.tensor([-1] + [1] * (W - 1), device=dev), group=group)),
    }[kind]
    return raised(call)


def hier_wrap_case(ctx, *, start_epoch: int, calls: int, seed: int) -> int:
    """Both collectives on a multi-node group whose node workspaces start at ``start_epoch``, across
    the wrap point, in every node mode (flagged words, plain push, pull: small push limits), one rank
    late on every other call (the NCCL / gloo hop has no epochs; the node step's signals do): every
    call right. Returns the epoch after the calls."""
    W, r, dev = ctx.world, ctx.rank, ctx.device
    group = hier_group(ctx, 2, start_epoch=start_epoch, ll_bytes=512, push_bytes=4096)
    ws = rsv.workspace(group, dev)
    for i in range(calls):
        sizes = [(i * 5 + q * 3) % 7 * (1, 4, 30)[i % 3] for q in range(W)]
        if i % 2 and r == (i // 2) % W:
            time.sleep(0.2)  # late on every other call, a different rank each time
        if i % 4 < 2:
            parts = partials(seed * 100 + i, W, sum(sizes), (16,), torch.bfloat16)
            got = rsv.reduce_scatterv(parts[r].to(dev), sizes=sizes, group=group)
            truth, abs_sum = exact_sum(parts, sum(sizes[:r]), sizes[r])
            assert_close(f"call {i} reduce_scatterv {sizes} from epoch {start_epoch}", got, truth,
                         hier_tolerance(torch.bfloat16, truth, abs_sum, W, 2, False))
        else:
            rows = gather_rows(seed * 100 + i, W, sizes, (16,), torch.bfloat16)
            got = rsv.all_gatherv(rows[r].to(dev), sizes=sizes, group=group)
            if not torch.equal(got.cpu(), torch.cat(rows)):
                raise AssertionError(f"call {i} all_gatherv {sizes} from epoch {start_epoch}: not the concatenation")
        if dev.type == "cuda":
            torch.cuda.synchronize()
    ws.check()
    return ws.epoch
