"""The pull kernel: barrier, pull from every peer, fp32 sum, store, barrier; one launch.

Problem (per call, every rank r of W): ``input_r`` holds ``sum(n)`` rows of length H in SUM_LEN
layout (rank 0's rows first). Rank q must end with ``out_q = sum_r input_r[off_q : off_q + n_q]``.

Each rank *exposes* its partial rows in its symmetric workspace (in place when the input lies
there, else copied into scratch: ``STAGE``), posts its call digest, then every program of every
rank meets its peers' program of the same index at a barrier, checks their digests, pulls, and
meets them again at a closing barrier, so nobody overwrites what a peer still reads. Moves, per
GPU, (W-1) x its own rows in peer reads; wins above the push modes' limits (measured crossovers
in ``workspace.py``).

``RELAY`` (W >= 3): tiles of a rank that owns far more rows than the others are reduced by the
    other ranks (each reads that tile from all ranks and pushes the finished sum into the owner's
    scratch, at the tile's own place), and the owner copies each such tile to its output once the
    relay's per-program counter says it has arrived. With one owner of S rows, the owner then
    receives S rows instead of (W-1)*S, as posted writes. Owners keep ``min(T_q, C)`` tiles to
    reduce themselves, C = the second smallest tile count, which balances inbound traffic. Relaying
    happens only where it pays: the excess is at least ``relay_min_tiles`` (two hops cost latency)
    and the relayed traffic bound, ``sum(T) - min(T)`` tiles per GPU, is at most
    ``relay_max_cost_pct`` % of the direct pull's, ``(W-1) * max(T)`` (the relay path runs at a
    lower fraction of the link rate than the plain pull, so a small saving loses). With even sizes
    nothing is relayed and the kernel is a plain pull. ``api.relayed_tiles`` mirrors this on the host.

``EPILOGUE`` (``epilogues.py``): the fp32 sum of every finished tile (direct, or relayed: relays
    then push fp32 sums, see ``signals.py``) goes to ``epilogue_functions.finish`` instead of being
    rounded into ``out``; on a fault every output of the epilogue is poisoned. ``ROWS``: a tile is
    one row (epilogues that need whole rows). With ``EPILOGUE`` 0 the kernel is the plain one.

Every cross-rank dependency is between programs of the same index, so the protocol needs no
co-residency and also runs in Triton's interpreter, where programs execute one after another.
The signals, their values and why no stale one can pass: ``signals.py``.
"""

import triton
import triton.language as tl

from .signals import (FAULTS, PMAX, ROUND_BITS, barrier, begin_call, call_digest, chaos, check_digests, end_call,
                      header_words, peer_bases, poison, post_digest, release, wait_words, word_ptr)
from .epilogue_functions import finish, poison_outputs
from .tiles import HOST_SIZE_ARGS, call_geometry, pick, rows, tile, vec



@triton.jit
def _copy_tiles(src_addr, dst_addr, first, count, t0, t_step, m0, m_end, m_step, DTYPE: tl.constexpr,
                BLOCK: tl.constexpr, ALIGN: tl.constexpr, VEC_BYTES: tl.constexpr, H=0, ROWS: tl.constexpr = False):
    """Copy tiles ``t0 + m * t_step`` (m = m0, m0 + m_step, ... < m_end) of a destination's range from
    ``src_addr`` to the same elements at ``dst_addr``. Several tiles per step, as one 2-D access
    (about 16K elements), so that many loads are in flight before their stores. Copied one tile at a
    time, staging cost followed the tile count, not the bytes (4x H200, copy-in vs in place: +50 us
    at 512 rows of H 7168 with 2048-element tiles, +23 us at 1024 rows with 8192-element tiles)."""
    U: tl.constexpr = (16384 + BLOCK - 1) // BLOCK  # tiles per step (BLOCK is a power of two)
    for m in range(m0, m_end, m_step * U):
        ms = m + tl.arange(0, U) * m_step
        if ROWS:  # row tiles (see tiles.tile): tile t is row t, H <= BLOCK elements
            done = (t0 + ms * t_step).to(tl.int64) * H
            mask = (ms < m_end)[:, None] & (tl.arange(0, BLOCK)[None, :] < tl.multiple_of(count - done, ALIGN)[:, None])
            mask &= tl.arange(0, BLOCK)[None, :] < tl.multiple_of(H, ALIGN)
        else:
            done = (t0 + ms * t_step).to(tl.int64) * BLOCK  # [U] first element of each tile, within the range
            mask = (ms < m_end)[:, None] & (tl.arange(0, BLOCK)[None, :] < tl.multiple_of(count - done, ALIGN)[:, None])
        x = tl.load(rows(src_addr, first + done, BLOCK, DTYPE, VEC_BYTES), mask=mask)
        tl.store(rows(dst_addr, first + done, BLOCK, DTYPE, VEC_BYTES), x, mask=mask)


