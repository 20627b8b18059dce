"""The push kernel: every rank writes its partial of each other rank's rows straight into that
rank's receive slot, and each rank sums its own slots locally. No barrier, no pull round trip, no
closing barrier. One constexpr picks how a receiver knows the data has landed:

``FLAGGED`` (mode "ll", the tiniest calls): 8-byte words holding 4 data bytes and a flag
    (``(E + 1) mod 2^31 | 2^31``, never 0) in slots only this mode writes. A receiver polls its slots
    until every word carries the flag, sums, and writes 0 over the words it used. A word is written
    by one 8-byte store, so data and flag arrive together: no fence, no signal (the protocol of
    NCCL's LL). It moves twice the bytes, so it only pays for a few tens of KiB per destination.
plain (mode "push", mid-size calls): the data as it is, in rounds. In round j program p writes tile
    ``p + j * P`` of every peer's rows into that peer's slot, then, after a CTA barrier, releases
    the peer's PUSH word [p][this rank] = ``E * 2^20 + j + 1`` at system scope: a peer that
    acquires the value sees the tiles. After pushing round j a program takes round j - 1 of its
    own rows (waits for every peer's word, sums its slots), so the waits and the local sums overlap
    the next round's writes. Writes over NVLink are posted: this moves about 10% more bytes per
    second than pulling, and needs no barrier before or after.

Every program first writes its call's digest into every peer's CALL word; a receiving program
checks every peer's digest before it stores a sum (the flagged poll reads the CALL words in the
same loop; the plain push reads them after its first acquire, which orders them), and a program
that receives nothing waits for them. That check is also what invariant A (``signals.py``) needs
before a slot parity is written again: a program that received a tile heard from every peer in
this call, the others waited for every peer's digest.

``EPILOGUE`` (``epilogues.py``): each finished fp32 sum goes to ``epilogue_functions.finish``
(flagged words: the even and the odd elements of the words separately) instead of being rounded
into ``out``; on a fault every output of the epilogue is poisoned. ``ROWS`` (plain push only): a
tile is one row, for epilogues that need whole rows.

As in the pull kernel, programs of one index only ever wait for programs of the same index.
"""

import triton
import triton.language as tl

from .signals import (FAULTS, PMAX, ROUND_BITS, await_digests, begin_call, call_digest, chaos, check_digests,
                      digest_fault, end_call, header_words, ll_flag, open_exchange, peer_bases, peer_table, poison,
                      release, uniform_max, wait_words, word_ptr)
