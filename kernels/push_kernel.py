"""The push kernel: every rank writes its partial of each other rank's rows straight into that
rank's receive slot, and each rank sums its own slots locally. No barrier, no pull round trip, no
closing barrier. One constexpr picks how a receiver knows the data has landed:

``FLAGGED`` (mode "ll", the tiniest calls): 8-byte words holding 4 data bytes and the call's epoch
    (``epoch + 1``, low 32 bits). A receiver polls its slots until every word carries the current
    epoch, then sums. A word is written by one 8-byte store, so data and flag arrive together: no
    fence, no signal (the protocol of NCCL's LL). It moves twice the bytes, so it only pays for a few
    tens of KiB per destination.
plain (mode "push", mid-size calls): the data as it is, in rounds. In round j program p writes tile
    ``p + j * P`` of every peer's rows into that peer's slot, then, after a CTA barrier, bumps the
    peer's PUSH word [p][this rank] to ``(epoch << 32) + j + 1`` with a system-scope release: a peer
    that acquires the value sees the tiles. After pushing round j a program takes round j - 1 of its
    own rows (waits for every peer's word, sums its slots), so the waits and the local sums overlap
    the next round's writes. Writes over NVLink are posted: this moves about 10% more bytes per
    second than pulling, and needs no barrier before or after.

Reuse of a slot: both variants share the slots, and slots alternate by ``epoch & 1``. A rank writes
parity p again only two calls later, after the call in between proved that every peer finished the
call before: a program that received a tile of its own rows heard from every peer in this call (and
a peer's kernel of call E starts only once its kernel of call E-1 has ended); a program that
received nothing waits for every peer's "started" word of this call. Every rank knows from the sizes
which peers' programs receive nothing, and sends "started" words only to those (none for even sizes).
"Started" words are relaxed (they order no data). An output too small for this rank's rows only masks
its stores: the program still receives, so the rule above holds.

As in the pull kernel, programs of one index only ever wait for programs of the same index.
"""

import triton
import triton.language as tl

from .signals import (ERR_SPIN_TIMEOUT, begin_call, end_call, header_words, peer_bases, release, signal_all, wait_words,
                      word_ptr)
from .tiles import HOST_SIZE_ARGS, call_geometry, pick, rows, tile, vec


@triton.jit
def _unpack(words, DTYPE: tl.constexpr, PER_WORD: tl.constexpr):
    """32-bit data words -> (elements at even positions, at odd positions) as float32
    (for 32-bit dtypes, PER_WORD 1: the elements and zeros)."""
    if PER_WORD == 2:
        lo = (words & 0xFFFF).to(tl.int16).to(DTYPE, bitcast=True).to(tl.float32)
        hi = ((words >> 16) & 0xFFFF).to(tl.int16).to(DTYPE, bitcast=True).to(tl.float32)
    else:
        lo = words.to(tl.float32, bitcast=True)
        hi = lo * 0
    return lo, hi


@triton.jit
def _pack(lo, hi, DTYPE: tl.constexpr, PER_WORD: tl.constexpr):
    """Inverse of _unpack: float32 halves rounded to DTYPE, packed into 32-bit words."""
    if PER_WORD == 2:
        lo16 = lo.to(DTYPE).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
        hi16 = hi.to(DTYPE).to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF
        return lo16 | (hi16 << 16)
    return lo.to(tl.int32, bitcast=True)


@triton.jit
def _poll(slots, live, flag, spin_limit):
    """Load flagged words until every live one carries ``flag``; returns (32-bit data, 0 where not
    live; timed out?)."""
    words = tl.load(slots, mask=live, other=0, volatile=True)
    stale = _stale(words, live, flag)
    polls = spin_limit.to(tl.int64) * 0
    while stale & (polls < spin_limit):
        words = tl.load(slots, mask=live, other=0, volatile=True)
        polls += 1
        stale = _stale(words, live, flag)
    return (words & 0xFFFFFFFF).to(tl.int32), stale


@triton.jit
def _stale(words, live, flag):
    """True while some live word (of a 1-D or 2-D block) does not carry this call's flag yet."""
    return tl.max(((((words >> 32) & 0xFFFFFFFF) != flag) & live).to(tl.int32)) > 0


