"""Cross-rank signalling in plain Triton: the call's epoch, digests, waits with a deadline, faults.

Patterns and invariants
=======================
E is the call's epoch: calls this rank's workspace completed, an int64 that wraps modulo 2^64 (it
starts at ``start_epoch`` and never goes back: ``Workspace.reset`` moves it forward). Kernel calls
only: a call the API serves without a kernel (world size 1) touches no word. Every comparison of
a signal with its target is wrap-safe, ``(seen - target) >= 0`` in two's complement, so it holds
at every wrap point (2^31, 2^32, 2^63, 2^64) as long as a stale value is less than 2^63 behind.

Invariant A (no rank is two calls ahead): a rank starts kernel call E+2 only after every peer
started E+1, hence finished E. Every kernel call ends with each of its programs having heard from
the same program of every peer in that call: through a barrier (pull), a received tile (push
modes; every peer sends a tile to a receiving program), or the peer's CALL word (a program that
receives nothing waits for it). A peer's kernel E+1 starts only after its kernel E ended.

Per call, pull ("large", ``reduce_scatterv_kernel``): expose -> CALL word -> barrier (release /
acquire) -> check CALL words -> pull (and relay: reduce -> store -> release RELAY) -> barrier.
Per call, ``all_gatherv_kernel``: the pull's words and order, copying instead of summing.
Per call, push modes (``push_kernel``): CALL word -> data (flagged words; or tiles then a release
of PUSH per round) -> receive (poll flags; or acquire PUSH) -> check CALL words -> sum -> store.

Every workspace word: who writes it, who reads it, why no stale value can satisfy the read
---------------------------------------------------------------------------------------
CNT[p]            Written by this rank's program p at the end of call E (E+1, into every slot
                  j = p mod grid); read at the start of the next call. Local only.
SIG_START[p][r],  Written by rank r's program p with E+1 (release); read by program p here
SIG_END[p][r]     (acquire) waiting for >= E+1. Values written earlier are <= E; the header
                  starts (creation, reset) at the value call ``start - 1`` leaves. Wrap-safe
                  while a word is less than 2^63 calls stale: never.
OFF_START[p][r]   Written by rank r before its SIG_START release, read here after the acquire.
                  Rewritten only in r's next call, which starts after our SIG_END (pull calls end
                  with a barrier).
PUSH[p][r],       E * 2^20 + j + 1 (round j) and E * 2^20 + k (relayed tile k >= 1), released by
RELAY[p][r]       rank r; read here (acquire) waiting for E * 2^20 + j'. Rounds and relayed tiles
                  per call stay below 2^20 - 1 (the planner refuses more), so every value of an
                  earlier call is smaller. Wrap-safe while a word is less than 2^43 calls stale
                  (28 years at 10,000 calls a second); the header starts at E_start * 2^20.
CALL[E&1][p][r]   The digest of rank r's call E (``call_digest``: epoch, sizes, rows, width,
                  dtype, mode, tile size, grid; forced odd, so nonzero), written by rank r's
                  program p; read here by program p, compared with this rank's own digest, then
                  written back to 0 (consumed). Rank r writes parity E&1 again at E+2, after this
                  rank finished E (invariant A), so the reader sees call E's word or 0. A stale
                  word (a call that was not consumed: only after a fault, which is sticky until
                  reset, and reset zeroes CALL) cannot pass: its epoch is in the digest, so it
                  reads as a disagreement, never as agreement. Collisions: 2^-63 per read.
ll slots          Flagged words, written only by the flagged-word modes (both collectives'): high
                  half ``(E+1) mod 2^31 | 2^31`` (never 0), low half 4 data bytes, one 8-byte
                  store each; packed (``flagged_words``, the gather's opt-in): top 16 bits
                  ``(E+1) mod 2^15 | 2^15``, 6 data bytes below. The flag only tells this call's
                  word from a 0 (the next sentences say why that suffices). The receiver polls
                  until every word it needs carries its flag, and writes 0 over each word it
                  used (consumed). Senders write parity E&1 again at E+2, after the receiver
                  finished E (invariant A), so every word is 0 or from the current call; words
                  left unconsumed by a fault are zeroed by reset. No other mode writes these
                  slots, so raw data can never pass for a flag.
push slots        Plain data, written only by mode "push" before the PUSH release of its round;
                  read after the acquire; rewritten at E+2 only (invariant A).
scratch, arena    Pull: read by peers between the two barriers of a call, written by its owner
                  only outside them (or by a relay inside, at rows nobody else reads). With an
                  epilogue, relays write their fp32 sums past the input's region instead (at
                  scratch + the input's bytes rounded up to 256, the tile's element index * 4),
                  read only by the owner after the relay's RELAY release, in the same call.
ERR               Bits OR-ed in by this rank (local errors, and faults it saw) and by peers (a
                  fault a peer saw: timeout or disagreement, with bit 16 + peer). TIMEOUT,
                  DISAGREE and FAILED are sticky: a call that starts with one set is in the failed
                  state: it writes no peer word, waits for nothing and stores NaN over its rows.
                  Only ``Workspace.reset`` clears them; ``check()`` raises while they are set.

Faults. Each wait ends by a deadline, ``timeout_s`` (of the workspace) after the call's program
started: by the GPU's global timer or, in Triton's interpreter, by a clock word that a host thread
of CPU emulation keeps at the time (ERR[1]: written by that thread only). It also ends when a sticky bit
appears in this rank's ERR word (a fault seen by another program or rank). A program that saw a
fault stops writing to peers, stores NaN over its rows, and reports the fault to every rank.
Programs only ever wait for programs of the same index, so no co-residency is needed and the
protocol runs in the interpreter, where programs execute one after another.

Beyond one call on one stream (what later work builds on)
---------------------------------------------------------
Streams. The words are per workspace, not per stream, so calls of one workspace must never
overlap. ``Workspace.calling`` makes an eager call on another stream wait for the previous call (a
stream-side event wait); calls replayed from a CUDA graph are ordered by the replay stream only.
Work that must run concurrently (an engine's overlap stream, micro-batches) takes its own group,
hence its own workspace. Other collectives on one workspace (``all_gatherv``): they share CNT
(one epoch for every kernel call of the workspace), CALL (their digests carry their own mode
code, so a rank that runs another collective than its peers gets a disagreement) and ERR; they
must keep invariant A (each program hears from the same program of every peer in each call) and
write only slots no other mode reads, or slots of the call's parity. Calls with an NCCL hop
(several nodes): the kernel part keeps every guarantee here; the NCCL hop has NCCL's (its
watchdog), and a group whose ranks cannot reach each other's memory runs NCCL alone
(``api._nccl_fallback``), never mixed with these words.

Uniform decisions. Triton holds a scalar in every thread of a program, and a volatile load or a
clock read is made by each thread on its own: two warps can read a signal, an ERR word or the
clock at different moments and see different values, and a reduction over a small vector ([WP]
lanes, replicated in every warp) stays inside each warp. A branch taken by some warps and not
others skips CTA barriers and the stores of the warps that own a lane (Triton stores a replicated
value from one thread), which hangs peers or leaves rows half written. So every value that decides
control flow or what is stored goes through ``uniform_max`` (one reduction across all warps), and
a word is consumed (zeroed) only after that reduction's barrier, when every thread has read it.
Spin loops fold each thread's own fault status into the values they reduce, so a loop whose
reduction crosses warps ends in every thread at once, and one that stays inside a warp holds no
barrier.
"""

