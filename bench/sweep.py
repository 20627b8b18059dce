"""The sweep: every implementation on every size and distribution, timed side by side.

    torchrun --nproc-per-node 4 -m bench --preset full        # GPUs: NCCL vs fused, CUDA graphs
    torchrun --nproc-per-node 4 -m bench --preset latency     # decode sizes only (1-32 rows per rank)
    torchrun --nproc-per-node 2 -m bench --preset tiny        # CPU emulation (gloo); numbers meaningless
    torchrun --nproc-per-node 2 -m bench --preset mid --ll-bytes 2097152 --impls fused,fused_push,nccl_rsv
                                                              # where flagged words and the plain push cross

Rank 0 prints a table and writes JSON lines (one per measurement) and a PNG plot under
``bench/results/``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.distributed as dist

import reduce_scatterv as rsv
from bench import impls, records
from reduce_scatterv import distributed_env as dist_env
from reduce_scatterv.timing import time_call
from reduce_scatterv import api
from reduce_scatterv._triton_mode import kernel_module
from reduce_scatterv.workspace import default_gather_ll_bytes

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
ALL_ROWS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
PRESETS = {
    # name: list of (rows per rank, hidden sizes, dtypes, distributions)
    "tiny": [([1, 3], [16], ["bfloat16"], ["even", "uneven", "idle_rank", "one_owner"])],
    "latency": [([1, 2, 4, 8, 16, 32], [7168], ["bfloat16"], ["even", "uneven", "idle_rank", "one_owner"])],
    "bandwidth": [([128, 256, 512, 1024, 4096, 8192], [7168], ["bfloat16"],
                   ["even", "uneven", "idle_rank", "one_owner"])],
    "skew": [([32, 64, 128, 256, 512, 1024], [7168], ["bfloat16"], ["uneven", "idle_rank", "one_owner"])],
    "mid": [([16, 32, 48, 64, 96, 128], [7168], ["bfloat16"], ["even", "uneven", "one_owner"])],
    "quick": [([1, 8, 64, 512, 1024, 4096], [7168], ["bfloat16"], ["even", "uneven", "one_owner"])],
    "full": [(ALL_ROWS, [4096, 7168], ["bfloat16"], ["even", "uneven", "idle_rank", "one_owner"]),
             ([1, 64, 1024], [7168], ["float16", "float32"], ["even", "uneven"])],
}


def distribution(name: str, rows: int, world: int) -> list[int]:
    """Rows per rank for ``rows`` per rank spread as ``name``."""
    if name == "even":
        return [rows] * world
    if name == "uneven":  # 0.5x .. 1.5x, in rank order
        return [max(0, round(rows * (0.5 + r / max(world - 1, 1)))) for r in range(world)]
    if name == "idle_rank":
        return [rows] * (world - 1) + [0]
    if name == "one_owner":
        return [rows] + [0] * (world - 1)
    raise ValueError(name)


def _fused_choice(partial: torch.Tensor, sizes: list[int]) -> dict:
    """The mode and config the API picks for this call (recorded with each measurement), and
    whether it relays a heavy owner's rows (decided as the kernel decides, from the tile counts)."""
    ws = rsv.workspace(device=partial.device)
    call = api.check_call(partial, None, sizes, ws.world_size, ws.rank)
    plan = api.plan_call(ws, call, partial)
    relayed = 0
    if plan.variant is not None:
        relayed = api.relayed_tiles(sizes, call.hidden, plan.config.block, plan.variant)
    return {**plan.config.to_json(), "mode": plan.mode, "relayed_tiles": relayed}


