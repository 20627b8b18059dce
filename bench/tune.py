"""Tune once per machine: ``triton.autotune`` over the kernels' knobs, best configs to the tune file.

    torchrun --nproc-per-node 4 -m bench.tune                  # writes ~/.cache/reduce_scatterv/<gpu>.json
    torchrun --nproc-per-node 4 -m bench.tune --ship           # ... and kernels/tuned/<gpu>.json
    torchrun --nproc-per-node 4 -m bench.tune --modes push --rows 64   # one mode, chosen sizes

For each mode (ll, push, large; the gather's gather_ll and gather), row width and size bucket, one
representative call is tuned: ``triton.autotune`` runs every Config (block size, warps, programs per SM, tiles per program)
through a benchmark that is collective: every rank runs the same
number of calls, timed under CUDA-graph replay, and the time is the maximum over ranks, so every
rank picks the same config. Entries are keyed as the API looks them up (mode, world, dtype,
hidden, log2 bucket of the largest per-destination byte count); entries already in the file for
other keys (another world size, say) are kept. Nothing is tuned at call time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import torch
import torch.distributed as dist
import triton

import reduce_scatterv as rsv
from reduce_scatterv import api, configs
from reduce_scatterv import distributed_env as dist_env
from reduce_scatterv.validation import check_call, check_gather_call
from reduce_scatterv.words import FLOAT_CODES

POINTS = {  # mode -> rows per rank of the representative calls (even split)
    "ll": [1, 4, 16, 32],  # 32: flagged words at 2 ranks only (1 MiB limit there)
    "push": [32, 64, 128, 256, 512],  # 64: it took the 32-row entry, which ran slower there than the default
    "large": [256, 1024, 4096],
    "gather_ll": [1, 4, 8, 16, 32],  # all_gatherv, flagged words (up to the workspace's gather_ll_bytes)
    "gather": [64, 256, 1024],  # all_gatherv, the pull
}
# the API settings under which each mode gets those calls (the planner would push the small ones)
_PULL_ONLY = dict(MODES_OFF=frozenset({"ll", "push"}))
MODE_SETTINGS = {"large": _PULL_ONLY}


def search_space(mode: str, world: int) -> list[triton.Config]:
    cfgs = []
    if mode in ("ll", "gather_ll"):
        for block in (512, 1024, 2048, 4096) + ((8192,) if mode == "gather_ll" else ()):
            for warps in (2, 4, 8):
                for tpp in (1, 2):
                    cfgs.append(triton.Config(dict(BLOCK=block, programs_per_sm=1, tiles_per_program=tpp),
                                              num_warps=warps))
    elif mode == "push":
        for block in (2048, 4096, 8192):
            for warps in (4, 8):
                for per_sm in (1, 2, 4):
                    cfgs.append(triton.Config(dict(BLOCK=block, programs_per_sm=per_sm, tiles_per_program=1),
                                              num_warps=warps))
    else:
        # relay stays on (it changes nothing for the even calls tuned here, so timing it would only
        # pick noise; on skewed calls it is what keeps a heavy owner from reading W-1 copies)
        for block in (2048, 4096, 8192):
            for warps in (4, 8, 16):
                for per_sm in (1, 2, 4):
                    cfgs.append(triton.Config(dict(BLOCK=block, programs_per_sm=per_sm, tiles_per_program=1),
                                              num_warps=warps, maxnreg=configs.register_cap(warps, per_sm)))
    return cfgs


def collective_bench(fn, quantiles=None, calls: int = 10, replays: int = 5, **_):
    """Milliseconds per call, the same number of calls on every rank, max over ranks (so every rank
    ranks the configs identically)."""
    from reduce_scatterv.timing import time_call

    ms = time_call(fn, torch.device("cuda", torch.cuda.current_device()), calls_per_graph=calls,
                   replays=replays) / 1e3
    return [ms] * len(quantiles) if quantiles else ms


def gather_arguments(ws, mode: str, hidden: int, rows: int, dtype: torch.dtype):
    """(kernel, args, constexprs, max_rows, (input, output)) of an even all_gatherv call of ``rows``
    rows per rank, the input in the workspace (as the V4 block keeps it), or None where ``mode``
    would not serve it. The tensors must outlive the launches (the arguments hold their addresses)."""
    world, rank = dist.get_world_size(), dist.get_rank()
    sizes = [rows] * world
    ws.reserve(max_input_bytes=rows * hidden * dtype.itemsize)  # grow first: growth moves the arena
    inp = ws.empty(rows, hidden, dtype=dtype, region=1)
    inp.normal_()
    out = torch.empty((sum(sizes), hidden), dtype=dtype, device=inp.device)
    call = check_gather_call(inp, out, sizes, world, rank)
    if api.gather_mode(ws, call, inp.element_size()) != mode:
        return None
    kern = api.kernel_module(inp.device.type)
    protocol = (ws.timeout_arg, api.gather_tag(mode, world, call, FLOAT_CODES[dtype]), 0)
    if mode == "gather_ll":
        return (kern.all_gatherv_ll_kernel, *kern.gather_ll_arguments(ws, inp, out, call, protocol), (inp, out))
    return (kern.all_gatherv_kernel, *kern.gather_arguments(ws, inp, out, call, False, protocol), (inp, out))


def tune_point(device, mode: str, hidden: int, rows: int, dtype: torch.dtype, sms: int, verbose: bool = False,
               ws_keywords: dict | None = None):
    """Tune one representative call; returns (table key, KernelConfig, best ms)."""
    world, rank = dist.get_world_size(), dist.get_rank()
    sizes = [rows] * world
    ws = rsv.workspace(device=device, **(ws_keywords or {}))
    kern = api.kernel_module("cuda")
    if mode.startswith("gather"):
        found = gather_arguments(ws, mode, hidden, rows, dtype)
        if found is None:
            return None
        fn, args, constexprs, max_rows, _tensors = found  # alive while the kernel runs
        return _tune(fn, args, constexprs, max_rows, search_space(mode, world), mode, hidden, rows, dtype, sms,
                     verbose)
    inp = ws.empty(sum(sizes), hidden, dtype=dtype)
    inp.normal_()
    out = torch.empty((rows, hidden), dtype=dtype, device=device)
    call = check_call(inp, out, sizes, world, rank)
    with api.overrides(**MODE_SETTINGS.get(mode, {})):
        plan = api.plan_call(ws, call, inp)
    if plan.mode != mode:
        return None
    protocol = (ws.timeout_arg, plan.tag, 0)
    if mode in ("ll", "push"):
        args, constexprs, max_rows = kern.push_arguments(ws, inp, out, call, mode == "ll", protocol)
        fn = kern.reduce_scatterv_push_kernel
    else:
        args, constexprs, max_rows = kern.kernel_arguments(ws, inp, out, call, plan.variant, protocol)
        fn = kern.reduce_scatterv_kernel
    return _tune(fn, args, constexprs, max_rows, search_space(mode, world), mode, hidden, rows, dtype, sms, verbose)


def _tune(fn, args, constexprs, max_rows: int, space, mode: str, hidden: int, rows: int, dtype: torch.dtype,
          sms: int, verbose: bool):
    """``triton.autotune`` of one call's kernel over ``space``; returns (table key, KernelConfig, best ms)."""
    world, rank = dist.get_world_size(), dist.get_rank()
    kern = api.kernel_module("cuda")
    tuner = triton.autotune(configs=space, key=["H", "in_cap"], do_bench=collective_bench)(fn)

    def grid(meta):
        return (kern.grid_size(max_rows, hidden, meta["BLOCK"], meta["programs_per_sm"], meta["tiles_per_program"],
                               sms),)

    tuner[grid](*args, **constexprs)
    torch.cuda.synchronize()
    if verbose and rank == 0:  # every config's time (collective: the same on every rank)
        timings = {c: t[0] if isinstance(t, (list, tuple)) else t
                   for c, t in getattr(tuner, "configs_timings", {}).items()}  # ms, or [ms] per quantile
        for c, t in sorted(timings.items(), key=lambda kv: kv[1]):
            print(f"  {mode} H{hidden} {rows} rows: {t * 1e3:8.1f} us  {c}", flush=True)
    best = tuner.best_config
    kw = best.kwargs
    cfg = configs.KernelConfig(block=kw["BLOCK"], num_warps=best.num_warps, programs_per_sm=kw["programs_per_sm"],
                               tiles_per_program=kw["tiles_per_program"])
    bucket = configs.size_bucket(rows * hidden * dtype.itemsize)
    key = configs.table_key(mode, world, str(dtype).removeprefix("torch."), hidden, bucket)
    ms = collective_bench(lambda: tuner[grid](*args, **constexprs))
    return key, cfg, ms


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.tune", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", default="4096,7168")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--modes", default="ll,push,large")
    ap.add_argument("--rows", default=None,
                    help="rows per rank to tune (comma list) instead of each mode's representative sizes")
    ap.add_argument("--out", default=None, help="also write the entries found to this folder")
    ap.add_argument("--ship", action="store_true", help="also merge them into kernels/tuned/<gpu>.json")
    ap.add_argument("--verbose", action="store_true", help="print every config's time")
    ap.add_argument("--ll-bytes", type=int, default=None,
                    help="create the workspace with this ll_bytes and gather_ll_bytes (flagged words for larger calls)")
    args = ap.parse_args(argv)
    device = dist_env.init("cuda")
    rank = dist.get_rank()
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    dtype = getattr(torch, args.dtype)
    found = {}
    for mode in args.modes.split(","):
        for hidden in map(int, args.hidden.split(",")):
            for rows in (map(int, args.rows.split(",")) if args.rows else POINTS[mode]):
                res = tune_point(device, mode, hidden, rows, dtype, sms, args.verbose,
                                 None if args.ll_bytes is None else dict(ll_bytes=args.ll_bytes,
                                                                         gather_ll_bytes=args.ll_bytes))
                if res and rank == 0:
                    key, cfg, ms = res
                    found[key] = cfg
                    print(f"{key:<40} {ms * 1e3:8.1f} us  {cfg}", flush=True)
    if rank == 0:
        slug = configs.gpu_slug(torch.cuda.get_device_name(device))
        targets = [configs.tune_paths(slug)[-2]]
        if args.ship:
            targets.append(configs.tune_paths(slug)[-1])
        if args.out:
            targets.append(Path(args.out) / f"{slug}.json")
        for path in targets:
            path.parent.mkdir(parents=True, exist_ok=True)
            table = json.loads(path.read_text()) if path.is_file() else {"entries": {}}
            table["device"] = torch.cuda.get_device_name(device)
            table["date"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
            table["entries"].update({k: c.to_json() for k, c in found.items()})
            path.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
            print(f"# wrote {path}")
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
