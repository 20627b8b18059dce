"""The two small kernels around a multi-node call's NCCL hop (``hierarchy.py``), one launch each.

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
"""

import triton
import triton.language as tl


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
def hop_finish_kernel(recv_ptr, expect_ptr, out_ptr, err_ptr, sizes_ptr, q, n_host, rows_cap, H, check_len,
                      ERR_HOP: tl.constexpr, DEVICE_SIZES: tl.constexpr, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    nprog = tl.num_programs(0)
    data = rows_cap.to(tl.int64) * H
    bad = tl.zeros([BLOCK], tl.int32)
    for c in range(0, check_len, BLOCK):
        o = c + tl.arange(0, BLOCK)
        m = o < check_len
        got = tl.load(recv_ptr + data + o, mask=m, other=0.0).to(tl.float32)
        want = tl.load(expect_ptr + o, mask=m, other=0.0)
        bad = tl.maximum(bad, (m & (got != want)).to(tl.int32))
    failed = tl.max(bad, axis=0) != 0
    if DEVICE_SIZES:
        n = tl.load(sizes_ptr + q).to(tl.int64)
        n = tl.minimum(tl.maximum(n, 0), rows_cap)
    else:
        n = n_host.to(tl.int64)
    count = n * H
    for t in range(pid * BLOCK, count, nprog * BLOCK):
        o = t + tl.arange(0, BLOCK)
        m = o < count
        x = tl.load(recv_ptr + o, mask=m, other=0.0).to(tl.float32)
        x = tl.where(failed, float("nan"), x)
        tl.store(out_ptr + o, x.to(out_ptr.dtype.element_ty), mask=m)
    if (pid == 0) & failed:
        tl.atomic_or(err_ptr, ERR_HOP, sem="relaxed")


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
