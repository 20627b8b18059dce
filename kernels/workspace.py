"""The symmetric workspace of one process group: allocation, growth, arena tensors, epochs, faults."""

from __future__ import annotations

import atexit
import contextlib
import functools
import time
from datetime import timedelta

import torch
import torch.distributed as dist

from . import layout as L
from . import settings

PROTOCOL_VERSION = 3  # bumped whenever the workspace's words change meaning (part of the fingerprint)


# Per-destination limits of the push modes, by world size. Measured on 2x H200 (H 7168 bf16, CUDA
# graphs, bench/NOTES.md 2026-11-28 fourth session): flagged words beat the plain push at 32 rows per
# rank (458 KB per destination: 6.6 vs 7.1 us even, 4.9 vs 5.8 one idle rank), and the plain push
# beat the pull at 256 rows (3.7 MB: 8-19%) and at 512 rows with skew (5-9%; even 512 rows 3%
# slower). On 4x H200 (same-run A/B, fifth session) the push beat the pull at 256 rows (3.7 MB: 40.7
# vs 45.9 us even, 41.9 vs 43.5 one idle rank) and lost at 512 (7.3 MB: 95.3 vs 82.4 even): 4 MiB
# on 3+ ranks (3 and 5-8 ranks unmeasured). 4-GPU LL limits above 256 KiB are unmeasured.
# On 2x H200 (H 7168 bf16, bench/NOTES.md 2026-12-01) the flagged words tie the plain push at 64 rows
# to one destination (917 KB: 9.6 / 9.6 us even, 7.2 / 7.2 one owner), win below (48 rows: 8.4 / 8.9,
# [16, 48] 7.1 / 8.8, [24, 72] 8.6 / 9.8) and lose from 96 (1.38 MB: 12.5 / 10.9 even); 3+ ranks:
# 2026-11-28's limit.
def default_ll_bytes(world_size: int) -> int:
    """Largest per-destination byte count for flagged words ("ll"): 1 MiB on 2 ranks, 256 KiB on more."""
    return (1 << 20) if world_size == 2 else (256 << 10)


# all_gatherv has no plain push: its flagged words run until the pull wins. On 2x H200 (H 7168 bf16,
# bench/NOTES.md 2026-11-30 night) they beat the pull up to 96 rows per source (1.38 MB: 12.4 vs 13.2
# us even, 6.9 vs 10.7 at [16, 48]) and lost at 128 (1.84 MB: 15.4 vs 14.8); 3+ ranks unmeasured.
def default_gather_ll_bytes(world_size: int) -> int:
    """Largest per-source byte count all_gatherv sends as flagged words: 1.5 MiB on 2 ranks, the
    reduce-scatter's limit on more."""
    return (3 << 19) if world_size == 2 else default_ll_bytes(world_size)


def default_push_bytes(world_size: int) -> int:
    """Largest per-destination byte count for the plain push: 8 MiB on 2 ranks, 4 MiB on more."""
    return (8 << 20) if world_size == 2 else (4 << 20)


_workspaces: dict[tuple, "Workspace"] = {}


def _region_field(region: int) -> str:
    """The Layout field of arena region 0 or 1."""
    if region not in (0, 1):
        raise ValueError(f"arena region must be 0 or 1, got {region!r}")
    return "arena1_bytes" if region else "arena_bytes"

_CREATION_KEYWORDS = ("ll_bytes", "gather_ll_bytes", "push_bytes", "timeout_s", "start_epoch", "ranks_per_node",
                      "backend", "hop_fp32")


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _u64(v: int) -> int:
    return v & ((1 << 64) - 1)


def _s64(v: int) -> int:
    v = _u64(v)
    return v - (1 << 64) if v >> 63 else v


def header_image(world_size: int, epoch: int, err: int = 0) -> torch.Tensor:
    """A header's int64 words (on the CPU) as call ``epoch`` expects them (``layout.initial_header``),
    error word ``err``."""
    offs = L.word_offsets(world_size)
    words = torch.zeros(L.header_words(world_size), dtype=torch.int64)
    names = list(offs)
    for name, value in L.initial_header(world_size, epoch):
        end = offs[names[names.index(name) + 1]] if name != "ERR" else len(words)
        words[offs[name]:end] = value
    words[offs["ERR"]] = err
    return words


