"""Cases for ``torch.ops.rsv.reduce_scatterv`` (``rsv.custom_op``) that run on every rank of a
RankPool: eager, ``torch.library.opcheck``, ``torch.compile(fullgraph=True)`` and, on GPUs,
CUDA-graph capture. Each rank checks its rows against the float64 sum (``tests.cases``)."""

from __future__ import annotations

import torch
import torch.distributed as dist

import reduce_scatterv as rsv
from reduce_scatterv import custom_op
from tests.cases import DTYPES, POISON, assert_close, exact_sum, partials, replay_with_new_sizes, tolerance


def _call_inputs(ctx, sizes, rest, dtype, seed, device_sizes, spare_rows=0):
    """(input, output, sizes argument, truth, abs_sum, n) for this rank."""
    dtype_t = DTYPES[dtype]
    total, n, off = sum(sizes), sizes[ctx.rank], sum(sizes[: ctx.rank])
    parts = partials(seed, ctx.world, total, tuple(rest), dtype_t)
    truth, abs_sum = exact_sum(parts, off, n)
    spare = spare_rows if device_sizes else 0
    inp = torch.cat([parts[ctx.rank], torch.zeros((spare, *rest), dtype=dtype_t)]).to(ctx.device)
    out = torch.full((n + spare, *rest), POISON, dtype=dtype_t, device=ctx.device)
    arg = torch.tensor(sizes, dtype=torch.int32, device=ctx.device) if device_sizes else list(sizes)
    return inp, out, arg, truth, abs_sum, n


def eager_case(ctx, *, sizes, rest=(16,), dtype="bfloat16", seed=0, with_output=True, device_sizes=False,
               spare_rows=0, through="wrapper"):
    """One call through the op (``through="wrapper"``: ``custom_op.reduce_scatterv``; ``"ops"``:
    ``torch.ops.rsv.reduce_scatterv`` itself), checked against the float64 sum; rows past
    ``sizes[rank]`` (device sizes) keep their poison."""
    inp, out, arg, truth, abs_sum, n = _call_inputs(ctx, sizes, rest, dtype, seed, device_sizes, spare_rows)
    before = inp.clone()
    group = ctx.groups["world"]
    if through == "ops":
        host, dev = (None, arg) if device_sizes else (arg, None)
        result = torch.ops.rsv.reduce_scatterv(inp, out, host, dev, group.group_name)
        if result is not None:
            raise AssertionError(f"the op returned {type(result).__name__}, expected None (it mutates output)")
        result = out
    else:
        result = custom_op.reduce_scatterv(inp, out if with_output or device_sizes else None, sizes=arg, group=group)
        if (with_output or device_sizes) and result.data_ptr() != out.data_ptr():
            raise AssertionError("the wrapper did not return the output it was given")
    if not torch.equal(inp, before):
        raise AssertionError("input was modified")
    if device_sizes and spare_rows and not torch.isnan(result[n:].float()).all():
        raise AssertionError("rows past sizes[rank] were written")
    return assert_close("op vs float64 sum", result[:n], truth, tolerance(DTYPES[dtype], truth, abs_sum, ctx.world))


def opcheck_case(ctx, *, sizes, rest=(8,), dtype="float32", device_sizes=False):
    """``torch.library.opcheck`` on the op (schema and mutation, fake tensor, AOT dispatch static and
    dynamic; the autograd check is skipped: the op has no autograd formula, like the collectives).
    Every rank makes the same calls in the same order. Returns opcheck's report."""
    inp, out, arg, *_ = _call_inputs(ctx, sizes, rest, dtype, 1, device_sizes, spare_rows=1)
    host, dev = (None, arg) if device_sizes else (arg, None)
    report = torch.library.opcheck(torch.ops.rsv.reduce_scatterv.default,
                                   (inp, out, host, dev, ctx.groups["world"].group_name),
                                   test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static",
                                               "test_aot_dispatch_dynamic"))
    return {k: v for k, v in report.items()}


