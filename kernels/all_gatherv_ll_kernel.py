"""The flagged-word all_gatherv kernel (mode "ll" of the gather): every rank writes its rows into
every peer's slot for it as flagged words, and each rank copies what arrives into its output. No
barrier, no round trip: one write and one poll, for the decode sizes where a call is all latency.

Problem (per call, every rank r of W): ``input_r`` holds ``n_r`` rows of length H. Every rank must
end with ``out = concat(input_0, ..., input_{W-1})`` ([sum(n), H], rank order), bit for bit.

Program p of rank r takes tiles p, p + P, ... of r's rows: it copies each into r's own output and
writes it, as 8-byte words of 4 data bytes and the call's flag, into the ll slot for r at every
peer (one 2-D store covers every peer). Program p of a receiver polls tiles p, p + P, ... of every
source's slot in one 2-D load ([source, word]) until every word carries the flag, stores the data
into its output at the source's rows, and writes 0 over the words it used (consumed).

``PACKED`` (mode "gather_packed", opt-in: ``api.PACKED_MIN_BYTES``): the same, in packed words
(``flagged_words``): a tile's four quarters in three pieces, 1.5 bytes per data byte instead of 2.

The words are those of ``push_kernel``'s flagged mode, with the same writers, readers and
guarantees (``signals.py``: ll slots, CALL): the flag is ``(E + 1) mod 2^31 | 2^31``, the slots are
written only by flagged-word modes, every word is consumed, a slot parity is written again at E+2
only. Invariant A: a program's first poll also waits for every peer's CALL word (sources with
fewer rows send it no tile) and checks the digests before anything is stored; a program with no
tile to receive waits for the CALL words. Its digest carries its own mode code, so a rank making
another collective or mode at the same epoch (same flag) is caught before its words are used.
"""

import triton
import triton.language as tl

from .flagged_words import (load_quarters, packed_flag, poll_flagged, poll_packed, store_pieces, store_quarters,
                            zero_pieces)
from .signals import (FAULTS, PMAX, await_digests, begin_call, call_digest, chaos, digest_fault, end_call, header_words,
                      ll_flag, open_exchange, peer_bases, peer_table, poison_range, uniform_max, word_ptr)
from .tiles import HOST_SIZE_ARGS, gather_geometry, pick, rows, vec



