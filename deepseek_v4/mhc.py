"""Manifold-constrained hyper-connections (mHC) around a block: hc_pre and hc_post, hc_mult streams.

    hc_pre(x [T, hc, H]) -> (y [T, H] bf16, post [T, hc] fp32, comb [T, hc, hc] fp32)
    hc_post(f [T, H], residual [T, hc, H], post, comb) -> [T, hc, H]
    hc_post_one_kernel(...): the same as one Triton kernel (``hc_post_kernel.py``), as SGLang runs it
"""

from __future__ import annotations

import torch


def sinkhorn(logits: torch.Tensor, iters: int) -> torch.Tensor:
    """Row-softmax, then alternate column and row normalisation ``iters`` times (doubly stochastic)."""
    m = torch.softmax(logits, dim=-1)
    for _ in range(iters):
        m = m / m.sum(dim=-2, keepdim=True)
        m = m / m.sum(dim=-1, keepdim=True)
    return m


def hc_pre(x: torch.Tensor, hc_fn: torch.Tensor, hc_scale: torch.Tensor, hc_base: torch.Tensor,
           rms_eps: float = 1e-6, hc_eps: float = 1e-6, sinkhorn_iters: int = 20):
    """Mix the hc streams of ``x`` [T, hc, H] into the block's input.

    mixes = (x.flatten(1) @ hc_fn.T) * rsqrt(mean(x^2) + eps), 2*hc + hc*hc numbers per token;
    pre = sigmoid(m[:hc] * s0 + b) + eps; post = 2 * sigmoid(m[hc:2hc] * s1 + b);
    comb = sinkhorn(m[2hc:] * s2 + b) as hc x hc; y = sum_i pre_i * x_i.
    """
    T, hc, H = x.shape
    flat = x.flatten(1).float()
    mixes = (flat @ hc_fn.T) * torch.rsqrt(flat.pow(2).mean(dim=-1, keepdim=True) + rms_eps)
    pre = torch.sigmoid(mixes[:, :hc] * hc_scale[0] + hc_base[:hc]) + hc_eps
    post = 2 * torch.sigmoid(mixes[:, hc:2 * hc] * hc_scale[1] + hc_base[hc:2 * hc])
    comb = sinkhorn((mixes[:, 2 * hc:] * hc_scale[2] + hc_base[2 * hc:]).view(T, hc, hc), sinkhorn_iters)
    y = (pre.unsqueeze(-1) * x.float()).sum(dim=1)
    return y.to(x.dtype), post, comb


def hc_post(f: torch.Tensor, residual: torch.Tensor, post: torch.Tensor, comb: torch.Tensor) -> torch.Tensor:
    """out[t, j] = post[t, j] * f[t] + sum_i comb[t, i, j] * residual[t, i]   ([T, hc, H], input dtype)."""
    out = post.unsqueeze(-1) * f.float().unsqueeze(1) + torch.einsum("tij,tih->tjh", comb, residual.float())
    return out.to(residual.dtype)


def hc_post_one_kernel(f: torch.Tensor, residual: torch.Tensor, post: torch.Tensor, comb: torch.Tensor,
                       out: torch.Tensor | None = None) -> torch.Tensor:
    """``hc_post`` in one Triton launch (fp32, one rounding): compiled for CUDA tensors, Triton's
    interpreter for CPU tensors (the process's mode is fixed by ``kernels`` on first use)."""
    from reduce_scatterv._triton_mode import kernel_module

    kernel_module(f.device.type)  # fixes TRITON_INTERPRET before the kernel module is imported
    from .hc_post_kernel import launch

    return launch(f, residual, post, comb, out)
