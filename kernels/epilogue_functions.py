"""Device side of the epilogues fused into reduce_scatterv (host side, shapes and meaning:
``epilogues.py``). Every place a kernel has a finished fp32 sum of a tile calls ``finish``; with
``EPILOGUE`` 0 the kernels keep their own plain store and never call it.

``finish(x, base, offs, mask, ...)``: ``x`` fp32 sums of this rank's elements ``base + offs``
(``base`` an int64 scalar, ``offs`` an int32 vector of x's shape, both in elements from the start
of this rank's rows, ``[rows, H]`` flattened), ``mask`` which of them are live. The epilogue rounds
once, at its stores:

EPILOGUE 1, hc_post (flat tiles: any elements of any rows)
    ``out[t, j, c] = post[t, j] * f[t, c] + sum_i comb[t, i, j] * residual[t, i, c]`` in fp32, then
    rounded to the activation dtype; ``f`` is the unrounded sum. ``ep0..ep3``: addresses of
    ``residual [cap, HC, H]`` (dtype), ``post [cap, HC]`` (fp32), ``comb [cap, HC, HC]`` (fp32),
    ``out [cap, HC, H]`` (dtype), all contiguous.
EPILOGUE 2, residual add + RMSNorm (row tiles: the caller passes one whole row, ``offs`` =
    ``arange(BLOCK)``, ``mask`` = ``offs < H``)
    ``s = f + residual`` (fp32), ``residual_out = round(s)``, and, from the rounded sum as it was
    stored, ``out = round(residual_out * rsqrt(mean(residual_out^2) + eps) * weight)`` (FlashInfer's
    and TensorRT-LLM's all-reduce fusion: the norm is the norm of the residual the next layer adds
    to). ``ep0..ep3``: addresses of ``residual [cap, H]``, ``weight [H]``, ``out [cap, H]``,
    ``residual_out [cap, H]`` (all dtype, contiguous; ``residual_out`` may be ``residual``).
``WRITE_F``: also store ``f`` rounded to the dtype at ``f_addr`` ([cap, H]).
"""

import triton
import triton.language as tl

NONE = tl.constexpr(0)
HC_POST = tl.constexpr(1)
RMSNORM = tl.constexpr(2)


@triton.jit
def _stream(res_ptr, k: tl.constexpr, H, offs, mask, HC: tl.constexpr, VEC_BYTES: tl.constexpr):
    """Residual stream ``k`` of a row (fp32), zeros for ``k >= HC`` (never used: folded away)."""
    if k < HC:
        return tl.load(tl.multiple_of(res_ptr + k * H, VEC_BYTES) + offs, mask=mask, other=0.0).to(tl.float32)
    else:
        return tl.zeros(offs.shape, tl.float32)


@triton.jit
def _add_term(y, r, comb_ptr, k: tl.constexpr, j: tl.constexpr, HC: tl.constexpr):
    """``y + comb[k, j] * residual[k]`` for ``k < HC``, else ``y``."""
    if k < HC:
        return y + tl.load(comb_ptr + k * HC + j) * r
    else:
        return y


