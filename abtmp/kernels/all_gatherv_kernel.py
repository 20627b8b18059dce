"""The all_gatherv pull kernel: expose, barrier, copy every rank's rows, barrier; one launch.

Problem (per call, every rank r of W): ``input_r`` holds ``n_r`` rows of length H. Every rank must
end with ``out = concat(input_0, ..., input_{W-1})`` ([sum(n), H], rank order), bit for bit.

Each rank exposes its rows in its symmetric workspace (in place when the input lies there, else
copied into scratch: ``STAGE``), posts its call digest and where its rows lie, then every program
meets the same program of every peer at a barrier, checks the peers' digests (before it reads any
peer memory: a peer with other sizes would be read out of its bounds), copies tiles pid, pid + P,
... of every rank's rows into its output (its own from its input), and meets them again at a
closing barrier, so that nobody overwrites rows a peer still reads. Moves, per GPU, (W-1) x the
other ranks' rows in peer reads; no arithmetic, so no rounding.

It shares the workspace, the epochs and the CALL words with ``reduce_scatterv`` (its digest
carries its own mode code, so ranks that make different collectives get a disagreement), and
keeps invariant A of ``signals.py``: every program hears from the same program of every peer in
each call (the two barriers). The words it uses (SIG_START, OFF_START, SIG_END, CALL) are the pull
kernel's, with the same writers, readers and guarantees. Not measured on GPUs yet: a push variant
(as ``push_kernel``) is the likely winner for decode sizes.
"""

import triton
import triton.language as tl

from .signals import (FAULTS, PMAX, barrier, begin_call, call_digest, chaos, check_digests, end_call, header_words,
                      peer_bases, poison_range, post_digest, word_ptr)
from .tiles import HOST_SIZE_ARGS, gather_geometry, pick, tile, vec



@triton.jit
def _copy_rows(src_addr, dst_addr, dst_first, count, pid, num_programs, DTYPE: tl.constexpr, BLOCK: tl.constexpr,
               ALIGN: tl.constexpr, VEC_BYTES: tl.constexpr):
    """Copy tiles pid, pid + P, ... of ``count`` elements from ``src_addr`` (from its start) to
    ``dst_addr`` from element ``dst_first``."""
    for t in range(pid, tl.cdiv(count, BLOCK), num_programs):
        start, local, mask = tile(dst_first, t, count, BLOCK, ALIGN)
        x = tl.load(vec(src_addr, local, DTYPE, BLOCK, VEC_BYTES), mask=mask)
        tl.store(vec(dst_addr, start, DTYPE, BLOCK, VEC_BYTES), x, mask=mask)


@triton.jit(do_not_specialize=HOST_SIZE_ARGS + ["rank", "in_cap", "out_cap", "expose_off", "timeout", "tag",
                                                "chaos_seed", "programs_per_sm", "tiles_per_program"])
