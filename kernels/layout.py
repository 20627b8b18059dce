"""Byte layout of one rank's symmetric workspace.

Every rank of a group owns one buffer of the same size and layout; peers reach it through a table
of base addresses (peer pointers). The layout, front to back:

    header   int64 words: call counters, signal slots written by peers, error flags
    stage 0  double-buffered staging for small calls (parity = call count & 1)
    stage 1
    slots    push receive slots [2 parities][W sources]: peers push their partials of this rank's
             rows here, as flagged 8-byte words (4 data bytes + the call's epoch) for the tiniest
             calls ("ll"), as plain data followed by a progress signal for mid-size ones ("push")
    scratch  exposure area for large calls whose input is not already in the workspace, and where
             relay ranks leave the rows they pre-reduced for an owner
    arena    tensors handed out by ``Workspace.empty`` (a producer writes its output here)

Header words (``PMAX`` = most programs a launch may use, ``W`` = world size), all int64:

    CNT        [PMAX]       calls completed by program slot p (all equal between calls)
    SIG_START  [PMAX][W]    peer r writes E+1 into [p][r] once its data for call E is exposed
    OFF_START  [PMAX][W]    ... and the byte offset (from its base) where that data starts
    SIG_END    [PMAX][W]    peer r writes E+1 into [p][r] once it stopped reading this rank
    RELAY      [PMAX][W]    relay r writes (E << 32) + k after its k-th reduced tile for this rank
    PUSH       [PMAX][W]    peer r writes (E << 32) + j + 1 once its round-j tiles for this rank landed
    ERR        [8]          error bits set by the kernel (see ``ERR_*``)
"""

from __future__ import annotations

from dataclasses import dataclass

PMAX = 1024  # programs a launch may use at most (grid size cap)
ALIGN_BYTES = 256  # every region starts on this boundary

ERR_SPIN_TIMEOUT = 1  # a wait for a peer exceeded the spin limit: a peer did not call
ERR_BAD_SIZES = 2  # device sizes were negative or summed past the input's capacity
ERR_OUTPUT_TOO_SMALL = 4  # this rank's device size exceeded its output's capacity
ERR_MESSAGES = {
    ERR_SPIN_TIMEOUT: "a wait for a peer timed out: not every rank of the group made the same call",
    ERR_BAD_SIZES: "device sizes were negative or summed to more rows than the input holds",
    ERR_OUTPUT_TOO_SMALL: "sizes[rank] was larger than the output's row capacity",
}


def header_words(world_size: int) -> int:
    return PMAX * (1 + 5 * world_size) + 8


def word_offsets(world_size: int) -> dict[str, int]:
    """Index (in int64 words) of each header array; mirrored by ``signals.header_word``."""
    w = world_size
    return {
        "CNT": 0,
        "SIG_START": PMAX,
        "OFF_START": PMAX * (1 + w),
        "SIG_END": PMAX * (1 + 2 * w),
        "RELAY": PMAX * (1 + 3 * w),
        "PUSH": PMAX * (1 + 4 * w),
        "ERR": PMAX * (1 + 5 * w),
    }


def _round_up(n: int, a: int = ALIGN_BYTES) -> int:
    return (n + a - 1) // a * a


@dataclass(frozen=True)
class Layout:
    """Byte offsets of the regions of one rank's workspace buffer."""

    world_size: int
    stage_bytes: int  # size of ONE staging half
    ll_bytes: int  # largest per-destination byte count sent as flagged words (two bytes per data byte)
    push_bytes: int  # data bytes one slot holds as plain data (grows on demand, see Workspace)
    scratch_bytes: int
    arena_bytes: int

    @property
    def header_bytes(self) -> int:
        return _round_up(header_words(self.world_size) * 8)

    @property
    def stage_offset(self) -> int:
        return self.header_bytes

    @property
    def stage_stride(self) -> int:
        """Bytes from staging half 0 to half 1."""
        return _round_up(self.stage_bytes)

    @property
    def slot_offset(self) -> int:
        return self.stage_offset + 2 * self.stage_stride

    @property
    def slot_bytes(self) -> int:
        """Bytes of one (parity, source) push slot. Both push variants use the same slots, so that the
        parity rule (see ``push_kernel``) holds whatever variant the calls before took."""
        return _round_up(max(2 * self.ll_bytes, self.push_bytes))

    @property
    def scratch_offset(self) -> int:
        return self.slot_offset + 2 * self.world_size * self.slot_bytes

    @property
    def arena_offset(self) -> int:
        return self.scratch_offset + _round_up(self.scratch_bytes)

    @property
    def total_bytes(self) -> int:
        return self.arena_offset + _round_up(self.arena_bytes)

    def grown(self, *, stage_bytes: int = 0, push_bytes: int = 0, scratch_bytes: int = 0,
              arena_bytes: int = 0) -> "Layout":
        """A layout at least as large as this one in every region (sizes rounded up to powers of 2);
        ``push_bytes`` grows the push slots only where the slots hold less than that."""

        def grow(have: int, need: int) -> int:
            if need <= have:
                return have
            return 1 << max(need - 1, 1).bit_length()

        return Layout(
            self.world_size,
            grow(self.stage_bytes, stage_bytes),
            self.ll_bytes,
            grow(self.push_bytes, push_bytes) if push_bytes > self.slot_bytes else self.push_bytes,
            grow(self.scratch_bytes, scratch_bytes),
            grow(self.arena_bytes, arena_bytes),
        )
