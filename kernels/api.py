"""``reduce_scatterv``: the drop-in for SGLang's ``GroupCoordinator.reduce_scatterv``."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import torch
import torch.distributed as dist

from . import configs
from ._triton_mode import kernel_module
from .validation import Call, check_call
from .workspace import Workspace, workspace

MAX_WORLD = 8  # ranks of one node; host sizes travel as 8 kernel scalars
SPIN_LIMIT = {"cuda": 20_000_000, "cpu": 2_000_000}  # polls before a wait gives up (tens of seconds)
# Relay a heavy owner's excess rows only when that saves the owner this many inbound bytes:
# relaying saves (W-2) * excess bytes of peer reads but adds a second hop (a few microseconds,
# about 1 MiB of NVLink time). On CPU every excess is relayed so that the tests exercise it.
RELAY_MIN_SAVED_BYTES = {"cuda": int(os.environ.get("KERNELS_RELAY_MIN_BYTES", 1 << 20)), "cpu": 0}
# ... and only when it cuts the busiest GPU's traffic to this % of the direct pull's (see the kernel)
RELAY_MAX_COST_PCT = int(os.environ.get("KERNELS_RELAY_MAX_COST_PCT", 65))
# With host sizes on CUDA, calls that configs.DISPATCH predicts NCCL's grouped reduce to run faster
# (large skewed calls on 3+ GPUs) go to NCCL. KERNELS_NCCL_DISPATCH=0 keeps every call on the kernels.
NCCL_DISPATCH = os.environ.get("KERNELS_NCCL_DISPATCH", "1") == "1"
# Modes the planner may not pick (A/B runs): "ll" and/or "push" (the workspace's byte limits say
# where each applies; KERNELS_LL_BYTES=0 / KERNELS_PUSH_BYTES=0 turn them off for good).
MODES_OFF: frozenset = frozenset()
_SETTINGS = ("RELAY_MIN_SAVED_BYTES", "RELAY_MAX_COST_PCT", "NCCL_DISPATCH", "MODES_OFF")


@contextlib.contextmanager
def overrides(**settings):
    """Plan the calls made inside with other module settings (``NCCL_DISPATCH``, ``MODES_OFF``,
    ``RELAY_MAX_COST_PCT``, ``RELAY_MIN_SAVED_BYTES``): benchmarks' A/B runs and tests. Under CUDA-graph
    capture the plan is fixed at capture, so replays keep what was chosen inside."""
    unknown = set(settings) - set(_SETTINGS)
    if unknown:
        raise ValueError(f"unknown reduce_scatterv settings {sorted(unknown)}; known: {_SETTINGS}")
    saved = {k: globals()[k] for k in settings}
    globals().update(settings)
    try:
        yield
    finally:
        globals().update(saved)


def _spin_limit(device_type: str) -> int:
    return int(os.environ.get("KERNELS_SPIN_LIMIT", SPIN_LIMIT[device_type]))


@lru_cache(maxsize=None)
def _multiprocessors(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 2  # CPU emulation: a couple of "programs per SM" keeps the interpreter quick


@lru_cache(maxsize=None)
def _device_slug(device: torch.device) -> str:
    return configs.gpu_slug(torch.cuda.get_device_name(device)) if device.type == "cuda" else "cpu"


def _check_backend(input_: torch.Tensor, group: dist.ProcessGroup) -> None:
    backend = str(dist.get_backend(group)).lower()
    if input_.device.type == "cuda" and "nccl" not in backend:
        raise ValueError(f"reduce_scatterv: CUDA tensors need an NCCL process group, this group's backend is {backend}")
    if input_.device.type == "cpu" and "gloo" not in backend:
        raise ValueError(f"reduce_scatterv: CPU tensors (CPU emulation) need a gloo process group, got {backend}")
    if input_.device.type not in ("cuda", "cpu"):
        raise ValueError(f"reduce_scatterv: tensors on {input_.device} are not supported (cuda or cpu)")


def pick_config(device: torch.device, mode: str, world: int, dtype: torch.dtype, call: Call) -> configs.KernelConfig:
    """The tuned (or default) config for a call, looked up from rank-agreed facts."""
    if device.type == "cpu":
        return configs.CPU_DEFAULT
    max_rows = max(call.sizes) if call.sizes is not None else call.rows
    nbytes = max_rows * call.hidden * torch.finfo(dtype).bits // 8
    return configs.lookup(_device_slug(device), mode, world, str(dtype).removeprefix("torch."), call.hidden, nbytes)


@dataclass(frozen=True)
class Plan:
    """How one call runs. ``mode`` (and with it the kernel's barrier structure) is decided from
    rank-agreed facts only, so every rank runs the same protocol; ``variant.stage`` (copy the input
    into the workspace first) is each rank's own business."""

    mode: str  # "ll" (push flagged words), "push" (push data + progress signals), "small"
    # (double-buffered pull), "large" (in-place pull, relay), "nccl" (NCCL's grouped reduce: host
    # sizes the dispatch model says it serves faster)
    config: configs.KernelConfig
    variant: object | None  # reduce_scatterv_kernel.Variant for "small"/"large"


def plan_call(ws: Workspace, call: Call, inp: torch.Tensor) -> Plan:
    """Choose mode, config and variant for a call; grows the workspace where the mode needs it
    (collective, but every rank decides the same).

    In order: flagged words ("ll") up to ``ll_bytes`` per destination; plain push up to the
    workspace's ``push_max_bytes`` per destination; else the pull kernel ("small" for inputs up to
    ``stage_bytes``, "large" beyond; both relay a heavy owner's excess rows). With host sizes on
    CUDA, calls the dispatch model predicts NCCL to serve faster go to NCCL instead of a push or a
    pull (large skew on 3+ GPUs)."""
    elt = inp.element_size()
    kern = kernel_module(inp.device.type)
    dispatch = NCCL_DISPATCH and inp.device.type == "cuda" and call.sizes is not None
    if "ll" not in MODES_OFF and kern.push_fits(ws, call, elt, True):
        return Plan("ll", pick_config(inp.device, "ll", ws.world_size, inp.dtype, call), None)
    if "push" not in MODES_OFF and kern.push_fits(ws, call, elt, False):
        config = pick_config(inp.device, "push", ws.world_size, inp.dtype, call)
        if dispatch and _prefers_nccl(call.sizes, call.hidden * elt, False):  # pushing: a direct transfer
            return Plan("nccl", config, None)
        ws.reserve_slots(kern.destination_bytes(call, elt))
        return Plan("push", config, None)
    nbytes = call.rows * call.hidden * elt  # the whole input: sum(sizes) rows, or the capacity
    mode = "small" if nbytes <= ws.layout.stage_bytes else "large"
    config = pick_config(inp.device, mode, ws.world_size, inp.dtype, call)
    tile_saving = max(1, ws.world_size - 2) * config.block * elt  # bytes one relayed tile saves the owner
    variant = kern.Variant(double_buffer=mode == "small", stage=True,  # large calls: decided below
                           relay=ws.world_size >= 3 and config.relay,
                           relay_min_tiles=max(1, -(-RELAY_MIN_SAVED_BYTES[inp.device.type] // tile_saving)),
                           relay_max_cost_pct=RELAY_MAX_COST_PCT)
    # Relays push sums into the owner's scratch at the rows' places in the input: large calls
    # reserve it below, small ones fit the scratch every 3+ rank workspace starts with.
    if call.sizes is not None:
        # host sizes (rank-agreed): compile the relay code in only when this call relays something
        # (in the small variant it costs ~2.5 us even when idle), and maybe leave the call to NCCL
        relays = _relays(call.sizes, call.hidden, config.block, variant)
        variant = dataclasses.replace(variant, relay=relays)
        if dispatch and _prefers_nccl(call.sizes, call.hidden * elt, relays):
            return Plan("nccl", config, variant)
    elif mode == "small":  # device sizes: relaying stays a large-call feature (no cost for small ones)
        variant = dataclasses.replace(variant, relay=False)
    if mode == "large":
        ws.reserve(max_input_bytes=nbytes)  # before the residency check: growing moves the workspace
        variant = dataclasses.replace(variant, stage=not (ws.holds(inp) and inp.data_ptr() % 16 == 0))
    return Plan(mode, config, variant)


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


@lru_cache(maxsize=4096)
def _prefers_nccl(sizes: tuple, row_bytes: int, relayed: bool) -> bool:
    return configs.DISPATCH.prefers_nccl(list(sizes), row_bytes, relayed)


def reduce_scatterv(
    input_: torch.Tensor,
    output: torch.Tensor | None = None,
    sizes: Sequence[int] | torch.Tensor | None = None,
    group: dist.ProcessGroup | None = None,
) -> torch.Tensor:
    """Sum every rank's partial rows and give each rank its own rows: an uneven reduce-scatter.

    Same names and meaning as SGLang's ``GroupCoordinator.reduce_scatterv``. Collective: every rank
    of ``group`` (default group if None) calls it with the same ``sizes`` and row count.

    Args:
        input_: this rank's partial sums, ``[sum(sizes), *rest]`` (SUM_LEN layout: rank 0's rows
            first), bfloat16, float16 or float32, contiguous or not. Never modified. If it lies in
            the group's workspace (``kernels.workspace(group).empty(...)``) it is read in place.
        output: optional ``[sizes[rank], *rest]`` tensor of the same dtype and device; the result is
            written into it and it is returned.
        sizes: rows each rank receives: a list/tuple of ints (checked on the host), or an int32/int64
            tensor of ``world_size`` counts on the device (no host synchronisation; then ``input_`` and
            ``output`` are capacities of at least ``sum(sizes)`` and ``sizes[rank]`` rows, rows past
            the counts are left untouched, and ``output`` is required), or None for an even split.
        group: the process group (NCCL for CUDA tensors, gloo for CPU emulation).

    Returns:
        ``[sizes[rank], *rest]``: the sum over ranks of rows ``[offset_rank, offset_rank + sizes[rank])``,
        accumulated in float32 and rounded once to the input dtype by the kernels. Calls the API hands
        to NCCL (host sizes, 3+ GPUs, large and skewed: see ``configs.DispatchModel``) get NCCL's
        numerics instead (its chain rounds the running sum to the dtype at every hop, like SGLang's
        reduce_scatterv today); ``KERNELS_NCCL_DISPATCH=0`` keeps every call on the kernels.

    On the kernels, one Triton launch does the exchange, the sum and the store: no NCCL call, no
    host synchronisation, no allocation when ``output`` is given and both tensors are contiguous
    (others go through a copy), CUDA-graph safe once the workspace is large enough
    (``Workspace.reserve``). Device-side problems (device sizes that
    are negative or exceed a capacity, a peer that never arrives) are flagged, not raised, on CUDA:
    ``kernels.workspace(group).check()`` raises them (set ``KERNELS_CHECK=1`` to check every call).
    """
    group = group if group is not None else dist.group.WORLD
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    if world > MAX_WORLD:
        raise ValueError(f"reduce_scatterv: groups of at most {MAX_WORLD} ranks (one node) are supported, got {world}")
    call = check_call(input_, output, sizes, world, rank)
    _check_backend(input_, group)
    if output is None:
        output = torch.empty((call.out_rows, *call.rest), dtype=input_.dtype, device=input_.device)
    if call.hidden == 0:
        return output
    if world == 1 and call.sizes is not None:
        output.copy_(input_)
        return output

    ws = workspace(group, input_.device)
    if not ws.p2p:
        return _nccl_fallback(input_, output, call, group)

    # the kernels want contiguous rows on 4-byte boundaries; anything else goes through a copy
    inp = input_
    if not input_.is_contiguous():
        inp = input_.contiguous()
    elif input_.data_ptr() % 4:
        inp = input_.clone()
    out = output
    if not output.is_contiguous() or output.data_ptr() % 4:
        out = torch.empty(output.shape, dtype=output.dtype, device=output.device)
    plan = plan_call(ws, call, inp)
    kern = kernel_module(inp.device.type)
    if plan.mode == "nccl":
        _nccl_fallback(inp, out, call, group)
    elif plan.mode in ("ll", "push"):
        kern.push_launch(ws, inp, out, call, plan.mode == "ll", plan.config, _multiprocessors(inp.device),
                         _spin_limit(inp.device.type))
    else:
        kern.launch(ws, inp, out, call, plan.variant, plan.config, _multiprocessors(inp.device),
                    _spin_limit(inp.device.type))
    if out is not output:
        output.copy_(out)
    if inp.device.type == "cpu" or os.environ.get("KERNELS_CHECK", "0") == "1":
        ws.check()
    return output


def _nccl_fallback(input_: torch.Tensor, output: torch.Tensor, call: Call, group) -> torch.Tensor:
    """NCCL's grouped-reduce reduce_scatterv (one ncclReduce per root): what SGLang does upstream."""
    sizes = call.sizes
    if sizes is None:  # device sizes: the fallback needs them on the host
        sizes = tuple(int(s) for s in call.sizes_dev.tolist())
        warnings.warn("reduce_scatterv fallback: device sizes were copied to the host (one sync per call)",
                      RuntimeWarning, stacklevel=3)
    rank = dist.get_rank(group)
    chunks = list(input_[: sum(sizes)].split(list(sizes)))
    dist.reduce_scatter(output[: sizes[rank]], chunks, group=group)
    return output