@triton.jit
def _reduce_tile(table, my_base, off_word, rank, in_addr, start, mask,
                 W: tl.constexpr, DTYPE: tl.constexpr, BLOCK: tl.constexpr, VEC_BYTES: tl.constexpr):
    """fp32 sum over all ranks of the tile at element ``start``: this rank's from its input, peers'
    from where they published them (header words ``off_word + r``). The W loads are independent,
    so they are all in flight at once."""
    acc = tl.zeros([BLOCK], tl.float32)
    for r in tl.static_range(W):
        peer = tl.load(table + r) + tl.load(word_ptr(my_base, off_word + r))
        src = tl.where(rank == r, in_addr, peer)
        acc += tl.load(vec(src, start, DTYPE, BLOCK, VEC_BYTES), mask=mask, other=0.0).to(tl.float32)
    return acc


@triton.jit
def _relay_turns(tiles, direct, who, owner, W: tl.constexpr, lanes):
    """Relayed tiles of ``owner`` go round-robin to the other ranks; rank ``who`` (!= owner) takes
    those with index j = k, k+(W-1), ... among them. Returns (first relayed tile, k, how many)."""
    first = pick(direct, lanes, owner)
    relayed = pick(tiles, lanes, owner) - first
    k = (who - owner - 1 + W) % W
    return first, k, (relayed - k + W - 2) // (W - 1)


@triton.jit(do_not_specialize=HOST_SIZE_ARGS + ["rank", "in_cap", "out_cap", "expose_off", "relay_min_tiles",
                                                "relay_max_cost_pct", "timeout", "tag", "chaos_seed", "ep_eps",
                                                "programs_per_sm", "tiles_per_program"])
