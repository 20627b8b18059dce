"""``reduce_scatterv`` and ``all_gatherv``: drop-ins for SGLang's ``GroupCoordinator`` methods of those names."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import torch
import torch.distributed as dist

from . import configs, epilogues
from .words import FLOAT_CODES, as_words
from ._triton_mode import kernel_module
from .hierarchy import all_gather_even
from .validation import SUPPORTED_DTYPES, Call, check_call, check_gather_call
from .settings import CHECK_EVERY_CALL
from .workspace import Workspace, workspace

MAX_WORLD = 8  # ranks of one node; host sizes travel as 8 kernel scalars (more: several nodes, hierarchy.py)
# Relay a heavy owner's excess rows only when that saves the owner this many inbound bytes:
# relaying saves (W-2) * excess bytes of peer reads but adds a second hop (a few microseconds,
# about 1 MiB of NVLink time). On CPU every excess is relayed so that the tests exercise it.
RELAY_MIN_SAVED_BYTES = {"cuda": 1 << 20, "cpu": 0}
# ... and only when it cuts the busiest GPU's traffic to this % of the direct pull's (see the kernel)
RELAY_MAX_COST_PCT = 65
# Modes the planner may not pick (A/B runs): "ll" and/or "push" (the workspace's byte limits say
# where each applies; ll_bytes=0 / push_bytes=0 at creation turn them off for good).
MODES_OFF: frozenset = frozenset()
# Schedule fuzzing (tests): a nonzero seed compiles in stalls of random programs on random ranks.
CHAOS_SEED = 0
# Flagged-word gathers whose largest source has at least this many bytes move packed words
# (``flagged_words.py``: 1.5 bytes per data byte instead of 2); None: never. Off until measured on
# NVLink (bench/NOTES.md, 2026-12-01 evening); tests and benchmarks turn it on through ``overrides``.
# The reduce-scatter keeps plain flagged words (NOTES says why).
PACKED_MIN_BYTES: int | None = None
_SETTINGS = ("RELAY_MIN_SAVED_BYTES", "RELAY_MAX_COST_PCT", "MODES_OFF", "CHAOS_SEED", "PACKED_MIN_BYTES")
MODE_CODES = {"ll": 1, "push": 2, "large": 3, "gather": 4, "gather_ll": 5, "hierarchy": 6, "hierarchy_gather": 7,
              "gather_packed": 8}


@contextlib.contextmanager
def overrides(**settings):
    """Plan the calls made inside with other module settings (``MODES_OFF``, ``RELAY_MAX_COST_PCT``,
    ``RELAY_MIN_SAVED_BYTES``, ``CHAOS_SEED``): benchmarks' A/B runs and tests. Every rank should use
    the same settings; a rank that plans differently makes a different call, which the kernels
    detect (a disagreement error on every rank). Under CUDA-graph capture the plan is fixed at
    capture, so replays keep what was chosen inside."""
    unknown = set(settings) - set(_SETTINGS)
    if unknown:
        raise ValueError(f"unknown reduce_scatterv settings {sorted(unknown)}; known: {_SETTINGS}")
    saved = {k: globals()[k] for k in settings}
    globals().update(settings)
    try:
        yield
    finally:
        globals().update(saved)


_M64 = (1 << 64) - 1


def _mix64(h: int) -> int:
    h = ((h ^ (h >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    h = ((h ^ (h >> 27)) * 0x94D049BB133111EB) & _M64
    return h ^ (h >> 31)


@lru_cache(maxsize=4096)
def call_tag(*facts: int) -> int:
    """The host's part of a call's digest (``signals.call_digest``), as an int64: every fact a rank
    plans the call from (mode, width, dtype, row count or capacity, host sizes, relay settings).
    Ranks that differ in any of them get different digests."""
    h = 0
    for f in facts:
        h = _mix64((h ^ (f & _M64)) + 0x9E3779B97F4A7C15 & _M64)
    return h - (1 << 64) if h >> 63 else h


@lru_cache(maxsize=None)
def _multiprocessors(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 2  # CPU emulation: a couple of "programs per SM" keeps the interpreter quick


@lru_cache(maxsize=None)
def _device_slug(device: torch.device) -> str:
    return configs.gpu_slug(torch.cuda.get_device_name(device)) if device.type == "cuda" else "cpu"


def _check_backend(input_: torch.Tensor, group: dist.ProcessGroup, op: str) -> None:
    """CPU tensors need a gloo group (CPU emulation). CUDA tensors take any group whose ranks the kernels
    serve (the group only sets the workspace up: no collective of its own runs in a call); an NCCL
    group is needed only where NCCL carries the call (``_need_nccl``)."""
    backend = str(dist.get_backend(group)).lower()
    if input_.device.type == "cpu" and "gloo" not in backend:
        raise ValueError(f"{op}: CPU tensors (CPU emulation) need a gloo process group, got {backend}")
    if input_.device.type not in ("cuda", "cpu"):
        raise ValueError(f"{op}: tensors on {input_.device} are not supported (cuda or cpu)")


def _need_nccl(input_: torch.Tensor, group: dist.ProcessGroup, op: str, why: str) -> None:
    """For CUDA tensors, raise unless ``group`` is NCCL's: ``why`` says which part of the call NCCL
    carries (in CPU emulation gloo carries it)."""
    backend = str(dist.get_backend(group)).lower()
    if input_.device.type == "cuda" and "nccl" not in backend:
        raise ValueError(f"{op}: {why}, which needs an NCCL process group; this group's backend is {backend}")


def pick_config(device: torch.device, mode: str, world: int, dtype: torch.dtype, call: Call) -> configs.KernelConfig:
    """The tuned (or default) config for a call, looked up from rank-agreed facts."""
    if device.type == "cpu":
        return configs.CPU_DEFAULT
    nbytes = call.largest_rows * call.hidden * torch.finfo(dtype).bits // 8
    return configs.lookup(_device_slug(device), mode, world, str(dtype).removeprefix("torch."), call.hidden, nbytes)


@dataclass(frozen=True)
class Plan:
    """How one call runs. ``mode`` (and with it the kernel's protocol) is decided from rank-agreed
    facts only, so every rank runs the same protocol; ``variant.stage`` (copy the input into the
    workspace first) is each rank's own business."""

    mode: str  # "ll" (push flagged words), "push" (push data + progress signals), "large" (pull, relay)
    config: configs.KernelConfig
    variant: object | None  # reduce_scatterv_kernel.Variant for "large"
    tag: int  # call_tag of the call's rank-agreed facts


# With an epilogue a tile's sum stays in registers while the epilogue reads its inputs (hc_post: 4
# residual rows, 4 outputs), so flat tiles are smaller (ptxas for sm_90, Triton 3.9, bf16, hc_post):
# the plain push at 8192 elements and 4 warps needed 255 registers and spilled 10 KB per thread; at
# 2048, 233 and no spill (2 programs per SM still fit). The pull at 4096 and 8 warps capped at 128
# registers spilled 336 bytes; at 2048, 4 bytes.
EPILOGUE_MAX_BLOCK = {"push": 2048, "large": 2048}


def epilogue_config(mode: str, config: configs.KernelConfig, hidden: int, epilogue) -> configs.KernelConfig:
    """``config`` for a call with ``epilogue`` (rank-agreed: mode, width and the epilogue's kind).
    Row tiles (epilogues that need whole rows): BLOCK = the next power of 2 >= hidden, warps enough
    for at most 16 elements per thread (up to 16 warps), one program per SM (16 warps at up to 128
    registers fill one). Flat tiles: ``EPILOGUE_MAX_BLOCK``, at most 2 programs per SM (what fits
    at the registers the epilogue takes: up to 238 at 4 warps, 128, the pull's cap, at 8). The grid
    is what fits: the protocol needs no co-residency, but programs that wait for a free slot would
    depend on the order the GPU starts them in."""
    if epilogue is None:
        return config
    if epilogue.row_tiles:
        block = max(16, 1 << (hidden - 1).bit_length())
        return dataclasses.replace(config, block=block, num_warps=max(config.num_warps, min(16, block // 512)),
                                   programs_per_sm=1)
    return dataclasses.replace(config, block=min(config.block, EPILOGUE_MAX_BLOCK.get(mode, config.block)),
                               programs_per_sm=min(config.programs_per_sm, 2))


def plan_call(ws: Workspace, call: Call, inp: torch.Tensor, epilogue=None) -> Plan:
    """Choose mode, config and variant for a call; grows the workspace where the mode needs it
    (collective, but every rank decides the same).

    In order: flagged words ("ll") up to ``ll_bytes`` per destination; plain push up to the
    workspace's ``push_max_bytes`` per destination; else the pull kernel ("large"), which relays a
    heavy owner's excess rows on 3+ ranks where that pays. An epilogue (``epilogues.py``) is part
    of the call's tag; one that needs whole rows (``row_tiles``) runs with row tiles and never as
    flagged words."""
    elt = inp.element_size()
    kern = kernel_module(inp.device.type)
    sms = _multiprocessors(inp.device)
    max_rows = call.largest_rows
    row_tiles = epilogue is not None and epilogue.row_tiles
    # host sizes are part of the tag (device sizes are folded in by the kernel), -1 marks device sizes;
    # the epilogue's facts go last (every fact before them has a length fixed by the world size)
    facts = (ws.world_size, call.hidden, FLOAT_CODES[inp.dtype], call.rows, *(call.sizes or (-1,)))
    ep_facts = epilogues.tag_facts(epilogue)
    for mode, flagged in (("ll", True), ("push", False)):
        if flagged and row_tiles:
            continue
        if mode not in MODES_OFF and kern.push_fits(ws, call, elt, flagged):
            config = epilogue_config(mode, pick_config(inp.device, mode, ws.world_size, inp.dtype, call), call.hidden,
                                     epilogue)
            if kern.rounds_fit(max_rows, call.hidden, config, sms, row_tiles):
                if not flagged:
                    ws.reserve_slots(kern.destination_bytes(call, elt))
                return Plan(mode, config, None, call_tag(MODE_CODES[mode], *facts, *ep_facts))
    nbytes = call.rows * call.hidden * elt  # the whole input: sum(sizes) rows, or the capacity
    config = epilogue_config("large", pick_config(inp.device, "large", ws.world_size, inp.dtype, call), call.hidden,
                             epilogue)
    tile_elements = call.hidden if row_tiles else config.block
    tile_saving = max(1, ws.world_size - 2) * tile_elements * elt  # bytes one relayed tile saves the owner
    variant = kern.Variant(stage=True, relay=ws.world_size >= 3 and config.relay
                           and kern.rounds_fit(call.rows, call.hidden, config, sms, row_tiles),
                           relay_min_tiles=max(1, -(-RELAY_MIN_SAVED_BYTES[inp.device.type] // tile_saving)),
                           relay_max_cost_pct=RELAY_MAX_COST_PCT)
    if call.sizes is not None:
        # host sizes (rank-agreed): compile the relay code in only when this call relays something
        variant = dataclasses.replace(variant, relay=_relays(call.sizes, call.hidden, tile_elements, variant))
    # relays push sums into the owner's scratch at the rows' places in the input: reserve it (with an
    # epilogue, the sums are fp32, past the input's region: see the kernel's f32_off)
    if epilogue is not None and variant.relay:
        nbytes = -(-nbytes // 256) * 256 + call.rows * call.hidden * 4
    ws.reserve(max_input_bytes=nbytes)  # before the residency check: growing moves the workspace
    variant = dataclasses.replace(variant, stage=not (ws.holds(inp) and inp.data_ptr() % 16 == 0))
    tag = call_tag(MODE_CODES["large"], *facts, int(variant.relay), variant.relay_min_tiles,
                   variant.relay_max_cost_pct, *ep_facts)
    return Plan("large", config, variant, tag)


def relayed_tiles(sizes: Sequence[int], hidden: int, block: int, variant) -> int:
    """Host mirror of the kernel's relay decision (see ``reduce_scatterv_kernel``): how many tiles of
    heavy owners a call with host ``sizes`` relays under ``variant``."""
    t = sorted(-(-n * hidden // block) for n in sizes)
    if not variant.relay or len(t) < 3:
        return 0
    if (sum(t) - t[0]) * 100 > variant.relay_max_cost_pct * (len(t) - 1) * t[-1]:
        return 0
    return sum(x - t[1] for x in t if x - t[1] >= variant.relay_min_tiles)


# Host-size decisions are pure functions of rank-agreed facts: cached off the hot path.
@lru_cache(maxsize=4096)
def _relays(sizes: tuple, hidden: int, block: int, variant) -> bool:
    return relayed_tiles(sizes, hidden, block, variant) > 0


def reduce_scatterv(
    input_: torch.Tensor,
    output: torch.Tensor | None = None,
    sizes: Sequence[int] | torch.Tensor | None = None,
    group: dist.ProcessGroup | None = None,
    *,
    epilogue: "epilogues.HcPost | epilogues.ResidualRMSNorm | None" = None,
) -> torch.Tensor:
    """Sum every rank's partial rows and give each rank its own rows: an uneven reduce-scatter.

    Same names and meaning as SGLang's ``GroupCoordinator.reduce_scatterv``. Collective: every rank
    of ``group`` (default group if None) calls it with the same ``sizes`` and row count.

    Args:
        input_: this rank's partial sums, ``[sum(sizes), *rest]`` (SUM_LEN layout: rank 0's rows
            first), bfloat16, float16 or float32, contiguous or not. Never modified. If it lies in
            the group's workspace (``reduce_scatterv.workspace(group).empty(...)``) it is read in place.
        output: optional ``[sizes[rank], *rest]`` tensor of the same dtype and device; the result is
            written into it and it is returned.
        sizes: rows each rank receives: a list/tuple of ints (checked on the host), or an int32/int64
            tensor of ``world_size`` counts on the device (no host synchronisation; then ``input_`` and
            ``output`` are capacities of at least ``sum(sizes)`` and ``sizes[rank]`` rows, rows past
            the counts are left untouched, and ``output`` is required), or None for an even split.
        group: the process group: for CUDA tensors NCCL's, or gloo's where the ranks reach each
            other's memory on one node (it only sets the workspace up); gloo for CPU emulation.
        epilogue: optional ``reduce_scatterv.epilogues.HcPost`` or ``ResidualRMSNorm``: the float32 sum
            ``f`` of each tile goes straight into it, before the one rounding (``f`` is written only
            to the epilogue's ``f_out``, if set). Then ``output`` must be None, ``input_`` has rows
            of ``H`` elements (``[rows, H]``), the epilogue's tensors are per local row (``sizes[rank]``
            rows with host sizes, a capacity with device sizes), and the call returns the epilogue's
            ``out``. Every rank must pass the same kind (it is part of the call's digest).

    Returns:
        ``[sizes[rank], *rest]``: the sum over ranks of rows ``[offset_rank, offset_rank + sizes[rank])``,
        accumulated in float32 and rounded once to the input dtype (with an epilogue: its ``out``).

    One Triton launch does the exchange, the sum and the store: no NCCL call, no host
    synchronisation, no allocation when ``output`` is given and both tensors are contiguous
    (others go through a copy), CUDA-graph safe once the workspace is large enough
    (``Workspace.reserve``). Faults the kernel sees (a peer that does not make the call within the
    workspace's ``timeout_s``, ranks whose calls differ, device sizes that are negative or exceed a
    capacity) are flagged, not raised, on CUDA: the rows concerned are NaN, and
    ``reduce_scatterv.workspace(group).check()`` raises them on every rank (``KERNELS_CHECK=1``: after every
    call). A timeout or a disagreement puts the whole group in the failed state (every later call
    returns NaN, ``check()`` raises) until ``Workspace.reset()``.
    """
    if epilogue is not None:
        return _with_epilogue(input_, output, sizes, group, epilogue)
    return _collective("reduce_scatterv", check_call, _launch_reduce_scatterv, _nccl_fallback, input_, output, sizes,
                       group)


def _with_epilogue(input_, output, sizes, group, epilogue) -> torch.Tensor:
    """``reduce_scatterv`` with an epilogue: validate it, then the plain call's path with the
    epilogue's outputs in place of ``output``."""
    op = "reduce_scatterv"
    if not isinstance(epilogue, epilogues.EPILOGUES):
        raise TypeError(f"{op}: epilogue must be one of {[e.__name__ for e in epilogues.EPILOGUES]} or None, "
                        f"got {type(epilogue).__name__}")
    if output is not None:
        raise ValueError(f"{op}: with an epilogue, pass output=None (the epilogue writes its own outputs; set "
                         f"its f_out to also get the sum)")

    def check(input_, output, sizes, world, rank):
        call = check_call(input_, None, sizes, world, rank, capacity_rows=epilogue.rows)
        epilogues.check_epilogue(epilogue, None, input_, call, op)
        return call

    def launch(ws, call, inp, out):
        _launch_reduce_scatterv(ws, call, inp, out, epilogue)

    def fallback(input_, out, call, group):  # the sum by NCCL, then the epilogue in torch
        f = torch.empty((call.out_rows, *call.rest), dtype=input_.dtype, device=input_.device)
        _nccl_fallback(input_, f, call, group)
        sizes = call.sizes if call.sizes is not None else call.sizes_dev.tolist()
        return epilogue.apply_torch(f[: sizes[dist.get_rank(group)]].float())

    return _collective(op, check, launch, fallback, input_, None, sizes, group, epilogue)


def _collective(op: str, check, launch, fallback, input_, output, sizes, group, epilogue=None,
                raise_flags: bool = True, dtype_code: int | None = None) -> torch.Tensor:
    """What both collectives do around their kernels: validate (``check``: ``validation.check_call``
    or ``check_gather_call``), allocate the output, serve calls that need no kernel, hand groups
    whose ranks cannot reach each other's memory to ``fallback`` (NCCL), make the tensors the
    kernels take (contiguous rows on 4-byte boundaries; anything else goes through a copy), run
    ``launch(ws, call, inp, out)`` under the workspace's stream guard, copy back, and on CPU raise
    what the kernel flagged. ``dtype_code``: the caller's dtype for the call digests, where the
    tensors are words of it (``words.py``)."""
    group = group if group is not None else dist.group.WORLD
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    call = check(input_, output, sizes, world, rank)
    _check_backend(input_, group, op)
    if dtype_code is not None:  # the caller's dtype where the tensors are words of it (all_gatherv)
        launch = functools.partial(launch, dtype_code=dtype_code)
    if epilogue is not None:  # the kernels' f: the epilogue's f_out, or nothing (any tensor: unused)
        output = epilogue.f_out if epilogue.f_out is not None else epilogue.out
    elif output is None:
        output = torch.empty((call.out_rows, *call.rest), dtype=input_.dtype, device=input_.device)
    if call.hidden == 0:
        return output if epilogue is None else epilogue.result
    if world == 1 and call.sizes is not None:
        if epilogue is not None:
            return epilogue.apply_torch(input_.float())
        output.copy_(input_)
        return output

    ws = workspace(group, input_.device)
    if ws.hierarchy is not None:
        _need_nccl(input_, group, op, "this group spans nodes and the hop between them is NCCL's")
        if op == "all_gatherv":
            _all_gatherv_hierarchy(ws, call, input_, output, dtype_code)
        elif epilogue is None:
            _reduce_scatterv_hierarchy(ws, call, input_, output)
        else:  # the hierarchy's sum (rounded once more than on one node), then the epilogue in torch
            f = torch.empty((call.out_rows, *call.rest), dtype=input_.dtype, device=input_.device)
            _reduce_scatterv_hierarchy(ws, call, input_, f)
            n = call.sizes[rank] if call.sizes is not None else int(call.sizes_dev[rank])  # device sizes: a sync
            output = epilogue.apply_torch(f[:n].float())
        if input_.device.type == "cpu" or CHECK_EVERY_CALL:
            ws.check()
        return output
    if world > MAX_WORLD:
        raise ValueError(f"{op}: a group of {world} ranks must split into nodes of at most {MAX_WORLD} ranks (ranks of a "
                         f"host contiguous, as many on every host, or reduce_scatterv.workspace(group, ranks_per_node=G)); "
                         f"this group: {ws.topology_note}")
    if not ws.p2p:
        _need_nccl(input_, group, op, f"this group's ranks cannot read each other's memory ({ws.topology_note}), "
                   "so NCCL carries the call")
        return fallback(input_, output, call, group)
    if epilogue is not None:  # its tensors are contiguous (checked); the kernel reads input_ as rows
        inp = input_ if input_.is_contiguous() and input_.data_ptr() % 4 == 0 else input_.contiguous().clone()
        with ws.calling():
            launch(ws, call, inp, output)
        if inp.device.type == "cpu" or CHECK_EVERY_CALL:
            ws.check()
        return epilogue.result
    inp = input_
    if not input_.is_contiguous():
        inp = input_.contiguous()
    elif input_.data_ptr() % 4:
        inp = input_.clone()
    out = output
    if not output.is_contiguous() or output.data_ptr() % 4:
        out = torch.empty(output.shape, dtype=output.dtype, device=output.device)
    with ws.calling():
        launch(ws, call, inp, out)
    if out is not output:
        output.copy_(out)
    if raise_flags and (inp.device.type == "cpu" or CHECK_EVERY_CALL):
        ws.check()
    return output


def node_step(x: torch.Tensor, out: torch.Tensor, sizes: list, group, gather: bool = False) -> None:
    """A multi-node call's node step (``hierarchy.py``): ``reduce_scatterv`` (``gather``:
    ``all_gatherv``) over the node's group with host ``sizes``, its flags left in the node workspace
    (raised by the whole group's ``check()`` after the rail hop, which every rank must reach)."""
    if gather:
        _collective("all_gatherv", check_gather_call, _launch_all_gatherv, _nccl_gather_fallback, x, out, sizes,
                    group, raise_flags=False)
    else:
        _collective("reduce_scatterv", check_call, _launch_reduce_scatterv, _nccl_fallback, x, out, sizes, group,
                    raise_flags=False)


def _all_gatherv_hierarchy(ws: Workspace, call: Call, input_: torch.Tensor, output: torch.Tensor,
                           dtype_code: int | None = None) -> None:
    h = ws.hierarchy
    tag = call_tag(MODE_CODES["hierarchy_gather"], ws.world_size, h.G, call.hidden,
                   dtype_code or FLOAT_CODES[input_.dtype], *_gather_facts(call))
    out = output if output.is_contiguous() else torch.empty(output.shape, dtype=output.dtype, device=output.device)
    if out is not output and call.sizes is None:  # rows past sum(sizes) stay as they were
        out.copy_(output)
    h.all_gatherv(input_, out, call, tag)
    if out is not output:
        output.copy_(out)


def _reduce_scatterv_hierarchy(ws: Workspace, call: Call, input_: torch.Tensor, output: torch.Tensor) -> None:
    h = ws.hierarchy
    facts = (call.sizes if call.sizes is not None else (-1, call.out_rows))
    tag = call_tag(MODE_CODES["hierarchy"], ws.world_size, h.G, call.hidden, FLOAT_CODES[input_.dtype], call.rows,
                   int(h.hop_fp32), *facts)
    out = output if output.is_contiguous() else torch.empty(output.shape, dtype=output.dtype, device=output.device)
    h.reduce_scatterv(input_, out, call, tag)
    if out is not output:
        output.copy_(out)


def _launch_reduce_scatterv(ws: Workspace, call: Call, inp: torch.Tensor, out: torch.Tensor, epilogue=None) -> None:
    plan = plan_call(ws, call, inp, epilogue)
    kern = kernel_module(inp.device.type)
    protocol = (ws.timeout_arg, plan.tag, CHAOS_SEED)
    if plan.mode in ("ll", "push"):
        kern.push_launch(ws, inp, out, call, plan.mode == "ll", plan.config, _multiprocessors(inp.device), protocol,
                         epilogue)
    else:
        kern.launch(ws, inp, out, call, plan.variant, plan.config, _multiprocessors(inp.device), protocol, epilogue)


def _nccl_fallback(input_: torch.Tensor, output: torch.Tensor, call: Call, group) -> torch.Tensor:
    """NCCL's grouped-reduce reduce_scatterv (one ncclReduce per root): what SGLang does upstream.

    Only for groups whose ranks cannot reach each other's memory (decided collectively when the
    workspace is created), so no call mixes an NCCL hop with the kernels' protocol; ranks that
    disagree here get NCCL's behaviour (its watchdog), not the kernels' checks."""
    sizes = call.sizes
    if sizes is None:  # device sizes: the fallback needs them on the host
        sizes = tuple(int(s) for s in call.sizes_dev.tolist())
        warnings.warn("reduce_scatterv fallback: device sizes were copied to the host (one sync per call)",
                      RuntimeWarning, stacklevel=3)
    rank = dist.get_rank(group)
    chunks = list(input_[: sum(sizes)].split(list(sizes)))
    dist.reduce_scatter(output[: sizes[rank]], chunks, group=group)
    return output


def all_gatherv(
    input_: torch.Tensor,
    output: torch.Tensor | None = None,
    sizes: Sequence[int] | torch.Tensor | None = None,
    group: dist.ProcessGroup | None = None,
) -> torch.Tensor:
    """Every rank's rows, in rank order, on every rank: an uneven all-gather.

    Same names and meaning as SGLang's ``GroupCoordinator.all_gatherv`` for one tensor. Collective:
    every rank of ``group`` calls it with the same ``sizes``. It runs over the same workspace as
    :func:`reduce_scatterv` (calls of both may follow each other in any order) with the same
    guarantees (timeouts, disagreement checks, graph safety); the copy is exact (no arithmetic).

    Args:
        input_: this rank's rows, ``[sizes[rank], *rest]``, of any dtype whose rows are a whole
            number of 2 bytes (bfloat16, float16 and float32 as elements; int64 token ids, int32,
            uint8, float64... as 4- or 2-byte words of the same bits, ``words.py``). If it lies in
            the group's workspace it is read in place (``Workspace.empty`` is collective: allocate
            the largest rank's rows on every rank and slice).
        output: optional ``[sum(sizes), *rest]`` tensor of the same dtype and device.
        sizes: rows of each rank: a list/tuple of ints, an int32/int64 tensor of ``world_size``
            counts on the device (then ``input_`` and ``output`` are capacities, the same on every
            rank, ``output`` is required, and rows past ``sum(sizes)`` are left untouched), or None
            (every rank has ``input_.shape[0]`` rows).
        group: the process group: for CUDA tensors NCCL's, or gloo's where the ranks reach each
            other's memory on one node (it only sets the workspace up); gloo for CPU emulation.

    Returns:
        ``[sum(sizes), *rest]``: rank 0's rows, then rank 1's, ...

    On a group of several nodes it runs the hierarchy of ``kernels/hierarchy.py`` (a rail all-gather
    on NCCL, then the node's fused gather, every rank block verified by its check rows): the same
    arguments and result; between nodes, NCCL's failure semantics for calls whose NCCL counts differ.
    """
    w = None
    if isinstance(input_, torch.Tensor) and input_.dim() > 0 and input_.dtype not in SUPPORTED_DTYPES:
        w = as_words("all_gatherv", input_, output)  # an exact copy: other dtypes travel as words (words.py)
        input_, output = w.input_, w.output
    result = _collective("all_gatherv", check_gather_call, _launch_all_gatherv, _nccl_gather_fallback, input_, output,
                         sizes, group, dtype_code=w.code if w is not None else None)
    return result if w is None else w.restore(result)


def _gather_facts(call: Call) -> tuple:
    """A gather call's row facts for its digest: host sizes fix every row count; with device sizes
    both capacities must agree (the kernel checks the sizes against them)."""
    return (*call.sizes,) if call.sizes is not None else (-1, call.rows, call.out_rows)


def gather_tag(mode: str, world: int, call: Call, dtype_code: int) -> int:
    """The host's part of a gather call's digest (``call_tag``)."""
    return call_tag(MODE_CODES[mode], world, call.hidden, dtype_code, *_gather_facts(call))


def gather_mode(ws: Workspace, call: Call, elt: int) -> str:
    """The gather's mode from rank-agreed facts: "gather_ll" (flagged words) while every source's
    rows fit ``gather_ll_bytes``, "gather_packed" (packed flagged words) among those from
    ``PACKED_MIN_BYTES`` per source on, else "gather" (the pull)."""
    if "ll" in MODES_OFF or not kernel_module(ws.device.type).gather_ll_fits(ws, call, elt):
        return "gather"
    packed = PACKED_MIN_BYTES is not None and call.largest_rows * call.hidden * elt >= PACKED_MIN_BYTES
    return "gather_packed" if packed else "gather_ll"


def _launch_all_gatherv(ws: Workspace, call: Call, inp: torch.Tensor, out: torch.Tensor,
                        dtype_code: int | None = None) -> None:
    """Flagged words (``all_gatherv_ll_kernel``) or the pull kernel (``all_gatherv_kernel``), as
    ``gather_mode`` chooses."""
    elt = inp.element_size()
    world = ws.world_size
    kern = kernel_module(inp.device.type)
    mode = gather_mode(ws, call, elt)
    protocol = (ws.timeout_arg, gather_tag(mode, world, call, dtype_code or FLOAT_CODES[inp.dtype]), CHAOS_SEED)
    config = pick_config(inp.device, mode, world, inp.dtype, call)
    if mode in ("gather_ll", "gather_packed"):
        kern.gather_ll_launch(ws, inp, out, call, config, _multiprocessors(inp.device), protocol,
                              packed=mode == "gather_packed")
        return
    ws.reserve_scratch(call.largest_rows * call.hidden * elt)  # rank-agreed staging room, before the residency check
    stage = not (ws.holds(inp) and inp.data_ptr() % 16 == 0)
    kern.gather_launch(ws, inp, out, call, stage, config, _multiprocessors(inp.device), protocol)


def _nccl_gather_fallback(input_: torch.Tensor, output: torch.Tensor, call: Call, group) -> torch.Tensor:
    """NCCL's all-gather over rows padded to the largest rank's count, then compacted: only for
    groups whose ranks cannot reach each other's memory (as ``_nccl_fallback``)."""
    sizes = call.sizes
    if sizes is None:
        sizes = tuple(int(s) for s in call.sizes_dev.tolist())
        warnings.warn("all_gatherv fallback: device sizes were copied to the host (one sync per call)",
                      RuntimeWarning, stacklevel=3)
    m, world, rank = max(sizes), len(sizes), dist.get_rank(group)
    padded = torch.zeros((m, *call.rest), dtype=input_.dtype, device=input_.device)
    padded[: sizes[rank]].copy_(input_[: sizes[rank]])
    gathered = torch.empty((world * m, *call.rest), dtype=input_.dtype, device=input_.device)
    all_gather_even(gathered, padded, group=group)
    at = 0
    for r, n in enumerate(sizes):
        output[at: at + n].copy_(gathered[r * m: r * m + n])
        at += n
    return output