import os

import triton
import triton.language as tl

from . import layout as L
from .tiles import tile, vec

PMAX = tl.constexpr(L.PMAX)
ROUND_BITS = tl.constexpr(L.ROUND_BITS)
ERR_TIMEOUT = tl.constexpr(L.ERR_TIMEOUT)
ERR_DISAGREE = tl.constexpr(L.ERR_DISAGREE)
ERR_FAILED = tl.constexpr(L.ERR_FAILED)
ERR_RANKS_SHIFT = tl.constexpr(L.ERR_RANKS_SHIFT)
FAULTS = tl.constexpr(ERR_TIMEOUT | ERR_DISAGREE | ERR_FAILED)  # what stops a call: it writes and waits no more
STICKY = tl.constexpr(L.STICKY)
# compiled: the GPU's global timer (ns) and bar.red; interpreted (no inline assembly there): the
# clock word ERR[1], which a host thread of CPU emulation keeps at time.monotonic_ns()
# (``Workspace``), and reductions
GLOBAL_TIMER = tl.constexpr(os.environ.get("TRITON_INTERPRET", "0") in ("", "0"))
FAULT_POLL_PERIOD = tl.constexpr(8)  # polls of a wait per look at the deadline and ERR (``poll_fault``)
GOLDEN = tl.constexpr(-7046029254386353131)  # 0x9E3779B97F4A7C15 as int64
MIX1 = tl.constexpr(-4658895280553007687)  # 0xBF58476D1CE4E5B9
MIX2 = tl.constexpr(-7723592293110705685)  # 0x94D049BB133111EB


