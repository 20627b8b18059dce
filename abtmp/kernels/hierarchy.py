"""Beyond one node: ``reduce_scatterv`` and ``all_gatherv`` over N nodes x G GPUs, fused inside each node,
NCCL between.

Global rank ``q = n * G + g`` is local rank ``g`` of node ``n``; the *rail* of ``g`` is the N ranks
``m * G + g`` (one per node). A call with sizes ``s[0..W)`` runs in three steps:

1. **Rail order** (one copy, on this GPU). The input (SUM_LEN order) is copied into the node
   workspace's arena in rail order: rail 0's rows (those of ranks 0, G, 2G, ...), then rail 1's, ...;
   behind each rank's rows, ``R`` check rows (below). Cost: one read and one write of the whole
   input in HBM (``sum(s) * H * elt`` bytes each way, about 4 us per 7 MB at 3.5 TB/s), the same
   staging copy the flat kernel makes for an input that does not lie in its workspace; the flat
   kernel's zero-copy path (``ws.empty``) has no counterpart here, since the producer writes SUM_LEN
   order. (A producer that wrote rail order directly would save it; not offered yet.)
2. **Node step** (NVLink, the fused kernels). ``reduce_scatterv.reduce_scatterv`` over the node's G ranks
   with node sizes ``t[h] = sum_m (s[m*G + h] + R)``: local rank g ends with the node's partial
   sums of every row of its rail, each rank's block followed by its check rows. Bytes per GPU: the
   flat kernel's for a G-rank group of ``sum(s) + W*R`` rows.
3. **Rail hop** (the network, NCCL; gloo in CPU emulation). An uneven reduce-scatter over the rail
   group (``dist.reduce_scatter``, NCCL's grouped reduce): rank ``m*G + g`` receives the sum over
   nodes of its block, so each row crosses the network once per node pair (N = 2: once). Then the
   owner copies its rows to ``output``, checking the check rows first.

**Rounding** (stated once, here). Default: the node step accumulates its G terms in fp32 and rounds
the node partial to the input dtype (the hop moves the dtype's bytes); NCCL then adds the N node
partials in the dtype, rounding each of its N - 1 adds (a chain). So a row is rounded N times
(N = 2: twice), against the flat kernel's once and NCCL's flat grouped reduce's W - 1 times.
``hop_fp32=True`` (a workspace keyword) converts the input to fp32 in the rail-order copy: the
node step and the hop then move fp32 (2x the bytes on NVLink and on the network), NCCL adds in
fp32, and the owner rounds once to the dtype (fp32's own roundings, 2^-24 relative, aside).
Choose it where the extra rounding matters more than the bytes; decode calls are latency-bound
(2x bytes costs little there), prefill calls bandwidth-bound (2x bytes costs up to 2x).

**Device sizes and CUDA graphs.** NCCL's counts are fixed when a graph is captured, so with sizes
on the device both steps move capacities: every rank's block is ``P`` rows (its output's row
capacity, which must be the same on every rank), the node step reduces ``G * N * (P + R)`` rows
with host (capacity) sizes and the hop is an even ``reduce_scatter_tensor``; the owner copies its
first ``sizes[rank]`` rows (rows past them are left untouched). One kernel
(``hop_kernel.hop_prologue_kernel``) reads the sizes on the device and makes the rail-order copy
with its check rows (no host sync); rows past a rank's count keep what the arena held (summed,
never read out). With host sizes the row positions are computed on the host once per distinct
sizes tuple and cached on the device (then ``index_copy_`` + ``index_put_``); a tuple met first
inside a graph capture raises (run the call once eagerly first, as for workspace growth), and so
does a capacity met first there. Launches per call: the copy (1 or 2), the node step (1), the fault
element (1), NCCL (1), the check-and-copy (1). The steps allocate small temporaries (the node
partial, the hop's receive buffer): under capture they come from the graph's pool.

**Check rows** (what each guarantee becomes across nodes). The node step keeps every guarantee of
the protocol inside a node (timeouts, call digests, sticky failed state, ``reset``). The hop is
NCCL's: a rank of another node that never calls blocks NCCL until NCCL's watchdog aborts (its
timeout, set at ``init_process_group``), and calls whose NCCL counts differ between nodes get
NCCL's behaviour (a hang until the watchdog, or an NCCL error). To catch the rest, each rank's
block carries ``R = ceil((K + 1) / H)`` check rows: the first 64 elements are the bits (0 or 1) of
the call's digest (mode, width, dtype, row count, host sizes or capacity, hop dtype), then, with
device sizes, 32 bits of every size, then one *fault* element the node sets after its step (1 if
its workspace is in the failed state). Summed over the W ranks, every bit element must be 0 or W
(integers up to 256 are exact in bf16) and the fault element 0; anything else (a rank of another
node made a different call with the same counts, a node's step failed or poisoned its rows) poisons
the owner's rows (NaN) and sets ``ERR_HOP``, sticky like the kernels' faults: every later call is
NaN and ``check()`` raises until ``reset()``. Every owner receives the same sums of check bits, so
every rank sees a mismatch.

**all_gatherv** (``Hierarchy.all_gatherv``): every rank's rows, in rank order, on every rank, in
the other order of steps: the network first, so that each row crosses it once per node pair.

1. **Rail hop** (NCCL; gloo in CPU emulation). Rank ``m*G + g`` makes its *block*: its rows, padded
   to ``P_g`` rows, then ``R`` check rows (the digest bits of the call, with device sizes 32 bits of
   every size, then a fault element: 1 if its node workspace is in the failed state, else 0). An
   all-gather over rail g (``dist.all_gather_into_tensor``: NCCL and gloo want equal counts) gives
   every rank of the rail the N blocks of its rail, straight into the node workspace's arena. With
   host sizes ``P_g`` is the rail's largest count (even sizes pay only the ``R`` rows; one owner
   per rail pays up to N x its rows on the network and in the node step); with device sizes
   every block is ``P`` rows, the input's capacity (the same on every rank), whatever the sizes.
2. **Node step** (NVLink, the fused ``all_gatherv`` over the node, ``node_ws``): local rank g
   brings its rail's ``N * (P_g + R)`` rows (read in place); afterwards every rank holds every
   rank's block, rail by rail. Bytes per GPU: the flat gather's for a G-rank group of
   ``sum_g N * (P_g + R)`` rows.
3. **Check and copy** (``hop_kernel``: two launches). Every block's check rows are compared with
   this rank's own (exactly, NaN fails); then the rows go to the output in rank order, exactly,
   or NaN everywhere when any block failed, which also sets ``ERR_HOP`` (sticky). Rows past
   ``sum(sizes)`` are not written. Costs one read and one write of the gathered rows in HBM
   besides the node step (the rank order interleaves the rails, which the node step cannot write).

What holds where. Inside a node, every guarantee of the fused gather (timeouts, digests, the
sticky failed state, ``reset``). The hop is NCCL's: a rank of another node that never calls, or
calls whose NCCL counts differ between nodes (a rail's largest host size, or the input capacity
with device sizes), get NCCL's behaviour (its watchdog; gloo aborts the process). The check rows
catch the rest: a rank of another node that made another call with the same counts (sizes that
differ but keep every rail's largest, another dtype of the same width, other device sizes or
output capacity: the digest and size bits), and a node that was in the failed state when the call
began (its fault element). Every rank compares every block, so every rank sees a mismatch. A node
step that fails *during* a call poisons its own node's outputs and leaves its workspace failed;
the other nodes' outputs of that call are right (every row they return reached them over the hop
and their own node step), and their next call fails through the fault element, as do all until
``reset()``. With host sizes the plan (the block rows, the node sizes, where every block lies) is
built once per sizes tuple and cached on the device, with device sizes once per capacity; one
first met inside a graph capture raises, as for ``reduce_scatterv``. Launches per call: the block
(2, with device sizes 4), the fault element (1), NCCL (1), the node step (1), check and copy (2).
"""

