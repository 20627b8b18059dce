"""The V4 MoE: sqrtsoftplus router with bias-adjusted top-k, SwiGLU experts, a shared expert, all
TP-sharded along the intermediate dimension, so each rank's output is a partial sum."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import V4Config
from .weights import LayerWeights


def route(y: torch.Tensor, gate_w: torch.Tensor, bias: torch.Tensor, cfg: V4Config):
    """Top-k experts per token and their weights.

    score = sqrt(softplus(y @ gate_w.T)); the bias only steers the selection (noaux_tc); the chosen
    scores are renormalised to sum to 1 and scaled by routed_scaling_factor. Returns
    (indices [T, k] int64, weights [T, k] fp32).
    """
    scores = torch.sqrt(F.softplus(y.float() @ gate_w.T))
    idx = torch.topk(scores + bias, cfg.top_k, dim=-1).indices
    w = scores.gather(-1, idx)
    return idx, w / w.sum(dim=-1, keepdim=True) * cfg.routed_scaling_factor


def swiglu(x: torch.Tensor, gate: torch.Tensor, up: torch.Tensor, down: torch.Tensor) -> torch.Tensor:
    """down(silu(gate x) * up x), in the weights' dtype with the framework's fp32 accumulation."""
    return (F.silu(x @ gate.T) * (x @ up.T)) @ down.T


def moe(y: torch.Tensor, weights: LayerWeights, chunks: list[int], out: torch.Tensor | None = None) -> torch.Tensor:
    """MoE output of tokens ``y`` [T, H] from the intermediate ``chunks`` of every expert.

    With a TP rank's chunks this is that rank's partial sum; with all chunks it is the full output.
    Experts are summed in fp32 and the result is rounded once to ``y``'s dtype, into ``out`` if given.
    """
    cfg = weights.cfg
    acc = torch.zeros(y.shape, dtype=torch.float32, device=y.device)
    if y.shape[0]:
        idx, w = route(y, *weights.router(), cfg)
        for e in torch.unique(idx).tolist():
            rows, slot = (idx == e).nonzero(as_tuple=True)
            acc.index_add_(0, rows, w[rows, slot, None] * swiglu(y[rows], *weights.expert(e, chunks)).float())
        for s in range(cfg.n_shared_experts):
            acc += swiglu(y, *weights.expert(f"shared{s}", chunks)).float()
    if out is None:
        return acc.to(y.dtype)
    return out.copy_(acc)