def run_case(device, rows, hidden, dtype, dist_name, impl_names, ceiling, card, stamp):
    world, rank = dist.get_world_size(), dist.get_rank()
    sizes = distribution(dist_name, rows, world)
    g = torch.Generator(device=device).manual_seed(1234 + rank)
    partial = torch.randn((sum(sizes), hidden), generator=g, device=device).to(DTYPES[dtype])
    # correctness first: fused against NCCL's grouped reduce on the same inputs
    check = {}
    for name in ("fused", "nccl_rsv"):
        call, out = impls.build(name, partial, sizes, rank)
        call()
        check[name] = out.float().clone()
    err, scale, errs = 0.0, 1.0, {}
    if check["nccl_rsv"].numel():
        scale = max(check["nccl_rsv"].abs().max().item(), 1e-30)
        err = (check["fused"] - check["nccl_rsv"]).abs().max().item() / scale
    results = []
    mode = _fused_choice(partial, sizes)["mode"]
    for name in impl_names:
        if (name == "nccl_padded" and device.type != "cuda") or not impls.applies(name, sizes, hidden, mode):
            continue  # gloo has no reduce_scatter_tensor
        call, out = impls.build(name, partial, sizes, rank)
        if name in impls.HIER_IMPLS:  # checked against NCCL before it is timed
            call()
            errs[name] = (out.float() - check["nccl_rsv"]).abs().max().item() / scale if out.numel() else 0.0
        us = time_call(call, device)
        results.append((name, us))
        del call
    times = dict(results)
    peer_bytes = (world - 1) * max(sizes) * hidden * partial.element_size()  # a direct pull's inbound bytes
    rows_out = []
    for name, us in results:
        rec = dict(date=stamp, card=card, world=world, hidden=hidden, dtype=dtype, distribution=dist_name,
                   rows_per_rank=rows, sizes=sizes, impl=name, median_us=round(us, 2),
                   ratio_vs_nccl_rsv=round(times["nccl_rsv"] / us, 3) if "nccl_rsv" in times else None,
                   peer_gbps=round(peer_bytes / us / 1e3, 1) if us else None)
        if name in errs:
            rec["max_rel_err_vs_nccl"] = errs[name]
        if name.startswith("fused"):
            rec["config"] = impls.planned_under(impls.API_SETTINGS.get(name, {}),
                                                lambda: _fused_choice(partial, sizes))()
            rec["max_rel_err_vs_nccl"] = err
            if ceiling:
                rec["pct_of_peer_ceiling"] = round(100 * rec["peer_gbps"] / ceiling, 1)
        rows_out.append(rec)
    return rows_out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default=None,
                    help="sizes to sweep (default: full on GPUs, tiny on CPU emulation)")
    ap.add_argument("--impls", default=",".join(impls.IMPLS))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--ll-bytes", type=int, default=None,
                    help="create the workspace with this ll_bytes (where the flagged words stop; default the library's)")
    args = ap.parse_args(argv)
    device = dist_env.init()
    kernel_module(device.type)  # fix the Triton mode (interpreter on CPU) before anything imports triton
    if args.ll_bytes is not None:  # the group's workspace, made before any call makes it with the defaults
        rsv.workspace(ll_bytes=args.ll_bytes, gather_ll_bytes=default_gather_ll_bytes(dist.get_world_size()))
    preset = args.preset or ("full" if device.type == "cuda" else "tiny")
    rank, world = dist.get_rank(), dist.get_world_size()
    card = dist_env.card_name(device)
    stamp = records.now_stamp()
    ceiling, ceiling_cfg, write_ceiling = 0.0, {}, 0.0
    if device.type == "cuda" and world > 1:
        from bench.peer_bandwidth import measure

        ceiling, ceiling_cfg = measure(device)
        write_ceiling = measure(device, write=True)[0]
    if rank == 0:  # written as the sweep goes, so a run cut short keeps what it measured
        path = records.start(args.out, card, world, preset, date=stamp, preset=preset, peer_ceiling_gbps=ceiling,
                             ceiling_launch=ceiling_cfg, peer_write_ceiling_gbps=round(write_ceiling, 1),
                             torch=torch.__version__, triton=_triton_version(),
                             nccl=".".join(map(str, torch.cuda.nccl.version())) if device.type == "cuda" else None,
                             ll_bytes=rsv.workspace().layout.ll_bytes)
        print(f"# {card} x{world}, {stamp}, preset {preset}; peer-read ceiling {ceiling:.0f} GB/s {ceiling_cfg}, "
              f"peer-write ceiling {write_ceiling:.0f} GB/s; flagged words up to {rsv.workspace().layout.ll_bytes} "
              f"bytes per destination")
        print(f"{'H':>5} {'dtype':>8} {'dist':>9} {'rows':>5} | {'fused':>9} {'copy-in':>9} {'kernel':>9} "
              f"{'direct':>9} {'push':>9} {'pull':>9} {'nccl_rsv':>9} {'padded':>9} {'allred':>9} | {'x nccl':>6} "
              f"{'GB/s':>6} {'%ceil':>5} {'mode':>5}", flush=True)
    for rows_list, hiddens, dtypes, dists in PRESETS[preset]:
        for dtype in dtypes:
            for hidden in hiddens:
                for dist_name in dists:
                    for rows in rows_list:
                        recs = run_case(device, rows, hidden, dtype, dist_name, args.impls.split(","), ceiling,
                                        card, stamp)
                        if rank == 0:
                            print(_table_line(recs), flush=True)
                            records.append(path, recs)
    if rank == 0:
        print(f"# wrote {path}")
        if not args.no_plot:
            from bench.plot import plot

            print(f"# wrote {plot(path)}")
    dist.barrier()
    dist.destroy_process_group()


def _triton_version() -> str:
    import triton

    return triton.__version__


def _table_line(recs: list[dict]) -> str:
    by = {r["impl"]: r for r in recs}
    r0 = recs[0]
    f = by.get("fused", {})

    def us(name):
        return f"{by[name]['median_us']:9.1f}" if name in by else f"{'-':>9}"

    return (f"{r0['hidden']:>5} {r0['dtype']:>8} {r0['distribution']:>9} {r0['rows_per_rank']:>5} | {us('fused')} "
            f"{us('fused_copy')} {us('fused_direct')} {us('fused_push')} {us('fused_pull')} "
            f"{us('nccl_rsv')} {us('nccl_padded')} {us('allreduce_slice')} | "
            f"{f.get('ratio_vs_nccl_rsv') or 0:6.2f} {f.get('peer_gbps') or 0:6.0f} "
            f"{f.get('pct_of_peer_ceiling', 0):5.0f} {f.get('config', {}).get('mode', '-'):>5}"
            + "".join(f" | {n} {by[n]['median_us']:.1f}" for n in impls.HIER_IMPLS if n in by))


if __name__ == "__main__":
    main()