@triton.jit
def _ll_push(bases, in_addr, first, count, tiles, peers, slot_off, slot_bytes, parity, flag, rank, pid, num_programs,
             W: tl.constexpr, BLOCK: tl.constexpr, PER_WORD: tl.constexpr, VEC_BYTES: tl.constexpr):
    """FLAGGED: write this rank's partial of every other rank's tiles (of this program) into that
    rank's slot for us, as flagged words. One 2-D load and one 2-D store per tile index cover every
    peer ([destination rank, word]): the peers' latencies overlap instead of adding up."""
    WORDS: tl.constexpr = BLOCK // PER_WORD
    words = tl.arange(0, WORDS)[None, :]
    slots = bases + slot_off + (parity * W + rank) * slot_bytes  # [WP]: our slot at every rank
    for t in range(pid, tl.max(tl.where(peers, tiles, 0), axis=0), num_programs):
        done = tl.cast(t, tl.int64) * BLOCK
        left = tl.multiple_of((count - done) // PER_WORD, VEC_BYTES // 4)  # [WP] words from this tile on
        live = peers[:, None] & (words < left[:, None])
        data = tl.load(rows(in_addr, (first + done) // PER_WORD, WORDS, tl.int32, VEC_BYTES), mask=live)
        tl.store(rows(slots, done // PER_WORD, WORDS, tl.int64, 16),
                 (flag << 32) | (data.to(tl.int64) & 0xFFFFFFFF), mask=live)


@triton.jit
def _ll_receive(in_addr, out_addr, out_ok, my_slots, slot_bytes, my_first, my_count, my_tiles, flag, rank, pid,
                num_programs, spin_limit, err, W: tl.constexpr, WP: tl.constexpr, DTYPE: tl.constexpr,
                BLOCK: tl.constexpr, PER_WORD: tl.constexpr, VEC_BYTES: tl.constexpr):
    """FLAGGED: own partial plus every peer's words, summed in float32. Every peer's slot is polled by
    one 2-D load per round ([source rank, word]), so the waits overlap; this rank's own partial rides
    in its row of the block (loaded from the input), so the sum is one reduction over sources."""
    WORDS: tl.constexpr = BLOCK // PER_WORD
    source = tl.arange(0, WP)
    mine = (source == rank)[:, None]
    peers = (source < W)[:, None] & (source != rank)[:, None]
    slots = my_slots + source * slot_bytes  # [WP]: every source's slot here
    for t in range(pid, my_tiles, num_programs):
        done = tl.cast(t, tl.int64) * BLOCK
        live = (tl.arange(0, WORDS) < tl.multiple_of((my_count - done) // PER_WORD, VEC_BYTES // 4))[None, :]
        own = tl.load(rows(in_addr, (my_first + done) // PER_WORD + source * 0, WORDS, tl.int32, VEC_BYTES),
                      mask=mine & live, other=0)
        data, late = _poll(rows(slots, done // PER_WORD, WORDS, tl.int64, 16), peers & live, flag, spin_limit)
        err |= tl.where(late, ERR_SPIN_TIMEOUT, 0)
        lo, hi = _unpack(tl.where(mine, own, data), DTYPE, PER_WORD)  # masked-off words read as 0: +0.0
        total = _pack(tl.sum(lo, axis=0)[None, :], tl.sum(hi, axis=0)[None, :], DTYPE, PER_WORD)
        # stored from this rank's row of the block (the sum broadcast back: no register shuffle)
        out = rows(out_addr, done // PER_WORD + source * 0, WORDS, tl.int32, VEC_BYTES)
        tl.store(out, total + own * 0, mask=tl.where(out_ok, mine & live, False))
    return err


@triton.jit
def _push_rounds(in_addr, out_addr, out_ok, bases, my_base, first, count, tiles, lanes, peers, my_tiles, slot_off,
                 slot_bytes, parity, epoch, progress_word, rank, pid, num_programs, spin_limit, err, W: tl.constexpr,
                 DTYPE: tl.constexpr, BLOCK: tl.constexpr, ALIGN: tl.constexpr, VEC_BYTES: tl.constexpr):
    """Plain: round j pushes tile pid + j * P of every peer's rows and signals those peers, then
    takes round j - 1 of this rank's own rows (see the module docstring). ``peers``: [WP] mask of
    the other ranks."""
    push_rounds = tl.cdiv(tl.maximum(tl.max(tl.where(peers, tiles, 0), axis=0) - pid, 0), num_programs)
    my_rounds = tl.cdiv(tl.maximum(my_tiles - pid, 0), num_programs)
    my_first = pick(first, lanes, rank)
    my_count = pick(count, lanes, rank)
    my_slots = my_base + slot_off + parity * W * slot_bytes
    sent = word_ptr(bases, progress_word + pid * W + rank)  # [WP]: our progress word at every peer
    heard = word_ptr(my_base, progress_word + pid * W + lanes)  # [WP]: every peer's progress word here
    for j in range(0, tl.maximum(push_rounds, my_rounds + 1)):
        t = pid + j * num_programs
        if j < push_rounds:
            for i in tl.static_range(1, W):
                q = (rank + i) % W  # rank r writes to r+1 first: every link busy from the start
                if t < pick(tiles, lanes, q):
                    start, local, mask = tile(pick(first, lanes, q), t, pick(count, lanes, q), BLOCK, ALIGN)
                    slot = pick(bases, lanes, q) + slot_off + (parity * W + rank) * slot_bytes
                    x = tl.load(vec(in_addr, start, DTYPE, BLOCK, VEC_BYTES), mask=mask)
                    tl.store(vec(slot, local, DTYPE, BLOCK, VEC_BYTES), x, mask=mask)
            release(sent, (lanes * 0).to(tl.int64) + (epoch << 32) + j + 1, peers & (t < tiles))  # the round landed
        if (j >= 1) & (j <= my_rounds):
            err |= wait_words(heard, peers, (epoch << 32) + j, spin_limit, True)
            start, local, mask = tile(my_first, t - num_programs, my_count, BLOCK, ALIGN)
            acc = tl.load(vec(in_addr, start, DTYPE, BLOCK, VEC_BYTES), mask=mask, other=0.0).to(tl.float32)
            for r in tl.static_range(W):
                if r != rank:
                    acc += tl.load(vec(my_slots + r * slot_bytes, local, DTYPE, BLOCK, VEC_BYTES), mask=mask,
                                   other=0.0).to(tl.float32)
            tl.store(vec(out_addr, local, DTYPE, BLOCK, VEC_BYTES), acc.to(DTYPE), mask=tl.where(out_ok, mask, False))
    return err


@triton.jit(do_not_specialize=HOST_SIZE_ARGS + ["rank", "in_cap", "out_cap", "spin_limit", "programs_per_sm",
                                                "tiles_per_program"])
def reduce_scatterv_push_kernel(
    table_addr,  # address of int64[W]: base address of every rank's workspace (in this process)
    base_addr,  # this rank's workspace base address (= table[rank])
    in_addr,  # address of this rank's input, [in_cap, H] contiguous, 4-byte aligned
    out_addr,  # address of this rank's output, [out_cap, H] contiguous, 4-byte aligned
    sizes_addr,  # address of SIZES_DTYPE[W] rows per rank, on the device
    s0, s1, s2, s3, s4, s5, s6, s7,  # rows per rank, from the host (when SIZES_DTYPE is None)
    rank,
    in_cap,  # rows the input holds
    out_cap,  # rows the output holds
    H,  # elements per row (even for 16-bit dtypes when FLAGGED)
    slot_off,  # bytes from a base to its push slots
    slot_bytes,  # bytes of one (parity, source) slot
    spin_limit,  # polls before a wait gives up and flags ERR_SPIN_TIMEOUT
    programs_per_sm,  # grid knobs (unused here; see reduce_scatterv_kernel)
    tiles_per_program,
    W: tl.constexpr,
    WP: tl.constexpr,
    DTYPE: tl.constexpr,
    SIZES_DTYPE: tl.constexpr,
    BLOCK: tl.constexpr,  # elements per tile
    FLAGGED: tl.constexpr,  # flagged words (mode "ll") or plain data + progress signals (mode "push")
    PER_WORD: tl.constexpr,  # FLAGGED: elements per 32-bit word: 2 for 16-bit dtypes, 1 for float32
    ALIGN: tl.constexpr,  # elements; divides H and every row start
    VEC_BYTES: tl.constexpr,  # alignment (bytes) of the input/output tiles: ALIGN * element size (FLAGGED: at most 8)
):
    pid = tl.program_id(0)
    num_programs = tl.num_programs(0)
    in_addr = in_addr.to(tl.int64)
    out_addr = out_addr.to(tl.int64)
    sizes_addr = sizes_addr.to(tl.int64)
    table, my_base, epoch = begin_call(table_addr, base_addr, pid)
    CNT, SIG_START, OFF_START, SIG_END, RELAY_FLAGS, PUSH_FLAGS, ERR = header_words(W)  # CNT: begin/end_call
    parity = epoch % 2
    lanes = tl.arange(0, WP)
    count, first, tiles, out_ok, err = call_geometry(sizes_addr, s0, s1, s2, s3, s4, s5, s6, s7, rank, in_cap,
                                                     out_cap, H, lanes, W, SIZES_DTYPE, BLOCK)
    my_tiles = pick(tiles, lanes, rank)  # rank-agreed (an output too small only masks the stores)
    peers = (lanes < W) & (lanes != rank)

    bases = peer_bases(table, W, WP)
    # ---- "started", for the peers whose program pid receives nothing (they wait for it at the end;
    # see the module docstring)
    signal_all(bases, SIG_START + pid * W + rank, epoch + 1, peers & (tiles <= pid), "relaxed")

    if FLAGGED:
        flag = (epoch + 1) & 0xFFFFFFFF
        _ll_push(bases, in_addr, first, count, tiles, peers, slot_off, slot_bytes, parity, flag, rank, pid,
                 num_programs, W, BLOCK, PER_WORD, VEC_BYTES)
        err = _ll_receive(in_addr, out_addr, out_ok, my_base + slot_off + parity * W * slot_bytes, slot_bytes,
                          pick(first, lanes, rank), pick(count, lanes, rank), my_tiles, flag, rank, pid,
                          num_programs, spin_limit, err, W, WP, DTYPE, BLOCK, PER_WORD, VEC_BYTES)
    else:
        err = _push_rounds(in_addr, out_addr, out_ok, bases, my_base, first, count, tiles, lanes, peers, my_tiles,
                           slot_off, slot_bytes, parity, epoch, PUSH_FLAGS, rank, pid, num_programs, spin_limit, err,
                           W, DTYPE, BLOCK, ALIGN, VEC_BYTES)

    # a program that received a tile heard from every peer in this call; the others wait for the
    # peers' "started" words (no data to order)
    if my_tiles <= pid:
        err |= wait_words(word_ptr(my_base, SIG_START + pid * W + lanes), peers, epoch + 1, spin_limit, False)
    end_call(my_base, epoch, err, pid, num_programs, ERR)


# ----------------------------------------------------------------------------- launcher

from .launch_args import call_arguments, run, vector_align  # noqa: E402


def destination_bytes(call, elt: int) -> int:
    """Rank-agreed bound on the bytes any rank receives per peer: host sizes, max(sizes) rows; device
    sizes, the input's row capacity."""
    return (max(call.sizes) if call.sizes is not None else call.rows) * call.hidden * elt


def fits(ws, call, elt: int, flagged: bool) -> bool:
    """Whether a call may take the flagged ("ll") or plain ("push") variant, from rank-agreed facts:
    the per-destination byte bound against the workspace's limit for that variant (flagged words
    also need whole 32-bit words per row)."""
    if flagged:
        return destination_bytes(call, elt) <= ws.layout.ll_bytes and (call.hidden * elt) % 4 == 0
    return destination_bytes(call, elt) <= ws.push_max_bytes


def push_arguments(ws, inp, out, call, flagged: bool, spin_limit: int):
    """Positional arguments and constexprs of one call (everything but the tuning knobs);
    ``inp``/``out`` contiguous and 4-byte aligned (the API makes them so). Returns
    ``(args, constexprs, max_rows)``; ``max_rows`` (rank-agreed) sizes the grid."""
    args, constexprs, max_rows = call_arguments(ws, inp, out, call)
    elt = inp.element_size()
    args += (ws.layout.slot_offset, ws.layout.slot_bytes, spin_limit)
    align = vector_align(call.hidden, elt, inp.data_ptr(), out.data_ptr())
    # flagged: 32-bit data words move 8 bytes at a time (as many per thread as the 16-byte accesses
    # of 64-bit flagged words: the data and its words share one register layout, no shuffles)
    constexprs.update(FLAGGED=flagged, PER_WORD=max(1, 4 // elt), ALIGN=align,
                      VEC_BYTES=max(4, min(8, align * elt)) if flagged else align * elt)
    return args, constexprs, max_rows


def launch(ws, inp, out, call, flagged: bool, config, multiprocessors: int, spin_limit: int) -> None:
    """Run one call with ``config`` (a KernelConfig); the caller made the slots large enough
    (``Workspace.reserve_slots``) for the plain variant."""
    args, constexprs, max_rows = push_arguments(ws, inp, out, call, flagged, spin_limit)
    run(reduce_scatterv_push_kernel, args, constexprs, max_rows, call.hidden, config, multiprocessors)