class Workspace:
    """Symmetric memory shared by the ranks of ``group``: one buffer per rank, peer pointers for all.

    Created on first use by :func:`workspace` and cached per (group, device). On CUDA it is PyTorch
    symmetric memory; on CPU, shared-memory files mapped by every rank (CPU emulation). Where peers
    cannot be reached (another host, no P2P) ``p2p`` is False and calls use NCCL instead.

    Creation is collective: the ranks compare a fingerprint of everything the protocol and the
    plan depend on (limits, timeout, start epoch, GPU, multiprocessors, the merged tune table,
    Triton version) and all raise, naming the setting and the ranks, if they differ. Growing is
    collective too, and the ranks check that they grow alike (a rank that does not follow within
    ``timeout_s`` means the ranks made different calls: every rank gets an error); it is refused
    during CUDA-graph capture: size it up front with :meth:`reserve`. An outgrown buffer is kept
    (graphs captured earlier may still use it) until :meth:`free_retired`.

    One call at a time: calls of one workspace must not overlap (their signals are per group, not
    per stream). An eager call on another stream than the previous one is made to wait for it (a
    stream-side wait on an event, no host synchronisation), so an overlap stream is serialised with
    the main one; to run concurrently, give it its own group (``dist.new_group``), hence its own
    workspace. Calls captured in a CUDA graph are ordered by the stream the graph is replayed on:
    do not replay it concurrently with eager calls of the same group on another stream.
    """

    def __init__(self, group: dist.ProcessGroup, device: torch.device, *, ll_bytes: int | None = None,
                 gather_ll_bytes: int | None = None, push_bytes: int | None = None, timeout_s: float | None = None,
                 start_epoch: int = 0, ranks_per_node: int | None = None, backend: str | None = None, hop_fp32: bool = False):
        self.group = group
        self.device = device
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        # all_gatherv's limit follows an explicit ll_bytes (0 turns flagged words off for both)
        if gather_ll_bytes is None:
            gather_ll_bytes = default_gather_ll_bytes(self.world_size) if ll_bytes is None else ll_bytes
        ll_bytes = default_ll_bytes(self.world_size) if ll_bytes is None else int(ll_bytes)
        gather_ll_bytes = int(gather_ll_bytes)
        # the push slots grow up to this per source, on demand
        self.push_max_bytes = default_push_bytes(self.world_size) if push_bytes is None else int(push_bytes)
        self.timeout_s = float(settings.timeout_s() if timeout_s is None else timeout_s)
        if ll_bytes < 0 or gather_ll_bytes < 0 or self.push_max_bytes < 0:
            raise ValueError(f"reduce_scatterv.workspace: ll_bytes, gather_ll_bytes and push_bytes must be >= 0, got "
                             f"{ll_bytes}, {gather_ll_bytes}, {self.push_max_bytes}")
        if not self.timeout_s > 0:
            raise ValueError(f"reduce_scatterv.workspace: timeout_s must be > 0, got {self.timeout_s}")
        if not isinstance(start_epoch, int) or not 0 <= start_epoch < 1 << 64:
            raise ValueError(f"reduce_scatterv.workspace: start_epoch must be an int in [0, 2**64), got {start_epoch!r}")
        self.start_epoch = start_epoch
        self.ranks_per_node = ranks_per_node
        self.hop_fp32 = bool(hop_fp32)
        if backend is not None and str(backend).lower() not in settings.SYMM_MEM_BACKENDS:
            raise ValueError(f"reduce_scatterv.workspace: backend={backend!r}: use one of {settings.SYMM_MEM_BACKENDS}")
        if backend is not None and str(backend).lower() != "cuda" and device.type == "cpu":
            raise ValueError(f"reduce_scatterv.workspace: backend={backend!r} is for GPUs; CPU emulation uses shared memory")
        self.backend = "cpu" if device.type == "cpu" else str(backend or settings.symm_mem_backend()).lower()
        self.layout = L.Layout(self.world_size, ll_bytes, 0, 0, 0, gather_ll_bytes=gather_ll_bytes)
        self._retired: list = []
        self._growths = 0
        self._stream = self._event = None
        self.buffer = self.table = None
        self.hierarchy = None
        self.p2p = False
        # the keywords first (a rank with another ranks_per_node must not build other subgroups)
        self._agree(self._fingerprint())
        self._join_nodes()
        from .hierarchy import MAX_NODE

        if self.hierarchy is None and self.world_size <= MAX_NODE:
            self.p2p = self._reachable()  # (above 8 ranks without nodes: no buffer, calls raise)
        if self.p2p:
            self._allocate(self.layout, start_epoch, 0)
        elif 1 < self.world_size <= MAX_NODE and self.hierarchy is None:
            import warnings

            warnings.warn(
                "reduce_scatterv: the ranks of this group cannot read each other's memory (several hosts "
                f"or no P2P; {self.topology_note}); falling back to NCCL's grouped-reduce reduce_scatterv",
                RuntimeWarning, stacklevel=3)

    def _join_nodes(self) -> None:
        """Collective: split the group into nodes (``hierarchy.py``) when it spans several, by hosts or
        by ``ranks_per_node``; build the node and rail groups and the node workspaces. Groups that
        span hosts but cannot be split stay flat (``p2p`` False: NCCL, with a warning)."""
        from . import hierarchy as H

        self.topology, self.topology_note = None, "one rank"
        if self.world_size == 1:
            return
        topo = H.find_topology(H.hostnames(self.group), self.ranks_per_node)
        self.topology_note = topo if isinstance(topo, str) else topo.reason
        if isinstance(topo, str):  # stays flat: NCCL (warned below) or, above 8 ranks, an error in the call
            return
        self.topology = topo
        if not topo.multi_node:
            return
        if self.world_size > H.MAX_CHECK_WORLD:
            raise ValueError(f"reduce_scatterv.workspace: multi-node groups of at most {H.MAX_CHECK_WORLD} ranks (the hop's "
                             f"check rows count ranks exactly in bf16), got {self.world_size}")
        node_keywords = dict(ll_bytes=self.layout.ll_bytes, gather_ll_bytes=self.layout.gather_ll_limit,
                             push_bytes=self.push_max_bytes, timeout_s=self.timeout_s, start_epoch=self.start_epoch, backend=None if self.backend == "cpu" else self.backend)
        hier = H.Hierarchy(self, topo, node_keywords)
        # every node's ranks must reach each other's memory, else the whole group stays flat
        everyone: list = [None] * self.world_size
        dist.all_gather_object(everyone, hier.node_ws.p2p, group=self.group)
        if all(everyone):
            self.hierarchy = hier
        else:  # flat: NCCL over the whole group (warned in __init__), or above 8 ranks an error in the call
            bad = sorted({r // topo.ranks_per_node for r, ok in enumerate(everyone) if not ok})
            self.topology, self.topology_note = None, f"the ranks of node(s) {bad} cannot read each other's memory"

    @property
    def settings(self) -> dict:
        """The creation keywords' values."""
        return dict(ll_bytes=self.layout.ll_bytes, gather_ll_bytes=self.layout.gather_ll_limit,
                    push_bytes=self.push_max_bytes, timeout_s=self.timeout_s, start_epoch=self.start_epoch,
                    ranks_per_node=self.ranks_per_node, backend=self.backend, hop_fp32=self.hop_fp32)

    # ---- agreement between ranks
    def _fingerprint(self) -> dict:
        from importlib.metadata import version  # not ``import triton``: its mode is fixed on first import

        from . import configs

        fp = {"protocol": PROTOCOL_VERSION, "device_type": self.device.type, "world_size": self.world_size,
              **self.settings, "triton": version("triton")}
        if self.device.type == "cuda":
            props = torch.cuda.get_device_properties(self.device)
            slug = configs.gpu_slug(props.name)
            fp.update(gpu=props.name, multiprocessors=props.multi_processor_count,
                      tune_table=configs.table_digest(slug))
        return fp

    def _agree(self, fp: dict) -> None:
        """Collective: raise on every rank if any rank's fingerprint differs from another's."""
        everyone: list = [None] * self.world_size
        dist.all_gather_object(everyone, fp, group=self.group)
        keys = sorted({k for f in everyone for k in f})
        differ = [k for k in keys if len({repr(f.get(k)) for f in everyone}) > 1]
        if differ:
            raise ValueError("reduce_scatterv.workspace: the ranks of this group disagree on settings the protocol depends "
                             "on: " + "; ".join(f"{k}: " + ", ".join(f"rank {r} = {f.get(k)!r}"
                                                                     for r, f in enumerate(everyone)) for k in differ))

    def _agree_on_growth(self, total_bytes: int) -> None:
        """Every rank must grow to the same size at the same point; a rank that does not follow within
        ``timeout_s`` made another call (its kernel will time out on its side)."""
        store = dist.distributed_c10d._get_default_store()
        prefix = f"kernels/{self.group.group_name}/grow{self._growths}/"
        self._growths += 1
        store.set(prefix + str(self.rank), str(total_bytes))
        keys = [prefix + str(r) for r in range(self.world_size)]
        try:
            store.wait(keys, timedelta(seconds=self.timeout_s))
            sizes = [int(store.get(k)) for k in keys]
        except Exception as e:  # noqa: BLE001 - the store's timeout error differs between releases
            self._flag_disagreement()
            raise RuntimeError(f"reduce_scatterv: this rank had to grow the workspace to {total_bytes} bytes and "
                               f"not every rank did so within {self.timeout_s:g} s: the ranks made different calls "
                               f"(sizes, rows, width or dtype differ between ranks); every rank gets an error, "
                               f"then call reduce_scatterv.workspace(group).reset() on every rank ({e})") from None
        if len(set(sizes)) > 1:
            self._flag_disagreement()
            raise RuntimeError(f"reduce_scatterv: the ranks grew the workspace to different sizes {sizes}: they made "
                               "different calls; call reduce_scatterv.workspace(group).reset() on every rank")

    def _flag_disagreement(self) -> None:
        if self.buffer is not None:
            self._err_word().bitwise_or_(L.ERR_DISAGREE | (1 << (L.ERR_RANKS_SHIFT + self.rank)))

    # ---- allocation
    def _reachable(self) -> bool:
        if self.device.type == "cpu":
            from .shared_memory import reachable

            return reachable(self.group)
        from .symmetric_memory import reachable

        return reachable(self.group, self.device)

    def _allocate(self, layout: L.Layout, epoch: int, err: int) -> None:
        if _capturing(self.device):
            raise RuntimeError(
                f"reduce_scatterv: the symmetric workspace must grow to {layout.total_bytes} bytes, which cannot "
                "happen during CUDA-graph capture; call reduce_scatterv.workspace(group).reserve(max_input_bytes=..., "
                "arena_bytes=...) before capturing (or run the call once eagerly first)")
        if self.device.type == "cpu":
            from .shared_memory import allocate

            buffer, table, keep = allocate(self.group, layout.total_bytes)
        elif self.world_size == 1:  # no peers (a node of one GPU in a multi-node group): an ordinary buffer
            buffer = torch.zeros(layout.total_bytes, dtype=torch.uint8, device=self.device)
            table = torch.tensor([buffer.data_ptr()], dtype=torch.int64, device=self.device)
            keep = (buffer,)
        else:
            from .symmetric_memory import allocate

            buffer, table, keep = allocate(self.group, layout.total_bytes, self.device, self.backend)
        if self.buffer is not None:
            if self.device.type == "cpu":
                _clock.drop(self._err_word().view(-1).data_ptr() + 8)
            self._retired.append((self.buffer, self.table, self._keep))
        self.buffer, self.table, self._keep, self.layout = buffer, table, keep, layout
        self.base = buffer.data_ptr()
        self.table_addr = table.data_ptr()
        self._write_header(epoch, err)
        if self.device.type == "cpu":
            _clock.keep(self._err_word().view(-1).data_ptr() + 8)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        dist.barrier(group=self.group)

    def _write_header(self, epoch: int, err: int) -> None:
        """This rank's header as call ``epoch`` expects it (``layout.initial_header``), error word ``err``."""
        words = header_image(self.world_size, epoch, err)
        words[L.word_offsets(self.world_size)["ERR"] + 1] = time.monotonic_ns()  # CPU emulation's clock word (_Clock)
        self.buffer[: words.numel() * 8].view(torch.int64).copy_(words)

    def _grow(self, **need: int) -> None:
        grown = self.layout.grown(**need)
        if grown != self.layout:
            if _capturing(self.device):
                self._allocate(grown, 0, 0)  # raises with the advice
            self._agree_on_growth(grown.total_bytes)
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            # epochs never go back: the new header continues from the old one's epoch and faults
            self._allocate(grown, self.epoch, int(self._err_word().item()))

    def reserve(self, *, max_input_bytes: int = 0, arena_bytes: int = 0, region: int = 0) -> "Workspace":
        """Collective: make room for calls whose input is up to ``max_input_bytes`` bytes (all
        ``sum(sizes)`` rows) and for :meth:`empty` tensors of up to ``arena_bytes`` bytes in arena
        ``region``. The push slots grow to ``min(max_input_bytes, push_max_bytes)`` per source (2 x
        world slots).

        Multi-node groups grow their node workspace: its arena holds the rail-order copy of the input
        (plus the check rows: room for rows up to 64K elements wide on up to 32 nodes is added) and its
        scratch and slots serve the node step. An ``all_gatherv`` there needs N x (P + R) rows of
        arena (P: the rail's largest count; with device sizes the input capacity, so the gathered
        rows' bytes suffice; with skewed host sizes up to N x a rank's rows: the call grows it)."""
        if self.hierarchy is not None:
            h = self.hierarchy
            extra = h.W * (h.W * 32 + 64 + (1 << 16)) * 4 if max_input_bytes else 0
            need = 2 * max_input_bytes + extra if h.hop_fp32 else max_input_bytes + extra
            h.node_ws.reserve(max_input_bytes=need, arena_bytes=max(need, arena_bytes))
            return self
        if self.p2p:
            self._grow(scratch_bytes=max_input_bytes, push_bytes=min(max_input_bytes, self.push_max_bytes),
                       **{_region_field(region): arena_bytes})
        return self

    def reserve_scratch(self, nbytes: int) -> None:
        """Collective: scratch that holds ``nbytes`` (where a rank stages an input that does not lie
        in the workspace)."""
        if self.hierarchy is not None:
            self.hierarchy.node_ws.reserve_scratch(nbytes)
        elif self.p2p:
            self._grow(scratch_bytes=nbytes)

    def reserve_slots(self, destination_bytes: int) -> None:
        """Collective: push slots that hold ``destination_bytes`` (<= ``push_max_bytes``) per source."""
        if self.hierarchy is not None:
            self.hierarchy.node_ws.reserve_slots(destination_bytes)
        elif self.p2p:
            self._grow(push_bytes=destination_bytes)

    def free_retired(self) -> int:
        """Free the buffers this workspace outgrew; returns how many. Call it only when no CUDA graph
        captured before the last growth will be replayed again (the library cannot see graph
        lifetimes, so it never frees them by itself)."""
        if self.hierarchy is not None:
            return self.hierarchy.node_ws.free_retired()
        n = len(self._retired)
        if n and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._retired.clear()
        return n

    def close(self) -> None:
        """Drop every buffer (``release`` and ``destroy_process_group`` call this)."""
        if self.buffer is not None and self.device.type == "cpu":
            _clock.drop(self._err_word().view(-1).data_ptr() + 8)
        self._retired.clear()
        self.buffer = self.table = self._keep = None

    # ---- tensors inside the workspace
    def empty(self, *shape: int, dtype: torch.dtype = torch.bfloat16, region: int = 0) -> torch.Tensor:
        """Collective: a tensor of ``shape`` inside this rank's workspace arena.

        A producer (the MoE) writes its ``[sum(sizes), H]`` output here so ``reduce_scatterv`` reads it
        in place, without the copy other inputs get (``all_gatherv`` likewise). The arena has two
        regions, 0 and 1, so that two such tensors can be live at once (the V4 block: the gather's
        input in one, the MoE's output in the other); each call returns the same memory of its
        region, valid until the next ``empty`` call for that region or a growth of the workspace
        (``reserve`` first, before any ``empty``, to keep it from moving). Call it with the same shape
        and region on every rank (it may grow the workspace, which is collective).
        On a multi-node group it is an ordinary tensor (the call copies the input into rail order
        anyway, see ``hierarchy.py``).
        """
        if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
            shape = tuple(shape[0])
        nbytes = torch.Size(shape).numel() * dtype.itemsize
        if not self.p2p:
            return torch.empty(shape, dtype=dtype, device=self.device)
        self._grow(**{_region_field(region): nbytes})
        start = self.layout.region_offset(region)
        return self.buffer[start:start + nbytes].view(dtype).view(shape)

    def holds(self, t: torch.Tensor) -> bool:
        """True when all of ``t``'s memory lies inside this rank's current buffer."""
        if self.buffer is None or t.device != self.buffer.device:
            return False
        start = t.data_ptr()
        return self.base <= start and start + t.numel() * t.element_size() <= self.base + self.layout.total_bytes

    # ---- calls
    @property
    def timeout_arg(self) -> int:
        """The kernels' ``timeout`` argument, in ns (the GPU's global timer, or CPU emulation's clock word)."""
        return int(self.timeout_s * 1e9)

    @contextlib.contextmanager
    def calling(self):
        """Around one eager kernel launch: a call on another stream than the last one waits for it."""
        if self.device.type != "cuda" or _capturing(self.device):
            yield
            return
        stream = torch.cuda.current_stream(self.device)
        if self._stream is not None and stream != self._stream:
            stream.wait_event(self._event)
        yield
        if self._event is None:
            self._event = torch.cuda.Event()
        self._stream = stream
        self._event.record(stream)

    @property
    def epoch(self) -> int:
        """Kernel calls this rank's workspace completed, counted from ``start_epoch``, modulo 2^64
        (a host read: synchronises on CUDA). For tests and debugging. Multi-node groups: the node
        step's counter."""
        if self.hierarchy is not None:
            return self.hierarchy.node_ws.epoch
        if self.buffer is None:
            return self.start_epoch
        return _u64(int(self.buffer[:8].view(torch.int64).item()))

    # ---- errors flagged by the kernel
    def _err_word(self) -> torch.Tensor:
        at = L.word_offsets(self.world_size)["ERR"] * 8
        return self.buffer[at:at + 8].view(torch.int64)

    def errors(self) -> int:
        """Error bits flagged so far (see ``layout.ERR_*``; synchronises on CUDA)."""
        if self.hierarchy is not None:
            return self.hierarchy.node_ws.errors()
        return int(self._err_word().item()) if self.buffer is not None else 0

    def reset(self) -> None:
        """Collective: leave the failed state. Waits for this rank's calls to end, moves every rank's
        epoch past the largest any rank reached (epochs never go back), rewrites every header word
        to the values that epoch expects, zeroes the flagged-word slots and clears the errors, so
        that no word of an earlier call can satisfy a later wait. Multi-node groups reset every node
        workspace (the hop keeps no state), then meet at a barrier."""
        if self.hierarchy is not None:
            self.hierarchy.node_ws.reset()
            dist.barrier(group=self.group)
            return
        if self.buffer is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        everyone: list = [None] * self.world_size
        dist.all_gather_object(everyone, (self.epoch, self._growths), group=self.group)
        ahead = max(_s64(e - everyone[0][0]) for e, _ in everyone)  # wrap-safe: epochs differ by a few calls
        epoch = _u64(everyone[0][0] + ahead + 1)
        self._growths = max(g for _, g in everyone) + 1  # a failed growth left the ranks' counts apart
        dist.barrier(group=self.group)  # nobody rewrites a header a peer's kernel could still touch
        self._write_header(epoch, 0)
        lay = self.layout
        self.buffer[lay.ll_slot_offset:lay.slot_offset].zero_()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        dist.barrier(group=self.group)

    def check(self) -> None:
        """Raise RuntimeError naming every error the kernel flagged. Call errors (device sizes) are
        cleared; faults (timeouts, disagreement) stay until :meth:`reset`, so every later check
        raises too."""
        if self.hierarchy is not None:
            h = self.hierarchy
            try:
                h.node_ws.check()
            except RuntimeError as e:
                detail = str(e).split(": ", 1)[-1]
                raise RuntimeError(f"reduce_scatterv (rank {self.rank}, node {h.node} of {h.N}, local rank {h.local}; "
                                   f"ranks named below are local ranks of the node): {detail}") from None
            return
        bits = self.errors()
        if not bits:
            return
        if bits & ~L.STICKY & ((1 << L.ERR_RANKS_SHIFT) - 1):
            self._err_word().bitwise_and_(~(((1 << L.ERR_RANKS_SHIFT) - 1) & ~L.STICKY))
        msg = "; ".join(m for bit, m in L.ERR_MESSAGES.items() if bits & bit)
        ranks = [r for r in range(self.world_size) if bits >> (L.ERR_RANKS_SHIFT + r) & 1]
        if ranks:
            msg += f" (reported by rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))})"
        if bits & L.STICKY:
            msg += ("; the group is in the failed state: every call returns NaN until "
                    "reduce_scatterv.workspace(group).reset() is called on every rank")
        raise RuntimeError(f"reduce_scatterv (rank {self.rank}): {msg}")


class _Clock:
    """CPU emulation's clock: a daemon thread that writes time.monotonic_ns() into the clock word
    (ERR[1]) of every live CPU workspace of this process about every millisecond. The interpreter
    has no timer of its own, so this is what the kernels' deadlines are measured against there."""

    def __init__(self):
        self.words: dict[int, None] = {}
        self.thread = None

    def keep(self, address: int) -> None:
        import ctypes
        import threading
        import time

        self.words[address] = None
        ctypes.c_int64.from_address(address).value = time.monotonic_ns()
        if self.thread is None:
            def tick():
                while True:
                    t = time.monotonic_ns()
                    for a in list(self.words):
                        ctypes.c_int64.from_address(a).value = t
                    time.sleep(0.001)

            self.thread = threading.Thread(target=tick, name="reduce_scatterv-clock", daemon=True)
            self.thread.start()

    def drop(self, address: int) -> None:
        self.words.pop(address, None)


_clock = _Clock()


def default_device(group: dist.ProcessGroup) -> torch.device:
    if "nccl" in str(dist.get_backend(group)).lower():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _resolve(group, device) -> tuple:
    """(group, device) as the workspace cache keys them: the default group, its default device, a
    CUDA device with its index."""
    group = group if group is not None else dist.group.WORLD
    device = torch.device(device) if device is not None else default_device(group)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return group, device


def exists(group: dist.ProcessGroup | None = None, device: torch.device | str | None = None) -> bool:
    """Whether ``group`` already has its workspace on ``device`` (a local check, not collective)."""
    group, device = _resolve(group, device)
    return (group.group_name, device) in _workspaces


def workspace(group: dist.ProcessGroup | None = None, device: torch.device | str | None = None, *,
              ll_bytes: int | None = None, gather_ll_bytes: int | None = None, push_bytes: int | None = None,
              timeout_s: float | None = None, start_epoch: int | None = None, ranks_per_node: int | None = None,
              backend: str | None = None, hop_fp32: bool | None = None) -> Workspace:
    """The cached symmetric workspace of ``group`` (default group if None) on ``device``.

    Collective on first use for a (group, device): every rank must call it, with the same keywords.
    Keywords (fixed at creation; given again with other values they raise):

    - ``ll_bytes``: largest per-destination byte count served by flagged words (mode "ll": no
      barrier, no fence); default 1 MiB on 2 ranks, 256 KiB on more; 0 turns the mode off.
    - ``gather_ll_bytes``: the same for ``all_gatherv``, per source (it has no plain push, so its
      flagged words run further); default 1.5 MiB on 2 ranks, 256 KiB on more, or ``ll_bytes``
      where that is given. The flagged-word slots hold twice the larger of the two, per source.
    - ``push_bytes``: largest per-destination byte count served by the plain push (mode "push");
      its slots (2 x world of them) grow to it on demand; default 8 MiB on 2 ranks, 4 MiB on more;
      0 turns it off. Larger calls pull (mode "large").
    - ``timeout_s``: seconds any wait of a call may last (default ``KERNELS_TIMEOUT_S`` or 60). On
      GPUs measured by the global timer; in CPU emulation by a clock word a host thread keeps.
    - ``start_epoch``: the call counter's first value, in [0, 2^64) (default 0). Tests, and anyone
      reproducing a long-running server, start near a wrap point (2^31, 2^32, 2^43, 2^64); the
      counter is kept through growth and ``reset()``. ``Workspace.epoch`` reads it.
    - ``ranks_per_node``: the group spans nodes of this many ranks, each block of G consecutive ranks
      a node (1 <= G <= 8, dividing the group). Default: found from the ranks' host names (ranks of
      a host must be contiguous and every host must hold as many; otherwise the group runs NCCL over
      all ranks, with a warning). With two or more nodes, ``reduce_scatterv`` runs the hierarchy
      (``kernels/hierarchy.py``: the fused kernel inside each node, NCCL between nodes); tests and
      unusual topologies use it to treat one host as several nodes.
    - ``backend``: "cuda" (default, or ``KERNELS_SYMM_MEM_BACKEND``) or "nvshmem": the backend of
      PyTorch symmetric memory the GPU workspace is allocated on (one per process; refused on CPU).
    - ``hop_fp32``: multi-node groups carry the node partial sums in fp32 (2x the bytes on NVLink
      and the network, one rounding) instead of the input dtype (default: one more rounding per
      node hop, see ``hierarchy.py``).
    """
    group, device = _resolve(group, device)
    given = {k: v for k, v in dict(ll_bytes=ll_bytes, gather_ll_bytes=gather_ll_bytes, push_bytes=push_bytes,
                                   timeout_s=timeout_s, start_epoch=start_epoch, ranks_per_node=ranks_per_node,
                                   backend=backend, hop_fp32=hop_fp32).items() if v is not None}
    key = (group.group_name, device)
    ws = _workspaces.get(key)
    if ws is None:
        _install_destroy_hook()
        ws = _workspaces[key] = Workspace(group, device, **given)
        return ws
    for k, v in given.items():
        have = ws.settings[k]
        v = float(v) if k == "timeout_s" else str(v).lower() if k == "backend" else bool(v) if k == "hop_fp32" else v
        if k == "backend" and device.type == "cpu" and v == "cuda":
            continue
        if v != have:
            raise ValueError(f"reduce_scatterv.workspace: {k}={v!r} differs from this group's workspace, created with "
                             f"{k}={have!r}; a workspace's keywords are fixed at creation (release(group) first)")
    return ws


def release(group: dist.ProcessGroup | None = None) -> None:
    """Drop the workspaces of ``group`` (every group if None; a multi-node group's node workspaces
    with it), freeing their memory once no tensor handed out by :meth:`Workspace.empty` is alive.
    ``dist.destroy_process_group`` calls this."""
    name = group.group_name if group is not None else None
    for key in [k for k in _workspaces if name is None or k[0] == name]:
        ws = _workspaces.pop(key, None)
        if ws is None:
            continue
        if ws.hierarchy is not None:
            _workspaces.pop((ws.hierarchy.node_group.group_name, ws.device), None)
            ws.hierarchy.node_ws.close()
        ws.close()


_hooked = False


def _install_destroy_hook() -> None:
    """Release a group's workspaces when ``dist.destroy_process_group`` destroys it (symmetric memory
    freed after its group is gone aborted at exit), and all of them at interpreter exit."""
    global _hooked
    if _hooked:
        return
    _hooked = True
    original = dist.destroy_process_group

    @functools.wraps(original)
    def destroy_process_group(group=None):
        release(None if group is None or group is dist.group.WORLD else group)
        return original(group)

    dist.destroy_process_group = destroy_process_group
    dist.distributed_c10d.destroy_process_group = destroy_process_group
    atexit.register(release)
