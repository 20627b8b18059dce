"""Epilogue cases that run on every rank of a RankPool (CPU/gloo or GPU/NCCL alike).

Each builds every rank's partial sums from one seed (so each rank can form the float64 sum ``f`` of
its rows), this rank's epilogue inputs from a seed of its own, poisons every output (NaN), calls
``rsv.reduce_scatterv(..., epilogue=...)`` and checks every output against the float64
epilogue of the unrounded sum, within one rounding of the output (plus float32 accumulation).
"""

from __future__ import annotations

import time

import torch
import torch.distributed as dist

import reduce_scatterv as rsv
from reduce_scatterv import api
from reduce_scatterv.epilogues import HcPost, ResidualRMSNorm
from tests.cases import (DTYPES, MANTISSA_BITS, POISON, assert_close, exact_sum, partials, raised,
                         reference_reduce_scatter, tolerance)

F32_EPS = 2.0 ** -23


def epilogue_inputs(kind: str, seed: int, rows: int, hidden: int, hc: int, dtype, device, with_f: bool,
                    in_place: bool = False):
    """(epilogue, its inputs as float64 CPU tensors): fresh random inputs, every output poisoned."""
    g = torch.Generator().manual_seed(seed)

    def nan(*shape):
        return torch.full(shape, POISON, dtype=dtype, device=device)

    f_out = nan(rows, hidden) if with_f else None
    if kind == "hc_post":
        residual = torch.randn(rows, hc, hidden, generator=g).to(dtype)
        post = 2 * torch.sigmoid(torch.randn(rows, hc, generator=g))
        comb = torch.softmax(torch.randn(rows, hc, hc, generator=g), dim=-1)
        ep = HcPost(residual.to(device), post.to(device), comb.to(device), nan(rows, hc, hidden), f_out)
        return ep, dict(residual=residual.double(), post=post.double(), comb=comb.double())
    residual = torch.randn(rows, hidden, generator=g).to(dtype)
    weight = (1 + 0.5 * torch.randn(hidden, generator=g)).to(dtype)
    res_dev = residual.to(device)
    residual_out = res_dev if in_place else nan(rows, hidden)
    ep = ResidualRMSNorm(res_dev, weight.to(device), 1e-6, nan(rows, hidden), residual_out, f_out)
    return ep, dict(residual=residual.double(), weight=weight.double(), eps=1e-6)


def hc_post_64(f, residual, post, comb):
    """float64 hc_post and the magnitude its float32 evaluation errs by (sum of |terms|)."""
    out = post.unsqueeze(-1) * f.unsqueeze(1) + torch.einsum("tij,tih->tjh", comb, residual)
    mag = post.abs().unsqueeze(-1) * f.abs().unsqueeze(1) + torch.einsum("tij,tih->tjh", comb.abs(), residual.abs())
    return out, mag


