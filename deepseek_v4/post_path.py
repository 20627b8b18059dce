"""The MoE block of a V4 layer under DP attention + TP MoE (SGLang's ``_use_tp_moe_gather`` branch).

Per rank: its own tokens' residual stream ``x_local`` [n_rank, hc, H]. Then
    hc_pre -> gather every rank's MoE input into one SUM_LEN buffer (rank 0's rows first)
    -> MoE on all global rows with this rank's TP shard (a partial sum)
    -> combine back to local rows -> hc_post with the layer's residual.
The block's communication (gather, combine) and the epilogue (hc_post) run as ``mode`` says:
    fused          ``rsv.all_gatherv``, then ``rsv.reduce_scatterv`` with hc_post fused into
                   it (``rsv.epilogues.HcPost``: the fp32 sum goes straight into hc_post, one
                   rounding; ``f`` is written only when asked for) while no rank has more than
                   ``FUSED_HC_POST_MAX_ROWS`` rows, above that the fused combine and then hc_post
                   as one Triton kernel; the MoE writes its output straight into the symmetric
                   workspace;
    fused_combine  SGLang's all-reduce gather, the fused combine alone, then hc_post as one Triton
                   kernel (the fused combine without the rest, for comparison);
    reference      SGLang's NCCL path: all-reduce gather, NCCL's grouped-reduce combine
                   (``torch.distributed.reduce_scatter`` with uneven chunks: the upstream fix, SGLang
                   PR #27191; gloo on CPU), hc_post as one Triton kernel;
    scatter        the reference path with the combine copying own rows without reduction: the bug
                   that fix removed, kept to show it.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

import reduce_scatterv as rsv
from reduce_scatterv.epilogues import HcPost

from .mhc import hc_post_one_kernel, hc_pre
from .moe import moe
from .weights import LayerWeights, shard_chunks

COMBINES = ("fused", "fused_combine", "reference", "scatter")
# The fused hc_post runs the epilogue inside each program's receive loop, after its waits: measured on
# 2x H200 (bench/NOTES.md, combine + hc_post, us) it wins while the largest rank has at most 8 rows
# (even 8: 5.12 vs 5.67 for the fused combine + one-kernel hc_post; [8, 0]: 4.05 vs 4.26) and loses
# from 12 ([4, 12]: 6.76 vs 5.76; even 16: 7.44 vs 6.47; even 32: 11.16 vs 8.33). A rank-agreed choice:
# every rank sees the same sizes.
FUSED_HC_POST_MAX_ROWS = 8


def dp_gather(local: torch.Tensor, sizes: list[int], mode: str = "reference", group=None) -> torch.Tensor:
    """Every rank's rows in one [sum(sizes), ...] buffer, rank 0's first: ``rsv.all_gatherv`` in
    ``fused`` mode, else SGLang's all-reduce gather (zero the buffer, copy own rows in, all-reduce)."""
    if mode == "fused":
        return rsv.all_gatherv(local, sizes=sizes, group=group)
    rank = dist.get_rank(group)
    out = torch.zeros((sum(sizes), *local.shape[1:]), dtype=local.dtype, device=local.device)
    off = sum(sizes[:rank])
    out[off:off + sizes[rank]] = local
    dist.all_reduce(out, group=group)
    return out


def moe_output_buffer(mode: str, rows: int, hidden: int, dtype, device, group=None) -> torch.Tensor:
    """Where the MoE writes its partial sums: inside the symmetric workspace for the fused combines."""
    if mode in ("fused", "fused_combine"):
        return rsv.workspace(group, device).empty(rows, hidden, dtype=dtype)
    return torch.empty((rows, hidden), dtype=dtype, device=device)


def combine_post(partial: torch.Tensor, sizes: list[int], x_local: torch.Tensor, post: torch.Tensor,
                 comb: torch.Tensor, mode: str, want_f: bool = True, group=None):
    """This rank's rows of the sum over ranks of ``partial`` [sum(sizes), H] (``f`` [n, H]), then
    hc_post with the residual ``x_local`` [n, hc, H]. Returns (new residual [n, hc, H], f or None:
    the fused mode writes ``f`` only when ``want_f``)."""
    rank = dist.get_rank(group)
    n, H = sizes[rank], partial.shape[1]
    fuse_post = mode == "fused" and max(sizes) <= FUSED_HC_POST_MAX_ROWS
    f = torch.empty((n, H), dtype=partial.dtype, device=partial.device) if want_f or not fuse_post else None
    if fuse_post:
        out = torch.empty_like(x_local)
        rsv.reduce_scatterv(partial, sizes=sizes, group=group,
                            epilogue=HcPost(x_local, post.contiguous(), comb.contiguous(), out, f_out=f))
        return out, f
    if mode in ("fused", "fused_combine"):
        rsv.reduce_scatterv(partial, f, sizes=sizes, group=group)
    elif mode == "reference":
        dist.reduce_scatter(f, list(partial.split(sizes)), group=group)
    elif mode == "scatter":
        off = sum(sizes[:rank])
        f.copy_(partial[off:off + n])
    else:
        raise ValueError(f"unknown combine {mode!r}; choose one of {COMBINES}")
    return hc_post_one_kernel(f, x_local, post, comb), f


def moe_block(x_local: torch.Tensor, sizes: list[int], weights: LayerWeights, mode: str, group=None):
    """One MoE block forward for this rank's tokens. Returns (new residual [n, hc, H], f [n, H])."""
    if mode not in COMBINES:
        raise ValueError(f"unknown combine {mode!r}; choose one of {COMBINES}")
    cfg = weights.cfg
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    y, post, comb = hc_pre(x_local, *weights.hc(), cfg.rms_eps, cfg.hc_eps, cfg.sinkhorn_iters)
    y_global = dp_gather(y, sizes, mode, group)
    partial = moe_output_buffer(mode, sum(sizes), cfg.hidden, y.dtype, y.device, group)
    moe(y_global, weights, shard_chunks(cfg, rank, world), out=partial)
    return combine_post(partial, sizes, x_local, post, comb, mode, group=group)


def communication(mode: str, y: torch.Tensor, partial: torch.Tensor, x_local: torch.Tensor, post: torch.Tensor,
                  comb: torch.Tensor, sizes: list[int], group=None):
    """The block's communication and epilogue around the MoE, as one call to time: the gather of
    ``y`` [n, H] and the combine of ``partial`` [sum(sizes), H] with hc_post (``f`` not written)."""
    return (lambda: (dp_gather(y, sizes, mode, group),
                     combine_post(partial, sizes, x_local, post, comb, mode, want_f=False, group=group)))


def reference_block(x: torch.Tensor, weights: LayerWeights):
    """The same block for all tokens in one process with unsharded experts: (new residual, f)."""
    from .mhc import hc_post

    cfg = weights.cfg
    y, post, comb = hc_pre(x, *weights.hc(), cfg.rms_eps, cfg.hc_eps, cfg.sinkhorn_iters)
    f = moe(y, weights, list(range(cfg.moe_intermediate // cfg.shard_chunk)))
    return hc_post(f, x, post, comb), f
