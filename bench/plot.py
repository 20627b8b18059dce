"""PNG plots of a sweep's JSON lines: latency and speed-up over NCCL against rows per rank."""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

COLOR = {"fused": "C0", "fused_copy": "C1", "fused_kernel": "C2", "fused_direct": "C6", "fused_push": "C8",
         "fused_pull": "C9", "nccl_rsv": "C3", "nccl_padded": "C4", "allreduce_slice": "C5"}
STYLE = {"fused": "o-", "fused_copy": "o--", "fused_kernel": "o-.", "fused_direct": "d:", "fused_push": "v--",
         "fused_pull": "<:", "nccl_rsv": "s-", "nccl_padded": "^:", "allreduce_slice": "x:"}


def plot(path: str | Path) -> list[Path]:
    """One PNG per (hidden, dtype) in the file; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    lines = [json.loads(s) for s in path.read_text().splitlines() if s.strip()]
    meta = next((r for r in lines if r.get("kind") == "meta"), {})
    recs = [r for r in lines if r.get("kind") != "meta"]
    groups = defaultdict(list)
    for r in recs:
        groups[(r["hidden"], r["dtype"])].append(r)
    written = []
    for (hidden, dtype), rs in sorted(groups.items()):
        dists = sorted({r["distribution"] for r in rs})
        fig, axes = plt.subplots(2, len(dists), figsize=(4.2 * len(dists), 7), squeeze=False)
        for col, d in enumerate(dists):
            sub = [r for r in rs if r["distribution"] == d]
            for impl in STYLE:
                pts = sorted((r["rows_per_rank"], r["median_us"]) for r in sub if r["impl"] == impl)
                if pts:
                    axes[0][col].plot(*zip(*pts), STYLE[impl], color=COLOR[impl], label=impl, ms=3)
            for impl in (i for i in STYLE if i.startswith("fused")):
                ratio = sorted((r["rows_per_rank"], r["ratio_vs_nccl_rsv"]) for r in sub if r["impl"] == impl)
                if ratio:
                    axes[1][col].plot(*zip(*ratio), STYLE[impl], color=COLOR[impl], ms=3, label=impl)
            axes[1][col].legend(fontsize=7)
            axes[1][col].axhline(1.0, color="gray", lw=0.8)
            for ax in axes[:, col]:
                ax.set_xscale("log", base=2)
                ax.grid(True, which="both", alpha=0.3)
            axes[0][col].set_yscale("log")
            axes[0][col].set_title(f"{d}")
            axes[0][col].set_ylabel("us per call (max over ranks)")
            axes[1][col].set_ylabel("speed-up over NCCL reduce_scatterv")
            axes[1][col].set_xlabel("rows per rank")
        axes[0][-1].legend(fontsize=7)
        fig.suptitle(f"{meta.get('card', '?')} x{meta.get('world', '?')}  H={hidden} {dtype}  ({meta.get('date', '')})")
        fig.tight_layout()
        out = path.with_name(f"{path.stem}-H{hidden}-{dtype}.png")
        fig.savefig(out, dpi=90)
        plt.close(fig)
        written.append(out)
    return written


if __name__ == "__main__":
    for p in sys.argv[1:]:
        print(plot(p))
