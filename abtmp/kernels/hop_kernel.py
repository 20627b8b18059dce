"""The small kernels around a multi-node call's NCCL hop (``hierarchy.py``), one launch each.

``hop_prologue_kernel`` (device sizes, before the node step): the rail-order copy. Every block of
``P + R`` rows of the node input gets its rank's rows (read at the rank's offset, computed here from
the device sizes: no host sync) and its ``R`` check rows (the call's digest bits from a template,
then 32 bits of every size, then zeros); rows past a rank's count are not written. Program 0 also
writes what the summed check rows must equal (``W`` x the check values, fp32) and flags device
sizes that are negative, sum past the input's capacity (``ERR_BAD_SIZES``) or exceed the
capacity ``P`` (``ERR_OUTPUT_TOO_SMALL``). Moves the input once (read + write, HBM).

``hop_fault_kernel`` (after the node step, before the hop): writes this node's fault element into
the check rows of every block this rank sends: 1 if its node workspace is in the failed state (a
sticky error bit) or the host side of the node step failed (``FORCE``), else 0. Reads one word.

``hop_finish_kernel`` (after the hop): every program first compares the summed check rows behind
the owner's rows with what agreeing, healthy ranks would have sent (each digest or size bit summed
to 0 or W, the fault element to 0; an exact comparison, NaN fails it), then copies its tiles of
the owner's rows to the output, converting to the output dtype (the one rounding of ``hop_fp32``),
or stores NaN when the check failed; rows past the owner's count (device sizes: read here) are
left untouched. Program 0 sets ``ERR_HOP`` in the node workspace's error word on a failed check.
Moves the owner's rows once (read + write, HBM); the check costs each program ``R * H`` loads.

The hierarchical ``all_gatherv`` (``Hierarchy.all_gatherv``) ends with two of its own, after the
node step, on the node step's output (every rank's block: its rows, then its check rows):
``hop_gather_check_kernel`` (one program per rank block) compares block q's check rows with this
rank's own (the same digest and size bits, fault element 0; exact, NaN fails it), writes the
verdict of block q (its own word: no atomics, no initialisation) and, on a mismatch, sets
``ERR_HOP``; program 0 also flags device sizes that are negative, exceed the input capacity or sum
past the output's (``ERR_BAD_SIZES``, as the flat gather). ``hop_gather_copy_kernel`` then reads
the W verdicts and copies every rank's rows to the output in rank order (tiles numbered over all
blocks, so small blocks do not leave programs idle), exactly, or NaN when any verdict failed; rows
past the counts' sum are not written (bad device sizes count as zero rows, as in the flat gather).
Costs: the check ``W * R * H`` loads (spread over W programs), the copy one read and one write of
the gathered rows (HBM).
"""

import triton
import triton.language as tl

from .tiles import pick