@triton.jit
def _hc_post_one_row(x, row, col0, offs, mask, H, residual_addr, post_addr, comb_addr, out_addr, DTYPE: tl.constexpr,
                     HC: tl.constexpr, VEC_BYTES: tl.constexpr):
    """hc_post of sums that all lie in row ``row`` (columns ``col0 + offs``): post and comb are
    scalars, and the residual and out columns are contiguous (vector accesses where ``offs`` is an
    arange and VEC_BYTES, which divides every row start, is 16). Every residual stream is loaded
    once, before the first store (r0..r7: ``epilogues.HcPost`` allows 1 to 8 streams): the compiler
    cannot move a load above a store that may alias it, so loads between the stores would wait one
    memory round trip per output stream."""
    at = row * (HC * H) + col0  # element [row, 0, col0] of residual / out
    res_ptr = tl.multiple_of(residual_addr.to(tl.pointer_type(DTYPE)) + at, VEC_BYTES)
    out_ptr = tl.multiple_of(out_addr.to(tl.pointer_type(DTYPE)) + at, VEC_BYTES)
    post_ptr = post_addr.to(tl.pointer_type(tl.float32)) + row * HC
    comb_ptr = comb_addr.to(tl.pointer_type(tl.float32)) + row * (HC * HC)
    r0 = _stream(res_ptr, 0, H, offs, mask, HC, VEC_BYTES)
    r1 = _stream(res_ptr, 1, H, offs, mask, HC, VEC_BYTES)
    r2 = _stream(res_ptr, 2, H, offs, mask, HC, VEC_BYTES)
    r3 = _stream(res_ptr, 3, H, offs, mask, HC, VEC_BYTES)
    r4 = _stream(res_ptr, 4, H, offs, mask, HC, VEC_BYTES)
    r5 = _stream(res_ptr, 5, H, offs, mask, HC, VEC_BYTES)
    r6 = _stream(res_ptr, 6, H, offs, mask, HC, VEC_BYTES)
    r7 = _stream(res_ptr, 7, H, offs, mask, HC, VEC_BYTES)
    for j in tl.static_range(HC):  # the streams' order of summation as in deepseek_v4's hc_post: 0, 1, ...
        y = _add_term(tl.load(post_ptr + j) * x, r0, comb_ptr, 0, j, HC)
        y = _add_term(_add_term(_add_term(y, r1, comb_ptr, 1, j, HC), r2, comb_ptr, 2, j, HC), r3, comb_ptr, 3, j, HC)
        y = _add_term(_add_term(_add_term(y, r4, comb_ptr, 4, j, HC), r5, comb_ptr, 5, j, HC), r6, comb_ptr, 6, j, HC)
        y = _add_term(y, r7, comb_ptr, 7, j, HC)
        tl.store(tl.multiple_of(out_ptr + j * H, VEC_BYTES) + offs, y.to(DTYPE), mask=mask)


@triton.jit
def _hc_post(x, base, offs, mask, H, residual_addr, post_addr, comb_addr, out_addr, DTYPE: tl.constexpr,
             HC: tl.constexpr, SPAN: tl.constexpr, ALIGN: tl.constexpr, VEC_BYTES: tl.constexpr):
    """hc_post of the fp32 sums ``x`` at elements ``base + offs`` (``offs`` < SPAN) of ``f``'s rows
    ([rows, H]): ``_hc_post_one_row`` once per row the tile touches (once for a tile within a row,
    the common case at model widths; twice for one across a row boundary), masked to that row's
    elements. The loop's bounds are scalars every thread holds alike (not a volatile load): uniform.
    One code path, so the registers are those of one row's (a path per element, gathering post and
    comb, took 4x as many at 8 elements per thread)."""
    row0 = base // H  # int64 scalar
    col0 = base - row0 * H
    for k in range(0, tl.cdiv(col0 + SPAN, H)):
        lo = tl.multiple_of((k * H - col0).to(tl.int32), ALIGN)  # offs of this row's first element (<= 0 for k = 0)
        _hc_post_one_row(x, row0 + k, col0 - k * H, offs, mask & (offs >= lo) & (offs < lo + H), H, residual_addr,
                         post_addr, comb_addr, out_addr, DTYPE, HC, VEC_BYTES)


