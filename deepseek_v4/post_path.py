"""The MoE block of a V4 layer under DP attention + TP MoE (SGLang's ``_use_tp_moe_gather`` branch).

Per rank: its own tokens' residual stream ``x_local`` [n_rank, hc, H]. Then
    hc_pre -> gather every rank's MoE input into one SUM_LEN buffer (rank 0's rows first)
    -> MoE on all global rows with this rank's TP shard (a partial sum)
    -> combine back to local rows -> hc_post with the layer's residual.
The combine is what this project replaces:
    fused      kernels.reduce_scatterv, the MoE writing straight into the symmetric workspace;
    reference  torch.distributed.reduce_scatter with uneven chunks (NCCL's grouped reduce: the
               upstream fix, SGLang PR #27191; gloo on CPU);
    scatter    copy own rows without reduction: the bug that fix removed, kept to show it.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

import kernels

from .mhc import hc_post, hc_pre
from .moe import moe
from .weights import LayerWeights, shard_chunks

COMBINES = ("fused", "reference", "scatter")


def dp_gather(local: torch.Tensor, sizes: list[int], group=None) -> torch.Tensor:
    """Every rank's rows in one [sum(sizes), ...] buffer, rank 0's first (SGLang's all-reduce gather)."""
    rank = dist.get_rank(group)
    out = torch.zeros((sum(sizes), *local.shape[1:]), dtype=local.dtype, device=local.device)
    off = sum(sizes[:rank])
    out[off:off + sizes[rank]] = local
    dist.all_reduce(out, group=group)
    return out


def moe_output_buffer(mode: str, rows: int, hidden: int, dtype, device, group=None) -> torch.Tensor:
    """Where the MoE writes its partial sums: inside the symmetric workspace for the fused combine."""
    if mode == "fused":
        return kernels.workspace(group, device).empty(rows, hidden, dtype=dtype)
    return torch.empty((rows, hidden), dtype=dtype, device=device)


def combine(partial: torch.Tensor, sizes: list[int], mode: str, out: torch.Tensor, group=None) -> torch.Tensor:
    """This rank's rows of the sum over ranks of ``partial`` [sum(sizes), H], into ``out`` [n_rank, H]."""
    rank = dist.get_rank(group)
    if mode == "fused":
        return kernels.reduce_scatterv(partial, out, sizes=sizes, group=group)
    if mode == "reference":
        dist.reduce_scatter(out, list(partial.split(sizes)), group=group)
        return out
    if mode == "scatter":
        off = sum(sizes[:rank])
        return out.copy_(partial[off:off + sizes[rank]])
    raise ValueError(f"unknown combine {mode!r}; choose one of {COMBINES}")


def moe_block(x_local: torch.Tensor, sizes: list[int], weights: LayerWeights, mode: str, group=None):
    """One MoE block forward for this rank's tokens. Returns (new residual [n, hc, H], f [n, H])."""
    cfg = weights.cfg
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    y, post, comb = hc_pre(x_local, *weights.hc(), cfg.rms_eps, cfg.hc_eps, cfg.sinkhorn_iters)
    y_global = dp_gather(y, sizes, group)
    partial = moe_output_buffer(mode, sum(sizes), cfg.hidden, y.dtype, y.device, group)
    moe(y_global, weights, shard_chunks(cfg, rank, world), out=partial)
    f = combine(partial, sizes, mode, torch.empty_like(y), group)
    return hc_post(f, x_local, post, comb), f


def reference_block(x: torch.Tensor, weights: LayerWeights):
    """The same block for all tokens in one process with unsharded experts: (new residual, f)."""
    cfg = weights.cfg
    y, post, comb = hc_pre(x, *weights.hc(), cfg.rms_eps, cfg.hc_eps, cfg.sinkhorn_iters)
    f = moe(y, weights, list(range(cfg.moe_intermediate // cfg.shard_chunk)))
    return hc_post(f, x, post, comb), f
