"""The flagged words both collectives' "ll" modes move, in two formats, and the poll that waits for them.

Plain (``ll_flag``, signals.py): an 8-byte word holds 4 data bytes and the flag ``(E + 1) mod 2^31 |
2^31``; twice the data's bytes cross NVLink.

Packed: four 32-bit data words in three 8-byte words with a 16-bit flag each. A tile's ``4Q`` data
words travel as its quarters d0..d3 (``d_k[m]`` is word ``kQ + m``) packed into three ``[Q]``
pieces, elementwise (every thread packs the words it holds, no shuffle):

    A[m] = d0[m] | d3[m].lo16 << 32 | flag << 48
    B[m] = d1[m] | d3[m].hi16 << 32 | flag << 48
    C[m] = d2[m] |                    flag << 48

1.5 bytes per data byte. The flag is ``(E + 1) mod 2^15 | 2^15``, never 0. It only has to tell this
call's word from a zero: every word written is consumed (zeroed) in its call, and a word left by a
fault is zeroed by ``reset()`` before any later call reads it (bench/NOTES.md, 2026-12-01 evening,
says what that rests on).

In both, each word is written by one 8-byte store, so its data and its flag arrive together (a
receiver uses d3[m] once both A and B carry the flag); the ranks' digests carry the format (the
mode), so words of another format are never used. Packed words carry the gather's rows (opt-in,
``api.PACKED_MIN_BYTES``), quarter by quarter, elementwise; the reduce-scatter keeps plain flagged
words (bench/NOTES.md says why).
"""

import triton
import triton.language as tl

from .signals import ERR_DISAGREE, FAULT_POLL_PERIOD, fault_status


@triton.jit
def _pending(stale, missing, status):
    """True while this thread saw no fault (``status`` 0) and some live word is ``stale`` ([source,
    word]) or some CALL word is ``missing`` ([source, 1]). The CALL words ride in the block, so the
    one reduction crosses warps whenever the block does (see "Uniform decisions" in signals.py)."""
    return tl.max(((stale | missing) & (status == 0)).to(tl.int32)) > 0


@triton.jit
def _poll_status(err_ptr, deadline, polls, status, calls, call_live, digest):
    """``signals.poll_fault`` (timeout, failed state), and ERR_DISAGREE once a CALL word that is in
    differs from ``digest``: that peer made a different call, and waiting for its words (of another
    call, maybe in another format or count) would only end in the timeout. Looked at on the same
    polls as the deadline, off the fast path; the caller's digest check reports it."""
    if polls % FAULT_POLL_PERIOD == 0:
        differs = tl.max(((calls != 0) & (calls != digest) & call_live).to(tl.int32), axis=0) > 0
        status = fault_status(err_ptr, deadline) | tl.where(differs, ERR_DISAGREE, 0)
    return status


@triton.jit
def poll_flagged(slots, live, flag, call_slots, call_live, digest, deadline, err_ptr):
    """Load plain flagged words until every live one carries ``flag``, and the ``call_live`` CALL
    words until they are in, in one loop; a CALL word that differs from ``digest`` ends it
    (``_poll_status``). Returns (32-bit data, 0 where not live; CALL words; the fault that ended
    the wait as this thread saw it, else 0). A thread leaves the loop with status 0 only once
    nothing is missing anywhere (the loop's reduction covers the whole block), so a nonzero status
    is all the caller needs (a wait that gave up just as the last word came counts as a fault:
    loud, never silent)."""
    status = (deadline * 0).to(tl.int32)
    polls = status
    words = tl.load(slots, mask=live, other=0, volatile=True)
    calls = tl.load(call_slots, mask=call_live, other=1, volatile=True)
    while _pending((((words >> 32) & 0xFFFFFFFF) != flag) & live, ((calls == 0) & call_live)[:, None], status):
        words = tl.load(slots, mask=live, other=0, volatile=True)
        calls = tl.load(call_slots, mask=call_live, other=1, volatile=True)
        polls += 1
        status = _poll_status(err_ptr, deadline, polls, status, calls, call_live, digest)
    return (words & 0xFFFFFFFF).to(tl.int32), calls, status


@triton.jit
def packed_flag(epoch):
    """The flag of call ``epoch``'s packed words (their top 16 bits): ``(E + 1) mod 2^15 | 2^15``."""
    return ((epoch + 1) & 0x7FFF) | 0x8000


@triton.jit
def piece_masks(m, lim, Q: tl.constexpr):
    """Masks of quarters 0-3 at word ``m`` of each quarter where ``lim`` data words are live from the
    tile's start on (both broadcast to the block's shape); the same are the masks of pieces A, B, C
    and of d3: a piece is live where its own data word is (then so is every word it carries)."""
    return m < lim, m + Q < lim, m + 2 * Q < lim, m + 3 * Q < lim


@triton.jit
def pack(d0, d1, d2, d3, flag):
    """A tile's quarters (int32 data words) -> pieces A, B, C (int64, see the module docstring)."""
    top = flag.to(tl.int64) << 48
    d3 = d3.to(tl.int64)
    a = (d0.to(tl.int64) & 0xFFFFFFFF) | ((d3 & 0xFFFF) << 32) | top
    b = (d1.to(tl.int64) & 0xFFFFFFFF) | (((d3 >> 16) & 0xFFFF) << 32) | top
    c = (d2.to(tl.int64) & 0xFFFFFFFF) | top
    return a, b, c


