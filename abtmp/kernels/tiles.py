"""Device helpers shared by the kernels: the call's geometry (sizes, offsets, tiles) and tile access."""

import triton
import triton.language as tl

from .layout import ERR_BAD_SIZES as _ERR_BAD_SIZES
from .layout import ERR_OUTPUT_TOO_SMALL as _ERR_OUTPUT_TOO_SMALL

ERR_BAD_SIZES = tl.constexpr(_ERR_BAD_SIZES)
ERR_OUTPUT_TOO_SMALL = tl.constexpr(_ERR_OUTPUT_TOO_SMALL)

HOST_SIZE_ARGS = [f"s{i}" for i in range(8)]


@triton.jit
def pick(vec, lanes, i):
    """Scalar ``vec[i]`` of a small vector (i may be a runtime value)."""
    return tl.sum(tl.where(lanes == i, vec, 0), axis=0)


@triton.jit
def sizes_vector(sizes_addr, s0, s1, s2, s3, s4, s5, s6, s7, lanes, W: tl.constexpr, SIZES_DTYPE: tl.constexpr):
    """Rows per rank as an int64 [WP] vector: from device memory (SIZES_DTYPE int32/int64), or from
    the eight host scalars (SIZES_DTYPE None)."""
    if SIZES_DTYPE is not None:
        n = tl.load(sizes_addr.to(tl.pointer_type(SIZES_DTYPE)) + lanes, mask=lanes < W, other=0).to(tl.int64)
    else:
        n = tl.where(lanes == 0, s0, 0).to(tl.int64)
        n = tl.where(lanes == 1, s1, n)
        n = tl.where(lanes == 2, s2, n)
        n = tl.where(lanes == 3, s3, n)
        n = tl.where(lanes == 4, s4, n)
        n = tl.where(lanes == 5, s5, n)
        n = tl.where(lanes == 6, s6, n)
        n = tl.where(lanes == 7, s7, n)
    return tl.where(lanes < W, n, 0)


@triton.jit
def call_geometry(sizes_addr, s0, s1, s2, s3, s4, s5, s6, s7, rank, in_cap, out_cap, H, lanes,
                  W: tl.constexpr, SIZES_DTYPE: tl.constexpr, BLOCK: tl.constexpr, ROWS: tl.constexpr = False):
    """Sizes checked on the device (identically on every rank) and what follows from them.

    Returns ``(raw, count, first, tiles, out_ok, err)``: the sizes as given (for the call's digest);
    per destination (as [WP] vectors) its element count, its first element in SUM_LEN layout and
    its number of tiles (BLOCK elements; with ``ROWS``, one row each: see ``tile``); whether this
    rank's output can hold its rows; and the error bits (bad sizes are treated as all zero).
    """
    raw = sizes_vector(sizes_addr, s0, s1, s2, s3, s4, s5, s6, s7, lanes, W, SIZES_DTYPE)
    sizes_ok = (tl.min(raw, axis=0) >= 0) & (tl.sum(raw, axis=0) <= in_cap)
    n = tl.where(sizes_ok, raw, 0)
    out_ok = pick(n, lanes, rank) <= out_cap
    err = tl.where(sizes_ok, 0, ERR_BAD_SIZES) | tl.where(out_ok, 0, ERR_OUTPUT_TOO_SMALL)
    count = n * H
    first = (tl.cumsum(n, axis=0) - n) * H
    if ROWS:
        return raw, count, first, n, out_ok, err
    return raw, count, first, tl.cdiv(count, BLOCK), out_ok, err


@triton.jit
def gather_geometry(sizes_addr, s0, s1, s2, s3, s4, s5, s6, s7, in_cap, out_cap, H, lanes, W: tl.constexpr,
                    SIZES_DTYPE: tl.constexpr):
    """all_gatherv's sizes checked on the device, identically on every rank: with device sizes every
    rank's count against the input capacity (not only this rank's: all ranks must take the same
    branch) and their sum against the output's; host sizes were checked on the host.

    Returns ``(raw, count, first, err)``: the sizes as given (for the call's digest); per source (as
    [WP] vectors) its element count and its first element in the output; the error bits (bad sizes
    are treated as all zero)."""
    raw = sizes_vector(sizes_addr, s0, s1, s2, s3, s4, s5, s6, s7, lanes, W, SIZES_DTYPE)
    sizes_ok = (tl.min(raw, axis=0) >= 0) & (tl.sum(raw, axis=0) <= out_cap)
    if SIZES_DTYPE is not None:
        sizes_ok &= tl.max(raw, axis=0) <= in_cap
    n = tl.where(sizes_ok, raw, 0)
    return raw, n * H, (tl.cumsum(n, axis=0) - n) * H, tl.where(sizes_ok, 0, ERR_BAD_SIZES)


@triton.jit
def tile(first, t, count, BLOCK: tl.constexpr, ALIGN: tl.constexpr, H=0, ROWS: tl.constexpr = False):
    """Tile ``t`` of a range of ``count`` elements that starts at element ``first``.

    Returns (element index where the tile starts, its index within the range, mask over
    ``tl.arange(0, BLOCK)``). ``ALIGN`` (elements) divides ``first`` and ``count``.
    Flat tiles are BLOCK consecutive elements; with ``ROWS`` (epilogues that need whole rows) tile
    ``t`` is row ``t`` of the range: H elements (H <= BLOCK) from ``first + t * H``.
    """
    if ROWS:
        done = tl.cast(t, tl.int64) * H
        return first + done, done, (tl.arange(0, BLOCK) < tl.multiple_of(count - done, ALIGN)) & (
            tl.arange(0, BLOCK) < tl.multiple_of(H, ALIGN))
    done = tl.cast(t, tl.int64) * BLOCK
    return first + done, done, tl.arange(0, BLOCK) < tl.multiple_of(count - done, ALIGN)


@triton.jit
def vec(addr, start, DTYPE: tl.constexpr, BLOCK: tl.constexpr, VEC_BYTES: tl.constexpr):
    """Pointers to BLOCK consecutive elements from element ``start`` of the array at address ``addr``.

    The alignment hint goes on the scalar pointer (an int64 offset added to a vector would lose it),
    so the compiler emits 16-byte accesses when VEC_BYTES is 16.
    """
    return tl.multiple_of(addr.to(tl.pointer_type(DTYPE)) + start, VEC_BYTES) + tl.arange(0, BLOCK)


@triton.jit
def rows(addrs, start, N: tl.constexpr, TY: tl.constexpr, VEC_BYTES: tl.constexpr):
    """[len(start), N] pointers: row i holds N consecutive TY elements from element ``start[i]`` of
    the array at address ``addrs[i]`` (either may be a scalar). Every row start is VEC_BYTES-aligned:
    the hint that allows vector accesses (on the row pointers, as in ``vec``)."""
    firsts = tl.multiple_of(addrs.to(tl.pointer_type(TY)) + start, VEC_BYTES)
    return firsts[:, None] + tl.arange(0, N)[None, :]
