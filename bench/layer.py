"""Per layer of DeepSeek V4: the MoE block's communication + epilogue (gather, combine, hc_post; the
MoE itself excluded) for the fused, fused_combine and reference paths (``deepseek_v4/post_path.py``),
CUDA-graph replay, max over ranks, and the total per decode step over the preset's layers.

    torchrun --nproc-per-node 2 -m bench.layer --preset latency   # GPUs (V4-Pro shapes)
    torchrun --nproc-per-node 2 -m bench.layer --preset tiny      # CPU emulation (numbers meaningless)

Rank 0 prints a table and writes JSON lines to ``<out>/<card>-W<world>-layer-<preset>.jsonl``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.distributed as dist

from bench import records
from bench.sweep import distribution
from reduce_scatterv import distributed_env as dist_env
from reduce_scatterv._triton_mode import kernel_module

PRESETS = {  # (rows per rank, model preset, distributions)
    "tiny": ([1, 3], "tiny", ["even", "uneven"]),
    "latency": ([1, 2, 4, 8, 16, 32], "pro", ["even", "uneven", "idle_rank"]),
    "decode": ([1, 2, 4, 8], "pro", ["even", "uneven", "idle_rank"]),  # where hc_post is fused
}

def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.layer", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", choices=sorted(PRESETS), default=None)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--in-step", action="store_true",
                    help="also time the fused path's parts and whole with the ranks brought in step before each call")
    args = ap.parse_args(argv)
    device = dist_env.init()
    kernel_module(device.type)
    from deepseek_v4 import LayerWeights, preset
    from deepseek_v4.demo import layer_times

    name = args.preset or ("latency" if device.type == "cuda" else "tiny")
    rows_list, model, dists = PRESETS[name]
    cfg = preset(model)
    weights = LayerWeights(cfg, 0, device)
    rank, world = dist.get_rank(), dist.get_world_size()
    card = dist_env.card_name(device)
    stamp = records.now_stamp()
    if rank == 0:
        path = records.start(args.out, card, world, f"layer-{name}", date=stamp, preset=name, model=cfg.name,
                             layers=cfg.num_layers, torch=torch.__version__)
        print(f"# V4-{cfg.name} MoE block, communication + epilogue per layer, {card} x{world}, {stamp}; us "
              f"(CUDA-graph replay, max over ranks); per step = x {cfg.num_layers} layers")
        print(f"{'dist':>9} {'rows':>5} | {'fused':>7} {'(gather':>8} {'comb+hc)':>9} {'fused_comb':>10} "
              f"{'reference':>9} | {'x ref':>6} {'saved/step':>10}")
    for dist_name in dists:
        for rows in rows_list:
            sizes = distribution(dist_name, rows, world)
            off, n = sum(sizes[:rank]), sizes[rank]
            x_local = weights.inputs(sum(sizes))[off:off + n].contiguous()
            t = layer_times(cfg, weights, x_local, sizes, device, args.in_step)
            if rank == 0:
                f, fc, ref = t["fused"], t["fused_combine"]["total"], t["reference"]["total"]
                print(f"{dist_name:>9} {rows:>5} | {f['total']:7.1f} {f['gather']:8.1f} {f['combine']:9.1f} "
                      f"{fc:10.1f} {ref:9.1f} | {ref / f['total']:6.2f} {(ref - f['total']) * cfg.num_layers:10.0f}" +
                      (f" | in step: {f['total_in_step']:5.1f} (gather {f['gather_in_step']:4.1f} "
                       f"comb+hc {f['combine_in_step']:4.1f})" if args.in_step else ""), flush=True)
                records.append(path, (dict(date=stamp, card=card, world=world, model=cfg.name, distribution=dist_name,
                                           rows_per_rank=rows, sizes=sizes, path=mode, layers=cfg.num_layers,
                                           **{k: round(v, 2) for k, v in parts.items()}) for mode, parts in t.items()))
    records.close(path if rank == 0 else None)

if __name__ == "__main__":
    main()
