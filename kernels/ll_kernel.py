"""The low-latency variant for the tiniest calls: push flagged words, no barrier, no pull round trip.

Each rank writes its partial of every other rank's rows straight into that rank's low-latency
slot, as 8-byte words holding 4 data bytes and the call's epoch (``epoch + 1``, low 32 bits). A
receiver polls its slots until every word carries the current epoch, then sums. A word is written
by one 8-byte store, so data and flag arrive together: no fence, no separate signal (the protocol
of NCCL's LL). It moves twice the bytes, so it only pays below a few hundred KiB per destination.

Reuse of a slot: slots alternate by ``epoch & 1``. A rank writes parity p again only two calls
later, after the call in between waited for every peer's "started" word, which a peer sends only
once it has finished the call before; so nobody still reads the slot being overwritten. The
"started" words are relaxed (they order no data), so the kernel has no fence at all.

As in the pull kernel, programs of one index only ever wait for programs of the same index.
"""

import triton
import triton.language as tl

from .signals import ERR_SPIN_TIMEOUT, begin_call, end_call, header_words, signal_all, wait_all, word_ptr
from .tiles import HOST_SIZE_ARGS, call_geometry, pick, tile


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
def _words(addr, start, WORDS: tl.constexpr, WORD_TY: tl.constexpr, VEC_BYTES: tl.constexpr):
    """Pointers to WORDS consecutive WORD_TY words from word ``start`` of the array at ``addr``
    (which, offset by ``start``, is VEC_BYTES-aligned: the hint that allows vector accesses)."""
    return tl.multiple_of(addr.to(tl.pointer_type(WORD_TY)) + start, VEC_BYTES) + tl.arange(0, WORDS)


@triton.jit
def _poll(slots, live, flag, spin_limit):
    """Load flagged words until every live one carries ``flag``; returns (32-bit data, 0 where not
    live; timed out?)."""
    words = tl.load(slots, mask=live, other=0, volatile=True)
    polls = spin_limit.to(tl.int64) * 0
    pending = _stale(words, live, flag) & (polls < spin_limit)
    while pending:
        words = tl.load(slots, mask=live, other=0, volatile=True)
        polls += 1
        pending = _stale(words, live, flag) & (polls < spin_limit)
    return (words & 0xFFFFFFFF).to(tl.int32), _stale(words, live, flag)


@triton.jit
def _stale(words, live, flag):
    """True while some live word (of a 1-D or 2-D block) does not carry this call's flag yet."""
    return tl.max(((((words >> 32) & 0xFFFFFFFF) != flag) & live).to(tl.int32)) > 0


@triton.jit(do_not_specialize=HOST_SIZE_ARGS + ["rank", "in_cap", "out_cap", "spin_limit", "programs_per_sm",
                                                "tiles_per_program"])
