"""DeepSeek V4 shapes (public config) and small presets for tests and CPU emulation."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class V4Config:
    """The part of a DeepSeek V4 decoder layer this project touches: mHC around the MoE block.

    hidden: model width H; n_routed_experts / n_shared_experts / top_k: the MoE; moe_intermediate:
    each expert's SwiGLU width, sharded across TP ranks; num_layers: decoder layers (each has one
    MoE block: the per-decode-step figures multiply by it); hc_mult: hyper-connection streams;
    routed_scaling_factor: applied to the renormalised router weights; shard_chunk: granularity
    (intermediate channels) of the TP split, so any world size can shard any preset.
    """

    name: str
    hidden: int
    n_routed_experts: int
    n_shared_experts: int
    top_k: int
    moe_intermediate: int
    num_layers: int = 2
    hc_mult: int = 4
    routed_scaling_factor: float = 1.5
    sinkhorn_iters: int = 20
    rms_eps: float = 1e-6
    hc_eps: float = 1e-6
    shard_chunk: int = 128

    @property
    def hc_mixes(self) -> int:
        """Numbers hc_pre computes per token: hc pre weights, post weights and the hc x hc comb matrix."""
        return 2 * self.hc_mult + self.hc_mult * self.hc_mult


PRESETS = {
    "flash": V4Config("flash", hidden=4096, n_routed_experts=256, n_shared_experts=1, top_k=6, moe_intermediate=2048,
                      num_layers=43),
    "pro": V4Config("pro", hidden=7168, n_routed_experts=384, n_shared_experts=1, top_k=6, moe_intermediate=3072,
                    num_layers=61),
    # test presets: same structure, small enough for Triton's interpreter on a CPU
    "tiny": V4Config("tiny", hidden=64, n_routed_experts=16, n_shared_experts=1, top_k=6, moe_intermediate=48,
                     shard_chunk=8),
    "small": V4Config("small", hidden=512, n_routed_experts=32, n_shared_experts=1, top_k=6, moe_intermediate=192,
                      shard_chunk=16),
}


def preset(name: str, **overrides) -> V4Config:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return replace(PRESETS[name], **overrides)