@triton.jit
def word_ptr(base, word):
    """Pointer to int64 header word ``word`` of the workspace whose base address is ``base``."""
    return (base + word * 8).to(tl.pointer_type(tl.int64))


@triton.jit
def header_words(W: tl.constexpr):
    """Word index of the header arrays CNT, SIG_START, OFF_START, SIG_END, RELAY, PUSH, CALL, ERR (layout.py)."""
    return (0, PMAX, PMAX * (1 + W), PMAX * (1 + 2 * W), PMAX * (1 + 3 * W), PMAX * (1 + 4 * W), PMAX * (1 + 5 * W),
            PMAX * (1 + 7 * W))


@triton.jit
def now(err_ptr):
    """Nanoseconds: the GPU's global timer, or (interpreter) the clock word next to ERR (``err_ptr``)."""
    if GLOBAL_TIMER:
        return tl.inline_asm_elementwise("mov.u64 $0, %globaltimer;", "=l", [], dtype=tl.int64, is_pure=False,
                                         pack=1)
    else:
        return tl.load(err_ptr + 1, volatile=True)


@triton.jit
def mix64(h):
    """A 64-bit finaliser (splitmix64's), in wrapping int64 arithmetic."""
    h = (h ^ ((h >> 30) & 0x3FFFFFFFF)) * MIX1
    h = (h ^ ((h >> 27) & 0x1FFFFFFFFF)) * MIX2
    return h ^ ((h >> 31) & 0x1FFFFFFFF)


@triton.jit
def call_digest(tag, epoch, n, lanes, num_programs, W: tl.constexpr, BLOCK: tl.constexpr,
                DEVICE_SIZES: tl.constexpr):
    """What this rank's call is, folded into one odd (so nonzero) int64: the host's ``tag`` (mode,
    width, dtype, row count, host sizes, relay settings: ``api.call_tag``), the epoch, the grid and
    tile size, and device sizes (``n``, each lane through its own ``mix64`` before they are summed,
    so that no other sizes, swapped or shifted, sum to the same)."""
    h = tag ^ (epoch * GOLDEN) ^ ((num_programs.to(tl.int64) * 65536 + BLOCK) * MIX1)
    if DEVICE_SIZES:
        h ^= tl.sum(tl.where(lanes < W, mix64(n.to(tl.int64) ^ ((lanes.to(tl.int64) + 1) * GOLDEN)), 0), axis=0)
    return mix64(h) | 1


@triton.jit
def _any_thread(x):
    """1 if the int32 ``x`` is nonzero in any thread of this program, else 0; the same in every
    thread. Compiled only: one ``bar.red.or.pred`` (a CTA barrier that ORs a predicate)."""
    return tl.inline_asm_elementwise(
        "{ .reg .pred p, q; setp.ne.s32 q, $1, 0; bar.red.or.pred p, 0, q; selp.s32 $0, 1, 0, p; }",
        "=r,r", [x], dtype=tl.int32, is_pure=False, pack=1)