def reduce_scatterv_ll_kernel(
    table_addr,  # address of int64[W]: base address of every rank's workspace (in this process)
    base_addr,  # this rank's workspace base address (= table[rank])
    in_addr,  # address of this rank's input, [in_cap, H] contiguous, 4-byte aligned
    out_addr,  # address of this rank's output, [out_cap, H] contiguous, 4-byte aligned
    sizes_addr,  # address of SIZES_DTYPE[W] rows per rank, on the device
    s0, s1, s2, s3, s4, s5, s6, s7,  # rows per rank, from the host (when SIZES_DTYPE is None)
    rank,
    in_cap,  # rows the input holds
    out_cap,  # rows the output holds
    H,  # elements per row (even for 16-bit dtypes)
    ll_off,  # bytes from a base to its low-latency slots
    slot_bytes,  # bytes of one (parity, source) slot
    spin_limit,  # polls before a wait gives up and flags ERR_SPIN_TIMEOUT
    programs_per_sm,  # grid knobs (unused here; see reduce_scatterv_kernel)
    tiles_per_program,
    W: tl.constexpr,
    WP: tl.constexpr,
    DTYPE: tl.constexpr,
    SIZES_DTYPE: tl.constexpr,
    BLOCK: tl.constexpr,  # elements per tile
    PER_WORD: tl.constexpr,  # elements per 32-bit word: 2 for 16-bit dtypes, 1 for float32
    VEC_BYTES: tl.constexpr,  # alignment (bytes) of the input/output tiles: 4, 8 or 16
):
    WORDS: tl.constexpr = BLOCK // PER_WORD
    pid = tl.program_id(0)
    num_programs = tl.num_programs(0)
    in_addr = in_addr.to(tl.int64)
    out_addr = out_addr.to(tl.int64)
    sizes_addr = sizes_addr.to(tl.int64)
    table, my_base, epoch = begin_call(table_addr, base_addr, pid)
    CNT, SIG_START, OFF_START, SIG_END, RELAY_FLAGS, ERR = header_words(W)  # CNT: begin_call/end_call
    flag = (epoch + 1) & 0xFFFFFFFF
    parity = epoch % 2
    lanes = tl.arange(0, WP)
    count, first, tiles, out_ok, err = call_geometry(sizes_addr, s0, s1, s2, s3, s4, s5, s6, s7, rank, in_cap,
                                                     out_cap, H, lanes, W, SIZES_DTYPE, BLOCK)

    # ---- "started": lets peers reuse the parity slots of two calls ago (see the module docstring)
    signal_all(table, SIG_START + pid * W + rank, epoch + 1, W, WP, "relaxed")

    # ---- push this rank's partial of every other rank's tiles into that rank's slot for us
    for q in tl.static_range(W):
        if q != rank:
            q_first = pick(first, lanes, q)
            q_count = pick(count, lanes, q)
            slot = tl.load(table + q) + ll_off + (parity * W + rank) * slot_bytes
            for t in range(pid, pick(tiles, lanes, q), num_programs):
                start, local, _ = tile(q_first, t, q_count, BLOCK, 1)
                live = tl.arange(0, WORDS) < tl.multiple_of((q_count - local) // PER_WORD, VEC_BYTES // 4)
                data = tl.load(_words(in_addr, start // PER_WORD, WORDS, tl.int32, VEC_BYTES), mask=live)
                tl.store(_words(slot, local // PER_WORD, WORDS, tl.int64, 16),
                         (flag << 32) | (data.to(tl.int64) & 0xFFFFFFFF), mask=live)

    # ---- receive: own partial plus every peer's words, summed in float32. All peers' slots are
    # polled by one 2-D load per round ([source rank, word]), so the waits overlap instead of
    # following each other.
    my_first = pick(first, lanes, rank)
    my_count = pick(count, lanes, rank)
    my_slots = my_base + ll_off + parity * W * slot_bytes
    source = tl.arange(0, WP)[:, None]
    peers = (source < W) & (source != rank)
    slot_words = tl.multiple_of(slot_bytes // 8, 32)  # slots start on 256-byte boundaries
    for t in range(pid, tl.where(out_ok, pick(tiles, lanes, rank), 0), num_programs):
        start, local, _ = tile(my_first, t, my_count, BLOCK, 1)
        live = tl.arange(0, WORDS) < tl.multiple_of((my_count - local) // PER_WORD, VEC_BYTES // 4)
        lo, hi = _unpack(tl.load(_words(in_addr, start // PER_WORD, WORDS, tl.int32, VEC_BYTES), mask=live,
                                 other=0), DTYPE, PER_WORD)
        slots = _words(my_slots, local // PER_WORD, WORDS, tl.int64, 16)[None, :] + source * slot_words
        data, late = _poll(slots, peers & live[None, :], flag, spin_limit)
        err |= tl.where(late, ERR_SPIN_TIMEOUT, 0)
        dlo, dhi = _unpack(data, DTYPE, PER_WORD)  # masked-off sources read as 0 words: +0.0
        lo += tl.sum(dlo, axis=0)
        hi += tl.sum(dhi, axis=0)
        tl.store(_words(out_addr, local // PER_WORD, WORDS, tl.int32, VEC_BYTES), _pack(lo, hi, DTYPE, PER_WORD),
                 mask=live)

    # peers started this call, so they finished the one before: slot reuse is safe (no data to order)
    err |= wait_all(my_base, SIG_START + pid * W, epoch + 1, spin_limit, W, WP, False)
    end_call(my_base, epoch, err, pid, num_programs, ERR)


# ----------------------------------------------------------------------------- launcher

from .launch_args import call_arguments, run, vector_align  # noqa: E402


def fits(ws, call, elt: int) -> bool:
    """Whether a call takes this variant, from rank-agreed facts only: the per-destination byte bound
    (host sizes: max(sizes); device sizes: the input capacity) and whole 32-bit words per row."""
    bound = (max(call.sizes) if call.sizes is not None else call.rows) * call.hidden * elt
    return bound <= ws.layout.ll_bytes and (call.hidden * elt) % 4 == 0


def ll_arguments(ws, inp, out, call, spin_limit: int):
    """Positional arguments and constexprs of one call (everything but the tuning knobs);
    ``inp``/``out`` contiguous and 4-byte aligned (the API makes them so). Returns
    ``(args, constexprs, max_rows)``; ``max_rows`` (rank-agreed) sizes the grid."""
    args, constexprs, max_rows = call_arguments(ws, inp, out, call)
    elt = inp.element_size()
    args += (ws.layout.ll_offset, ws.layout.ll_slot_bytes, spin_limit)
    constexprs.update(PER_WORD=4 // elt,
                      VEC_BYTES=max(4, vector_align(call.hidden, elt, inp.data_ptr(), out.data_ptr()) * elt))
    return args, constexprs, max_rows


def launch(ws, inp, out, call, config, multiprocessors: int, spin_limit: int) -> None:
    """Run one call with ``config`` (a KernelConfig)."""
    args, constexprs, max_rows = ll_arguments(ws, inp, out, call, spin_limit)
    run(reduce_scatterv_ll_kernel, args, constexprs, max_rows, call.hidden, config, multiprocessors)
