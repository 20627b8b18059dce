"""What the SGLang and vLLM plugins share.

- **Meeting a group** (:func:`meet`, collective over the engine group's CPU group, when the engine
  creates its ``GroupCoordinator``): every rank's plugin settings are compared, the switch first,
  and a mismatch raises on every rank; then the group is judged servable or not from facts every
  rank agrees on (world size, hosts, device type).
- **Start-up reservation** (:func:`reserve`): the served groups' workspaces are created and grown
  to the footprint cap (``KERNELS_ENGINE_WORKSPACE_MB``) right away, before the engine loads
  weights and sizes its KV cache, so that no call, and no graph capture, ever grows them.
- **Per call** (:func:`refusal`): the kernel serves a call unless a rank-agreed fact says otherwise
  (an engine mode, dim, dtype, device, input bytes over the reservation); never a rank-local one
  such as the output, so every rank makes the same choice. A refused call runs the engine's own
  method, with its reason logged once (:func:`log_once`).
- :func:`run` makes the call: ``reduce_scatterv.reduce_scatterv`` on the caller's current stream, through
  the custom op while ``torch.compile`` traces.
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist

from .. import api, configs, custom_op, settings
from ..validation import SUPPORTED_DTYPES
from ..layout import Layout
from ..workspace import default_ll_bytes, default_push_bytes, exists, release, workspace

SWITCH = "KERNELS_ENGINE_PLUGIN"
CAP = "KERNELS_ENGINE_WORKSPACE_MB"
MIN_INPUT_BYTES = 64 << 10  # a reservation smaller than this serves nothing useful: the group is not served

_cpu_emulation = False
_logged: set = set()


def allow_cpu_emulation(allowed: bool = True) -> None:
    """Tests only: let the plugins serve CPU tensors over gloo (the kernels in Triton's interpreter).
    Call it in every rank before the engine creates its groups; it is compared across ranks."""
    global _cpu_emulation
    _cpu_emulation = bool(allowed)


def logger(engine: str) -> logging.Logger:
    """The plugin's logger, under the engine's namespace so that the engine's handlers print it."""
    return logging.getLogger(f"{engine}.kernels_plugin")


def size_text(nbytes: int) -> str:
    """``nbytes`` for a log line: "512 KiB", "128 MiB", "1.5 GiB"."""
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if nbytes >= 1 << shift:
            return f"{nbytes / (1 << shift):.3g} {unit}"
    return f"{nbytes} B"


def log_once(engine: str, key: tuple, message: str, level: int = logging.WARNING) -> bool:
    """Log ``message`` the first time ``key`` is seen in this process; returns whether it logged."""
    if (engine, *key) in _logged:
        return False
    _logged.add((engine, *key))
    logger(engine).log(level, "reduce_scatterv plugin: %s", message)
    return True


# ---- the footprint
def engine_keywords(world_size: int) -> dict:
    """Workspace keywords of an engine group. Engines call reduce_scatterv only, so the gather's
    flagged-word limit stays the reduce-scatter's (the library default on 2 ranks, 1.5 MiB per
    source, would make the slots 4 MiB larger for nothing the engine calls)."""
    return dict(gather_ll_bytes=default_ll_bytes(world_size))


def footprint_bytes(world_size: int, max_input_bytes: int) -> int:
    """Bytes of one rank's workspace reserved for inputs of up to ``max_input_bytes`` (all ranks' rows
    together): header, flagged-word slots, plain-push slots (``2 * world`` of
    ``min(max_input_bytes, push limit)``) and the pull kernel's scratch (``max_input_bytes`` rounded up
    to a power of 2), with the library's default limits and ``engine_keywords``."""
    fresh = Layout(world_size, default_ll_bytes(world_size), 0, 0, 0, **engine_keywords(world_size))
    grown = fresh.grown(push_bytes=min(max_input_bytes, default_push_bytes(world_size)), scratch_bytes=max_input_bytes)
    return grown.total_bytes


def max_input_bytes(world_size: int, cap_bytes: int) -> int:
    """The largest power-of-2 input size whose footprint fits in ``cap_bytes`` (0 if none of at least
    ``MIN_INPUT_BYTES`` does). 256 MiB gives 128 MiB on 2 to 8 ranks."""
    best, x = 0, MIN_INPUT_BYTES
    while footprint_bytes(world_size, x) <= cap_bytes:
        best, x = x, 2 * x
    return best


# ---- meeting a group
@dataclass(frozen=True)
class Meeting:
    """What every rank of an engine group agreed on when the plugin met it."""

    on: bool  # the switch (equal on every rank, or meet raised)
    reason: str | None  # why the fused kernel cannot serve this group at all (None: it can)


def plugin_settings(engine_modes: dict[str, bool]) -> dict[str, object]:
    """This rank's settings that every rank of a group must share: the switch, the cap, CPU
    emulation (tests) and the engine's modes that change how it reduces (deterministic modes)."""
    try:
        cap: object = settings.engine_workspace_bytes() >> 20
    except ValueError as e:  # compared like any value: every rank learns of it, none waits alone
        cap = f"invalid ({e})"
    return {SWITCH: int(settings.engine_plugin()), CAP: cap, "cpu emulation (tests)": _cpu_emulation,
            **{k: bool(v) for k, v in engine_modes.items()}}


def _disagreement(engine: str, group_name: str, everyone: list[dict]) -> str | None:
    keys = [SWITCH] if len({f[SWITCH] for f in everyone}) > 1 or not everyone[0][SWITCH] else list(everyone[0])
    differ = [k for k in keys if len({repr(f.get(k)) for f in everyone}) > 1]
    if not differ:
        return None
    return (f"the {engine} reduce_scatterv plugin: the ranks of group {group_name} disagree on "
            + "; ".join(f"{k}: " + ", ".join(f"rank {r} = {f.get(k)!r}" for r, f in enumerate(everyone))
                        for k in differ)
            + f". Set {SWITCH} (and {CAP}, and the engine's modes) alike on every rank: every rank must make "
            "the same choice between the fused kernel and the engine's method")


def meet(engine: str, group_name: str, *, cpu_group: dist.ProcessGroup, world_size: int, device: torch.device,
         backend: str, engine_modes: dict[str, bool]) -> Meeting:
    """Collective over ``cpu_group`` (a gloo group of the engine group's ranks): compare the plugin's
    settings (switch first) and raise RuntimeError on every rank if they differ; then judge, from
    rank-agreed facts, whether the fused kernel can serve this group."""
    mine = plugin_settings(engine_modes)
    everyone: list = [None] * world_size
    dist.all_gather_object(everyone, (mine, socket.gethostname()), group=cpu_group)
    problem = _disagreement(engine, group_name, [s for s, _ in everyone])
    if problem:
        raise RuntimeError(problem)
    if not mine[SWITCH]:
        return Meeting(False, None)
    hosts = len({h for _, h in everyone})
    reason = None
    if world_size < 2:
        reason = "one rank: nothing to reduce"
    elif world_size > api.MAX_WORLD:
        reason = f"{world_size} ranks: the fused kernel serves groups of up to {api.MAX_WORLD} ranks (one node)"
    elif hosts > 1:
        reason = (f"its ranks are on {hosts} hosts: the plugins serve one node (the library's multi-node path builds "
                  "a host plan per sizes tuple, which an engine's graph capture cannot make)")
    elif device.type == "cpu" and not _cpu_emulation:
        reason = "CPU tensors: CPU emulation (Triton's interpreter) is for tests only"
    elif device.type not in ("cuda", "cpu"):
        reason = f"tensors on {device.type}: the fused kernel runs on CUDA GPUs"
    elif ("nccl" if device.type == "cuda" else "gloo") not in backend.lower():
        reason = f"its device group's backend is {backend} (the fused kernel needs nccl on GPUs, gloo on CPU)"
    return Meeting(True, reason)


# ---- reservation
@dataclass
class Served:
    """An engine group whose reduce_scatterv runs the fused kernel."""

    engine: str
    name: str  # the engine's name of the group (``unique_name``)
    groups: list  # one process group (hence one workspace) per micro-batch that may be in flight
    device: torch.device
    max_input_bytes: int  # largest input (all ranks' rows, in bytes) the reservation serves


def reserve(engine: str, name: str, groups: Sequence[dist.ProcessGroup], device: torch.device) -> Served | None:
    """Collective over each of ``groups``: create its workspace and grow it to the footprint cap now
    (start-up: before the engine sizes its KV cache, long before graph capture). Returns None, with
    the reason logged once, where the cap is too small or the ranks cannot reach each other's memory."""
    world = dist.get_world_size(groups[0])
    cap = settings.engine_workspace_bytes()
    limit = max_input_bytes(world, cap)
    if limit == 0:
        log_once(engine, (name, "cap"), f"group {name}: runs the engine's own reduce_scatterv: {CAP}="
                 f"{cap >> 20} leaves no room for inputs of {size_text(MIN_INPUT_BYTES)} "
                 f"({size_text(footprint_bytes(world, MIN_INPUT_BYTES))} needed on {world} ranks); raise it")
        return None
    for g in groups:
        # a workspace the application made for this group first is used as it is
        ws = workspace(g, device) if exists(g, device) else workspace(g, device, **engine_keywords(world))
        if not ws.p2p:  # decided collectively at creation: the same on every rank
            release(g)
            log_once(engine, (name, "p2p"), f"group {name}: runs the engine's own reduce_scatterv: its GPUs cannot "
                     "read each other's memory (no P2P)")
            return None
        ws.reserve(max_input_bytes=limit)
    total = sum(workspace(g, device).layout.total_bytes for g in groups)
    log_once(engine, (name, "footprint"), f"group {name}: reduce_scatterv runs the fused kernel for inputs of up "
             f"to {size_text(limit)} (all ranks' rows together); reserved {size_text(total)} of symmetric memory "
             f"per rank on {device} ({len(groups)} workspace(s), cap {CAP}={cap >> 20})", logging.INFO)
    _say_if_untuned(engine, device, world)
    return Served(engine, name, list(groups), device, limit)


def ready_for_capture(served: Served) -> None:
    """Before the engine captures graphs: every workspace of ``served`` already holds its
    reservation (made at start-up), so this grows nothing; collective only if it ever had to."""
    for g in served.groups:
        workspace(g, served.device).reserve(max_input_bytes=served.max_input_bytes)


def _say_if_untuned(engine: str, device: torch.device, world: int) -> None:
    if device.type != "cuda":
        return
    name = torch.cuda.get_device_name(device)
    if not any(f"/W{world}/" in k for k in configs.load_table(configs.gpu_slug(name))):
        log_once(engine, ("untuned", name, world),
                 f"no tune entry for {name} at {world} ranks: the kernels use their default launch configs "
                 "(kernels/configs.py) and the mode limits measured on H200 (kernels/workspace.py); tune with "
                 f"`torchrun --nproc-per-node {world} -m bench.tune` and point KERNELS_TUNE_FILE at the result")


# ---- per call
def refusal(served: Served, input_: torch.Tensor, dim: int, engine_modes: dict[str, bool]) -> tuple[str, str] | None:
    """``(kind, reason)`` when the engine's own method must run this call, None when the fused kernel
    serves it. Every fact used is the same on every rank of a well-formed call (engine modes compared
    at meeting, dim, dtype, device type, the input's byte count: ``sum(sizes)`` rows of one width);
    the output, which may differ per rank, is never looked at."""
    for flag, on in engine_modes.items():
        if on:
            return flag, f"{flag}=1 (the engine's deterministic path keeps the reduction order)"
    if input_.dim() == 0 or dim % input_.dim() != 0:
        return "dim", f"dim={dim} of a {input_.dim()}-d input (the fused kernel reduces along dim 0)"
    if input_.dtype not in SUPPORTED_DTYPES:
        return f"dtype {input_.dtype}", f"dtype {input_.dtype} (the fused kernel takes bfloat16, float16 and float32)"
    if input_.device.type != served.device.type:
        return f"device {input_.device.type}", f"tensors on {input_.device.type} (the group's workspace is on {served.device})"
    nbytes = input_.numel() * input_.element_size()
    if nbytes > served.max_input_bytes:
        return "size", (f"inputs over {size_text(served.max_input_bytes)} (this one: {size_text(nbytes)}), more "
                        f"than the reserved workspace holds; raise {CAP} to serve them")
    return None


def log_unserved(engine: str, name: str, reason: str) -> None:
    """Once per group: why none of its calls run the fused kernel."""
    log_once(engine, (name, "group"), f"group {name}: {reason}: the engine's own reduce_scatterv runs its calls")


def log_refusal(served: Served, kind: str, reason: str) -> None:
    log_once(served.engine, (served.name, kind), f"group {served.name}: {reason}: the engine's own "
             "reduce_scatterv runs these calls (logged once per reason)")


def run(served: Served, input_: torch.Tensor, output: torch.Tensor | None, sizes, ubatch: int = 0) -> torch.Tensor:
    """The fused call on the caller's current stream, in micro-batch ``ubatch``'s workspace. The input
    is staged into the workspace by the kernels unless it already lies there (no copy here)."""
    group = served.groups[ubatch]
    if sizes is not None and not isinstance(sizes, torch.Tensor):
        sizes = [int(s) for s in sizes]
    if torch.compiler.is_compiling():
        return custom_op.reduce_scatterv(input_, output, sizes, group)
    return api.reduce_scatterv(input_, output, sizes, group)