@triton.jit
def uniform_max(x):
    """The largest value of the scalar ``x`` (>= 0) over every thread of this program, the same in
    all of them; ends in a CTA barrier. See "Uniform decisions" above. Compiled, the common case
    (0 everywhere: no fault) costs one barrier; a reduction across warps runs only when some thread
    holds a nonzero value."""
    if GLOBAL_TIMER:
        result = x * 0
        if _any_thread(x.to(tl.int32)) != 0:
            result = tl.max(tl.full([1024], 0, x.dtype) + x, axis=0)
        return result
    else:
        return tl.max(tl.full([1024], 0, x.dtype) + x, axis=0)


@triton.jit
def begin_call(table_addr, base_addr, pid, timeout, W: tl.constexpr):
    """(peer table, this rank's base, epoch E, failed?, deadline) for program ``pid``.

    ``base_addr`` (this rank's own base, also ``table[rank]``) comes from the host so that the epoch
    load does not wait for a table load. ``failed``: a sticky error is set (see the module docstring).
    ``deadline``: when waits give up (``now`` + ``timeout`` ns)."""
    table = peer_table(table_addr)
    my_base = base_addr.to(tl.int64)
    epoch = tl.load(word_ptr(my_base, pid))  # CNT
    err_ptr = word_ptr(my_base, header_words(W)[7])
    failed = uniform_max((tl.load(err_ptr, volatile=True) & STICKY).to(tl.int32)) != 0
    return table, my_base, epoch, failed, now(err_ptr) + timeout


@triton.jit
def fault_status(err_ptr, deadline):
    """ERR_TIMEOUT once the deadline passed, ERR_FAILED once a sticky error is set here, else 0;
    as this thread sees it (make it uniform before acting on it)."""
    late = now(err_ptr) - deadline > 0
    sticky = (tl.load(err_ptr, volatile=True) & STICKY) != 0
    return tl.where(late, ERR_TIMEOUT, tl.where(sticky, ERR_FAILED, 0))


@triton.jit
def poll_fault(err_ptr, deadline, polls, status):
    """``fault_status`` on every FAULT_POLL_PERIOD-th poll (``polls`` counts them), else ``status``
    as it was: a wait notices a fault a few polls later. (2x H200, plain push at 32-512 even rows:
    without any fault check in the polls 1.6-2.7% faster than checking every poll; checking every
    8th measured the same as every poll, within 1%: the cost is not the polls' loads.)"""
    if polls % FAULT_POLL_PERIOD == 0:
        status = fault_status(err_ptr, deadline)
    return status


@triton.jit
def _behind(seen, target, live, status):
    """True while some live word is behind ``target`` (wrap-safe) and this thread saw no fault
    (``status`` 0)."""
    return tl.max(((seen - target < 0) & live & (status == 0)).to(tl.int32), axis=0) > 0


@triton.jit
def wait_words(slots, live, target, deadline, err_ptr, ACQUIRE: tl.constexpr):
    """Spin until every live word of ``slots`` (a pointer vector into this rank's header) has
    reached ``target`` (wrap-safe). Returns 0, or the fault that ended the wait (``fault_status``),
    the same in every thread.

    With ACQUIRE it ends with an acquire at system scope and a CTA barrier, so reads issued after it
    see what the signalling peers wrote before their release; without, it only says the peers got
    this far (no ordering)."""
    status = (deadline * 0).to(tl.int32)
    polls = status
    seen = tl.load(slots, mask=live, other=target, volatile=True)
    while _behind(seen, target, live, status):
        seen = tl.load(slots, mask=live, other=target, volatile=True)
        polls += 1
        status = poll_fault(err_ptr, deadline, polls, status)
    status = uniform_max(tl.where(_behind(seen, target, live, status * 0), status, 0))
    if ACQUIRE:
        tl.atomic_add(slots, live.to(tl.int64) * 0, mask=live, sem="acquire", scope="sys")
        tl.debug_barrier()
    return status


@triton.jit
def ll_flag(epoch):
    """The flag of call ``epoch``'s flagged words (their high 32 bits): ``(E + 1) mod 2^31 | 2^31``,
    never 0, so a consumed (zeroed) word never carries it. Both collectives' flagged words use it."""
    return ((epoch + 1) & 0x7FFFFFFF) | 0x80000000


