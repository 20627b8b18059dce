"""mHC's hc_post as one Triton kernel: what SGLang runs after its combine (the ``reference`` path),
so that the fused epilogue (``rsv.epilogues.HcPost``) is compared with a one-kernel hc_post,
not with several torch kernels.

    out[t, j, :] = post[t, j] * f[t, :] + sum_i comb[t, i, j] * residual[t, i, :]

fp32 arithmetic, one rounding to ``out``'s dtype. One program per (token, BLOCK columns): it reads
f's columns and every stream's residual columns once and writes every stream's output. Import it
through ``deepseek_v4.mhc.hc_post_one_kernel``, which fixes Triton's mode (compiled for CUDA
tensors, the interpreter for CPU tensors) first.
"""

import torch
import triton
import triton.language as tl


@triton.jit
def hc_post_kernel(f_ptr, residual_ptr, post_ptr, comb_ptr, out_ptr, H, HC: tl.constexpr, HCP: tl.constexpr,
                   BLOCK: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    live = cols < H
    streams = tl.arange(0, HCP)
    mask2 = (streams < HC)[:, None] & live[None, :]
    f = tl.load(f_ptr + t * H + cols, mask=live, other=0.0).to(tl.float32)
    res = tl.load(residual_ptr + (t * HC + streams[:, None]) * H + cols[None, :], mask=mask2,
                  other=0.0).to(tl.float32)  # [HCP, BLOCK]
    for j in tl.static_range(HC):
        c = tl.load(comb_ptr + t * (HC * HC) + streams * HC + j, mask=streams < HC, other=0.0)  # comb[t, :, j]
        y = tl.load(post_ptr + t * HC + j) * f + tl.sum(c[:, None] * res, axis=0)
        tl.store(out_ptr + (t * HC + j) * H + cols, y.to(out_ptr.dtype.element_ty), mask=live)


def launch(f: torch.Tensor, residual: torch.Tensor, post: torch.Tensor, comb: torch.Tensor,
           out: torch.Tensor | None = None, block: int = 1024) -> torch.Tensor:
    """``out`` [T, hc, H] (residual's dtype) from f [T, H], residual [T, hc, H], post [T, hc] and
    comb [T, hc, hc] (float32); every tensor contiguous."""
    T, hc, H = residual.shape
    if f.shape != (T, H) or post.shape != (T, hc) or comb.shape != (T, hc, hc):
        raise ValueError(f"hc_post: shapes f {tuple(f.shape)}, residual {tuple(residual.shape)}, post "
                         f"{tuple(post.shape)}, comb {tuple(comb.shape)} do not fit [T, H], [T, hc, H], [T, hc], "
                         f"[T, hc, hc]")
    f, residual, post, comb = (x.contiguous() for x in (f, residual, post.float(), comb.float()))
    if out is None:
        out = torch.empty_like(residual)
    if T == 0 or H == 0:
        return out
    block = min(block, triton.next_power_of_2(H))
    hc_post_kernel[(T, triton.cdiv(H, block))](f, residual, post, comb, out, H, HC=hc,
                                                HCP=triton.next_power_of_2(hc), BLOCK=block, num_warps=4)
    return out