def all_gatherv_kernel(
    table_addr,  # address of int64[W]: base address of every rank's workspace (in this process)
    base_addr,  # this rank's workspace base address (= table[rank])
    in_addr,  # address of this rank's input, [in_cap, H] contiguous
    out_addr,  # address of this rank's output, [out_cap, H] contiguous
    sizes_addr,  # address of SIZES_DTYPE[W] rows per rank, on the device
    s0, s1, s2, s3, s4, s5, s6, s7,  # rows per rank, from the host (when SIZES_DTYPE is None)
    rank,
    in_cap,  # rows the input holds
    out_cap,  # rows the output holds
    H,  # elements per row
    expose_off,  # bytes from this rank's base where its rows are exposed
    timeout,  # ns a call's waits may last (workspace timeout_s)
    tag,  # the host's part of the call digest (api.call_tag)
    chaos_seed,  # schedule fuzzing seed (tests; read only when CHAOS)
    programs_per_sm,  # grid knobs (unused here; see reduce_scatterv_kernel)
    tiles_per_program,
    W: tl.constexpr,
    WP: tl.constexpr,  # next power of two >= max(W, 2)
    DTYPE: tl.constexpr,
    SIZES_DTYPE: tl.constexpr,  # tl.int32 / tl.int64: sizes on the device; None: host scalars
    STAGE: tl.constexpr,
    BLOCK: tl.constexpr,  # elements per tile
    ALIGN: tl.constexpr,  # elements; divides H
    VEC_BYTES: tl.constexpr,  # ALIGN * element size
    CHAOS: tl.constexpr,  # schedule fuzzing: stall random programs of random ranks (tests)
):
    pid = tl.program_id(0)
    num_programs = tl.num_programs(0)
    in_addr = in_addr.to(tl.int64)
    out_addr = out_addr.to(tl.int64)
    sizes_addr = sizes_addr.to(tl.int64)
    table, my_base, epoch, failed, deadline = begin_call(table_addr, base_addr, pid, timeout, W)
    CNT, SIG_START, OFF_START, SIG_END, RELAY_FLAGS, PUSH_FLAGS, CALL, ERR = header_words(W)
    err_ptr = word_ptr(my_base, ERR)

    # ---- sizes: device sizes checked against capacities every rank agrees on (they are in the tag)
    lanes = tl.arange(0, WP)
    raw, count, first, err = gather_geometry(sizes_addr, s0, s1, s2, s3, s4, s5, s6, s7, in_cap, out_cap, H, lanes,
                                             W, SIZES_DTYPE)
    my_count = pick(count, lanes, rank)
    peers = (lanes < W) & (lanes != rank)
    bases = peer_bases(table, W, WP)
    digest = call_digest(tag, epoch, raw, lanes, num_programs, W, BLOCK, SIZES_DTYPE is not None)
    call_row = CALL + ((epoch & 1) * PMAX + pid) * W

    if failed.to(tl.int32) == 0:
        chaos(chaos_seed, 0, pid, rank, my_base, CHAOS)
        if STAGE:  # each program copies the tiles the peers' programs of its index will read
            _copy_rows(in_addr, my_base + expose_off, 0, my_count, pid, num_programs, DTYPE, BLOCK, ALIGN, VEC_BYTES)
        tl.store(word_ptr(bases, OFF_START + pid * W + rank), (lanes * 0).to(tl.int64) + expose_off, mask=lanes < W)
        post_digest(bases, call_row, rank, digest, peers)
        chaos(chaos_seed, 1, pid, rank, my_base, CHAOS)
        err |= barrier(bases, my_base, SIG_START, pid, rank, epoch + 1, deadline, err_ptr, W, WP)
        if (err & FAULTS) == 0:  # the digests were written before the peers' releases: no wait
            call_slots = word_ptr(my_base, call_row + lanes)
            err |= check_digests(tl.load(call_slots, mask=peers, other=0, volatile=True), call_slots, digest, peers)
        if (err & FAULTS) == 0:
            for q in tl.static_range(W):  # every rank's rows, this rank's own from its input
                src = tl.where(rank == q, in_addr,
                               tl.load(table + q) + tl.load(word_ptr(my_base, OFF_START + pid * W + q)))
                _copy_rows(src, out_addr, pick(first, lanes, q), pick(count, lanes, q), pid, num_programs, DTYPE,
                           BLOCK, ALIGN, VEC_BYTES)
            chaos(chaos_seed, 3, pid, rank, my_base, CHAOS)
            err |= barrier(bases, my_base, SIG_END, pid, rank, epoch + 1, deadline, err_ptr, W, WP)

    if failed | ((err & FAULTS) != 0):  # each source's tiles, as this program copies them
        for q in tl.static_range(W):
            poison_range(out_addr, pick(first, lanes, q), pick(count, lanes, q), pid, num_programs, DTYPE, BLOCK,
                         ALIGN, VEC_BYTES)
    end_call(bases, my_base, epoch, err, failed, rank, pid, num_programs, W, WP)


# ----------------------------------------------------------------------------- launcher

from .launch_args import call_arguments, run, vector_align  # noqa: E402


def arguments(ws, inp, out, call, stage: bool, protocol: tuple):
    """``(args, constexprs, max_rows)`` of one all_gatherv call: ``ws`` the group's Workspace,
    ``inp``/``out`` contiguous and 4-byte aligned, ``call`` validated
    (``validation.check_gather_call``); ``stage``: copy the input into the workspace's scratch first
    (it does not lie in the workspace); ``protocol``: ``(timeout, tag, chaos_seed)``. The grid covers
    the largest source (``max_rows``): every program copies its tiles of every rank's rows."""
    args, constexprs, max_rows = call_arguments(ws, inp, out, call)
    align = vector_align(call.hidden, inp.element_size(), inp.data_ptr(), out.data_ptr())
    args += (ws.layout.scratch_offset if stage else inp.data_ptr() - ws.base, *protocol)
    constexprs.update(STAGE=stage, ALIGN=align, VEC_BYTES=align * inp.element_size(), CHAOS=protocol[2] != 0)
    return args, constexprs, max_rows


def launch(ws, inp, out, call, stage: bool, config, multiprocessors: int, protocol: tuple) -> None:
    """Run one call (``arguments`` says what it takes) with ``config``'s knobs."""
    args, constexprs, max_rows = arguments(ws, inp, out, call, stage, protocol)
    run(all_gatherv_kernel, args, constexprs, max_rows, call.hidden, config, multiprocessors,
        fit_programs=min(config.programs_per_sm, 3) if stage else config.programs_per_sm)
