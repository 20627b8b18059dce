"""One DeepSeek V4 MoE block forward under DP attention + TP MoE, checked against one process.

    python -m deepseek_v4 --world-size 3 --tokens 0,5,2 --combine fused          # CPU emulation
    torchrun --nproc-per-node 4 -m deepseek_v4 --tokens 1,8,0,32 --preset pro   # GPUs

Starts the rank processes itself (one per GPU when there are enough GPUs, else CPU emulation over
gloo), or runs under torchrun. Every rank runs hc_pre -> gather -> sharded MoE -> combine ->
hc_post for its own tokens (``--combine``: fused, fused_combine, reference or scatter, see
``post_path.py``) and compares with the unsharded block computed in a single process. Prints a
per-rank table; on GPUs the per-layer time of the block's communication + epilogue (gather,
combine, hc_post; the MoE excluded) for the fused, fused_combine and reference paths (CUDA-graph
replay, max over ranks) and its total per decode step over the preset's layers; last the max
relative error, exiting 1 when that exceeds the dtype's tolerance, as ``--combine scatter`` does.
"""

from __future__ import annotations

import argparse
import os
import sys

TOLERANCE = {"bfloat16": 2e-2}


def parse(argv=None) -> argparse.Namespace:
    from .post_path import COMBINES

    ap = argparse.ArgumentParser(prog="python -m deepseek_v4", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--world-size", type=int, default=None, help="ranks to start (not needed under torchrun)")
    ap.add_argument("--tokens", required=True, help="tokens per DP rank, comma separated, e.g. 1,8,0,32")
    ap.add_argument("--combine", choices=COMBINES, default="fused")
    ap.add_argument("--preset", default=None, help="flash, pro, tiny or small (default: pro on GPUs, tiny on CPU)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.tokens = [int(t) for t in args.tokens.split(",")]
    if any(t < 0 for t in args.tokens):
        ap.error("--tokens must not be negative")
    world = int(os.environ.get("WORLD_SIZE", args.world_size or len(args.tokens)))
    if args.world_size is not None and args.world_size != world:
        ap.error(f"--world-size {args.world_size} but torchrun started {world} ranks")
    if len(args.tokens) != world:
        ap.error(f"--tokens lists {len(args.tokens)} counts for {world} ranks")
    args.world_size = world
    return args


def rel_err(got, want) -> float:
    if want.numel() == 0:
        return 0.0
    return float((got.float() - want.float()).norm() / want.float().norm().clamp_min(1e-30))


def run_rank(args: argparse.Namespace, device_type: str | None) -> int:
    import torch
    import torch.distributed as dist

    from reduce_scatterv import distributed_env

    from .config import preset
    from .post_path import moe_block, reference_block
    from .weights import LayerWeights

    device = distributed_env.init(device_type)
    rank, world = dist.get_rank(), dist.get_world_size()
    cfg = preset(args.preset or ("pro" if device.type == "cuda" else "tiny"))
    weights = LayerWeights(cfg, args.seed, device)
    sizes = args.tokens
    off, n = sum(sizes[:rank]), sizes[rank]
    x = weights.inputs(sum(sizes))
    out, f = moe_block(x[off:off + n], sizes, weights, args.combine)
    ref_out, ref_f = reference_block(x, weights)
    row = (rank, n, rel_err(f, ref_f[off:off + n]), rel_err(out, ref_out[off:off + n]))
    rows = [None] * world
    dist.all_gather_object(rows, row)
    times = {}
    if device.type == "cuda":
        times = layer_times(cfg, weights, x[off:off + n], sizes, device)
    tol = TOLERANCE["bfloat16"]
    worst = max(max(r[2], r[3]) for r in rows)
    if rank == 0:
        where = f"{world} GPUs ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else \
            f"{world} ranks (CPU emulation: Triton interpreter, gloo)"
        print(f"DeepSeek V4 MoE block, preset {cfg.name} (hidden {cfg.hidden}, {cfg.n_routed_experts} routed + "
              f"{cfg.n_shared_experts} shared experts, top-{cfg.top_k}), seed {args.seed}")
        print(f"DP attention + TP MoE on {where}; tokens per rank {sizes}; combine = {args.combine}")
        print(f"{'rank':>4} {'tokens':>6} {'rel.err MoE output f':>21} {'rel.err block output':>21}")
        for r, tokens, ef, eo in rows:
            cells = ("-", "-") if tokens == 0 else (f"{ef:.2e}", f"{eo:.2e}")
            print(f"{r:>4} {tokens:>6} {cells[0]:>21} {cells[1]:>21}")
        if times:
            ref = times["reference"]["total"]
            print(f"per layer, the block's communication + epilogue (CUDA-graph replay, max over ranks; us), and per "
                  f"decode step over {cfg.num_layers} layers:")
            print(f"{'path':>14} {'gather':>8} {'combine+hc_post':>16} {'total':>8} {'per step':>9} {'x reference':>11}")
            for mode, t in times.items():
                print(f"{mode:>14} {t['gather']:8.1f} {t['combine']:16.1f} {t['total']:8.1f} "
                      f"{t['total'] * cfg.num_layers:9.0f} {ref / t['total']:11.2f}")
            saved = (ref - times["fused"]["total"]) * cfg.num_layers
            print(f"fused saves {saved:.0f} us per decode step against the reference path ({cfg.num_layers} layers)")
        verdict = "PASS" if worst <= tol else "FAIL"
        hint = "" if worst <= tol else " - the combine did not sum the TP partial outputs (the bug SGLang PR #27191 fixed)" \
            if args.combine == "scatter" else " - outputs differ from the unsharded computation"
        print(f"max relative error {worst:.3e} (bfloat16 tolerance {tol:.0e}): {verdict}{hint}", flush=True)
    dist.barrier()
    dist.destroy_process_group()
    return 0 if worst <= tol else 1


def layer_times(cfg, weights, x_local, sizes, device, in_step: bool = False) -> dict:
    """{path: {"gather", "combine", "total"}} in us: the block's communication + epilogue of the
    fused, fused_combine and reference paths on this rank's tokens, each part and the whole timed
    under CUDA-graph replay (``rsv.timing.time_call``: median over replays, max over ranks). With
    ``in_step`` also the fused path's, timed with the ranks in step at each call ("gather_in_step", ...):
    back to back, a part with unequal loads overlaps its own consecutive calls, which it cannot do
    between the other part's calls in the layer."""
    import torch

    import reduce_scatterv as rsv
    from reduce_scatterv.timing import time_call

    from .mhc import hc_pre
    from .post_path import combine_post, communication, dp_gather, moe_output_buffer

    y, post, comb = hc_pre(x_local, *weights.hc(), cfg.rms_eps, cfg.hc_eps, cfg.sinkhorn_iters)
    # grown before the timed calls (a call that grows the workspace moves it, and the MoE's output
    # would no longer lie in it)
    rsv.workspace(None, device).reserve(max_input_bytes=sum(sizes) * cfg.hidden * 2,
                                            arena_bytes=sum(sizes) * cfg.hidden * 2)
    times = {}
    for mode in ("fused", "fused_combine", "reference"):
        partial = moe_output_buffer(mode, sum(sizes), cfg.hidden, torch.bfloat16, device)
        partial.normal_()
        gather = lambda: dp_gather(y, sizes, mode)  # noqa: E731
        combine = lambda: combine_post(partial, sizes, x_local, post, comb, mode, want_f=False)  # noqa: E731
        whole = communication(mode, y, partial, x_local, post, comb, sizes)
        times[mode] = dict(gather=time_call(gather, device), combine=time_call(combine, device),
                           total=time_call(whole, device))
        if in_step and mode == "fused":  # each part with the ranks brought in step before it (see time_call)
            token = torch.ones(1, 8, device=device)
            step = lambda: rsv.all_gatherv(token, sizes=[1] * len(sizes))  # noqa: E731
            times[mode].update(gather_in_step=time_call(gather, device, in_step=step),
                               combine_in_step=time_call(combine, device, in_step=step),
                               total_in_step=time_call(whole, device, in_step=step))
    return times


def main(argv=None) -> int:
    args = parse(argv)
    if "RANK" in os.environ:  # under torchrun
        return run_rank(args, None)
    import torch

    from reduce_scatterv import distributed_env

    device_type = "cuda" if torch.cuda.is_available() and torch.cuda.device_count() >= args.world_size else "cpu"
    if device_type == "cpu":
        from reduce_scatterv._triton_mode import interpreter_problem

        problem = interpreter_problem()
        if problem:
            print(f"python -m deepseek_v4: {problem}", file=sys.stderr)
            return 2
    return distributed_env.spawn(run_rank, args.world_size, args, device_type)