@triton.jit
def _stale(words, live, flag):
    return (((words >> 48) & 0xFFFF) != flag) & live


@triton.jit
def unpack(a, b, c, d3_live):
    """Pieces A, B, C -> the quarters d0..d3 (int32; inverse of ``pack``); d3 is 0 where not
    ``d3_live`` (A and B can be live where it is not)."""
    d3 = (((a >> 32) & 0xFFFF) | (((b >> 32) & 0xFFFF) << 16)).to(tl.int32)
    return ((a & 0xFFFFFFFF).to(tl.int32), (b & 0xFFFFFFFF).to(tl.int32), (c & 0xFFFFFFFF).to(tl.int32),
            tl.where(d3_live, d3, 0))


@triton.jit
def poll_packed(ptr_a, m, lim, flag, call_slots, call_live, digest, deadline, err_ptr, Q: tl.constexpr):
    """``poll_flagged`` for packed words: load the pieces at ``ptr_a`` ([source, word] pointers to A;
    B and C follow at +Q and +2Q words) of a tile with ``lim`` live data words (0 for sources not
    to wait for; ``m`` the word index, both broadcast to the block), until every live word carries
    ``flag``, and the ``call_live`` CALL words until they are in, in one loop. Returns (the
    quarters d0..d3, [source, Q] int32, 0 where not live; the CALL words; the fault that ended the
    wait as this thread saw it, else 0)."""
    live_a, live_b, live_c, live_d3 = piece_masks(m, lim, Q)
    status = (deadline * 0).to(tl.int32)
    polls = status
    a = tl.load(ptr_a, mask=live_a, other=0, volatile=True)
    b = tl.load(ptr_a + Q, mask=live_b, other=0, volatile=True)
    c = tl.load(ptr_a + 2 * Q, mask=live_c, other=0, volatile=True)
    calls = tl.load(call_slots, mask=call_live, other=1, volatile=True)
    while _pending(_stale(a, live_a, flag) | _stale(b, live_b, flag) | _stale(c, live_c, flag),
                   ((calls == 0) & call_live)[:, None], status):
        a = tl.load(ptr_a, mask=live_a, other=0, volatile=True)
        b = tl.load(ptr_a + Q, mask=live_b, other=0, volatile=True)
        c = tl.load(ptr_a + 2 * Q, mask=live_c, other=0, volatile=True)
        calls = tl.load(call_slots, mask=call_live, other=1, volatile=True)
        polls += 1
        status = _poll_status(err_ptr, deadline, polls, status, calls, call_live, digest)
    d0, d1, d2, d3 = unpack(a, b, c, live_d3)
    return d0, d1, d2, d3, calls, status


@triton.jit
def zero_pieces(ptr_a, m, lim, Q: tl.constexpr):
    """Consume a packed tile (``poll_packed``'s pointers, ``m`` and ``lim``, for every source that
    sent to it): write 0 over its live pieces."""
    live_a, live_b, live_c, _ = piece_masks(m, lim, Q)
    zero = tl.zeros(ptr_a.shape, tl.int64)
    tl.store(ptr_a, zero, mask=live_a)
    tl.store(ptr_a + Q, zero, mask=live_b)
    tl.store(ptr_a + 2 * Q, zero, mask=live_c)


@triton.jit
def store_pieces(ptr_a, m, d0, d1, d2, d3, flag, lim, Q: tl.constexpr):
    """Write a tile's quarters (int32 data words, ``lim`` of them live from the tile's start on; ``m``
    the word index) as packed words with ``flag`` at ``ptr_a`` (pointers to piece A)."""
    live_a, live_b, live_c, _ = piece_masks(m, lim, Q)
    a, b, c = pack(d0, d1, d2, d3, flag)
    tl.store(ptr_a, a, mask=live_a)
    tl.store(ptr_a + Q, b, mask=live_b)
    tl.store(ptr_a + 2 * Q, c, mask=live_c)


@triton.jit
def store_quarters(p, m, lim, d0, d1, d2, d3, Q: tl.constexpr):
    """Store a tile's quarters at ``p`` (pointers to the first quarter's words; ``m`` the word index):
    the words below ``lim``."""
    live0, live1, live2, live3 = piece_masks(m, lim, Q)  # quarter k is live where piece k would be
    tl.store(p, d0, mask=live0)
    tl.store(p + Q, d1, mask=live1)
    tl.store(p + 2 * Q, d2, mask=live2)
    tl.store(p + 3 * Q, d3, mask=live3)


@triton.jit
def load_quarters(p, m, lim, Q: tl.constexpr):
    """A tile's quarters (int32, 0 where not live) from ``p`` (pointers to its first quarter's words;
    ``m`` the word index): the words below ``lim``."""
    live0, live1, live2, live3 = piece_masks(m, lim, Q)
    return (tl.load(p, mask=live0, other=0), tl.load(p + Q, mask=live1, other=0),
            tl.load(p + 2 * Q, mask=live2, other=0), tl.load(p + 3 * Q, mask=live3, other=0))
