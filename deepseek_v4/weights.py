"""Random weights of one layer, reproducible from a seed, generated where and when they are used.

Every tensor comes from its own generator seeded by (seed, what, index), so a TP rank can build
just its slice of an expert (the chunks of the intermediate dimension it owns) and the unsharded
reference builds the same numbers in full, without either holding all experts at once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch

from .config import V4Config


def _seed(*parts) -> int:
    return int.from_bytes(hashlib.sha256(repr(parts).encode()).digest()[:7], "little")


def randn(shape, seed: tuple, device, scale: float = 1.0, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator(device=device).manual_seed(_seed(*seed))
    return (torch.randn(shape, generator=g, device=device, dtype=torch.float32) * scale).to(dtype)


def shard_chunks(cfg: V4Config, rank: int, world: int) -> list[int]:
    """Chunks (of ``shard_chunk`` intermediate channels) a TP rank owns: a contiguous, near-even split."""
    chunks = cfg.moe_intermediate // cfg.shard_chunk
    return [int(c) for c in np.array_split(np.arange(chunks), world)[rank]]


@dataclass
class LayerWeights:
    """Generator of one layer's weights; ``expert(e, chunks)`` gives SwiGLU matrices for some chunks."""

    cfg: V4Config
    seed: int
    device: torch.device
    dtype: torch.dtype = torch.bfloat16

    def hc(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(hc_fn [mixes, hc*H] fp32, hc_scale [3] fp32, hc_base [mixes] fp32) of the MoE's hc_pre."""
        c = self.cfg
        fn = randn((c.hc_mixes, c.hc_mult * c.hidden), (self.seed, "hc_fn"), self.device, (c.hc_mult * c.hidden) ** -0.5)
        scale = 1.0 + 0.1 * randn((3,), (self.seed, "hc_scale"), self.device)
        base = 0.1 * randn((c.hc_mixes,), (self.seed, "hc_base"), self.device)
        return fn, scale, base

    def router(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(gate weight [E, H] fp32, selection bias [E] fp32)."""
        c = self.cfg
        return (randn((c.n_routed_experts, c.hidden), (self.seed, "router"), self.device, c.hidden ** -0.5),
                0.05 * randn((c.n_routed_experts,), (self.seed, "router_bias"), self.device))

    def expert(self, name, chunks: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(gate [I', H], up [I', H], down [H, I']) for the intermediate chunks listed, I' = len*chunk.

        ``name`` is a routed expert index or "shared0"...; the full expert is ``chunks = all``.
        """
        c = self.cfg
        k, H = c.shard_chunk, c.hidden
        if not chunks:
            empty = torch.empty((0, H), device=self.device, dtype=self.dtype)
            return empty, empty, torch.empty((H, 0), device=self.device, dtype=self.dtype)
        gate = torch.cat([randn((k, H), (self.seed, name, "gate", i), self.device, H ** -0.5, self.dtype) for i in chunks])
        up = torch.cat([randn((k, H), (self.seed, name, "up", i), self.device, H ** -0.5, self.dtype) for i in chunks])
        down = torch.cat([randn((H, k), (self.seed, name, "down", i), self.device, c.moe_intermediate ** -0.5,
                                self.dtype) for i in chunks], dim=1)
        return gate, up, down

    def inputs(self, tokens: int) -> torch.Tensor:
        """The residual stream entering the MoE's hc_pre for ``tokens`` global tokens: [T, hc, H] bf16."""
        c = self.cfg
        return randn((tokens, c.hc_mult, c.hidden), (self.seed, "x", tokens), self.device, 1.0, self.dtype)