@triton.jit
def _own_tile(in_addr, my_count, t, BLOCK: tl.constexpr, PER_WORD: tl.constexpr, VEC_BYTES: tl.constexpr):
    """Tile ``t`` of this rank's rows as (32-bit data words, live)."""
    WORDS: tl.constexpr = BLOCK // PER_WORD
    done = tl.cast(t, tl.int64) * BLOCK
    live = tl.arange(0, WORDS) < tl.multiple_of((my_count - done) // PER_WORD, VEC_BYTES // 4)
    return tl.load(vec(in_addr, done // PER_WORD, tl.int32, WORDS, VEC_BYTES), mask=live), live


@triton.jit
def _own_quarters(in_addr, my_count, t, BLOCK: tl.constexpr, PER_WORD: tl.constexpr, VEC_BYTES: tl.constexpr):
    """PACKED: tile ``t`` of this rank's rows as its four quarters ([Q] 32-bit data words, 0 where
    not live; ``flagged_words``)."""
    Q: tl.constexpr = BLOCK // PER_WORD // 4
    done = tl.cast(t, tl.int64) * BLOCK
    return load_quarters(vec(in_addr, done // PER_WORD, tl.int32, Q, VEC_BYTES), tl.arange(0, Q),
                         (my_count - done) // PER_WORD, Q)


@triton.jit
def _send(bases, in_addr, out_addr, my_first, my_count, live_peers, data0, live0, slot_off, slot_bytes, parity, flag,
          rank, pid, num_programs, W: tl.constexpr, BLOCK: tl.constexpr, PER_WORD: tl.constexpr,
          VEC_BYTES: tl.constexpr):
    """This program's tiles of this rank's rows: into its own output, and as flagged words into its
    slot at every live peer (one [peer, word] store: the peers' latencies overlap). The first
    tile's words (``data0, live0``, ``_own_tile``) were loaded at the kernel's start, before the
    call's own words: that load's latency overlaps theirs instead of following it."""
    WORDS: tl.constexpr = BLOCK // PER_WORD
    slots = bases + slot_off + (parity * W + rank) * slot_bytes  # [WP]: our slot at every rank
    for t in range(pid, tl.cdiv(my_count, BLOCK), num_programs):
        if t == pid:
            data, live = data0, live0
        else:
            data, live = _own_tile(in_addr, my_count, t, BLOCK, PER_WORD, VEC_BYTES)
        done = tl.cast(t, tl.int64) * BLOCK
        tl.store(vec(out_addr, (my_first + done) // PER_WORD, tl.int32, WORDS, VEC_BYTES), data, mask=live)
        flagged = (flag << 32) | (data.to(tl.int64) & 0xFFFFFFFF)
        tl.store(rows(slots, done // PER_WORD, WORDS, tl.int64, 16), flagged[None, :],
                 mask=live_peers[:, None] & live[None, :])


@triton.jit
def _send_packed(bases, in_addr, out_addr, my_first, my_count, live_peers, q0, q1, q2, q3, slot_off, slot_bytes,
                 parity, flag, rank, pid, num_programs, W: tl.constexpr, BLOCK: tl.constexpr,
                 PER_WORD: tl.constexpr, VEC_BYTES: tl.constexpr):
    """``_send`` in packed words (``flagged_words``): tile t's quarters into the output, and its
    pieces into words 3tQ.. of our slot at every live peer. The first tile's quarters (``q0..q3``,
    ``_own_quarters``) were loaded at the kernel's start."""
    Q: tl.constexpr = BLOCK // PER_WORD // 4
    slots = bases + slot_off + (parity * W + rank) * slot_bytes  # [WP]: our slot at every rank
    lanes = tl.arange(0, slots.shape[0])
    for t in range(pid, tl.cdiv(my_count, BLOCK), num_programs):
        if t == pid:
            d0, d1, d2, d3 = q0, q1, q2, q3
        else:
            d0, d1, d2, d3 = _own_quarters(in_addr, my_count, t, BLOCK, PER_WORD, VEC_BYTES)
        done = tl.cast(t, tl.int64) * BLOCK
        left = (my_count - done) // PER_WORD
        m = tl.arange(0, Q)
        store_quarters(vec(out_addr, (my_first + done) // PER_WORD, tl.int32, Q, VEC_BYTES), m, left, d0, d1, d2, d3, Q)
        for q in tl.static_range(W):  # one store per peer, in the quarters' own layout (no conversion)
            store_pieces(vec(pick(slots, lanes, q), done // PER_WORD // 4 * 3, tl.int64, Q, 16), m, d0, d1, d2, d3,
                         flag, tl.where(pick(live_peers.to(tl.int32), lanes, q) != 0, left, 0), Q)


@triton.jit
def _receive(out_addr, my_slots, slot_bytes, first, count, most, flag, call_slots, digest, rank, pid, num_programs,
             deadline, err_ptr, err, W: tl.constexpr, WP: tl.constexpr, BLOCK: tl.constexpr,
             PER_WORD: tl.constexpr, VEC_BYTES: tl.constexpr, PACKED: tl.constexpr):
    """Tiles pid, pid + P, ... < ``most`` (the peers' largest tile count) of every peer's rows, from
    the slots here into the output; the first also waits for and checks every peer's digest.
    Returns the error bits."""
    WORDS: tl.constexpr = BLOCK // PER_WORD
    Q: tl.constexpr = WORDS // 4  # PACKED: words per quarter
    m = tl.arange(0, Q)[None, :]  # PACKED: [source, word] blocks of each quarter
    source = tl.arange(0, WP)
    peers1 = (source < W) & (source != rank)
    slots = my_slots + source * slot_bytes  # [WP]: every source's slot here
    for t in range(pid, most, num_programs):
        done = tl.cast(t, tl.int64) * BLOCK
        go = (err & FAULTS) == 0
        left = tl.multiple_of((count - done) // PER_WORD, VEC_BYTES // 4)  # [WP] words from this tile on
        first_tile = go & (t == pid)
        if PACKED:  # tile t's pieces: words 3tQ.. of each source's slot; its quarters into the output
            pieces = rows(slots, done // PER_WORD // 4 * 3, Q, tl.int64, 16)
            lim = tl.where(peers1, left, 0)[:, None]
            d0, d1, d2, d3, calls, status = poll_packed(pieces, m, tl.where(go, lim, 0), flag, call_slots,
                                                        tl.where(first_tile, peers1, False), digest, deadline, err_ptr,
                                                        Q)
        else:
            live = peers1[:, None] & (tl.arange(0, WORDS)[None, :] < left[:, None])
            word_ptrs = rows(slots, done // PER_WORD, WORDS, tl.int64, 16)
            data, calls, status = poll_flagged(word_ptrs, tl.where(go, live, False), flag, call_slots,
                                               tl.where(first_tile, peers1, False), digest, deadline, err_ptr)
        # a CALL word this thread saw missing was seen by others (the loop ended) or ended the wait
        err |= uniform_max(status | tl.where(first_tile, digest_fault(calls, digest, peers1 & (calls != 0)), 0))
        # consumed: every thread read its words before the barrier of the reduction above
        tl.store(call_slots, calls * 0, mask=tl.where(first_tile, peers1, False))
        if PACKED:
            zero_pieces(pieces, m, lim, Q)
            store_quarters(rows(out_addr, (first + done) // PER_WORD, Q, tl.int32, VEC_BYTES), m,
                           tl.where((err & FAULTS) == 0, lim, 0), d0, d1, d2, d3, Q)
        else:
            tl.store(word_ptrs, data.to(tl.int64) * 0, mask=live)
            tl.store(rows(out_addr, (first + done) // PER_WORD, WORDS, tl.int32, VEC_BYTES), data,
                     mask=tl.where((err & FAULTS) == 0, live, False))
    return err


@triton.jit(do_not_specialize=HOST_SIZE_ARGS + ["rank", "in_cap", "out_cap", "timeout", "tag", "chaos_seed",
                                                "programs_per_sm", "tiles_per_program"])
def all_gatherv_ll_kernel(
    table_addr,  # address of int64[W]: base address of every rank's workspace (in this process)
    base_addr,  # this rank's workspace base address (= table[rank])
    in_addr,  # address of this rank's input, [in_cap, H] contiguous, 4-byte aligned
    out_addr,  # address of this rank's output, [out_cap, H] contiguous, 4-byte aligned
    sizes_addr,  # address of SIZES_DTYPE[W] rows per rank, on the device
    s0, s1, s2, s3, s4, s5, s6, s7,  # rows per rank, from the host (when SIZES_DTYPE is None)
    rank,
    in_cap,  # rows the input holds
    out_cap,  # rows the output holds
    H,  # elements per row (H * element size is a multiple of 4 bytes)
    slot_off,  # bytes from a base to the ll slots
    slot_bytes,  # bytes of one (parity, source) slot
    timeout,  # ns a call's waits may last (workspace timeout_s)
    tag,  # the host's part of the call digest (api.call_tag)
    chaos_seed,  # schedule fuzzing seed (tests; read only when CHAOS)
    programs_per_sm,  # grid knobs (unused here; see reduce_scatterv_kernel)
    tiles_per_program,
    W: tl.constexpr,
    WP: tl.constexpr,
    DTYPE: tl.constexpr,
    SIZES_DTYPE: tl.constexpr,
    BLOCK: tl.constexpr,  # elements per tile
    PER_WORD: tl.constexpr,  # elements per 32-bit word: 2 for 16-bit dtypes, 1 for float32
    ALIGN: tl.constexpr,  # elements; divides H
    VEC_BYTES: tl.constexpr,  # alignment (bytes) of the input/output word accesses, 4 or 8
    CHAOS: tl.constexpr,  # schedule fuzzing: stall random programs of random ranks (tests)
    PACKED: tl.constexpr = False,  # packed flagged words (flagged_words.py): 1.5 bytes per data byte, not 2
):
    pid = tl.program_id(0)
    num_programs = tl.num_programs(0)
    in_addr = in_addr.to(tl.int64)
    out_addr = out_addr.to(tl.int64)
    sizes_addr = sizes_addr.to(tl.int64)
    lanes = tl.arange(0, WP)
    raw, count, first, err = gather_geometry(sizes_addr, s0, s1, s2, s3, s4, s5, s6, s7, in_cap, out_cap, H, lanes,
                                             W, SIZES_DTYPE)
    peers = (lanes < W) & (lanes != rank)
    # loads that need no word of the workspace's state, issued first: their latency overlaps the
    # call's own (the epoch, ERR) instead of following it (a load is not moved above a store)
    bases = peer_bases(peer_table(table_addr), W, WP)
    if PACKED:
        q0, q1, q2, q3 = _own_quarters(in_addr, pick(count, lanes, rank), pid, BLOCK, PER_WORD, VEC_BYTES)
    else:
        data0, live0 = _own_tile(in_addr, pick(count, lanes, rank), pid, BLOCK, PER_WORD, VEC_BYTES)
    _, my_base, epoch, failed, deadline = begin_call(table_addr, base_addr, pid, timeout, W)
    CNT, SIG_START, OFF_START, SIG_END, RELAY_FLAGS, PUSH_FLAGS, CALL, ERR = header_words(W)  # CNT: begin/end_call
    err_ptr = word_ptr(my_base, ERR)
    parity = epoch & 1
    digest = call_digest(tag, epoch, raw, lanes, num_programs, W, BLOCK, SIZES_DTYPE is not None)
    call_row = CALL + (parity * PMAX + pid) * W
    call_slots = word_ptr(my_base, call_row + lanes)

    err, live_peers = open_exchange(bases, call_row, rank, digest, peers, err, failed, chaos_seed, pid, my_base, CHAOS)
    if PACKED:
        flag = packed_flag(epoch)
        _send_packed(bases, in_addr, out_addr, pick(first, lanes, rank), pick(count, lanes, rank), live_peers, q0, q1,
                     q2, q3, slot_off, slot_bytes, parity, flag, rank, pid, num_programs, W, BLOCK, PER_WORD,
                     VEC_BYTES)
    else:
        flag = ll_flag(epoch)
        _send(bases, in_addr, out_addr, pick(first, lanes, rank), pick(count, lanes, rank), live_peers, data0,
              live0, slot_off, slot_bytes, parity, flag, rank, pid, num_programs, W, BLOCK, PER_WORD, VEC_BYTES)
    chaos(chaos_seed, 1, pid, rank, my_base, CHAOS)
    most = tl.max(tl.where(peers, tl.cdiv(count, BLOCK), 0), axis=0)  # tiles of the largest peer
    err = _receive(out_addr, my_base + slot_off + parity * W * slot_bytes, slot_bytes, first, count, most, flag,
                   call_slots, digest, rank, pid, num_programs, deadline, err_ptr, err, W, WP, BLOCK, PER_WORD,
                   VEC_BYTES, PACKED)
    if most <= pid:  # received no tile, so heard from nobody in this call: wait for the peers' digests
        err |= await_digests(my_base, call_row, digest, live_peers, deadline, err_ptr, lanes)
    if failed | ((err & FAULTS) != 0):  # each source's tiles, as this program stores them
        for q in tl.static_range(W):
            poison_range(out_addr, pick(first, lanes, q), pick(count, lanes, q), pid, num_programs, DTYPE, BLOCK,
                         ALIGN, VEC_BYTES)
    end_call(bases, my_base, epoch, err, failed, rank, pid, num_programs, W, WP)


# ----------------------------------------------------------------------------- launcher

from .launch_args import call_arguments, run, vector_align  # noqa: E402


def fits(ws, call, elt: int) -> bool:
    """Whether a call may take this kernel, from rank-agreed facts: every source's rows (host sizes:
    the largest count; device sizes: the input capacity) within the workspace's ``gather_ll_bytes``, and
    rows of whole 32-bit words."""
    return call.largest_rows * call.hidden * elt <= ws.layout.gather_ll_limit and (call.hidden * elt) % 4 == 0


def arguments(ws, inp, out, call, protocol: tuple, packed: bool = False):
    """``(args, constexprs, max_rows)`` of one call: ``inp``/``out`` contiguous and 4-byte aligned,
    ``call`` validated (``validation.check_gather_call``) and ``fits``; ``protocol``:
    ``(timeout, tag, chaos_seed)``; ``packed``: packed flagged words (``flagged_words``; rank-agreed,
    part of the digest's mode). The grid covers the largest source (``max_rows``): every program
    sends and receives its tiles of every source."""
    args, constexprs, max_rows = call_arguments(ws, inp, out, call)
    elt = inp.element_size()
    args += (ws.layout.ll_slot_offset, ws.layout.ll_slot_bytes, *protocol)
    align = vector_align(call.hidden, elt, inp.data_ptr(), out.data_ptr())
    constexprs.update(PER_WORD=max(1, 4 // elt), ALIGN=align, VEC_BYTES=max(4, min(8, align * elt)),
                      CHAOS=protocol[2] != 0, PACKED=packed)
    return args, constexprs, max_rows


def launch(ws, inp, out, call, config, multiprocessors: int, protocol: tuple, packed: bool = False) -> None:
    """Run one call (``arguments`` says what it takes) with ``config``'s knobs."""
    args, constexprs, max_rows = arguments(ws, inp, out, call, protocol, packed)
    run(all_gatherv_ll_kernel, args, constexprs, max_rows, call.hidden, config, multiprocessors)