@triton.jit
def peer_table(table_addr):
    """The int64[W] table of every rank's workspace base, as a pointer (``table_addr`` from the host)."""
    return table_addr.to(tl.int64).to(tl.pointer_type(tl.int64))


@triton.jit
def peer_bases(table, W: tl.constexpr, WP: tl.constexpr):
    """Base addresses of every rank's workspace, as a [WP] int64 vector (lanes >= W are 0)."""
    lanes = tl.arange(0, WP)
    return tl.load(table + lanes, mask=lanes < W, other=0)


@triton.jit
def release(slots, values, live):
    """Write ``values`` into the live words of ``slots`` (a pointer vector, any rank's header) with a
    system-scope release after a CTA barrier: a peer that acquires a word sees everything any thread
    of this program wrote or read before, remote stores included (the release waits until those
    posted writes have landed)."""
    tl.debug_barrier()
    tl.atomic_xchg(slots, values, mask=live, sem="release", scope="sys")


@triton.jit
def post_digest(bases, call_row, rank, digest, peers):
    """Write this call's digest into CALL[E&1][p][rank] of every peer (``call_row`` = the word index
    of CALL[E&1][p][0]). A plain 8-byte store: readers poll for it or read it after a release that
    follows in this program."""
    tl.store(word_ptr(bases, call_row + rank), peers.to(tl.int64) * 0 + digest, mask=peers)


@triton.jit
def open_exchange(bases, call_row, rank, digest, peers, err, failed, chaos_seed, pid, my_base, CHAOS: tl.constexpr):
    """Start a push-style call's exchange: returns (err, live peers). A failed workspace writes no
    peer word and waits for nothing: masks, not a branch, so that the loads of the input need not
    wait for the ERR word. Then this rank's digest goes to every live peer (``post_digest``)."""
    err |= tl.where(failed, ERR_FAILED, 0)
    live_peers = tl.where((err & FAULTS) == 0, peers, False)
    chaos(chaos_seed, 0, pid, rank, my_base, CHAOS)
    post_digest(bases, call_row, rank, digest, live_peers)
    return err, live_peers


@triton.jit
def digest_fault(seen, digest, peers):
    """ERR_DISAGREE if a peer's digest (``seen``) is missing or differs from ours, else 0; as this
    thread sees it."""
    return tl.where(tl.max(((seen != digest) & peers).to(tl.int32), axis=0) > 0, ERR_DISAGREE, 0)


@triton.jit
def check_digests(seen, call_slots, digest, peers):
    """``digest_fault`` made uniform, then the words are consumed (written back to 0): after the
    uniform reduction's barrier every thread has read them."""
    fault = uniform_max(digest_fault(seen, digest, peers))
    tl.store(call_slots, seen * 0, mask=peers)
    return fault


@triton.jit
def await_digests(my_base, call_row, digest, peers, deadline, err_ptr, lanes):
    """Wait until every peer's CALL word of this call is in (nonzero), then ``check_digests``."""
    slots = word_ptr(my_base, call_row + lanes)
    status = (deadline * 0).to(tl.int32)
    polls = status
    seen = tl.load(slots, mask=peers, other=1, volatile=True)
    while tl.max(((seen == 0) & peers & (status == 0)).to(tl.int32), axis=0) > 0:
        seen = tl.load(slots, mask=peers, other=1, volatile=True)
        polls += 1
        status = poll_fault(err_ptr, deadline, polls, status)
    missing = tl.max(((seen == 0) & peers).to(tl.int32), axis=0) > 0
    fault = uniform_max(tl.where(missing, status, digest_fault(seen, digest, peers)))
    tl.store(slots, seen * 0, mask=peers)  # consumed (every thread read them before the barrier above)
    return fault


