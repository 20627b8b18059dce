"""Byte layout of one rank's symmetric workspace, and the values its header words start from.

Every rank of a group owns one buffer of the same size and layout (the ranks compare it at
creation); peers reach it through a table of base addresses (peer pointers). Front to back:

    header    int64 words: call counters, signal words written by peers, error flags
    ll slots  flagged-word receive slots [2 parities][W sources] (flagged-word modes only: 8-byte words
              of 4 data bytes + a flag, or packed, 6 + a 16-bit flag; no other mode writes here, so no
              other bytes can pass for a flag)
    push      plain-data receive slots [2 parities][W sources] (mode "push" only)
    scratch   exposure area of pull calls whose input is not already in the workspace, and where
              relay ranks leave the rows they pre-reduced for an owner
    arena     tensors handed out by ``Workspace.empty`` (a producer writes its output here)

Header words (``PMAX`` = most programs a launch may use, ``W`` = world size), all int64. Who writes
and reads each, and why no stale value can satisfy a read, is in ``signals.py``:

    CNT        [PMAX]          epoch: calls completed, by program slot (equal between calls)
    SIG_START  [PMAX][W]       pull barrier 1: peer r writes E+1 into [p][r]
    OFF_START  [PMAX][W]       ... and, before it, where its exposed rows start (bytes from its base)
    SIG_END    [PMAX][W]       pull barrier 2: peer r writes E+1 once it stopped reading this rank
    RELAY      [PMAX][W]       relay r writes E * 2^20 + k after its k-th reduced tile for this rank
    PUSH       [PMAX][W]       peer r writes E * 2^20 + j + 1 once its round-j tiles for this rank landed
    CALL       [2][PMAX][W]    peer r writes the digest of its call E (nonzero) into [E & 1][p][r];
                               the reader compares it with its own and writes 0 back (consumed)
    ERR        [8]             word 0: error bits (``ERR_*``) and the ranks that reported a fault;
                               word 1: CPU emulation's clock (ns), kept by a host thread
"""

from __future__ import annotations

from dataclasses import dataclass

PMAX = 1024  # programs a launch may use at most (grid size cap)
ALIGN_BYTES = 256  # every region starts on this boundary
ROUND_BITS = 20  # PUSH / RELAY words: E * 2^ROUND_BITS + round; rounds per call stay below 2^ROUND_BITS - 1
MAX_ROUNDS = (1 << ROUND_BITS) - 2

ERR_TIMEOUT = 1  # a wait for a peer ran past the workspace's timeout
ERR_BAD_SIZES = 2  # device sizes were negative or summed past the input's capacity
ERR_OUTPUT_TOO_SMALL = 4  # this rank's device size exceeded its output's capacity
ERR_DISAGREE = 8  # a peer's call digest differed from this rank's (sizes, rows, width, dtype, mode...)
ERR_FAILED = 16  # the workspace was already in the failed state when the call started
ERR_HOP = 32  # multi-node: the check rows after the NCCL hop did not add up or match (hierarchy.py; hop_kernel)
ERR_RANKS_SHIFT = 16  # bit 16 + r: rank r reported a timeout or a disagreement
STICKY = ERR_TIMEOUT | ERR_DISAGREE | ERR_FAILED | ERR_HOP  # cleared only by Workspace.reset()
ERR_MESSAGES = {
    ERR_TIMEOUT: "a wait for a peer ran past the timeout: a rank did not make the call (or is far behind)",
    ERR_DISAGREE: "ranks made different calls (sizes, row count, width, dtype or mode differ between ranks)",
    ERR_FAILED: "calls were made while the workspace was in the failed state; their outputs are NaN",
    ERR_BAD_SIZES: "device sizes were negative or summed to more rows than the input holds",
    ERR_OUTPUT_TOO_SMALL: "sizes[rank] was larger than the output's row capacity",
    ERR_HOP: ("the check rows after the inter-node hop did not add up (all_gatherv: did not match this rank's): a "
              "rank on another node made a different call, or a node's step failed (its rows are NaN)"),
}


def header_words(world_size: int) -> int:
    return PMAX * (1 + 7 * world_size) + 8


