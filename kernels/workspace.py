"""The symmetric workspace of one process group: allocation, growth, arena tensors, error flags."""

from __future__ import annotations

import os
import warnings

import torch
import torch.distributed as dist

from . import layout as L


def _env_bytes(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value is None else int(value)


def default_stage_bytes() -> int:
    """Largest whole input served by the double-buffered pull: ``KERNELS_STAGE_BYTES`` if set, else 4 MiB."""
    return _env_bytes("KERNELS_STAGE_BYTES", 4 << 20)


# Per-destination limits of the push modes, by world size. Measured on 2x H200 (H 7168 bf16, CUDA
# graphs, bench/NOTES.md 2026-11-28 fourth session): flagged words beat the plain push at 32 rows per
# rank (458 KB per destination: 6.6 vs 7.1 us even, 4.9 vs 5.8 one idle rank), and the plain push
# beat the pull at 256 rows (3.7 MB: 8-19%) and at 512 rows with skew (5-9%; even 512 rows 3%
# slower). On 4x H200 (same-run A/B, fifth session) the push beat the pull at 256 rows (3.7 MB: 40.7
# vs 45.9 us even, 41.9 vs 43.5 one idle rank) and lost at 512 (7.3 MB: 95.3 vs 82.4 even): 4 MiB
# on 3+ ranks (3 and 5-8 ranks unmeasured). 4-GPU LL limits above 256 KiB are unmeasured.
def default_ll_bytes(world_size: int) -> int:
    """Largest per-destination byte count for flagged words ("ll"): ``KERNELS_LL_BYTES`` if set,
    else 512 KiB on 2 ranks, 256 KiB on more."""
    return _env_bytes("KERNELS_LL_BYTES", (512 << 10) if world_size == 2 else (256 << 10))


def default_push_bytes(world_size: int) -> int:
    """Largest per-destination byte count for the plain push: ``KERNELS_PUSH_BYTES`` if set, else
    8 MiB on 2 ranks, 4 MiB on more."""
    return _env_bytes("KERNELS_PUSH_BYTES", (8 << 20) if world_size == 2 else (4 << 20))


_workspaces: dict[tuple, "Workspace"] = {}


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


class Workspace:
    """Symmetric memory shared by the ranks of ``group``: one buffer per rank, peer pointers for all.

    Created on first use by :func:`workspace` and cached per (group, device). On CUDA it is PyTorch
    symmetric memory; on CPU, shared-memory files mapped by every rank (CPU emulation). Where peers
    cannot be reached (another host, no P2P) ``p2p`` is False and calls use NCCL instead.

    Growing is collective (every rank must make the same call, which the API guarantees by sizing
    from rank-agreed facts) and is refused during CUDA-graph capture: size it up front with
    :meth:`reserve`. Memory of an outgrown buffer is kept, so graphs captured earlier stay valid.
    """

    def __init__(self, group: dist.ProcessGroup, device: torch.device, stage_bytes: int | None = None,
                 ll_bytes: int | None = None, push_bytes: int | None = None):
        self.group = group
        self.device = device
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        # the push slots grow up to this per source, on demand
        self.push_max_bytes = default_push_bytes(self.world_size) if push_bytes is None else push_bytes
        ll_bytes = default_ll_bytes(self.world_size) if ll_bytes is None else ll_bytes
        stage_bytes = default_stage_bytes() if stage_bytes is None else stage_bytes
        # with 3+ ranks, small calls may relay too: their sums land in scratch (see plan_call)
        self.layout = L.Layout(self.world_size, stage_bytes, ll_bytes, 0, stage_bytes if self.world_size >= 3 else 0,
                               0)
        self._retired: list = []
        self.buffer = self.table = None
        self.p2p = self._reachable()
        if self.p2p:
            self._allocate(self.layout)
        elif self.world_size > 1:
            warnings.warn(
                "reduce_scatterv: the ranks of this group cannot read each other's memory (several hosts "
                "or no P2P); falling back to NCCL's grouped-reduce reduce_scatterv", RuntimeWarning, stacklevel=3)

    # ---- allocation
    def _reachable(self) -> bool:
        if self.device.type == "cpu":
            from .shared_memory import reachable

            return reachable(self.group)
        from .symmetric_memory import reachable

        return reachable(self.group, self.device)

    def _allocate(self, layout: L.Layout) -> None:
        if _capturing(self.device):
            raise RuntimeError(
                f"reduce_scatterv: the symmetric workspace must grow to {layout.total_bytes} bytes, which cannot "
                "happen during CUDA-graph capture; call kernels.workspace(group).reserve(max_input_bytes=..., "
                "arena_bytes=...) before capturing (or run the call once eagerly first)")
        if self.device.type == "cpu":
            from .shared_memory import allocate

            buffer, table, keep = allocate(self.group, layout.total_bytes)
        else:
            from .symmetric_memory import allocate

            buffer, table, keep = allocate(self.group, layout.total_bytes, self.device)
        if self.buffer is not None:
            self._retired.append((self.buffer, self.table, self._keep))
        self.buffer, self.table, self._keep, self.layout = buffer, table, keep, layout
        self.base = buffer.data_ptr()
        self.table_addr = table.data_ptr()

    def _grow(self, **need: int) -> None:
        grown = self.layout.grown(**need)
        if grown != self.layout:
            self._allocate(grown)

    def reserve(self, *, max_input_bytes: int = 0, arena_bytes: int = 0) -> "Workspace":
        """Collective: make room for calls whose input is up to ``max_input_bytes`` bytes (all
        ``sum(sizes)`` rows) and for :meth:`empty` tensors of up to ``arena_bytes`` bytes. The push
        slots grow to ``min(max_input_bytes, push_max_bytes)`` per source (2 x world slots)."""
        if self.p2p:
            self._grow(scratch_bytes=max_input_bytes, arena_bytes=arena_bytes,
                       push_bytes=min(max_input_bytes, self.push_max_bytes))
        return self

    def reserve_slots(self, destination_bytes: int) -> None:
        """Collective: push slots that hold ``destination_bytes`` (<= ``push_max_bytes``) per source."""
        if self.p2p:
            self._grow(push_bytes=destination_bytes)

    # ---- tensors inside the workspace
    def empty(self, *shape: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
        """Collective: a tensor of ``shape`` inside this rank's workspace arena.

        A producer (the MoE) writes its ``[sum(sizes), H]`` output here so ``reduce_scatterv`` reads it
        in place, without the copy other inputs get. There is one arena: each call returns the same
        memory, valid until the next ``empty`` call on this workspace. Call it with the same shape on
        every rank (it may grow the workspace, which is collective).
        """
        if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
            shape = tuple(shape[0])
        nbytes = torch.Size(shape).numel() * dtype.itemsize
        if not self.p2p:
            return torch.empty(shape, dtype=dtype, device=self.device)
        self._grow(arena_bytes=nbytes)
        start = self.layout.arena_offset
        return self.buffer[start:start + nbytes].view(dtype).view(shape)

    def holds(self, t: torch.Tensor) -> bool:
        """True when all of ``t``'s memory lies inside this rank's current buffer."""
        if self.buffer is None or t.device != self.buffer.device:
            return False
        start = t.data_ptr()
        return self.base <= start and start + t.numel() * t.element_size() <= self.base + self.layout.total_bytes

    # ---- errors flagged by the kernel
    def _err_word(self) -> torch.Tensor:
        at = L.word_offsets(self.world_size)["ERR"] * 8
        return self.buffer[at:at + 8].view(torch.int64)

    def errors(self) -> int:
        """Error bits the kernel flagged since the last :meth:`check` (synchronises on CUDA)."""
        return int(self._err_word().item()) if self.buffer is not None else 0

    def reset(self) -> None:
        """Collective: clear call counters, signals and error flags on every rank.

        Needed only after a call that did not run on every rank (a flagged spin timeout), which
        leaves the ranks' call counters apart."""
        if self.buffer is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        dist.barrier(group=self.group)
        self.buffer[: self.layout.header_bytes].zero_()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        dist.barrier(group=self.group)

    def check(self) -> None:
        """Raise RuntimeError naming every error the kernel flagged since the last check, and clear them."""
        bits = self.errors()
        if bits:
            self._err_word().zero_()
            raise RuntimeError("reduce_scatterv: " + "; ".join(
                msg for bit, msg in L.ERR_MESSAGES.items() if bits & bit))


def default_device(group: dist.ProcessGroup) -> torch.device:
    if "nccl" in str(dist.get_backend(group)).lower():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def workspace(group: dist.ProcessGroup | None = None, device: torch.device | str | None = None,
              stage_bytes: int | None = None, ll_bytes: int | None = None,
              push_bytes: int | None = None) -> Workspace:
    """The cached symmetric workspace of ``group`` (default group if None) on ``device``.

    Collective on first use for a (group, device): every rank must call it. ``stage_bytes`` (used
    when the workspace is created) is the largest call, in input bytes, served by the small-call
    variant (input copied into a double buffer, one barrier); larger calls read in place and end
    with a second barrier. Default 4 MiB, or ``KERNELS_STAGE_BYTES``. ``ll_bytes`` is the largest
    per-destination byte count served by the low-latency push variant (no barrier, no pull round
    trip); default 512 KiB on 2 ranks, 256 KiB on more (:func:`default_ll_bytes`), or
    ``KERNELS_LL_BYTES``; 0 turns it off. ``push_bytes`` is the largest per-destination byte count
    served by the plain push variant (peers write, the owner sums locally); its slots (2 x world of
    them) grow to it on demand; default 8 MiB on 2 ranks, 4 MiB on more (:func:`default_push_bytes`),
    or ``KERNELS_PUSH_BYTES``; 0 turns it off.
    """
    group = group if group is not None else dist.group.WORLD
    device = torch.device(device) if device is not None else default_device(group)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    key = (group.group_name, device)
    if key not in _workspaces:
        _workspaces[key] = Workspace(group, device, stage_bytes, ll_bytes, push_bytes)
    return _workspaces[key]
