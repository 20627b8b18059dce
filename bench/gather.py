"""all_gatherv against what SGLang runs before the MoE, timed side by side (CUDA-graph replay,
median over replays, max over ranks).

    torchrun --nproc-per-node 2 -m bench.gather --preset latency   # GPUs
    torchrun --nproc-per-node 2 -m bench.gather --preset tiny      # CPU emulation (numbers meaningless)

fused           rsv.all_gatherv, rows in the symmetric workspace (flagged words at decode sizes)
fused_copy      rsv.all_gatherv on an ordinary tensor
fused_pull      "fused" with flagged words off (the pull kernel)
fused_packed    "fused" with packed flagged words wherever flagged words run (``api.PACKED_MIN_BYTES`` 0;
                flagged_words.py). Not in the default list: ``--impls fused,fused_packed``
nccl_allreduce  SGLang's default gather: zero a [sum(sizes), H] buffer, copy own rows in, all-reduce
nccl_allgatherv torch.distributed.all_gather with uneven outputs = NCCL grouped broadcast, one per
                rank (SGLang's GroupCoordinator.all_gatherv)
hier2           rsv.all_gatherv on a group split into 2 "nodes" of world/2 ranks (kernels/hierarchy.py);
                on one host NVLink stands in for the network: this measures the hierarchy's overheads,
                not a network. Not in the default list (even world sizes): ``--impls fused,hier2``

Rank 0 prints a table and writes JSON lines to ``<out>/<card>-W<world>-gather-<preset>.jsonl``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.distributed as dist

import reduce_scatterv as rsv
from bench import records
from bench.impls import planned_under
from bench.sweep import DTYPES, distribution
from reduce_scatterv import distributed_env as dist_env
from reduce_scatterv._triton_mode import kernel_module
from reduce_scatterv.timing import time_call

IMPLS = ("fused", "fused_copy", "fused_pull", "nccl_allreduce", "nccl_allgatherv")
KNOWN = IMPLS + ("hier2", "fused_packed")
PRESETS = {
    "tiny": ([1, 3], [16], ["even", "uneven", "idle_rank"]),
    "latency": ([1, 2, 4, 8, 16, 32], [7168], ["even", "uneven", "idle_rank", "one_owner"]),
    "quick": ([1, 8, 32, 128, 512, 2048], [7168], ["even", "uneven"]),
    "mid": ([16, 32, 48, 64, 96, 128], [7168], ["even", "uneven", "one_owner"]),  # where the modes cross
}


def build(impl: str, mine: torch.Tensor, sizes: list[int], rank: int):
    """(call, output) for ``impl`` gathering this rank's ``mine`` [sizes[rank], H]."""
    H, n = mine.shape[1], sum(sizes)
    out = torch.empty((n, H), dtype=mine.dtype, device=mine.device)
    if impl == "hier2":
        from bench.impls import hier_group

        group = hier_group(len(sizes))
        return (lambda: rsv.all_gatherv(mine, out, sizes=sizes, group=group)), out
    if impl.startswith("fused"):
        inp = mine
        if impl != "fused_copy":  # Workspace.empty is collective: the same shape on every rank, then sliced
            ws = rsv.workspace()
            # grow first (a call that grows the workspace moves it, and the tensor would be copied in)
            ws.reserve(max_input_bytes=max(sizes) * H * mine.element_size())
            inp = ws.empty(max(sizes), H, dtype=mine.dtype, region=1)[: sizes[rank]]
            inp.copy_(mine)
        call = lambda: rsv.all_gatherv(inp, out, sizes=sizes)  # noqa: E731
        settings = {"fused_pull": dict(MODES_OFF=frozenset({"ll"})), "fused_packed": dict(PACKED_MIN_BYTES=0)}
        return (planned_under(settings[impl], call) if impl in settings else call), out
    off = sum(sizes[:rank])
    if impl == "nccl_allreduce":
        def allreduce():
            out.zero_()
            out[off: off + sizes[rank]].copy_(mine)
            dist.all_reduce(out)
        return allreduce, out
    if impl == "nccl_allgatherv":
        views = list(out.split(sizes))
        if mine.device.type == "cuda":  # uneven outputs: ProcessGroupNCCL groups one broadcast per rank
            return (lambda: dist.all_gather(views, mine)), out

        def broadcasts():  # gloo takes even all-gathers only
            views[rank].copy_(mine)
            for q, v in enumerate(views):
                dist.broadcast(v, src=q)
        return broadcasts, out
    raise ValueError(f"unknown implementation {impl}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.gather", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default=None)
    ap.add_argument("--impls", default=",".join(IMPLS))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--ll-bytes", type=int, default=None,
                    help="create the workspace with this gather_ll_bytes (where flagged words stop; default the library's)")
    args = ap.parse_args(argv)
    names = args.impls.split(",")
    if set(names) - set(KNOWN):
        ap.error(f"unknown --impls {sorted(set(names) - set(KNOWN))}; known: {', '.join(KNOWN)}")
    device = dist_env.init()
    kernel_module(device.type)
    ws = rsv.workspace(**({} if args.ll_bytes is None else dict(gather_ll_bytes=args.ll_bytes)))
    preset = args.preset or ("latency" if device.type == "cuda" else "tiny")
    rank, world = dist.get_rank(), dist.get_world_size()
    card = dist_env.card_name(device)
    stamp = records.now_stamp()
    if rank == 0:
        path = records.start(args.out, card, world, f"gather-{preset}", date=stamp, preset=preset,
                             torch=torch.__version__, gather_ll_bytes=ws.layout.gather_ll_limit)
        print(f"# all_gatherv, {card} x{world}, {stamp}; us per call (CUDA-graph replay, max over ranks); "
              f"flagged words up to {ws.layout.gather_ll_limit} bytes per source")
        print(f"{'dist':>9} {'rows':>5} | " + " ".join(f"{n:>15}" for n in names) + " | x allreduce x allgatherv")
    rows_list, hiddens, dists = PRESETS[preset]
    for hidden in hiddens:
        for dist_name in dists:
            for rows in rows_list:
                sizes = distribution(dist_name, rows, world)
                g = torch.Generator(device=device).manual_seed(99 + rank)
                mine = torch.randn((sizes[rank], hidden), generator=g, device=device).to(DTYPES["bfloat16"])
                results = {}
                want = None
                for name in names:
                    call, out = build(name, mine, sizes, rank)
                    out.fill_(float("nan"))
                    call()
                    if want is None:
                        want = out.clone()
                    elif not torch.equal(out, want):  # every implementation copies exactly
                        raise AssertionError(f"{name} {sizes}: result differs from {names[0]}")
                    results[name] = time_call(call, device)
                if rank == 0:
                    f = results.get("fused")
                    ratio = lambda ref: f"{results[ref] / f:11.2f}" if f and ref in results else f"{'-':>11}"  # noqa: E731
                    print(f"{dist_name:>9} {rows:>5} | " + " ".join(f"{results[n]:15.2f}" for n in names)
                          + f" | {ratio('nccl_allreduce')} {ratio('nccl_allgatherv')}", flush=True)
                    records.append(path, (dict(date=stamp, card=card, world=world, hidden=hidden, dtype="bfloat16",
                                               distribution=dist_name, rows_per_rank=rows, sizes=sizes, impl=name,
                                               median_us=round(us, 2)) for name, us in results.items()))
    records.close(path if rank == 0 else None)


if __name__ == "__main__":
    main()