@triton.jit
def _check_value(e, tmpl_ptr, sizes_ptr, DIGEST: tl.constexpr, SBITS: tl.constexpr, W: tl.constexpr):
    """Element ``e`` of the check rows: a digest bit (template), a size bit, or 0 (fp32)."""
    v = tl.load(tmpl_ptr + e, mask=e < DIGEST, other=0.0).to(tl.float32)
    b = e - DIGEST
    in_sizes = (e >= DIGEST) & (b < SBITS * W)
    sv = tl.load(sizes_ptr + b // SBITS, mask=in_sizes, other=0).to(tl.int64)
    return tl.where(in_sizes, ((sv >> (b % SBITS)) & 1).to(tl.float32), v)


@triton.jit
def hop_prologue_kernel(inp_ptr, x_ptr, sizes_ptr, tmpl_ptr, expect_ptr, err_ptr, C, P, H, R,
                        W: tl.constexpr, G: tl.constexpr, N: tl.constexpr, WP: tl.constexpr,
                        DIGEST: tl.constexpr, SBITS: tl.constexpr, ERR_BAD_SIZES: tl.constexpr,
                        ERR_OUTPUT_TOO_SMALL: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    lanes = tl.arange(0, WP)
    s = tl.load(sizes_ptr + lanes, mask=lanes < W, other=0).to(tl.int64)
    starts = tl.cumsum(s, axis=0) - s
    block = P + R
    if pid == 0:
        bad = (tl.max((s < 0).to(tl.int32), axis=0) > 0) | (tl.sum(s, axis=0) > C)
        over = tl.max((s > P).to(tl.int32), axis=0) > 0
        flags = tl.where(bad, ERR_BAD_SIZES, 0) | tl.where(over, ERR_OUTPUT_TOO_SMALL, 0)
        if flags != 0:
            tl.atomic_or(err_ptr, flags.to(tl.int64), sem="relaxed")
        for c in range(0, R * H, BLOCK):
            e = c + tl.arange(0, BLOCK)
            tl.store(expect_ptr + e, _check_value(e, tmpl_ptr, sizes_ptr, DIGEST, SBITS, W) * W, mask=e < R * H)
    for p in range(pid, W * block, nprog):
        b = p // block
        j = tl.cast(p % block, tl.int64)
        q = (b % N) * G + b // N  # blocks in rail order: rail h = b // N, node m = b % N
        n = pick(s, lanes, q)
        src = pick(starts, lanes, q) + j
        row = x_ptr + tl.cast(p, tl.int64) * H
        if j < P:
            if (j < n) & (src >= 0) & (src < C):
                for c in range(0, H, BLOCK):
                    o = c + tl.arange(0, BLOCK)
                    v = tl.load(inp_ptr + src * H + o, mask=o < H)
                    tl.store(row + o, v.to(x_ptr.dtype.element_ty), mask=o < H)
        else:
            for c in range(0, H, BLOCK):
                o = c + tl.arange(0, BLOCK)
                v = _check_value((j - P) * H + o, tmpl_ptr, sizes_ptr, DIGEST, SBITS, W)
                tl.store(row + o, v.to(x_ptr.dtype.element_ty), mask=o < H)


@triton.jit
def hop_fault_kernel(err_ptr, out_ptr, pos_ptr, n, FORCE: tl.constexpr, STICKY: tl.constexpr, BLOCK_N: tl.constexpr):
    err = tl.load(err_ptr)
    v = tl.where((err & STICKY) != 0, 1.0, 0.0)
    if FORCE:
        v = 1.0
    i = tl.arange(0, BLOCK_N)
    pos = tl.load(pos_ptr + i, mask=i < n, other=0)
    tl.store(out_ptr + pos, (tl.zeros([BLOCK_N], tl.float32) + v).to(out_ptr.dtype.element_ty), mask=i < n)


@triton.jit
def _differs(got_ptr, want_ptr, n, BLOCK: tl.constexpr):
    """1 if any of the ``n`` check elements at ``got_ptr`` (any dtype, compared in fp32; NaN differs)
    is not the fp32 value at ``want_ptr``, else 0 (int32)."""
    bad = tl.zeros([BLOCK], tl.int32)
    for c in range(0, n, BLOCK):
        o = c + tl.arange(0, BLOCK)
        m = o < n
        got = tl.load(got_ptr + o, mask=m, other=0.0).to(tl.float32)
        want = tl.load(want_ptr + o, mask=m, other=0.0)
        bad = tl.maximum(bad, (m & (got != want)).to(tl.int32))
    return tl.max(bad, axis=0)


@triton.jit
def hop_finish_kernel(recv_ptr, expect_ptr, out_ptr, err_ptr, sizes_ptr, q, n_host, rows_cap, H, check_len,
                      ERR_HOP: tl.constexpr, DEVICE_SIZES: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    data = tl.cast(rows_cap, tl.int64) * H  # tl.cast: an int argument equal to 1 is a constexpr
    failed = _differs(recv_ptr + data, expect_ptr, check_len, BLOCK) != 0
    if DEVICE_SIZES:
        n = tl.load(sizes_ptr + q).to(tl.int64)
        n = tl.minimum(tl.maximum(n, 0), rows_cap)
    else:
        n = tl.cast(n_host, tl.int64)
    count = n * H
    for t in range(pid * BLOCK, count, nprog * BLOCK):
        o = t + tl.arange(0, BLOCK)
        m = o < count
        x = tl.load(recv_ptr + o, mask=m, other=0.0).to(tl.float32)
        x = tl.where(failed, float("nan"), x)
        tl.store(out_ptr + o, x.to(out_ptr.dtype.element_ty), mask=m)
    if (pid == 0) & failed:
        tl.atomic_or(err_ptr, tl.cast(ERR_HOP, tl.int64), sem="relaxed")


@triton.jit
def _sizes_bad(s, in_cap, out_cap):
    """The flat gather's rule for device sizes (``tiles.gather_geometry``): bad if one is negative or
    past the input capacity, or their sum is past the output's."""
    return (tl.min(s, axis=0) < 0) | (tl.max(s, axis=0) > in_cap) | (tl.sum(s, axis=0) > out_cap)


@triton.jit
def hop_gather_check_kernel(node_ptr, table_ptr, expect_ptr, verdict_ptr, err_ptr, sizes_ptr, in_cap, out_cap, H,
                            check_len, W, WP: tl.constexpr, ERR_HOP: tl.constexpr, ERR_BAD_SIZES: tl.constexpr,
                            BLOCK: tl.constexpr):
    q = tl.program_id(0)
    w = tl.cast(W, tl.int64)  # tl.cast: an int argument equal to 1 is a constexpr
    chk = tl.load(table_ptr + w + q) * tl.cast(H, tl.int64)  # table row 1: where block q's check rows start
    failed = _differs(node_ptr + chk, expect_ptr, check_len, BLOCK)
    tl.store(verdict_ptr + q, failed)
    if failed != 0:
        tl.atomic_or(err_ptr, tl.cast(ERR_HOP, tl.int64), sem="relaxed")
    if q == 0:
        lanes = tl.arange(0, WP)
        s = tl.load(sizes_ptr + lanes, mask=lanes < w, other=0).to(tl.int64)
        if _sizes_bad(s, in_cap, out_cap):
            tl.atomic_or(err_ptr, tl.cast(ERR_BAD_SIZES, tl.int64), sem="relaxed")


@triton.jit
def hop_gather_copy_kernel(node_ptr, table_ptr, verdict_ptr, out_ptr, sizes_ptr, in_cap, out_cap, H, W,
                           WP: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    w = tl.cast(W, tl.int64)
    h = tl.cast(H, tl.int64)
    lanes = tl.arange(0, WP)
    valid = lanes < w
    failed = tl.max(tl.load(verdict_ptr + lanes, mask=valid, other=0), axis=0) != 0
    s = tl.load(sizes_ptr + lanes, mask=valid, other=0).to(tl.int64)
    n = tl.where(_sizes_bad(s, in_cap, out_cap), 0, s)
    first = (tl.cumsum(n, axis=0) - n) * h  # element where rank q's rows start in the output
    src = tl.load(table_ptr + lanes, mask=valid, other=0) * h  # table row 0: where they start in the node output
    count = n * h
    tiles = (count + BLOCK - 1) // BLOCK
    tstart = tl.cumsum(tiles, axis=0) - tiles
    for t in range(pid, tl.sum(tiles, axis=0), nprog):  # tiles numbered over every block in rank order
        q = tl.max(tl.where((tstart <= t) & (tiles > 0), lanes, 0), axis=0)
        at = (t - pick(tstart, lanes, q)) * BLOCK
        o = at + tl.arange(0, BLOCK)
        m = o < pick(count, lanes, q)
        x = tl.load(node_ptr + pick(src, lanes, q) + o, mask=m, other=0.0)
        x = tl.where(failed, float("nan"), x.to(tl.float32)).to(out_ptr.dtype.element_ty)  # exact: same dtype
        tl.store(out_ptr + pick(first, lanes, q) + o, x, mask=m)


def prologue(inp, x, sizes_dev, tmpl, expect, err_word, capacity: int, P: int, hidden: int, r: int, world: int,
             G: int, N: int, digest_bits: int, size_bits: int, err_bad_sizes: int, err_output_too_small: int,
             programs: int) -> None:
    grid = max(1, min(programs, world * (P + r)))
    hop_prologue_kernel[(grid,)](inp, x, sizes_dev, tmpl, expect, err_word, capacity, P, hidden, r, W=world, G=G, N=N,
                                 WP=max(2, triton.next_power_of_2(world)), DIGEST=digest_bits, SBITS=size_bits,
                                 ERR_BAD_SIZES=err_bad_sizes, ERR_OUTPUT_TOO_SMALL=err_output_too_small, BLOCK=1024)


def fault(err_word, node_out, positions, force: bool, sticky: int) -> None:
    n = positions.numel()
    hop_fault_kernel[(1,)](err_word, node_out, positions, n, FORCE=force, STICKY=sticky,
                           BLOCK_N=max(2, triton.next_power_of_2(n)))


def finish(recv, expect, out, err_word, sizes_dev, q: int, n_host: int, rows_cap: int, hidden: int,
           programs: int, err_hop: int) -> None:
    block = 1024
    grid = max(1, min(programs, triton.cdiv(rows_cap * hidden, block)))
    hop_finish_kernel[(grid,)](recv, expect, out, err_word, sizes_dev if sizes_dev is not None else recv, q, n_host,
                               rows_cap, hidden, expect.numel(), ERR_HOP=err_hop, DEVICE_SIZES=sizes_dev is not None,
                               BLOCK=block)


def gather_check(node_out, table, expect, verdict, err_word, sizes, in_cap: int, out_cap: int, hidden: int,
                 world: int, err_hop: int, err_bad_sizes: int) -> None:
    hop_gather_check_kernel[(world,)](node_out, table, expect, verdict, err_word, sizes, in_cap, out_cap, hidden,
                                      expect.numel(), world, WP=max(2, triton.next_power_of_2(world)),
                                      ERR_HOP=err_hop, ERR_BAD_SIZES=err_bad_sizes, BLOCK=1024)


def gather_copy(node_out, table, verdict, out, sizes, in_cap: int, out_cap: int, hidden: int, world: int,
                programs: int) -> None:
    block = 1024
    grid = max(1, min(programs, triton.cdiv(out_cap * hidden, block) + world))
    hop_gather_copy_kernel[(grid,)](node_out, table, verdict, out, sizes, in_cap, out_cap, hidden, world,
                                    WP=max(2, triton.next_power_of_2(world)), BLOCK=block)