from __future__ import annotations

import socket
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.distributed as dist

from . import layout as L

MAX_NODE = 8  # ranks of one node the fused kernels serve
DIGEST_BITS = 64
SIZE_BITS = 32
MAX_CHECK_WORLD = 256  # W * bit must be exact in the hop dtype (bf16: integers up to 256)


@dataclass(frozen=True)
class Topology:
    """How a group's ranks sit on nodes: ``nodes`` x ``ranks_per_node``, rank ``n*G + g`` on node n."""

    ranks_per_node: int
    nodes: int
    reason: str  # one line: where the answer came from

    @property
    def multi_node(self) -> bool:
        return self.nodes >= 2


def find_topology(hosts: list[str], ranks_per_node: int | None, max_node: int = MAX_NODE) -> Topology | str:
    """Pure: the topology of a group whose rank r runs on ``hosts[r]``, or a sentence saying why the
    group cannot be split into nodes (the caller falls back to NCCL over the whole group).

    ``ranks_per_node`` (the workspace keyword) overrides the hosts: each block of G consecutive ranks
    is a node. Raises ValueError for a value no group of this size can take."""
    world = len(hosts)
    if ranks_per_node is not None:
        g = ranks_per_node
        if isinstance(g, bool) or not isinstance(g, int) or not 1 <= g <= max_node or world % g:
            raise ValueError(f"reduce_scatterv.workspace: ranks_per_node={g!r} must be an int in [1, {max_node}] that "
                             f"divides the group's {world} ranks")
        return Topology(g, world // g, f"ranks_per_node={g} (keyword): {world // g} nodes of {g}")
    blocks: list[tuple[str, int]] = []  # (host, ranks) in rank order
    for h in hosts:
        if blocks and blocks[-1][0] == h:
            blocks[-1] = (h, blocks[-1][1] + 1)
        else:
            blocks.append((h, 1))
    if len(blocks) == 1:
        return Topology(world, 1, f"one host ({hosts[0]})")
    distinct = {h for h, _ in blocks}
    if len(distinct) != len(blocks):
        return (f"the ranks of a host are not contiguous (hosts in rank order: {hosts}); order the ranks by "
                "host, or pass ranks_per_node=G if each block of G consecutive ranks shares a host")
    counts = {n for _, n in blocks}
    if len(counts) != 1:
        return f"the hosts hold different numbers of ranks ({[n for _, n in blocks]})"
    g = counts.pop()
    if g > max_node:
        return f"{g} ranks per host: the fused kernels serve at most {max_node} per node"
    return Topology(g, len(blocks), f"{len(blocks)} hosts of {g} ranks")


def hostnames(group: dist.ProcessGroup) -> list[str]:
    """Collective: every rank's host name, in rank order."""
    everyone: list = [None] * dist.get_world_size(group)
    dist.all_gather_object(everyone, socket.gethostname(), group=group)
    return everyone


class Hierarchy:
    """The subgroups and the node workspace of a multi-node group (built by ``Workspace``).

    Every rank of the group creates every node group (then every rail group) in the same order,
    at workspace creation, with ``use_local_synchronization`` so that ranks outside the group take
    no part; no group is created inside a call."""

    def __init__(self, ws, topo: Topology, keywords: dict):
        group, device = ws.group, ws.device
        G, N, W = topo.ranks_per_node, topo.nodes, ws.world_size
        self.G, self.N, self.W = G, N, W
        self.node, self.local = divmod(ws.rank, G)
        backend = "nccl" if device.type == "cuda" else "gloo"
        glob = [dist.get_global_rank(group, r) if group is not dist.group.WORLD else r for r in range(W)]
        self.node_group = self.rail_group = None
        for n in range(N):
            g = dist.new_group([glob[n * G + i] for i in range(G)], backend=backend, use_local_synchronization=True)
            if n == self.node:
                self.node_group = g
        for h in range(G):
            g = dist.new_group([glob[m * G + h] for m in range(N)], backend=backend, use_local_synchronization=True)
            if h == self.local:
                self.rail_group = g
        from .workspace import workspace

        self.node_ws = workspace(self.node_group, device, **keywords)
        self.hop_fp32 = ws.hop_fp32
        # the hop kernels' grid: 4 programs per SM (2 in CPU emulation)
        self.programs = (2 if device.type == "cpu"
                         else 4 * torch.cuda.get_device_properties(device).multi_processor_count)
        self._host_plans: OrderedDict = OrderedDict()
        self._check_cache: OrderedDict = OrderedDict()

    # ---- helpers
    def check_rows(self, hidden: int, device_sizes: bool) -> tuple[int, int]:
        """(K, R): check elements before the fault element, and check rows per block."""
        k = DIGEST_BITS + (SIZE_BITS * self.W if device_sizes else 0)
        return k, -(-(k + 1) // hidden)

    def _check_values(self, tag: int, k: int, r: int, hidden: int, dtype, device, scale: int | None = None):
        """(the ``[R, H]`` check rows of a call with host sizes: its digest bits, the fault element 0,
        zeros; what their sum over W agreeing healthy ranks is, fp32), cached per call. With device
        sizes the rows are the prologue kernel's template (it adds the size bits). The gather
        compares blocks instead of summing them: ``scale=1``."""
        scale = self.W if scale is None else scale
        key = (tag, k, r, hidden, dtype, device, scale)
        if key in self._check_cache:
            self._check_cache.move_to_end(key)
            return self._check_cache[key]
        vals = torch.zeros(r * hidden, dtype=dtype, device=device)
        shifts = torch.arange(DIGEST_BITS, device=device, dtype=torch.int64)
        t = torch.full((), tag, dtype=torch.int64, device=device)
        vals[:DIGEST_BITS] = ((t >> shifts) & 1).to(dtype)
        got = (vals.view(r, hidden), vals.float() * scale)
        self._check_cache[key] = got
        if len(self._check_cache) > 256:
            self._check_cache.popitem(last=False)
        return got

    def _cached(self, key, build):
        """A device tensor built once per key (host data copied to the device: refused under capture)."""
        got = self._host_plans.get(key)
        if got is not None:
            self._host_plans.move_to_end(key)
            return got
        dev = self.node_ws.device
        if dev.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError(f"reduce_scatterv: the multi-node plan for {key[0]} {list(key[1])} is built on the host "
                               "and copied to the GPU, which cannot happen during CUDA-graph capture; run the call "
                               "once eagerly first")
        got = build()
        self._host_plans[key] = got
        if len(self._host_plans) > 256:
            self._host_plans.popitem(last=False)
        return got

    def _host_plan(self, sizes: tuple, r: int, hidden: int, k: int, device) -> tuple:
        """Cached per (sizes, R, H): (destination row of every input row, check-row positions [W, R],
        fault-element positions in this rank's node output (elements) [N], node sizes, hop chunks)."""
        def build():
            G, N = self.G, self.N
            src_off = [0]
            for s in sizes:
                src_off.append(src_off[-1] + s)
            dst, checks, at, block_at = [0] * src_off[-1], [], 0, {}
            for h in range(G):
                for m in range(N):
                    q = m * G + h
                    block_at[q] = at
                    dst[src_off[q]:src_off[q + 1]] = range(at, at + sizes[q])
                    checks.append(list(range(at + sizes[q], at + sizes[q] + r)))
                    at += sizes[q] + r
            node_sizes = [sum(sizes[m * G + h] + r for m in range(N)) for h in range(G)]
            mine = [sizes[m * G + self.local] + r for m in range(N)]
            start = sum(node_sizes[: self.local])
            faults = [(block_at[m * G + self.local] - start + sizes[m * G + self.local]) * hidden + k for m in range(N)]
            return (torch.tensor(dst, dtype=torch.int64, device=device),
                    torch.tensor(checks, dtype=torch.int64, device=device).view(len(sizes), r),
                    torch.tensor(faults, dtype=torch.int64, device=device), node_sizes, mine)

        return self._cached(("sizes", sizes, r, hidden, k), build)

    def _gather_plan(self, key: tuple, caps: list, counts: list, r: int, hidden: int, k: int, device) -> tuple:
        """The gather's layout (module docstring), cached per key: (rows of this rank's block before its
        check rows, node sizes, a device ``int64 [3, W]`` table: row 0 where rank q's rows start in
        the node output, row 1 where its check rows start, row 2 its count (host sizes; zeros with
        device sizes), the fault element's place in this rank's block (elements, ``[1]``)).
        ``caps[h]``: the rows of every block of rail h (the rail's largest count, or the capacity)."""
        def build():
            G, N = self.G, self.N
            node_sizes = [N * (caps[h] + r) for h in range(G)]
            src, chk = [], []
            for q in range(self.W):
                m, h = divmod(q, G)
                at = sum(node_sizes[:h]) + m * (caps[h] + r)
                src.append(at)
                chk.append(at + caps[h])
            p = caps[self.local]
            return (p, node_sizes, torch.tensor([src, chk, counts], dtype=torch.int64, device=device),
                    torch.tensor([p * hidden + k], dtype=torch.int64, device=device))

        return self._cached(key, build)

    def _node_step(self, x: torch.Tensor, node_out: torch.Tensor, node_sizes: list,
                   gather: bool = False) -> Exception | None:
        """The fused reduce_scatterv (``gather``: all_gatherv) over the node, flags left for ``check()``.
        An exception on the host (e.g. ranks of this node grew the workspace differently) is
        returned, not raised, so that this rank still takes part in the rail hop (its peers on
        other nodes would wait there) with its fault element set (the gather: its own check fails,
        which sets ERR_HOP, so its next call's fault element is set); the caller raises it after."""
        from .api import node_step

        try:
            node_step(x, node_out, node_sizes, self.node_group, gather)
        except Exception as e:  # noqa: BLE001 - re-raised by the caller after the hop
            node_out.fill_(float("nan"))
            return e
        return None

    # ---- the call
    def reduce_scatterv(self, input_: torch.Tensor, output: torch.Tensor, call, tag: int) -> None:
        """Steps 1-3 of the module docstring for one validated call; ``tag``: the call's host digest."""
        from ._triton_mode import kernel_module

        kern = kernel_module(input_.device.type)
        hidden, dev = call.hidden, input_.device
        dtype = torch.float32 if self.hop_fp32 else input_.dtype
        device_sizes = call.sizes is None
        k, r = self.check_rows(hidden, device_sizes)
        # host sizes: the check rows and their expected sums, cached per call; device sizes: the digest
        # bits only, as a template for the prologue kernel (which adds the size bits)
        vals, expect = self._check_values(tag, k, r, hidden, dtype, dev)
        ws = self.node_ws
        programs = self.programs
        out2d = output.view(output.shape[0], hidden)
        if not device_sizes:  # exact rows: an uneven reduce-scatter on each rail
            dst, checks, faults, node_sizes, mine = self._host_plan(call.sizes, r, hidden, k, dev)
            x = ws.empty(sum(node_sizes), hidden, dtype=dtype)
            inp = input_.reshape(input_.shape[0], hidden)
            x.index_copy_(0, dst, inp if inp.dtype == dtype else inp.to(dtype))
            err = ws._err_word()  # after empty(): growth moves the workspace
            x.index_put_((checks,), vals)
            node_out = torch.empty(node_sizes[self.local], hidden, dtype=dtype, device=dev)
            error = self._node_step(x, node_out, node_sizes)
            err = ws._err_word()  # the node step may have grown the workspace too
            kern.hop_fault(err, node_out, faults, error is not None, L.STICKY)
            recv = torch.empty(mine[self.node] * hidden, dtype=dtype, device=dev)
            dist.reduce_scatter(recv, list(node_out.view(-1).split([m * hidden for m in mine])), group=self.rail_group)
            n = call.sizes[self.node * self.G + self.local]
            kern.hop_finish(recv, expect, out2d, err, None, 0, n, n, hidden, programs, L.ERR_HOP)
        else:  # capacities: every block is P rows (the output capacity) + R check rows, at fixed places
            P, W, G, N = call.out_rows, self.W, self.G, self.N
            block = P + r
            total = W * block
            x = ws.empty(total, hidden, dtype=dtype)
            err = ws._err_word()  # after empty(): growth moves the workspace
            expect = torch.empty(r * hidden, dtype=torch.float32, device=dev)
            # one launch: rows to their blocks, check rows (digest and size bits), bad sizes flagged
            kern.hop_prologue(input_.reshape(input_.shape[0], hidden).contiguous(), x, call.sizes_dev, vals, expect, err,
                              call.rows, P, hidden, r, W, G, N, DIGEST_BITS, SIZE_BITS, L.ERR_BAD_SIZES,
                              L.ERR_OUTPUT_TOO_SMALL, programs)
            faults = self._cached(("capacity", (P, r, hidden, k)),
                                  lambda: (torch.arange(N, device=dev) * block + P) * hidden + k)
            node_out = torch.empty(N * block, hidden, dtype=dtype, device=dev)
            error = self._node_step(x, node_out, [N * block] * G)
            err = ws._err_word()  # the node step may have grown the workspace too
            kern.hop_fault(err, node_out, faults, error is not None, L.STICKY)
            recv = torch.empty(block * hidden, dtype=dtype, device=dev)
            _reduce_scatter_even(recv, node_out.view(-1), group=self.rail_group)
            kern.hop_finish(recv, expect, out2d, err, call.sizes_dev, self.node * G + self.local, 0, P, hidden,
                            programs, L.ERR_HOP)
        if error is not None:
            raise error

    def all_gatherv(self, input_: torch.Tensor, output: torch.Tensor, call, tag: int) -> None:
        """The hierarchical gather of the module docstring for one validated call (``output``
        contiguous); ``tag``: the call's host digest."""
        from ._triton_mode import kernel_module

        kern = kernel_module(input_.device.type)
        hidden, dev, dtype, W = call.hidden, input_.device, input_.dtype, self.W
        device_sizes = call.sizes is None
        k, r = self.check_rows(hidden, device_sizes)
        vals, expect = self._check_values(tag, k, r, hidden, dtype, dev, scale=1)
        ws = self.node_ws
        programs = self.programs
        if not device_sizes:  # every block of rail h: the rail's largest count
            sizes = call.sizes
            caps = [max(sizes[m * self.G + h] for m in range(self.N)) for h in range(self.G)]
            p, node_sizes, table, fault_at = self._gather_plan(("gather sizes", sizes, r, hidden), caps, list(sizes), r,
                                                               hidden, k, dev)
            counts, in_cap, out_cap = table[2], max(sizes), sum(sizes)
        else:  # every block: the input capacity (the same on every rank: in the tag), sizes read on the device
            in_cap, out_cap = call.rows, call.out_rows
            p, node_sizes, table, fault_at = self._gather_plan(("gather capacity", (in_cap, r, hidden)),
                                                               [in_cap] * self.G, [0] * W, r, hidden, k, dev)
            counts = call.sizes_dev
        # 1. this rank's block: its rows (device sizes: the whole capacity), its check rows, the fault element
        send = torch.empty(p + r, hidden, dtype=dtype, device=dev)
        send[: call.rows].copy_(input_.reshape(call.rows, hidden))
        send[p:].copy_(vals)
        if device_sizes:  # the sizes' bits after the digest's, then this rank's expectation of every block
            bits = (call.sizes_dev.to(torch.int64).view(W, 1) >> self._size_shifts(dev)) & 1
            send.view(-1)[p * hidden + DIGEST_BITS: p * hidden + k].copy_(bits.view(-1))
            expect = send[p:].view(-1).float()
        full = ws.empty(max(node_sizes), hidden, dtype=dtype)  # the node step reads it in place
        recv = full[: node_sizes[self.local]]
        err = ws._err_word()  # after empty(): growth moves the workspace
        kern.hop_fault(err, send, fault_at, False, L.STICKY)
        all_gather_even(recv, send, group=self.rail_group)
        # 2. the node step: local rank g brings its rail's N blocks
        node_out = torch.empty(sum(node_sizes), hidden, dtype=dtype, device=dev)
        error = self._node_step(recv, node_out, node_sizes, gather=True)
        err = ws._err_word()  # the node step may have grown the workspace
        # 3. every block's check rows against this rank's, then the rows in rank order (or NaN)
        verdict = torch.empty(W, dtype=torch.int32, device=dev)
        kern.hop_gather_check(node_out, table, expect, verdict, err, counts, in_cap, out_cap, hidden, W, L.ERR_HOP,
                              L.ERR_BAD_SIZES)
        kern.hop_gather_copy(node_out, table, verdict, output, counts, in_cap, out_cap, hidden, W, programs)
        if error is not None:
            raise error

    def _size_shifts(self, device) -> torch.Tensor:
        return self._cached(("size shifts", (SIZE_BITS,)), lambda: torch.arange(SIZE_BITS, dtype=torch.int64,
                                                                                device=device))


# torch 2.13 renamed reduce_scatter_tensor and all_gather_into_tensor (same signatures) and warns on the
# old names; torch 2.11 (the GPU image) has only those
_reduce_scatter_even = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
all_gather_even = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