def reduce_scatterv_kernel(
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
    expose_off,  # bytes from this rank's base where its partials are exposed
    scratch_off,  # bytes from base to the scratch region (relay results)
    relay_min_tiles,  # relay an owner's tiles only when it has this many more than C (>= 1)
    relay_max_cost_pct,  # ... and only when relaying cuts the busiest GPU's traffic to this % or less
    timeout,  # ns a call's waits may last (workspace timeout_s)
    tag,  # the host's part of the call digest (api.call_tag)
    chaos_seed,  # schedule fuzzing seed (tests; read only when CHAOS)
    ep0, ep1, ep2, ep3, ep_eps,  # the epilogue's addresses and scalar (epilogue_functions.finish; unused if none)
    programs_per_sm,  # grid knobs: unused here, read by the grid function, so that
    tiles_per_program,  # triton.autotune Configs can carry them without a recompile
    W: tl.constexpr,
    WP: tl.constexpr,  # next power of two >= max(W, 2)
    DTYPE: tl.constexpr,
    SIZES_DTYPE: tl.constexpr,  # tl.int32 / tl.int64: sizes on the device; None: host scalars
    STAGE: tl.constexpr,
    RELAY: tl.constexpr,
    BLOCK: tl.constexpr,  # elements per tile
    ALIGN: tl.constexpr,  # elements; divides H and every row start
    VEC_BYTES: tl.constexpr,  # ALIGN * element size
    CHAOS: tl.constexpr,  # schedule fuzzing: stall random programs of random ranks (tests)
    EPILOGUE: tl.constexpr = 0,  # 0: store f at out_addr; else the epilogue (epilogue_functions) gets the fp32 sums
    HC: tl.constexpr = 1,  # hc_post: streams
    ROWS: tl.constexpr = False,  # row tiles (tiles.tile): one row per tile, for epilogues that need whole rows
    WRITE_F: tl.constexpr = True,  # with an epilogue: also store f (rounded) at out_addr
):
    pid = tl.program_id(0)
    num_programs = tl.num_programs(0)
    in_addr = in_addr.to(tl.int64)  # an address that happens to be small (0 for an empty tensor)
    out_addr = out_addr.to(tl.int64)  # arrives as int32
    sizes_addr = sizes_addr.to(tl.int64)
    table, my_base, epoch, failed, deadline = begin_call(table_addr, base_addr, pid, timeout, W)
    CNT, SIG_START, OFF_START, SIG_END, RELAY_FLAGS, PUSH_FLAGS, CALL, ERR = header_words(W)  # CNT: begin/end_call
    err_ptr = word_ptr(my_base, ERR)

    # ---- sizes: validated on the device, identically on every rank
    lanes = tl.arange(0, WP)
    n, count, first, tiles, out_ok, err = call_geometry(sizes_addr, s0, s1, s2, s3, s4, s5, s6, s7, rank, in_cap,
                                                        out_cap, H, lanes, W, SIZES_DTYPE, BLOCK, ROWS)
    if RELAY:
        BIG: tl.constexpr = 1 << 62
        live_tiles = tl.where(lanes < W, tiles, BIG)
        smallest = tl.argmin(live_tiles, axis=0)
        second = tl.min(tl.where(lanes == smallest, BIG, live_tiles), axis=0)
        relayed_bound = tl.sum(tiles, axis=0) - tl.min(live_tiles, axis=0)  # busiest GPU, relaying
        pays = relayed_bound * 100 <= relay_max_cost_pct * (W - 1) * tl.max(tiles, axis=0)  # vs direct pull
        direct = tl.where(pays & (tiles - second >= relay_min_tiles), second, tiles)
    else:
        direct = tiles
    peers = (lanes < W) & (lanes != rank)
    bases = peer_bases(table, W, WP)
    digest = call_digest(tag, epoch, n, lanes, num_programs, W, BLOCK, SIZES_DTYPE is not None)
    call_row = CALL + ((epoch & 1) * PMAX + pid) * W
    my_first = pick(first, lanes, rank)
    my_count = pick(count, lanes, rank)
    # with an epilogue, relays push fp32 sums (the owner's epilogue rounds once) into the owner's
    # scratch past the region of the input's size
    f32_off = scratch_off
    if EPILOGUE != 0:
        f32_off += tl.cdiv(in_cap.to(tl.int64) * H * (VEC_BYTES // ALIGN), 256) * 256

    if failed.to(tl.int32) == 0:
        chaos(chaos_seed, 0, pid, rank, my_base, CHAOS)
        # ---- expose this rank's partials for the others
        if STAGE:  # copy each tile in the program that its reader will fetch it in (same index)
            dst = my_base + expose_off
            for q in tl.static_range(W):
                q_first = pick(first, lanes, q)
                q_count = pick(count, lanes, q)
                q_direct = pick(direct, lanes, q)
                if q != rank:  # tiles pid, pid + P, ... < q_direct: read by owner q
                    _copy_tiles(in_addr, dst, q_first, q_count, 0, 1, pid, q_direct, num_programs, DTYPE, BLOCK,
                                ALIGN, VEC_BYTES, H, ROWS)
                if RELAY:
                    for relay in tl.static_range(W):  # read by q's relays other than this rank
                        if relay != q:
                            if relay != rank:  # the relay's turns m = pid, pid + P, ...: tile q_direct + k + m (W-1)
                                _, k, turns = _relay_turns(tiles, direct, relay, q, W, lanes)
                                _copy_tiles(in_addr, dst, q_first, q_count, q_direct + k, W - 1, pid, turns,
                                            num_programs, DTYPE, BLOCK, ALIGN, VEC_BYTES, H, ROWS)
        tl.store(word_ptr(bases, OFF_START + pid * W + rank), (lanes * 0).to(tl.int64) + expose_off, mask=lanes < W)
        post_digest(bases, call_row, rank, digest, peers)
        chaos(chaos_seed, 1, pid, rank, my_base, CHAOS)
        err |= barrier(bases, my_base, SIG_START, pid, rank, epoch + 1, deadline, err_ptr, W, WP)
        if (err & FAULTS) == 0:  # the digests were written before the peers' releases: no wait
            call_slots = word_ptr(my_base, call_row + lanes)
            err |= check_digests(tl.load(call_slots, mask=peers, other=0, volatile=True), call_slots, digest, peers)

        if (err & FAULTS) == 0:
            # ---- relay: reduce the tiles this rank relays for heavier owners and push each sum into
            # the owner's scratch (before own work, so the owners' waits overlap with their direct
            # tiles). The owner's scratch at its own rows is read by nobody else: when the owner
            # staged its input there, the one relay of a tile reads the owner's partial and then
            # overwrites it with the sum.
            if RELAY:
                for q in tl.static_range(W):
                    if q != rank:
                        relay_first, k, turns = _relay_turns(tiles, direct, rank, q, W, lanes)
                        owner_base = tl.load(table + q)
                        owner_flag = word_ptr(owner_base, RELAY_FLAGS + pid * W + rank + lanes * 0)  # lane 0 is live
                        for m in range(pid, turns, num_programs):
                            t = relay_first + k + m * (W - 1)
                            start, _, mask = tile(pick(first, lanes, q), t, pick(count, lanes, q), BLOCK, ALIGN,
                                                  H, ROWS)
                            acc = _reduce_tile(table, my_base, OFF_START + pid * W, rank, in_addr, start, mask,
                                               W, DTYPE, BLOCK, VEC_BYTES)
                            if EPILOGUE == 0:
                                tl.store(vec(owner_base + scratch_off, start, DTYPE, BLOCK, VEC_BYTES), acc.to(DTYPE),
                                         mask=mask)
                            else:
                                tl.store(vec(owner_base + f32_off, start, tl.float32, BLOCK, 4 * ALIGN), acc,
                                         mask=mask)
                            chaos(chaos_seed, 2, pid + m, rank, my_base, CHAOS)
                            release(owner_flag, (lanes * 0).to(tl.int64) + (epoch << ROUND_BITS)
                                    + (m - pid) // num_programs + 1, lanes < 1)

            # ---- direct tiles of this rank's own rows
            for t in range(pid, tl.where(out_ok, pick(direct, lanes, rank), 0), num_programs):
                start, local, mask = tile(my_first, t, my_count, BLOCK, ALIGN, H, ROWS)
                acc = _reduce_tile(table, my_base, OFF_START + pid * W, rank, in_addr, start, mask,
                                   W, DTYPE, BLOCK, VEC_BYTES)
                if EPILOGUE == 0:  # fp32 accumulation, rounded once here
                    tl.store(vec(out_addr, local, DTYPE, BLOCK, VEC_BYTES), acc.to(DTYPE), mask=mask)
                else:
                    finish(acc, local, tl.arange(0, BLOCK), mask, out_addr, H, ep0, ep1, ep2, ep3, ep_eps, DTYPE,
                           EPILOGUE, HC, WRITE_F, BLOCK, ALIGN, VEC_BYTES)

            # ---- relayed tiles of this rank's own rows: in the order the relays produce them (all
            # relays' m-th tile, then the (m+1)-th), wait for the relay's counter, copy the sum
            if RELAY:
                if out_ok:
                    most = (pick(tiles, lanes, rank) - pick(direct, lanes, rank) + W - 2) // (W - 1)
                    for m in range(pid, most, num_programs):
                        for relay in tl.static_range(W):
                            if relay != rank:
                                relay_first, k, turns = _relay_turns(tiles, direct, relay, rank, W, lanes)
                                if m < turns:
                                    flag = word_ptr(my_base, RELAY_FLAGS + pid * W + relay + lanes * 0)
                                    err |= wait_words(flag, tl.where((err & FAULTS) == 0, lanes < 1, False),
                                                      (epoch << ROUND_BITS) + (m - pid) // num_programs + 1,
                                                      deadline, err_ptr, True)
                                    t = relay_first + k + m * (W - 1)
                                    start, local, mask = tile(my_first, t, my_count, BLOCK, ALIGN, H, ROWS)
                                    # a tile whose sum never came is NaN (the closing poison covers
                                    # tiles by index, these are stored by turn)
                                    ok = (err & FAULTS) == 0
                                    if EPILOGUE == 0:
                                        x = tl.load(vec(my_base + scratch_off, start, DTYPE, BLOCK, VEC_BYTES),
                                                    mask=mask)
                                        x = tl.where(ok, x, tl.full([BLOCK], float("nan"), tl.float32).to(DTYPE))
                                        tl.store(vec(out_addr, local, DTYPE, BLOCK, VEC_BYTES), x, mask=mask)
                                    else:
                                        x = tl.load(vec(my_base + f32_off, start, tl.float32, BLOCK, 4 * ALIGN),
                                                    mask=mask)
                                        x = tl.where(ok, x, float("nan"))
                                        finish(x, local, tl.arange(0, BLOCK), mask, out_addr, H, ep0, ep1, ep2, ep3,
                                               ep_eps, DTYPE, EPILOGUE, HC, WRITE_F, BLOCK, ALIGN, VEC_BYTES)

        # ---- nobody may overwrite what a peer still reads until all are done
        if (err & FAULTS) == 0:
            chaos(chaos_seed, 3, pid, rank, my_base, CHAOS)
            err |= barrier(bases, my_base, SIG_END, pid, rank, epoch + 1, deadline, err_ptr, W, WP)

    if (failed | ((err & FAULTS) != 0)) & out_ok:
        if EPILOGUE == 0:
            poison(out_addr, my_count, pid, num_programs, DTYPE, BLOCK, ALIGN, VEC_BYTES)
        else:  # every output of the epilogue
            poison_outputs(my_count, pid, num_programs, out_addr, ep2, ep3, DTYPE, BLOCK, EPILOGUE, HC, WRITE_F)
    end_call(bases, my_base, epoch, err, failed, rank, pid, num_programs, W, WP)


# ----------------------------------------------------------------------------- launcher

from dataclasses import dataclass  # noqa: E402

from .epilogues import NO_EPILOGUE_ARGS  # noqa: E402
from .epilogues import constexprs as epilogue_constexprs  # noqa: E402
from .launch_args import call_arguments, run, vector_align  # noqa: E402


@dataclass(frozen=True)
class Variant:
    """Which pull variant a call runs. ``relay`` and its two settings must agree on every rank (they
    are in the call's digest); ``stage`` (copy the input into the workspace first) is this rank's
    own business."""

    stage: bool
    relay: bool
    relay_min_tiles: int = 1  # rank-agreed; >= 1
    relay_max_cost_pct: int = 100  # rank-agreed


def kernel_arguments(ws, inp, out, call, variant: Variant, protocol: tuple, epilogue=None):
    """Positional arguments and variant constexprs of one call (everything but the tuning knobs);
    ``protocol``: ``(timeout, tag, chaos_seed)`` (``launch_args.protocol_arguments``); ``epilogue``:
    an ``epilogues`` dataclass or None (then ``out`` is f; with one, ``out`` is its ``f_out`` or
    any tensor, unused).

    Returns ``(args, constexprs, max_rows)``; ``max_rows`` (rank-agreed) sizes the grid."""
    args, constexprs, max_rows = call_arguments(ws, inp, out, call)
    lay = ws.layout
    align = vector_align(call.hidden, inp.element_size(), inp.data_ptr(), out.data_ptr(),
                         *(epilogue.vector_addresses() if epilogue is not None else ()))
    args += (lay.scratch_offset if variant.stage else inp.data_ptr() - ws.base, lay.scratch_offset,
             variant.relay_min_tiles, variant.relay_max_cost_pct, *protocol,
             *(epilogue.kernel_args() if epilogue is not None else NO_EPILOGUE_ARGS))
    constexprs.update(STAGE=variant.stage, RELAY=variant.relay, ALIGN=align, VEC_BYTES=align * inp.element_size(),
                      CHAOS=protocol[2] != 0)
    if epilogue is not None:
        constexprs.update(epilogue_constexprs(epilogue))
    return args, constexprs, max_rows


def launch(ws, inp, out, call, variant: Variant, config, multiprocessors: int, protocol: tuple,
           epilogue=None) -> None:
    """Run one call: ``ws`` the group's Workspace, ``inp``/``out`` contiguous, ``call`` validated;
    ``epilogue``: see ``kernel_arguments``."""
    args, constexprs, max_rows = kernel_arguments(ws, inp, out, call, variant, protocol, epilogue)
    # The protocol's waits and fault paths cost registers: at 8 warps and BLOCK 8192 (Triton 3.6, H200)
    # in place 64 -> 76 per thread, staged 78 -> 117. In place is capped to fit the tuned grid (4
    # programs per SM: 64, no spill). Staged is capped to fit 3 programs per SM, as before the
    # protocol (80: 10 spilled values; fitting 4, 24 spills, measured 3-6% slower at 4096-8192 rows
    # on 2x H200, 2026-11-30). The relay variant (3+ GPUs) needed far more before the protocol too
    # and runs uncapped, as then.
    fit = None if variant.relay else min(config.programs_per_sm, 3) if variant.stage else config.programs_per_sm
    # An epilogue holds the tile's sum while it reads its inputs: hc_post (flat tiles) is capped to fit
    # its grid (api.epilogue_config: 2 programs per SM, 128 registers at 8 warps; 4 bytes spilled at
    # 2048 elements), residual + RMSNorm (row tiles, up to 16 warps, one program per SM) runs
    # uncapped (106 registers at 16 warps). ptxas for sm_90, Triton 3.9, bf16 H 7168.
    if epilogue is not None:
        fit = None if epilogue.row_tiles or variant.relay else config.programs_per_sm
    run(reduce_scatterv_kernel, args, constexprs, max_rows, call.hidden, config, multiprocessors, fit_programs=fit,
        row_tiles=epilogue is not None and epilogue.row_tiles)