@triton.jit
def barrier(bases, my_base, array, pid, rank, target, deadline, err_ptr, W: tl.constexpr, WP: tl.constexpr):
    """Program ``pid`` of every rank meets here: signal slot [pid][rank] everywhere (release), wait
    for all of [pid][*] (acquire). Returns 0 or the fault that ended the wait."""
    lanes = tl.arange(0, WP)
    release(word_ptr(bases, array + pid * W + rank), (lanes * 0).to(tl.int64) + target, lanes < W)
    return wait_words(word_ptr(my_base, array + pid * W + lanes), lanes < W, target, deadline, err_ptr, True)


@triton.jit
def end_call(bases, my_base, epoch, err, failed, rank, pid, num_programs, W: tl.constexpr, WP: tl.constexpr):
    """Advance the epoch of every counter slot this program owns (j = pid mod grid: no two programs
    touch the same slot, and slots past the grid keep up for a later, larger grid), and record the
    call's error bits: here, and a fault (timeout, disagreement) also in every peer's ERR word, with
    this rank's bit, so that the whole group enters the failed state. ``bases``: ``peer_bases``."""
    ERR = header_words(W)[7]
    mine = pid + tl.arange(0, PMAX) * num_programs  # slots pid, pid + P, ... < PMAX
    tl.store(word_ptr(my_base, mine), epoch + 1, mask=mine < PMAX)
    if err != 0:  # rare: kept out of the common path (and its registers)
        fault = err.to(tl.int64) & (ERR_TIMEOUT | ERR_DISAGREE)
        fault |= tl.where(fault != 0, tl.cast(1, tl.int64) << (ERR_RANKS_SHIFT + rank), 0)
        lanes = tl.arange(0, WP)
        report = tl.where((fault != 0) & (failed.to(tl.int32) == 0), (lanes < W) & (lanes != rank), False)
        tl.atomic_or(word_ptr(bases, ERR + lanes * 0), lanes.to(tl.int64) * 0 + fault, mask=report, sem="relaxed",
                     scope="sys")
        tl.atomic_or(word_ptr(my_base, ERR), err.to(tl.int64) | fault | tl.where(failed, ERR_FAILED, 0), sem="relaxed",
                     scope="gpu")


@triton.jit
def poison(out_addr, count, pid, num_programs, DTYPE: tl.constexpr, BLOCK: tl.constexpr, ALIGN: tl.constexpr,
           VEC_BYTES: tl.constexpr):
    """NaN over this program's tiles (pid, pid + P, ...) of an output of ``count`` elements (aligned
    as the kernel's other tile accesses, so that the stores are vectorised: per-element addresses
    cost the pull kernel half its occupancy)."""
    poison_range(out_addr, 0, count, pid, num_programs, DTYPE, BLOCK, ALIGN, VEC_BYTES)


@triton.jit
def poison_range(out_addr, first, count, pid, num_programs, DTYPE: tl.constexpr, BLOCK: tl.constexpr,
                 ALIGN: tl.constexpr, VEC_BYTES: tl.constexpr):
    """``poison`` over the ``count`` elements from element ``first``: tiles as ``tiles.tile`` cuts
    them, so that the program that would have stored a tile is the one that poisons it."""
    nan = tl.full([BLOCK], float("nan"), tl.float32).to(DTYPE)
    for t in range(pid, tl.cdiv(count, BLOCK), num_programs):
        start, _, mask = tile(first, t, count, BLOCK, ALIGN)
        tl.store(vec(out_addr, start, DTYPE, BLOCK, VEC_BYTES), nan, mask=mask)


@triton.jit
def chaos(seed, site, pid, rank, my_base, CHAOS: tl.constexpr):
    """Schedule fuzzing (tests): when CHAOS, stall some (seed, site, program, rank) for up to a few
    hundred polls of a local word, so that ranks and programs interleave in other orders. Compiled
    out otherwise."""
    if CHAOS:
        h = mix64(tl.cast(seed, tl.int64) * 1000003 + site * 7919 + pid * 131 + rank * 17)
        if (h & 3) == 0:
            spins = (h >> 8) & 255
            i = spins * 0
            while i < spins:
                tl.load(word_ptr(my_base, 0), volatile=True)
                i += 1
