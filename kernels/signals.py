"""Cross-rank signalling in plain Triton: header words, signal/wait with system-scope ordering.

All signal values are monotonic call epochs (never reset), so a fast rank can never overwrite a
signal that a slow peer has not read yet, and back-to-back calls or CUDA-graph replays need no
clean-up. A wait polls with volatile loads, then performs one acquire so that what the peer wrote
before its release is visible to every thread of the program after ``tl.debug_barrier``.
"""

import triton
import triton.language as tl

from .layout import ERR_SPIN_TIMEOUT as _ERR_SPIN_TIMEOUT
from .layout import PMAX as _PMAX

PMAX = tl.constexpr(_PMAX)
ERR_SPIN_TIMEOUT = tl.constexpr(_ERR_SPIN_TIMEOUT)


@triton.jit
def word_ptr(base, word):
    """Pointer to int64 header word ``word`` of the workspace whose base address is ``base``."""
    return (base + word * 8).to(tl.pointer_type(tl.int64))


@triton.jit
def header_words(W: tl.constexpr):
    """Word index of the header arrays CNT, SIG_START, OFF_START, SIG_END, RELAY, PUSH, ERR (see layout.py)."""
    return 0, PMAX, PMAX * (1 + W), PMAX * (1 + 2 * W), PMAX * (1 + 3 * W), PMAX * (1 + 4 * W), PMAX * (1 + 5 * W)


@triton.jit
def begin_call(table_addr, base_addr, pid):
    """(peer table pointer, this rank's workspace base, the call's epoch) for program ``pid``.

    ``base_addr`` (this rank's own base, also ``table[rank]``) comes from the host so that the epoch
    load does not wait for a table load. The epoch (calls this group completed) is equal on every
    program and rank between calls."""
    table = table_addr.to(tl.int64).to(tl.pointer_type(tl.int64))
    my_base = base_addr.to(tl.int64)
    return table, my_base, tl.load(word_ptr(my_base, pid))  # word 0.. = CNT


@triton.jit
def end_call(my_base, epoch, err, pid, num_programs, ERR_WORD):
    """Advance the epoch of every counter slot this program owns (j = pid mod grid: no two programs
    touch the same slot, and slots past the grid keep up for a later, larger grid), and record the
    call's error bits."""
    every = tl.arange(0, PMAX)
    tl.store(word_ptr(my_base, every), epoch + 1, mask=every % num_programs == pid)
    tl.atomic_or(word_ptr(my_base, ERR_WORD), err, mask=err != 0)


@triton.jit
def peer_bases(table, W: tl.constexpr, WP: tl.constexpr):
    """Base addresses of every rank's workspace, as a [WP] int64 vector (lanes >= W are 0)."""
    lanes = tl.arange(0, WP)
    return tl.load(table + lanes, mask=lanes < W, other=0)


@triton.jit
def signal_all(bases, word, value, live, SEM: tl.constexpr):
    """Write ``value`` into header word ``word`` of every rank whose lane is ``live`` (a [WP] mask over
    ranks); ``bases`` are the ranks' workspace bases (``peer_bases``).

    With SEM="release" (system scope, after a CTA barrier), everything any thread of this program
    wrote or read before is ordered before the signal, as seen by a peer that acquires it. With
    "relaxed" the signal only says "this program has started", and costs no fence.
    """
    slots = word_ptr(bases, word)
    if SEM == "release":
        release(slots, live.to(tl.int64) * 0 + value, live)
    else:
        tl.atomic_xchg(slots, live.to(tl.int64) * 0 + value, mask=live, sem="relaxed", scope="sys")


@triton.jit
def release(slots, values, live):
    """Write ``values`` into the live words of ``slots`` (a pointer vector, any rank's header) with a
    system-scope release after a CTA barrier: a peer that acquires a word sees everything any thread
    of this program wrote or read before, remote stores included (the release waits until those
    posted writes have landed)."""
    tl.debug_barrier()
    tl.atomic_xchg(slots, values, mask=live, sem="release", scope="sys")


@triton.jit
def wait_words(slots, live, target, spin_limit, ACQUIRE: tl.constexpr):
    """Spin until every live word of ``slots`` (a pointer vector into this rank's header) is >= target.

    Returns ERR_SPIN_TIMEOUT if ``spin_limit`` polls passed first, else 0. With ACQUIRE it ends with
    an acquire at system scope and a CTA barrier, so reads issued after it see what the signalling
    peers wrote before their release; without, it only says the peers got this far (no ordering).
    """
    polls = spin_limit.to(tl.int64) * 0
    seen = tl.load(slots, mask=live, other=target, volatile=True)
    pending = (tl.min(seen, axis=0) < target) & (polls < spin_limit)
    while pending:
        seen = tl.load(slots, mask=live, other=target, volatile=True)
        polls += 1
        pending = (tl.min(seen, axis=0) < target) & (polls < spin_limit)
    if ACQUIRE:
        seen = tl.atomic_add(slots, live.to(tl.int64) * 0, mask=live, sem="acquire", scope="sys")
        tl.debug_barrier()
    late = tl.min(tl.where(live, seen, target), axis=0) < target
    return tl.where(late, ERR_SPIN_TIMEOUT, 0)


@triton.jit
def barrier(bases, my_base, array, pid, rank, target, spin_limit, W: tl.constexpr, WP: tl.constexpr):
    """Program ``pid`` of every rank meets here: signal slot [pid][rank] everywhere, wait for all of [pid][*]."""
    lanes = tl.arange(0, WP)
    signal_all(bases, array + pid * W + rank, target, lanes < W, "release")
    return wait_words(word_ptr(my_base, array + pid * W + lanes), lanes < W, target, spin_limit, True)