def word_offsets(world_size: int) -> dict[str, int]:
    """Index (in int64 words) of each header array; mirrored by ``signals.header_words``."""
    w = world_size
    return {
        "CNT": 0,
        "SIG_START": PMAX,
        "OFF_START": PMAX * (1 + w),
        "SIG_END": PMAX * (1 + 2 * w),
        "RELAY": PMAX * (1 + 3 * w),
        "PUSH": PMAX * (1 + 4 * w),
        "CALL": PMAX * (1 + 5 * w),
        "ERR": PMAX * (1 + 7 * w),
    }


def initial_header(world_size: int, epoch: int) -> list[tuple[str, int]]:
    """(array, value) for every header array of a workspace whose next call is ``epoch``: the values
    call ``epoch - 1`` would have left everywhere, so that no word satisfies a wait of call
    ``epoch`` or later (wrap-safe comparisons, see ``signals.py``). Values are int64 (two's complement)."""
    def s64(v: int) -> int:
        v &= (1 << 64) - 1
        return v - (1 << 64) if v >> 63 else v

    return [("CNT", s64(epoch)), ("SIG_START", s64(epoch)), ("OFF_START", 0), ("SIG_END", s64(epoch)),
            ("RELAY", s64(epoch << ROUND_BITS)), ("PUSH", s64(epoch << ROUND_BITS)), ("CALL", 0), ("ERR", 0)]


def _round_up(n: int, a: int = ALIGN_BYTES) -> int:
    return (n + a - 1) // a * a


@dataclass(frozen=True)
class Layout:
    """Byte offsets of the regions of one rank's workspace buffer."""

    world_size: int
    ll_bytes: int  # largest per-destination data byte count sent as flagged words (a slot holds twice that)
    push_bytes: int  # data bytes one plain-push slot holds (grows on demand, see Workspace)
    scratch_bytes: int
    arena_bytes: int  # region 0 of the arena (``Workspace.empty``)
    arena1_bytes: int = 0  # region 1: a second tensor live at the same time (e.g. the gather's input)
    gather_ll_bytes: int | None = None  # all_gatherv's flagged-word limit per source (None: ll_bytes)

    @property
    def gather_ll_limit(self) -> int:
        """Largest per-source data byte count all_gatherv sends as flagged words."""
        return self.ll_bytes if self.gather_ll_bytes is None else self.gather_ll_bytes

    @property
    def header_bytes(self) -> int:
        return _round_up(header_words(self.world_size) * 8)

    @property
    def ll_slot_offset(self) -> int:
        return self.header_bytes

    @property
    def ll_slot_bytes(self) -> int:
        """Bytes of one (parity, source) flagged-word slot: two bytes per data byte of the larger of
        the two collectives' limits."""
        return _round_up(2 * max(self.ll_bytes, self.gather_ll_limit))

    @property
    def slot_offset(self) -> int:
        """Start of the plain-push slots."""
        return self.ll_slot_offset + 2 * self.world_size * self.ll_slot_bytes

    @property
    def slot_bytes(self) -> int:
        """Bytes of one (parity, source) plain-push slot."""
        return _round_up(self.push_bytes)

    @property
    def scratch_offset(self) -> int:
        return self.slot_offset + 2 * self.world_size * self.slot_bytes

    @property
    def arena_offset(self) -> int:
        return self.scratch_offset + _round_up(self.scratch_bytes)

    def region_offset(self, region: int) -> int:
        """Start of arena region 0 or 1."""
        return self.arena_offset + (_round_up(self.arena_bytes) if region else 0)

    @property
    def total_bytes(self) -> int:
        return self.arena_offset + _round_up(self.arena_bytes) + _round_up(self.arena1_bytes)

    def grown(self, *, push_bytes: int = 0, scratch_bytes: int = 0, arena_bytes: int = 0,
              arena1_bytes: int = 0) -> "Layout":
        """A layout at least as large as this one in every region (grown regions rounded up to
        powers of 2)."""

        def grow(have: int, need: int) -> int:
            if need <= have:
                return have
            return 1 << max(need - 1, 1).bit_length()

        return Layout(self.world_size, self.ll_bytes, grow(self.push_bytes, push_bytes),
                      grow(self.scratch_bytes, scratch_bytes), grow(self.arena_bytes, arena_bytes),
                      grow(self.arena1_bytes, arena1_bytes), self.gather_ll_bytes)
