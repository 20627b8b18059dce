"""Rank-side cases for the DeepSeek V4 block (run inside a RankPool)."""

from __future__ import annotations

import torch

from deepseek_v4 import LayerWeights, moe_block, preset, reference_block


def block_case(ctx, *, tokens: list[int], combine: str, preset_name: str = "tiny", seed: int = 0):
    """This rank's relative errors (f, block output) against the unsharded block, or None if idle."""
    cfg = preset(preset_name)
    w = LayerWeights(cfg, seed, ctx.device)
    off, n = sum(tokens[: ctx.rank]), tokens[ctx.rank]
    x = w.inputs(sum(tokens))
    out, f = moe_block(x[off:off + n], tokens, w, combine)
    ref_out, ref_f = reference_block(x, w)
    if n == 0:
        return None
    err = lambda a, b: float((a.float() - b.float()).norm() / b.float().norm())  # noqa: E731
    assert out.shape == (n, cfg.hc_mult, cfg.hidden) and torch.isfinite(out.float()).all()
    return err(f, ref_f[off:off + n]), err(out, ref_out[off:off + n])