@triton.jit
def _residual_rmsnorm(x, base, offs, mask, H, eps, residual_addr, weight_addr, out_addr, residual_out_addr,
                      DTYPE: tl.constexpr, VEC_BYTES: tl.constexpr):
    """Residual add + RMSNorm of one whole row (``base`` its first element, ``offs < H`` live)."""
    r = tl.load(tl.multiple_of(residual_addr.to(tl.pointer_type(DTYPE)) + base, VEC_BYTES) + offs, mask=mask,
                other=0.0).to(tl.float32)
    s = (x + r).to(DTYPE)  # the one rounding of the sum
    tl.store(tl.multiple_of(residual_out_addr.to(tl.pointer_type(DTYPE)) + base, VEC_BYTES) + offs, s, mask=mask)
    v = tl.where(mask, s.to(tl.float32), 0.0)
    inv = 1.0 / tl.sqrt(tl.sum(v * v, axis=0) / H + eps)
    w = tl.load(tl.multiple_of(weight_addr.to(tl.pointer_type(DTYPE)), VEC_BYTES) + offs, mask=mask,
                other=0.0).to(tl.float32)
    tl.store(tl.multiple_of(out_addr.to(tl.pointer_type(DTYPE)) + base, VEC_BYTES) + offs, (v * inv * w).to(DTYPE),
             mask=mask)


@triton.jit
def finish(x, base, offs, mask, f_addr, H, ep0, ep1, ep2, ep3, eps, DTYPE: tl.constexpr, EPILOGUE: tl.constexpr,
           HC: tl.constexpr, WRITE_F: tl.constexpr, SPAN: tl.constexpr, ALIGN: tl.constexpr, VEC_BYTES: tl.constexpr):
    """Hand the fp32 sums ``x`` of elements ``base + offs`` (live where ``mask``; ``offs`` < SPAN) to
    the epilogue (see the module docstring); ``WRITE_F``: store them rounded at ``f_addr`` too.
    ``ALIGN`` (elements) divides H and ``base``, and ``VEC_BYTES`` (``ALIGN`` elements' bytes) the
    address of every epilogue tensor (the host folds them into the kernel's alignment): the hints
    that let row accesses be vectors; pass 1 and 1 for none."""
    # addresses arrive as int32 when small (0 for the empty tensors of a rank without rows)
    ep0, ep1, ep2, ep3 = ep0.to(tl.int64), ep1.to(tl.int64), ep2.to(tl.int64), ep3.to(tl.int64)
    if WRITE_F:
        tl.store(tl.multiple_of(f_addr.to(tl.pointer_type(DTYPE)) + base, VEC_BYTES) + offs, x.to(DTYPE), mask=mask)
    if EPILOGUE == HC_POST:
        _hc_post(x, base, offs, mask, H, ep0, ep1, ep2, ep3, DTYPE, HC, SPAN, ALIGN, VEC_BYTES)
    elif EPILOGUE == RMSNORM:
        _residual_rmsnorm(x, base, offs, mask, H, eps, ep0, ep1, ep2, ep3, DTYPE, VEC_BYTES)


@triton.jit
def poison_outputs(count, pid, num_programs, f_addr, ep2, ep3, DTYPE: tl.constexpr, BLOCK: tl.constexpr,
                   EPILOGUE: tl.constexpr, HC: tl.constexpr, WRITE_F: tl.constexpr):
    """NaN over this program's share of every output the epilogue writes (``count``: this rank's
    elements of ``f``): what a failed call leaves, as the plain kernels leave NaN in ``f``."""
    ep2, ep3 = ep2.to(tl.int64), ep3.to(tl.int64)  # int32 when small (see ``finish``)
    nan = tl.full([BLOCK], float("nan"), tl.float32).to(DTYPE)
    offs = tl.arange(0, BLOCK)
    n_out = count * HC if EPILOGUE == HC_POST else count
    for t in range(pid, tl.cdiv(n_out, BLOCK), num_programs):
        at = tl.cast(t, tl.int64) * BLOCK + offs
        live = at < n_out
        if EPILOGUE == HC_POST:
            tl.store(ep3.to(tl.pointer_type(DTYPE)) + at, nan, mask=live)
        else:
            tl.store(ep2.to(tl.pointer_type(DTYPE)) + at, nan, mask=live)
            tl.store(ep3.to(tl.pointer_type(DTYPE)) + at, nan, mask=live)
        if WRITE_F:
            tl.store(f_addr.to(tl.pointer_type(DTYPE)) + at, nan, mask=live & (at < count))
