"""Markdown tables of a sweep's JSON lines (the README's tables are printed by this, not typed).

    python -m bench.table bench/results/nvidia-h200-W4-full.jsonl --rows 1,8,64,512,1024,8192
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = ("fused", "fused_kernel", "fused_direct", "fused_pull", "nccl_rsv", "nccl_padded", "allreduce_slice")


def records(path: Path) -> tuple[dict, dict]:
    """(meta, {(hidden, dtype, distribution, rows, impl): record})."""
    meta, by = {}, {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        if r.get("kind") == "meta":
            meta = r
        else:
            by[(r["hidden"], r["dtype"], r["distribution"], r["rows_per_rank"], r["impl"])] = r
    return meta, by


def table(path: Path, rows: list[int], hidden: int = 7168, dtype: str = "bfloat16") -> str:
    """One line per (distribution, rows): us of every implementation, the speed-up of "fused" over
    NCCL's grouped reduce (and of the kernels alone, where they differ), and the mode."""
    _, by = records(path)
    dists = [d for d in ("even", "uneven", "idle_rank", "one_owner")
             if any(k[2] == d and k[0] == hidden and k[1] == dtype for k in by)]
    out = ["| distribution | rows/rank | fused (us) | kernels only (us) | no relay (us) | pull kernel (us) "
           "| NCCL reduce_scatterv (us) | NCCL padded RS (us) | all-reduce+slice (us) | speed-up "
           "| kernels-only speed-up | mode |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for d in dists:
        for n in rows:
            got = {c: by.get((hidden, dtype, d, n, c)) for c in COLUMNS}
            if got["fused"] is None or got["nccl_rsv"] is None:
                continue
            nccl = got["nccl_rsv"]["median_us"]
            kernel = got["fused_kernel"] or got["fused"]
            cells = [f"{got[c]['median_us']:.1f}" if got[c] else "=" if c != "nccl_padded" else "-" for c in COLUMNS]
            speed, kspeed = nccl / got["fused"]["median_us"], nccl / kernel["median_us"]
            mode = got["fused"]["config"]["mode"]
            if got["fused"]["config"].get("relayed_tiles"):
                mode += " + relay"
            if got["fused_kernel"]:
                kmode = got["fused_kernel"]["config"]["mode"]
                kmode += " + relay" if got["fused_kernel"]["config"].get("relayed_tiles") else ""
                mode = f"{mode} (kernels: {kmode})" if kmode != mode else mode
            bold = (lambda s, x: f"**{s}**" if x < 1 else s)
            out.append(f"| {d} | {n} | " + " | ".join(cells) + f" | {bold(f'{speed:.2f}x', speed)} | "
                       f"{bold(f'{kspeed:.2f}x', kspeed)} | {mode} |")
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.table", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", type=Path)
    ap.add_argument("--rows", default="1,8,64,512,1024,8192")
    ap.add_argument("--hidden", type=int, default=7168)
    ap.add_argument("--dtype", default="bfloat16")
    args = ap.parse_args(argv)
    meta, _ = records(args.path)
    print(f"<!-- {args.path.name}: {meta.get('card')} x{meta.get('world')}, {meta.get('date')}, "
          f"peer-read ceiling {meta.get('peer_ceiling_gbps', 0):.0f} GB/s -->")
    print(table(args.path, [int(x) for x in args.rows.split(",")], args.hidden, args.dtype))


if __name__ == "__main__":
    main()
