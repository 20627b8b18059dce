"""The implementations the benchmark compares, each built once per case as a zero-argument call.

fused            rsv.reduce_scatterv, input produced inside the symmetric workspace (the
                 DeepSeek post-path's way: the MoE writes there, nothing is copied)
fused_copy       rsv.reduce_scatterv on an ordinary tensor (copied into the workspace)
fused_direct     "fused" with relaying off (every owner pulls all its rows itself): the
                 A/B that shows what the relay path is worth on skewed sizes (3+ ranks only)
fused_push       "fused" with flagged words off: the plain push where "fused" sends flagged words
fused_pull       "fused" with both push modes off: the pull kernel where "fused" pushes
nccl_rsv         torch.distributed.reduce_scatter with uneven chunks = NCCL grouped ncclReduce
                 (SGLang's reduce_scatterv, the upstream fix)
nccl_padded      pad every rank's chunk to max(sizes), reduce_scatter_tensor, (padding copies included)
allreduce_slice  all_reduce of the whole buffer in place, then copy this rank's rows out
hier2            rsv.reduce_scatterv on a group split into 2 "nodes" of world/2 ranks
                 (``ranks_per_node``): the fused node step, then NCCL's reduce-scatter over each rail
                 (kernels/hierarchy.py). On one host NVLink stands in for the network, so this measures
                 the hierarchy's overheads (rail-order copy, check rows, a second step), not a network.
                 Not in the default list: ``--impls fused,nccl_rsv,hier2,hier2_fp32`` (even world sizes)
hier2_fp32       "hier2" with ``hop_fp32=True`` (node partials carried in fp32: 2x bytes, one rounding)
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.distributed as dist

import reduce_scatterv as rsv
from reduce_scatterv import api

IMPLS = ("fused", "fused_copy", "fused_direct", "fused_push", "fused_pull", "nccl_rsv", "nccl_padded",
         "allreduce_slice")
# the API settings each fused variant plans under (while it plans: eagerly and under graph capture)
API_SETTINGS = {"fused_direct": dict(RELAY_MAX_COST_PCT=0),
                "fused_push": dict(MODES_OFF=frozenset({"ll"})),
                "fused_pull": dict(MODES_OFF=frozenset({"ll", "push"}))}


HIER_IMPLS = {"hier2": {}, "hier2_fp32": {"hop_fp32": True}}
_hier_groups: dict = {}


def hier_group(world: int, **keywords):
    """A group of all ranks whose workspace splits it into 2 nodes (created collectively, cached)."""
    key = tuple(sorted(keywords.items()))
    if key not in _hier_groups:
        group = dist.new_group(list(range(world)))
        rsv.workspace(group, ranks_per_node=world // 2, **keywords)
        _hier_groups[key] = group
    return _hier_groups[key]


def applies(impl: str, sizes: list[int], hidden: int, mode: str) -> bool:
    """Whether ``impl`` is worth timing, given the ``mode`` "fused" takes: each A/B variant only where
    it can differ from "fused", and at the V4 width 7168 only (to keep the sweep short)."""
    if impl in HIER_IMPLS:
        return len(sizes) % 2 == 0
    if impl not in API_SETTINGS:
        return True
    if hidden != 7168:
        return False
    if impl == "fused_direct":  # skewed sizes on 3+ ranks
        return len(sizes) >= 3 and len(set(sizes)) > 1
    return mode == "ll" if impl == "fused_push" else mode in ("ll", "push")


def planned_under(settings: dict, call: Callable[[], object]) -> Callable[[], object]:
    """``call`` run under ``rsv.api.overrides(**settings)``."""
    def wrapped():
        with api.overrides(**settings):
            return call()
    return wrapped


def build(impl: str, partial: torch.Tensor, sizes: list[int], rank: int) -> tuple[Callable[[], object], torch.Tensor]:
    """(call, output) for ``impl`` on this rank's ``partial`` [sum(sizes), H]."""
    H = partial.shape[1]
    off, n = sum(sizes[:rank]), sizes[rank]
    out = torch.empty((n, H), dtype=partial.dtype, device=partial.device)
    if impl in HIER_IMPLS:
        group = hier_group(len(sizes), **HIER_IMPLS[impl])
        return (lambda: rsv.reduce_scatterv(partial, out, sizes=sizes, group=group)), out
    if impl.startswith("fused"):
        inp = partial
        if impl != "fused_copy":
            inp = rsv.workspace().empty(*partial.shape, dtype=partial.dtype)
            inp.copy_(partial)
        call = lambda: rsv.reduce_scatterv(inp, out, sizes=sizes)  # noqa: E731
        return (planned_under(API_SETTINGS[impl], call) if impl in API_SETTINGS else call), out
    if impl == "nccl_rsv":
        chunks = list(partial.split(sizes))
        return (lambda: dist.reduce_scatter(out, chunks)), out
    if impl == "nccl_padded":
        m = max(sizes)
        padded = torch.zeros((len(sizes) * m, H), dtype=partial.dtype, device=partial.device)
        recv = torch.empty((m, H), dtype=partial.dtype, device=partial.device)
        offs = [sum(sizes[:r]) for r in range(len(sizes))]

        def padded_call():
            for r, s in enumerate(sizes):
                if s:
                    padded[r * m: r * m + s].copy_(partial[offs[r]: offs[r] + s])
            dist.reduce_scatter_tensor(recv, padded)
            out.copy_(recv[:n])
        return padded_call, out
    if impl == "allreduce_slice":
        buf = partial.clone()

        def allreduce_call():
            dist.all_reduce(buf)
            out.copy_(buf[off: off + n])
        return allreduce_call, out
    raise ValueError(f"unknown implementation {impl}")