def rmsnorm_64(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight


def check_epilogue(ctx, what: str, ep, ref: dict, truth, abs_sum, n: int, dtype, hops: int = 0) -> float:
    """Every output of ``ep`` against the float64 epilogue of the unrounded sum ``truth`` [n, H]
    (``abs_sum``: sum of the partials' magnitudes); rows past ``n`` must keep their poison.
    ``hops``: roundings of the running sum before the epilogue (the NCCL fallback's chain)."""
    W, rel = ctx.world, 2.0 ** -MANTISSA_BITS[dtype]
    tiny = 2.0 ** -24 if dtype == torch.float16 else 1e-30  # float16's subnormal spacing
    worst = 0.0
    outs = [ep.out] + ([ep.f_out] if ep.f_out is not None else [])
    if isinstance(ep, ResidualRMSNorm) and ep.residual_out is not ep.residual:
        outs.append(ep.residual_out)
    for t in outs:
        if not torch.isnan(t[n:].float()).all():
            raise AssertionError(f"{what}: rows past sizes[rank] were written")
    f_err = W * F32_EPS * abs_sum + hops * rel * abs_sum  # float32 accumulation over ranks (+ a chain's roundings)
    if ep.f_out is not None:
        worst = max(worst, assert_close(f"{what}: f_out vs float64 sum", ep.f_out[:n], truth,
                                        tolerance(dtype, truth, abs_sum, W, hops=hops)))
    if isinstance(ep, HcPost):
        r = {k: v[:n] for k, v in ref.items()}
        want, mag = hc_post_64(truth, r["residual"], r["post"], r["comb"])
        tol = rel * want.abs() + 8 * F32_EPS * mag + r["post"].abs().unsqueeze(-1) * f_err.unsqueeze(1) + tiny
        return max(worst, assert_close(f"{what}: hc_post out vs float64", ep.out[:n], want, tol))
    res = ref["residual"][:n]
    s = truth + res
    got_res = ep.residual_out[:n]
    worst = max(worst, assert_close(f"{what}: residual_out vs float64 f + residual", got_res, s,
                                    rel * s.abs() + f_err + 2 * F32_EPS * (abs_sum + res.abs()) + tiny))
    # the norm is that of the rounded sum as stored (epilogues.py): from the kernel's residual_out
    x = got_res.double().cpu()
    want = rmsnorm_64(x, ref["weight"], ref["eps"])
    tol = rel * want.abs() + 64 * F32_EPS * (x.abs() * ref["weight"].abs() / x.pow(2).mean(-1, keepdim=True).sqrt()
                                             .clamp_min(1e-30)) + tiny
    return max(worst, assert_close(f"{what}: rmsnorm out vs float64 of residual_out", ep.out[:n], want, tol))


def epilogue_case(ctx, *, kind: str, sizes, hidden=16, hc=4, dtype="bfloat16", seed=0, device_sizes=False,
                  spare_rows=0, group="world", modes_off=(), with_f=False, in_place=False, resident=False, repeat=1,
                  chaos_seed=0):
    """``repeat`` calls with an epilogue (``kind`` "hc_post" or "rmsnorm"), fresh inputs each, checked on
    this rank. Returns the modes the planner picked (to show which protocol ran)."""
    dtype_t = DTYPES[dtype]
    grp = ctx.groups[group]
    ws = rsv.workspace(grp, ctx.device)
    total, n, off = sum(sizes), sizes[ctx.rank], sum(sizes[: ctx.rank])
    cap_in = total + (spare_rows if device_sizes else 0)
    cap_out = n + (spare_rows if device_sizes else 0)
    modes = []
    for i in range(repeat):
        parts = partials(seed * 1000 + i, ctx.world, total, (hidden,), dtype_t)
        truth, abs_sum = exact_sum(parts, off, n)
        if resident:
            inp = ws.empty(cap_in, hidden, dtype=dtype_t)
        else:
            inp = torch.empty(cap_in, hidden, dtype=dtype_t, device=ctx.device)
        inp.normal_()  # junk past the rows
        inp[:total].copy_(parts[ctx.rank].to(ctx.device))
        ep, ref = epilogue_inputs(kind, seed * 7919 + i * 31 + ctx.rank, cap_out, hidden, hc, dtype_t, ctx.device,
                                  with_f, in_place)
        sizes_arg = torch.tensor(sizes, dtype=torch.int32, device=ctx.device) if device_sizes else sizes
        with api.overrides(MODES_OFF=frozenset(modes_off), CHAOS_SEED=chaos_seed * 1000 + i if chaos_seed else 0):
            if ctx.world > 1:
                call = api.check_call(inp, None, sizes_arg, ctx.world, ctx.rank, capacity_rows=cap_out)
                modes.append(api.plan_call(ws, call, inp, ep).mode)
            result = rsv.reduce_scatterv(inp, sizes=sizes_arg, group=grp, epilogue=ep)
        if ctx.device.type == "cuda":
            torch.cuda.synchronize()
            ws.check()
        if result is not ep.out:
            raise AssertionError("the call did not return the epilogue's out")
        check_epilogue(ctx, f"call {i} {kind} {sizes}", ep, ref, truth, abs_sum, n, dtype_t)
    return modes


def nccl_reference_case(ctx, *, kind: str, sizes, hidden: int, seed: int, group="world", modes_off=()):
    """The fused call against NCCL's (gloo's on CPU) reduce_scatter (in the dtype, as SGLang runs it) followed
    by the torch epilogue (``deepseek_v4.mhc.hc_post`` / residual + RMSNorm). The tolerance allows
    NCCL's roundings (one per hop) and one of the output."""
    from deepseek_v4.mhc import hc_post

    dtype = torch.bfloat16
    grp = ctx.groups[group]
    total, n = sum(sizes), sizes[ctx.rank]
    parts = partials(seed, ctx.world, total, (hidden,), dtype)
    mine = parts[ctx.rank].to(ctx.device)
    ep, ref = epilogue_inputs(kind, seed * 31 + ctx.rank, n, hidden, 4, dtype, ctx.device, with_f=False)
    with api.overrides(MODES_OFF=frozenset(modes_off)):
        rsv.reduce_scatterv(mine, sizes=sizes, group=grp, epilogue=ep)
    if ctx.device.type == "cuda":
        torch.cuda.synchronize()
        rsv.workspace(grp, ctx.device).check()
    f = reference_reduce_scatter(mine, sizes, grp)
    abs_sum = exact_sum(parts, sum(sizes[: ctx.rank]), n)[1]
    rel = 2.0 ** -7
    f_tol = (ctx.world + 1) * rel * abs_sum
    if kind == "hc_post":
        want = hc_post(f, ep.residual, ep.post, ep.comb).double().cpu()
        tol = 2 * rel * want.abs() + ref["post"].abs().unsqueeze(-1) * f_tol.unsqueeze(1) + 1e-6
        return assert_close("hc_post vs NCCL + torch hc_post", ep.out, want, tol)
    s = (f.float() + ep.residual.float()).to(dtype).double().cpu()
    assert_close("residual_out vs NCCL + residual", ep.residual_out, s, 2 * rel * s.abs() + f_tol + 1e-6)
    want = rmsnorm_64(s, ref["weight"], ref["eps"])
    scale = ref["weight"].abs() / s.pow(2).mean(-1, keepdim=True).sqrt().clamp_min(1e-30)
    return assert_close("rmsnorm out vs NCCL + torch rmsnorm", ep.out, want,
                        2 * rel * want.abs() + (2 * rel * s.abs() + f_tol) * scale + 1e-6)


def graph_case(ctx, *, kind: str, capacity: int, hidden: int, size_sets: list, seed: int, group="world",
               modes_off=()):
    """CUDA: one call with device sizes and an epilogue captured in a graph, replayed with new sizes,
    partials and epilogue inputs written into the captured buffers; outputs poisoned before each
    replay; every replay checked against the float64 epilogue, rows past the count untouched."""
    W, dev, dtype = ctx.world, ctx.device, torch.bfloat16
    grp = ctx.groups[group]
    ws = rsv.workspace(grp, dev)
    ws.reserve(max_input_bytes=2 * W * capacity * hidden * 4, arena_bytes=W * capacity * hidden * 2)
    inp = ws.empty(W * capacity, hidden, dtype=dtype)
    sizes_dev = torch.ones(W, dtype=torch.int32, device=dev)
    ep, _ = epilogue_inputs(kind, seed, capacity, hidden, 4, dtype, dev, with_f=True)
    with api.overrides(MODES_OFF=frozenset(modes_off)):
        rsv.reduce_scatterv(inp, sizes=sizes_dev, group=grp, epilogue=ep)  # compile outside the graph
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            rsv.reduce_scatterv(inp, sizes=sizes_dev, group=grp, epilogue=ep)
    worst = 0.0
    for i, sizes in enumerate(size_sets):
        total, n, off = sum(sizes), sizes[ctx.rank], sum(sizes[: ctx.rank])
        parts = partials(seed * 100 + i, W, total, (hidden,), dtype)
        inp[:total].copy_(parts[ctx.rank].to(dev))
        sizes_dev.copy_(torch.tensor(sizes, dtype=torch.int32))
        fresh, ref = epilogue_inputs(kind, seed * 100 + i * 7 + ctx.rank, capacity, hidden, 4, dtype, dev, with_f=True)
        for name in ("residual", "post", "comb", "weight", "out", "f_out", "residual_out"):
            if hasattr(ep, name):
                getattr(ep, name).copy_(getattr(fresh, name))
        graph.replay()
        torch.cuda.synchronize()
        ws.check()
        truth, abs_sum = exact_sum(parts, off, n)
        worst = max(worst, check_epilogue(ctx, f"replay {i} {sizes}", ep, ref, truth, abs_sum, n, dtype))
    del graph
    return worst


def fault_case(ctx, *, kind: str, absent_rank: int, sizes, modes_off=(), timeout_s: float = 2.0, seed: int = 0):
    """One rank skips a call with an epilogue: on the others every output of the epilogue (and f_out)
    is NaN and check() raises the timeout; every rank is in the failed state until reset(); after
    it the next calls are right."""
    from tests.protocol_cases import _check_text, _close, _group

    group, ws = _group(ctx, timeout_s=timeout_s)
    ws.reserve(max_input_bytes=1 << 16)
    ctx.groups["_fault"] = group
    hidden, dtype = 16, torch.bfloat16
    got = {}
    try:
        n = sizes[ctx.rank]
        if ctx.rank != absent_rank:
            parts = partials(seed, ctx.world, sum(sizes), (hidden,), dtype)
            ep, _ = epilogue_inputs(kind, seed + ctx.rank, n, hidden, 4, dtype, ctx.device, with_f=True)
            if isinstance(ep, ResidualRMSNorm):  # outputs start as numbers: NaN must come from the fault
                ep.out.zero_()
                ep.residual_out.zero_()
            else:
                ep.out.zero_()
            ep.f_out.zero_()
            t0 = time.perf_counter()
            try:
                with api.overrides(MODES_OFF=frozenset(modes_off)):
                    rsv.reduce_scatterv(parts[ctx.rank].to(ctx.device), sizes=sizes, group=group, epilogue=ep)
                if ctx.device.type == "cuda":
                    torch.cuda.synchronize()
                    ws.check()
            except RuntimeError as e:
                got["call"] = str(e)
            got["waited_s"] = time.perf_counter() - t0
            outs = [ep.out, ep.f_out] + ([ep.residual_out] if isinstance(ep, ResidualRMSNorm) else [])
            got["nan"] = [bool(torch.isnan(t[:n].float()).all()) for t in outs]
        dist.barrier(group=group)
        got["check"] = _check_text(ws)
        ws.reset()
        for i in range(2):
            got.setdefault("after", []).append(
                epilogue_case(ctx, kind=kind, sizes=sizes, seed=seed + 10 + i, group="_fault", modes_off=modes_off))
        return got
    finally:
        ctx.groups.pop("_fault", None)
        _close(ctx, group)


def bad_epilogue_case(ctx, *, kind: str):
    """A call with a bad epilogue of ``kind``; returns (exception type, message) or None."""
    dev, W, Hd = ctx.device, ctx.world, 8
    x = torch.randn(2 * W, Hd, device=dev).to(torch.bfloat16)
    sizes = [2] * W
    hc, _ = epilogue_inputs("hc_post", 1, 2, Hd, 4, torch.bfloat16, dev, with_f=False)
    rn, _ = epilogue_inputs("rmsnorm", 1, 2, Hd, 4, torch.bfloat16, dev, with_f=False)

    def replace(ep, **kw):
        return type(ep)(**{**{k: getattr(ep, k) for k in ep.__dataclass_fields__}, **kw})

    call = {
        "output_given": lambda: rsv.reduce_scatterv(x, torch.empty(2, Hd, dtype=x.dtype, device=dev), sizes=sizes,
                                                        epilogue=hc),
        "not_an_epilogue": lambda: rsv.reduce_scatterv(x, sizes=sizes, epilogue="hc_post"),
        "residual_width": lambda: rsv.reduce_scatterv(x, sizes=sizes, epilogue=replace(
            hc, residual=torch.zeros(2, 4, Hd + 1, dtype=x.dtype, device=dev))),
        "residual_rows": lambda: rsv.reduce_scatterv(x, sizes=sizes, epilogue=replace(
            hc, residual=torch.zeros(3, 4, Hd, dtype=x.dtype, device=dev))),
        "post_dtype": lambda: rsv.reduce_scatterv(x, sizes=sizes, epilogue=replace(hc, post=hc.post.double())),
        "comb_shape": lambda: rsv.reduce_scatterv(x, sizes=sizes, epilogue=replace(hc, comb=hc.comb[:, :, :3])),
        "out_dtype": lambda: rsv.reduce_scatterv(x, sizes=sizes, epilogue=replace(hc, out=hc.out.float())),
        "out_noncontiguous": lambda: rsv.reduce_scatterv(x, sizes=sizes, epilogue=replace(
            hc, out=torch.empty(2, 4, 2 * Hd, dtype=x.dtype, device=dev)[..., ::2])),
        "rows_not_flat": lambda: rsv.reduce_scatterv(x.view(2 * W, 2, Hd // 2), sizes=sizes, epilogue=hc),
        "weight_shape": lambda: rsv.reduce_scatterv(x, sizes=sizes, epilogue=replace(rn, weight=rn.weight[:-1])),
        "eps_negative": lambda: rsv.reduce_scatterv(x, sizes=sizes, epilogue=replace(rn, eps=-1.0)),
        "residual_out_shape": lambda: rsv.reduce_scatterv(x, sizes=sizes, epilogue=replace(
            rn, residual_out=rn.residual_out[:1])),
        "capacities_differ": lambda: rsv.reduce_scatterv(
            x, sizes=torch.full((W,), 2, device=dev), epilogue=replace(
                rn, residual_out=torch.empty(3, Hd, dtype=x.dtype, device=dev))),
    }[kind]
    return raised(call)


def hc_post_kernel_case(ctx, *, tokens: int, hidden: int, hc: int, dtype: str, seed: int):
    """The one-kernel Triton hc_post against ``deepseek_v4.mhc.hc_post`` and the float64 formula,
    within one rounding of the output."""
    from deepseek_v4.mhc import hc_post, hc_post_one_kernel

    dtype_t = DTYPES[dtype]
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(tokens, hidden, generator=g).to(dtype_t)
    ep, ref = epilogue_inputs("hc_post", seed, tokens, hidden, hc, dtype_t, "cpu", with_f=False)
    got = hc_post_one_kernel(f.to(ctx.device), ep.residual.to(ctx.device), ep.post.to(ctx.device),
                             ep.comb.to(ctx.device))
    want, mag = hc_post_64(f.double(), ref["residual"], ref["post"], ref["comb"])
    rel = 2.0 ** -MANTISSA_BITS[dtype_t]
    tol = rel * want.abs() + 8 * F32_EPS * mag + 1e-30
    assert_close("one-kernel hc_post vs float64", got, want, tol)
    torch_ = hc_post(f, ep.residual, ep.post, ep.comb).double()
    assert_close("one-kernel hc_post vs mhc.hc_post", got, torch_, 2 * tol)
    return tuple(got.shape)


def fallback_case(ctx, *, kind: str, sizes: list, seed: int):
    """A group whose ranks cannot reach each other's memory (simulated): the sum by the reference
    collective's grouped reduce, then the epilogue in torch; right within the chain's roundings."""
    import warnings

    from reduce_scatterv.workspace import Workspace

    reachable = Workspace._reachable
    Workspace._reachable = lambda self: False
    dtype, hidden = torch.bfloat16, 16
    try:
        group = ctx.new_group()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            parts = partials(seed, ctx.world, sum(sizes), (hidden,), dtype)
            n, off = sizes[ctx.rank], sum(sizes[: ctx.rank])
            ep, ref = epilogue_inputs(kind, seed + ctx.rank, n, hidden, 4, dtype, ctx.device, with_f=True)
            got = rsv.reduce_scatterv(parts[ctx.rank].to(ctx.device), sizes=sizes, group=group, epilogue=ep)
    finally:
        Workspace._reachable = reachable
    assert got is ep.out
    truth, abs_sum = exact_sum(parts, off, n)
    check_epilogue(ctx, f"fallback {kind} {sizes}", ep, ref, truth, abs_sum, n, dtype, hops=ctx.world)
