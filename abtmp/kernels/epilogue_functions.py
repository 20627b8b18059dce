"""Device side of the epilogues fused into reduce_scatterv (host side, shapes and meaning:
``epilogues.py``). Every place a kernel has a finished fp32 sum of a tile calls ``finish``; with
``EPILOGUE`` 0 the kernels keep their own plain store and never call it. A kernel that waits for
its data (the flagged-word combine) calls ``prepare`` before the wait and ``finish_prepared`` after
it, so that the epilogue's own loads overlap the wait.

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
def _stream_ids(HC: tl.constexpr):
    """[HCP] the output streams j, HCP the power of two >= HC (``HcPost`` allows 1 to 8 streams)."""
    HCP: tl.constexpr = 1 if HC == 1 else (2 if HC == 2 else (4 if HC <= 4 else 8))
    return tl.arange(0, HCP)


@triton.jit
def _hc_terms(row, col0, offs, mask, H, residual_addr, post_addr, comb_addr, DTYPE: tl.constexpr,
              HC: tl.constexpr, VEC_BYTES: tl.constexpr):
    """What hc_post needs besides ``f``, for row ``row``'s columns ``col0 + offs`` (live where
    ``mask``): ``(terms, post)``, ``terms[j, e] = sum_i comb[row, i, j] * residual[row, i, col0 +
    offs[e]]`` (fp32, i = 0, 1, ... in order) and ``post[j] = post[row, j]``; 0 for streams j >= HC.
    Only loads and arithmetic, no store: a caller may issue it before the sums exist."""
    j = _stream_ids(HC)
    res_ptr = tl.multiple_of(residual_addr.to(tl.pointer_type(DTYPE)) + (row * (HC * H) + col0), VEC_BYTES)
    comb_ptr = comb_addr.to(tl.pointer_type(tl.float32)) + row * (HC * HC)
    terms = tl.zeros([j.shape[0], offs.shape[0]], tl.float32)
    for i in tl.static_range(HC):
        r = tl.load(tl.multiple_of(res_ptr + i * H, VEC_BYTES) + offs, mask=mask, other=0.0).to(tl.float32)
        terms += tl.load(comb_ptr + i * HC + j, mask=j < HC, other=0.0)[:, None] * r[None, :]
    post = tl.load(post_addr.to(tl.pointer_type(tl.float32)) + row * HC + j, mask=j < HC, other=0.0)
    return terms, post


@triton.jit
def _hc_store(x, terms, post, row, col0, offs, mask, H, out_addr, DTYPE: tl.constexpr, HC: tl.constexpr,
              VEC_BYTES: tl.constexpr):
    """``out[row, j, col0 + offs] = post[j] * x + terms[j]`` for every stream j, rounded once: one
    [stream, element] store (vector accesses where ``offs`` is an arange and VEC_BYTES, which divides
    every row start, is 16)."""
    j = _stream_ids(HC)
    out_rows = tl.multiple_of(out_addr.to(tl.pointer_type(DTYPE)) + (row * (HC * H) + col0) + j * H, VEC_BYTES)
    tl.store(out_rows[:, None] + offs[None, :], (post[:, None] * x[None, :] + terms).to(DTYPE),
             mask=(j < HC)[:, None] & mask[None, :])


@triton.jit
def prepare(base, offs, mask, H, ep0, ep1, ep2, DTYPE: tl.constexpr, EPILOGUE: tl.constexpr, HC: tl.constexpr,
            VEC_BYTES: tl.constexpr):
    """The part of the epilogue of elements ``base + offs`` that does not need their sums, as
    ``finish_prepared`` takes it: a kernel that waits for its data can call this first, so that the
    epilogue's loads overlap the wait instead of following it. hc_post: ``_hc_terms`` of the tile's
    first row; the residual + RMSNorm: nothing (placeholders)."""
    if EPILOGUE == HC_POST:
        ep0, ep1, ep2 = ep0.to(tl.int64), ep1.to(tl.int64), ep2.to(tl.int64)  # int32 when small (see ``finish``)
        row0 = base // H
        col0 = base - row0 * H
        return _hc_terms(row0, col0, offs, mask & (offs < H - col0), H, ep0, ep1, ep2, DTYPE, HC, VEC_BYTES)
    else:
        return tl.zeros([1, offs.shape[0]], tl.float32), tl.zeros([1], tl.float32)


@triton.jit
def _hc_post(x, terms0, post0, base, offs, mask, H, residual_addr, post_addr, comb_addr, out_addr,
             DTYPE: tl.constexpr, HC: tl.constexpr, SPAN: tl.constexpr, ALIGN: tl.constexpr,
             VEC_BYTES: tl.constexpr):
    """hc_post of the fp32 sums ``x`` at elements ``base + offs`` (``offs`` < SPAN) of ``f``'s rows
    ([rows, H]), the first row's terms prepared (``prepare``): that row, then each further row the
    tile touches (none for a tile within a row, the common case at model widths; one for a tile
    across a row boundary), each masked to its elements. The loop's bounds are scalars every thread
    holds alike (not a volatile load): uniform."""
    row0 = base // H  # int64 scalar
    col0 = base - row0 * H
    _hc_store(x, terms0, post0, row0, col0, offs, mask & (offs < H - col0), H, out_addr, DTYPE, HC, VEC_BYTES)
    for k in range(1, tl.cdiv(col0 + SPAN, H)):
        lo = tl.multiple_of((k * H - col0).to(tl.int32), ALIGN)  # offs of this row's first element
        live = mask & (offs >= lo) & (offs < lo + H)
        terms, post = _hc_terms(row0 + k, col0 - k * H, offs, live, H, residual_addr, post_addr, comb_addr, DTYPE,
                                HC, VEC_BYTES)
        _hc_store(x, terms, post, row0 + k, col0 - k * H, offs, live, H, out_addr, DTYPE, HC, VEC_BYTES)


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
def finish_prepared(x, terms, post, base, offs, mask, f_addr, H, ep0, ep1, ep2, ep3, eps, DTYPE: tl.constexpr,
                    EPILOGUE: tl.constexpr, HC: tl.constexpr, WRITE_F: tl.constexpr, SPAN: tl.constexpr,
                    ALIGN: tl.constexpr, VEC_BYTES: tl.constexpr):
    """Hand the fp32 sums ``x`` of elements ``base + offs`` (live where ``mask``; ``offs`` < SPAN) to
    the epilogue (see the module docstring), ``terms, post`` what ``prepare`` returned for the same
    elements; ``WRITE_F``: store them rounded at ``f_addr`` too. ``ALIGN`` (elements) divides H and
    ``base``, and ``VEC_BYTES`` (``ALIGN`` elements' bytes) the address of every epilogue tensor (the
    host folds them into the kernel's alignment): the hints that let row accesses be vectors; pass 1
    and 1 for none."""
    # addresses arrive as int32 when small (0 for the empty tensors of a rank without rows)
    ep0, ep1, ep2, ep3 = ep0.to(tl.int64), ep1.to(tl.int64), ep2.to(tl.int64), ep3.to(tl.int64)
    if WRITE_F:
        tl.store(tl.multiple_of(f_addr.to(tl.pointer_type(DTYPE)) + base, VEC_BYTES) + offs, x.to(DTYPE), mask=mask)
    if EPILOGUE == HC_POST:
        _hc_post(x, terms, post, base, offs, mask, H, ep0, ep1, ep2, ep3, DTYPE, HC, SPAN, ALIGN, VEC_BYTES)
    elif EPILOGUE == RMSNORM:
        _residual_rmsnorm(x, base, offs, mask, H, eps, ep0, ep1, ep2, ep3, DTYPE, VEC_BYTES)


@triton.jit
def finish(x, base, offs, mask, f_addr, H, ep0, ep1, ep2, ep3, eps, DTYPE: tl.constexpr, EPILOGUE: tl.constexpr,
           HC: tl.constexpr, WRITE_F: tl.constexpr, SPAN: tl.constexpr, ALIGN: tl.constexpr, VEC_BYTES: tl.constexpr):
    """``prepare`` and ``finish_prepared`` in one, for a caller that has nothing to overlap."""
    terms, post = prepare(base, offs, mask, H, ep0, ep1, ep2, DTYPE, EPILOGUE, HC, VEC_BYTES)
    finish_prepared(x, terms, post, base, offs, mask, f_addr, H, ep0, ep1, ep2, ep3, eps, DTYPE, EPILOGUE, HC,
                    WRITE_F, SPAN, ALIGN, VEC_BYTES)


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