from .epilogue_functions import finish, finish_prepared, poison_outputs, prepare
from .flagged_words import poll_flagged
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
def _ll_tile(in_addr, first, count, peers, t, BLOCK: tl.constexpr, PER_WORD: tl.constexpr, VEC_BYTES: tl.constexpr):
    """FLAGGED: tile ``t`` of this rank's partial of every peer's rows, as ([destination rank, word]
    32-bit data words, live): one 2-D load for every peer."""
    WORDS: tl.constexpr = BLOCK // PER_WORD
    done = tl.cast(t, tl.int64) * BLOCK
    left = tl.multiple_of((count - done) // PER_WORD, VEC_BYTES // 4)  # [WP] words from this tile on
    live = peers[:, None] & (tl.arange(0, WORDS)[None, :] < left[:, None])
    return tl.load(rows(in_addr, (first + done) // PER_WORD, WORDS, tl.int32, VEC_BYTES), mask=live), live


@triton.jit
def _ll_push(bases, in_addr, first, count, tiles, peers, live_peers, data0, live0, slot_off, slot_bytes, parity, flag,
             rank, pid, num_programs, W: tl.constexpr, BLOCK: tl.constexpr, PER_WORD: tl.constexpr,
             VEC_BYTES: tl.constexpr):
    """FLAGGED: write this rank's partial of every other rank's tiles (of this program) into that
    rank's slot for us, as flagged words, to the live peers. One 2-D store per tile index covers
    every peer ([destination rank, word]): the peers' latencies overlap instead of adding up. The
    first tile's words (``data0, live0``, ``_ll_tile``) were loaded at the kernel's start, before
    the call's own words: that load's latency overlaps theirs instead of following it."""
    WORDS: tl.constexpr = BLOCK // PER_WORD
    slots = bases + slot_off + (parity * W + rank) * slot_bytes  # [WP]: our slot at every rank
    for t in range(pid, tl.max(tl.where(live_peers, tiles, 0), axis=0), num_programs):
        if t == pid:
            data, live = data0, live0
        else:
            data, live = _ll_tile(in_addr, first, count, peers, t, BLOCK, PER_WORD, VEC_BYTES)
        done = tl.cast(t, tl.int64) * BLOCK
        tl.store(rows(slots, done // PER_WORD, WORDS, tl.int64, 16),
                 (flag << 32) | (data.to(tl.int64) & 0xFFFFFFFF), mask=live & live_peers[:, None])


@triton.jit
def _ll_inputs(in_addr, out_ok, my_first, my_count, t, H, ep0, ep1, ep2, rank, WP: tl.constexpr, DTYPE: tl.constexpr,
               BLOCK: tl.constexpr, PER_WORD: tl.constexpr, VEC_BYTES: tl.constexpr, EPILOGUE: tl.constexpr,
               HC: tl.constexpr, ALIGN: tl.constexpr):
    """FLAGGED: what receiving tile ``t`` needs besides the peers' words, all loads of this call's own
    inputs: (this rank's partial, in its row of the [source, word] block; the epilogue's prepared
    inputs, ``epilogue_functions.prepare``; the tile's live words [1, word] and live elements of this
    rank's output). The own partial is loaded first: ``prepare``'s arithmetic waits for its loads."""
    WORDS: tl.constexpr = BLOCK // PER_WORD
    source = tl.arange(0, WP)
    done = tl.cast(t, tl.int64) * BLOCK
    live = (tl.arange(0, WORDS) < tl.multiple_of((my_count - done) // PER_WORD, VEC_BYTES // 4))[None, :]
    own = tl.load(rows(in_addr, (my_first + done) // PER_WORD + source * 0, WORDS, tl.int32, VEC_BYTES),
                  mask=(source == rank)[:, None] & live, other=0)
    offs = tl.arange(0, BLOCK)
    # my_count - done: a multiple of ALIGN (rows of H), so the epilogue's accesses are vectors
    ours = tl.where(out_ok, offs < tl.multiple_of(my_count - done, ALIGN), False)
    terms, post = prepare(done, offs, ours, H, ep0, ep1, ep2, DTYPE, EPILOGUE, HC, ALIGN * (4 // PER_WORD))
    return own, terms, post, live, ours


@triton.jit
def _ll_receive(in_addr, out_addr, out_ok, my_slots, slot_bytes, my_first, my_count, my_tiles, flag, call_slots,
                digest, rank, pid, num_programs, deadline, err_ptr, err, H, ep0, ep1, ep2, ep3, ep_eps,
                W: tl.constexpr, WP: tl.constexpr, DTYPE: tl.constexpr, BLOCK: tl.constexpr, PER_WORD: tl.constexpr,
                VEC_BYTES: tl.constexpr, EPILOGUE: tl.constexpr, HC: tl.constexpr, WRITE_F: tl.constexpr,
                ALIGN: tl.constexpr):
    """FLAGGED: own partial plus every peer's words, summed in float32. Every peer's slot is polled by
    one 2-D load per round ([source rank, word]), so the waits overlap; this rank's own partial rides
    in its row of the block (loaded from the input), so the sum is one reduction over sources. The
    first tile's poll also reads the peers' CALL words, checked before anything is stored; every
    word used is then written back to 0 (consumed). With an epilogue (flat tiles only), its own
    inputs are loaded before the poll (``_ll_inputs``), and the sums, back in element order, go to
    it before their one rounding."""
    WORDS: tl.constexpr = BLOCK // PER_WORD
    source = tl.arange(0, WP)
    mine = (source == rank)[:, None]
    peers1 = (source < W) & (source != rank)
    peers = peers1[:, None]
    slots = my_slots + source * slot_bytes  # [WP]: every source's slot here
    offs = tl.arange(0, BLOCK)
    for t in range(pid, my_tiles, num_programs):
        # loaded before the poll: their latency hides in the wait
        own, terms, post, live, ours = _ll_inputs(in_addr, out_ok, my_first, my_count, t, H, ep0, ep1, ep2, rank, WP,
                                                  DTYPE, BLOCK, PER_WORD, VEC_BYTES, EPILOGUE, HC, ALIGN)
        done = tl.cast(t, tl.int64) * BLOCK
        go = (err & FAULTS) == 0
        word_ptrs = rows(slots, done // PER_WORD, WORDS, tl.int64, 16)
        first = go & (t == pid)
        data, calls, status = poll_flagged(word_ptrs, tl.where(go, peers & live, False), flag, call_slots,
                                           tl.where(first, peers1, False), digest, deadline, err_ptr)
        # a CALL word this thread saw missing was seen by others (the loop ended) or ended the wait
        err |= uniform_max(status | tl.where(first, digest_fault(calls, digest, peers1 & (calls != 0)), 0))
        # consumed: every thread read its words before the barrier of the reduction above
        tl.store(word_ptrs, data.to(tl.int64) * 0, mask=peers & live)
        tl.store(call_slots, calls * 0, mask=tl.where(first, peers1, False))
        lo, hi = _unpack(tl.where(mine, own, data), DTYPE, PER_WORD)  # masked-off words read as 0: +0.0
        if EPILOGUE == 0:  # fp32 accumulation, rounded once in _pack
            total = _pack(tl.sum(lo, axis=0)[None, :], tl.sum(hi, axis=0)[None, :], DTYPE, PER_WORD)
            # stored from this rank's row of the block (the sum broadcast back: no register shuffle)
            out = rows(out_addr, done // PER_WORD + source * 0, WORDS, tl.int32, VEC_BYTES)
            tl.store(out, total + own * 0, mask=tl.where(out_ok & ((err & FAULTS) == 0), mine & live, False))
        else:  # the two halves of each word back in element order: one contiguous tile for the epilogue
            x = tl.sum(lo, axis=0)
            if PER_WORD == 2:
                x = tl.interleave(x, tl.sum(hi, axis=0))
            finish_prepared(x, terms, post, done, offs, tl.where((err & FAULTS) == 0, ours, False), out_addr, H, ep0,
                            ep1, ep2, ep3, ep_eps, DTYPE, EPILOGUE, HC, WRITE_F, BLOCK, ALIGN, ALIGN * (4 // PER_WORD))
    return err


@triton.jit
def _push_rounds(in_addr, out_addr, out_ok, bases, my_base, first, count, tiles, lanes, peers, my_tiles, slot_off,
                 slot_bytes, parity, epoch, progress_word, call_slots, digest, rank, pid, num_programs, deadline,
                 err_ptr, err, chaos_seed, H, ep0, ep1, ep2, ep3, ep_eps, CHAOS: tl.constexpr, W: tl.constexpr,
                 DTYPE: tl.constexpr, BLOCK: tl.constexpr, ALIGN: tl.constexpr, VEC_BYTES: tl.constexpr,
                 EPILOGUE: tl.constexpr, HC: tl.constexpr, ROWS: tl.constexpr, WRITE_F: tl.constexpr):
    """Plain: round j pushes tile pid + j * P of every peer's rows and signals those peers, then
    takes round j - 1 of this rank's own rows (see the module docstring). ``peers``: [WP] mask of
    the other ranks. The peers' digests are checked after the first acquire, before the first sum."""
    push_rounds = tl.cdiv(tl.maximum(tl.max(tl.where(peers, tiles, 0), axis=0) - pid, 0), num_programs)
    my_rounds = tl.cdiv(tl.maximum(my_tiles - pid, 0), num_programs)
    my_first = pick(first, lanes, rank)
    my_count = pick(count, lanes, rank)
    my_slots = my_base + slot_off + parity * W * slot_bytes
    sent = word_ptr(bases, progress_word + pid * W + rank)  # [WP]: our progress word at every peer
    heard = word_ptr(my_base, progress_word + pid * W + lanes)  # [WP]: every peer's progress word here
    for j in range(0, tl.maximum(push_rounds, my_rounds + 1)):
        t = pid + j * num_programs
        go = (err & FAULTS) == 0  # after a fault: no more writes to peers (masked, see the kernel)
        if j < push_rounds:
            for i in tl.static_range(1, W):
                q = (rank + i) % W  # rank r writes to r+1 first: every link busy from the start
                if t < pick(tiles, lanes, q):
                    start, local, mask = tile(pick(first, lanes, q), t, pick(count, lanes, q), BLOCK, ALIGN, H, ROWS)
                    slot = pick(bases, lanes, q) + slot_off + (parity * W + rank) * slot_bytes
                    x = tl.load(vec(in_addr, start, DTYPE, BLOCK, VEC_BYTES), mask=mask)
                    tl.store(vec(slot, local, DTYPE, BLOCK, VEC_BYTES), x, mask=tl.where(go, mask, False))
            chaos(chaos_seed, 10 + j, pid, rank, my_base, CHAOS)
            # the round landed (rounds stay below 2^ROUND_BITS - 1: see the launcher)
            release(sent, (lanes * 0).to(tl.int64) + (epoch << ROUND_BITS) + j + 1,
                    tl.where(go, peers & (t < tiles), False))
        if (j >= 1) & (j <= my_rounds):
            err |= wait_words(heard, tl.where(go, peers, False), (epoch << ROUND_BITS) + j, deadline, err_ptr, True)
            if (j == 1) & go & ((err & FAULTS) == 0):  # the digests came before the first release
                err |= check_digests(tl.load(call_slots, mask=peers, other=0, volatile=True), call_slots, digest,
                                     peers)
            start, local, mask = tile(my_first, t - num_programs, my_count, BLOCK, ALIGN, H, ROWS)
            acc = tl.load(vec(in_addr, start, DTYPE, BLOCK, VEC_BYTES), mask=mask, other=0.0).to(tl.float32)
            for r in tl.static_range(W):
                if r != rank:
                    acc += tl.load(vec(my_slots + r * slot_bytes, local, DTYPE, BLOCK, VEC_BYTES), mask=mask,
                                   other=0.0).to(tl.float32)
            if EPILOGUE == 0:  # fp32 accumulation, rounded once here
                tl.store(vec(out_addr, local, DTYPE, BLOCK, VEC_BYTES), acc.to(DTYPE),
                         mask=tl.where(out_ok & ((err & FAULTS) == 0), mask, False))
            else:
                finish(acc, local, tl.arange(0, BLOCK), tl.where(out_ok & ((err & FAULTS) == 0), mask, False),
                       out_addr, H, ep0, ep1, ep2, ep3, ep_eps, DTYPE, EPILOGUE, HC, WRITE_F, BLOCK,
                       ALIGN, VEC_BYTES)
    return err


@triton.jit(do_not_specialize=HOST_SIZE_ARGS + ["rank", "in_cap", "out_cap", "timeout", "tag", "chaos_seed",
                                                "ep_eps", "programs_per_sm", "tiles_per_program"])
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
    slot_off,  # bytes from a base to this mode's receive slots
    slot_bytes,  # bytes of one (parity, source) slot
    timeout,  # ns a call's waits may last (workspace timeout_s)
    tag,  # the host's part of the call digest (api.call_tag)
    chaos_seed,  # schedule fuzzing seed (tests; read only when CHAOS)
    ep0, ep1, ep2, ep3, ep_eps,  # the epilogue's addresses and scalar (epilogue_functions.finish; unused if none)
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
    CHAOS: tl.constexpr,  # schedule fuzzing: stall random programs of random ranks (tests)
    EPILOGUE: tl.constexpr = 0,  # 0: store f at out_addr; else the epilogue (epilogue_functions) gets the fp32 sums
    HC: tl.constexpr = 1,  # hc_post: streams
    ROWS: tl.constexpr = False,  # row tiles (tiles.tile; plain push only): one row per tile
    WRITE_F: tl.constexpr = True,  # with an epilogue: also store f (rounded) at out_addr
):
    pid = tl.program_id(0)
    num_programs = tl.num_programs(0)
    in_addr = in_addr.to(tl.int64)
    out_addr = out_addr.to(tl.int64)
    sizes_addr = sizes_addr.to(tl.int64)
    lanes = tl.arange(0, WP)
    n, count, first, tiles, out_ok, err = call_geometry(sizes_addr, s0, s1, s2, s3, s4, s5, s6, s7, rank, in_cap,
                                                        out_cap, H, lanes, W, SIZES_DTYPE, BLOCK, ROWS)
    peers = (lanes < W) & (lanes != rank)
    # loads that need no word of the workspace's state, issued first: their latency overlaps the
    # call's own (the epoch, ERR) instead of following it (a load is not moved above a store)
    bases = peer_bases(peer_table(table_addr), W, WP)
    if FLAGGED:
        data0, live0 = _ll_tile(in_addr, first, count, peers, pid, BLOCK, PER_WORD, VEC_BYTES)
    _, my_base, epoch, failed, deadline = begin_call(table_addr, base_addr, pid, timeout, W)
    CNT, SIG_START, OFF_START, SIG_END, RELAY_FLAGS, PUSH_FLAGS, CALL, ERR = header_words(W)  # CNT: begin/end_call
    err_ptr = word_ptr(my_base, ERR)
    parity = epoch & 1
    my_tiles = pick(tiles, lanes, rank)  # rank-agreed (an output too small only masks the stores)
    digest = call_digest(tag, epoch, n, lanes, num_programs, W, BLOCK, SIZES_DTYPE is not None)
    call_row = CALL + (parity * PMAX + pid) * W
    call_slots = word_ptr(my_base, call_row + lanes)

    err, live_peers = open_exchange(bases, call_row, rank, digest, peers, err, failed, chaos_seed, pid, my_base, CHAOS)
    if FLAGGED:
        flag = ll_flag(epoch)
        _ll_push(bases, in_addr, first, count, tiles, peers, live_peers, data0, live0, slot_off, slot_bytes, parity,
                 flag, rank, pid, num_programs, W, BLOCK, PER_WORD, VEC_BYTES)
        chaos(chaos_seed, 1, pid, rank, my_base, CHAOS)
        err = _ll_receive(in_addr, out_addr, out_ok, my_base + slot_off + parity * W * slot_bytes, slot_bytes,
                          pick(first, lanes, rank), pick(count, lanes, rank), my_tiles, flag, call_slots, digest,
                          rank, pid, num_programs, deadline, err_ptr, err, H, ep0, ep1, ep2, ep3, ep_eps, W, WP, DTYPE,
                          BLOCK, PER_WORD, VEC_BYTES, EPILOGUE, HC, WRITE_F, ALIGN)
    else:
        err = _push_rounds(in_addr, out_addr, out_ok, bases, my_base, first, count, tiles, lanes, peers, my_tiles,
                           slot_off, slot_bytes, parity, epoch, PUSH_FLAGS, call_slots, digest, rank, pid,
                           num_programs, deadline, err_ptr, err, chaos_seed, H, ep0, ep1, ep2, ep3, ep_eps, CHAOS, W,
                           DTYPE, BLOCK, ALIGN, VEC_BYTES, EPILOGUE, HC, ROWS, WRITE_F)
    # a program that received a tile checked every peer's digest; the others wait for them
    if my_tiles <= pid:
        err |= await_digests(my_base, call_row, digest, live_peers, deadline, err_ptr, lanes)
    if (failed | ((err & FAULTS) != 0)) & out_ok:
        if EPILOGUE == 0:
            poison(out_addr, pick(count, lanes, rank), pid, num_programs, DTYPE, BLOCK, ALIGN, VEC_BYTES)
        else:  # every output of the epilogue
            poison_outputs(pick(count, lanes, rank), pid, num_programs, out_addr, ep2, ep3, DTYPE, BLOCK, EPILOGUE, HC,
                           WRITE_F)
    end_call(bases, my_base, epoch, err, failed, rank, pid, num_programs, W, WP)


# ----------------------------------------------------------------------------- launcher

from .epilogues import NO_EPILOGUE_ARGS  # noqa: E402
from .epilogues import constexprs as epilogue_constexprs  # noqa: E402
from .launch_args import call_arguments, run, vector_align  # noqa: E402


def destination_bytes(call, elt: int) -> int:
    """Rank-agreed bound on the bytes any rank receives per peer: host sizes, max(sizes) rows; device
    sizes, the input's row capacity."""
    return call.largest_rows * call.hidden * elt


def fits(ws, call, elt: int, flagged: bool) -> bool:
    """Whether a call may take the flagged ("ll") or plain ("push") variant, from rank-agreed facts:
    the per-destination byte bound against the workspace's limit for that variant (flagged words
    also need whole 32-bit words per row)."""
    if flagged:
        return destination_bytes(call, elt) <= ws.layout.ll_bytes and (call.hidden * elt) % 4 == 0
    return destination_bytes(call, elt) <= ws.push_max_bytes


def push_arguments(ws, inp, out, call, flagged: bool, protocol: tuple, epilogue=None):
    """Positional arguments and constexprs of one call (everything but the tuning knobs);
    ``inp``/``out`` contiguous and 4-byte aligned (the API makes them so); ``protocol``:
    ``(timeout, tag, chaos_seed)`` (``launch_args.protocol_arguments``); ``epilogue``: an
    ``epilogues`` dataclass or None (with one, ``out`` is its ``f_out`` or any tensor). Returns
    ``(args, constexprs, max_rows)``; ``max_rows`` (rank-agreed) sizes the grid."""
    args, constexprs, max_rows = call_arguments(ws, inp, out, call)
    elt = inp.element_size()
    lay = ws.layout
    args += (lay.ll_slot_offset, lay.ll_slot_bytes) if flagged else (lay.slot_offset, lay.slot_bytes)
    args += (*protocol, *(epilogue.kernel_args() if epilogue is not None else NO_EPILOGUE_ARGS))
    align = vector_align(call.hidden, elt, inp.data_ptr(), out.data_ptr(),
                         *(epilogue.vector_addresses() if epilogue is not None else ()))
    # flagged: 32-bit data words move 8 bytes at a time (as many per thread as the 16-byte accesses
    # of 64-bit flagged words: the data and its words share one register layout, no shuffles)
    constexprs.update(FLAGGED=flagged, PER_WORD=max(1, 4 // elt), ALIGN=align,
                      VEC_BYTES=max(4, min(8, align * elt)) if flagged else align * elt, CHAOS=protocol[2] != 0)
    if epilogue is not None:
        if flagged and epilogue.row_tiles:
            raise ValueError("flagged words (mode ll) take flat tiles only; the planner never picks them for "
                             f"{type(epilogue).__name__}")
        constexprs.update(epilogue_constexprs(epilogue))
    return args, constexprs, max_rows


def launch(ws, inp, out, call, flagged: bool, config, multiprocessors: int, protocol: tuple, epilogue=None) -> None:
    """Run one call with ``config`` (a KernelConfig); the caller made the slots large enough
    (``Workspace.reserve_slots``) for the plain variant."""
    args, constexprs, max_rows = push_arguments(ws, inp, out, call, flagged, protocol, epilogue)
    run(reduce_scatterv_push_kernel, args, constexprs, max_rows, call.hidden, config, multiprocessors,
        row_tiles=epilogue is not None and epilogue.row_tiles)