def fake_case(ctx, *, sizes, rest=(8,)):
    """Under FakeTensorMode the op runs its fake implementation only: no collective, no kernel,
    the workspace's epoch does not move."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    ws = rsv.workspace(ctx.groups["world"], ctx.device)
    epoch = ws.epoch
    with FakeTensorMode():
        inp = torch.empty(sum(sizes), *rest, device=ctx.device)
        out = torch.empty(sizes[ctx.rank], *rest, device=ctx.device)
        torch.ops.rsv.reduce_scatterv(inp, out, list(sizes), None, ctx.groups["world"].group_name)
        shape = tuple(out.shape)
    if ws.epoch != epoch:
        raise AssertionError("the fake implementation launched the kernel")
    return shape


def compile_case(ctx, *, sizes, rest=(16,), dtype="bfloat16", backend="aot_eager", device_sizes=False,
                 spare_rows=0, seed=3):
    """``torch.compile(fullgraph=True)`` of a function that computes around the op (a graph break
    raises under fullgraph); returns the number of graphs Dynamo made (1 expected) and the worst
    error ratio against the float64 sum."""
    import torch._dynamo.testing

    torch._dynamo.reset()
    inp, out, arg, truth, abs_sum, n = _call_inputs(ctx, sizes, rest, dtype, seed, device_sizes, spare_rows)
    group = ctx.groups["world"]

    def f(x, o, s):
        y = custom_op.reduce_scatterv(x * 2, o, sizes=s, group=group)
        return y * 0.5

    counter = torch._dynamo.testing.CompileCounterWithBackend(backend)
    compiled = torch.compile(f, backend=counter, fullgraph=True, dynamic=False)
    got = compiled(inp, out, arg)
    # a second call with new inputs reuses the graph
    inp2, out2, arg2, truth2, abs2, _ = _call_inputs(ctx, sizes, rest, dtype, seed + 1, device_sizes, spare_rows)
    got2 = compiled(inp2, out2, arg2)
    # scaling by 2 and 0.5 is exact: the one rounding is the kernel's
    worst = assert_close("compiled op vs float64 sum", got[:n], truth,
                         tolerance(DTYPES[dtype], truth, abs_sum, ctx.world))
    worst = max(worst, assert_close("compiled op (2nd call) vs float64 sum", got2[:n], truth2,
                                    tolerance(DTYPES[dtype], truth2, abs2, ctx.world)))
    if device_sizes and spare_rows and not torch.isnan(out[n:].float()).all():
        raise AssertionError("rows past sizes[rank] were written")
    return counter.frame_count, worst


def graph_case(ctx, *, per_rank_capacity: int, hidden: int, dtype: str, size_sets: list, seed: int = 0,
               compiled: bool = False):
    """CUDA graph capture of the op with device sizes (``compiled``: of a ``torch.compile``d function
    around it), replayed with new sizes and inputs written into the captured buffers."""
    dtype_t = DTYPES[dtype]
    W, dev = ctx.world, ctx.device
    group = ctx.groups["world"]
    ws = rsv.workspace(group, dev)
    capacity = W * per_rank_capacity
    ws.reserve(max_input_bytes=capacity * hidden * dtype_t.itemsize)
    inp = torch.zeros(capacity, hidden, dtype=dtype_t, device=dev)
    out = torch.empty(per_rank_capacity, hidden, dtype=dtype_t, device=dev)
    sizes_dev = torch.ones(W, dtype=torch.int32, device=dev)

    def step(x, o, s):
        return custom_op.reduce_scatterv(x, o, sizes=s, group=group)

    fn = torch.compile(step, fullgraph=True, dynamic=False) if compiled else step
    fn(inp, out, sizes_dev)  # compile and warm up outside the graph
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn(inp, out, sizes_dev)
    worst = replay_with_new_sizes(ctx, graph, ws, inp, out, sizes_dev, size_sets, seed, against_nccl=False)
    dist.barrier(group=group)
    return worst
