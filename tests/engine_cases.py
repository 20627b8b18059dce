"""Cases for the engine plugins, run on every rank of a CPU RankPool inside an engine's venv.

Each pool is one scenario (switch on, off, or different per rank): ``*_setup`` loads the plugin
through the engine's own loader, then builds the engine's own coordinator over gloo (ENGINES.md);
``*_call`` calls the engine's ``reduce_scatterv`` and reports whether the fused kernel ran (the
group's workspace epoch moved), the result's error against the float64 sum, the engine's error
if it raised (on CPU the engines' own methods cannot run, except SGLang's deterministic path), and
the plugin's log records so far.
"""

from __future__ import annotations

import logging
import os
import threading

import torch

import reduce_scatterv as rsv
from reduce_scatterv.workspace import _workspaces
from reduce_scatterv.plugins import common
from tests.cases import DTYPES, POISON, assert_close, exact_sum, partials, tolerance

_state: dict = {}


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _capture_logs(engine: str) -> None:
    handler = _Records()
    log = common.logger(engine)
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    _state["logs"] = handler


def _prepare(engine: str, switch: list[str] | None, cpu_emulation: bool) -> None:
    if switch is not None:  # the switch under test, per rank (the engine's loader reads the environment)
        os.environ[common.SWITCH] = switch[int(os.environ["RANK"])]
    _capture_logs(engine)
    common.allow_cpu_emulation(cpu_emulation)


def _has_workspace(group) -> bool:
    return any(k[0] == group.group_name for k in _workspaces)


def _gather_ll_bytes(group) -> int | None:
    """The gather's flagged-word limit of the group's workspace (None without one)."""
    found = [ws for k, ws in _workspaces.items() if k[0] == group.group_name]
    return found[0].layout.gather_ll_limit if found else None


def _report(coordinator, original_methods: dict, cls) -> dict:
    served = getattr(coordinator, "_kernels_served", None)
    return {
        "replaced": sorted(n for n, f in original_methods.items() if getattr(cls, n) is not f),
        "served": served is not None,
        "max_input_bytes": served.max_input_bytes if served is not None else 0,
        "workspaces": len(served.groups) if served is not None else 0,
        "has_workspace": _has_workspace(coordinator.device_group),
        "gather_ll_bytes": _gather_ll_bytes(coordinator.device_group),
        "logs": list(_state["logs"].messages),
    }


# ---- SGLang
def sglang_setup(ctx, *, switch: list[str] | None = None, cpu_emulation: bool = True) -> dict:
    """``load_plugins()`` (allowlist SGLANG_PLUGINS), then SGLang's TP ``GroupCoordinator`` over gloo.
    Returns what was replaced and served, or ``{"error": ...}`` if building the group raised."""
    _prepare("sglang", switch, cpu_emulation)
    from sglang.srt.distributed import parallel_state as ps
    from sglang.srt.plugins import load_plugins

    cls = ps.GroupCoordinator
    originals = {n: getattr(cls, n) for n in ("__init__", "reduce_scatterv", "graph_capture")}
    load_plugins()
    try:
        coordinator = cls([list(range(ctx.world))], ctx.rank, "gloo", use_pynccl=False, use_mscclpp=False,
                          use_custom_allreduce=False, use_torch_symm_mem_all_reduce=False, use_hpu_communicator=False,
                          use_xpu_communicator=False, group_name="tp")
    except RuntimeError as e:
        return {"error": str(e)}
    _state["coordinator"] = coordinator
    return _report(coordinator, originals, cls)


def _inputs(ctx, sizes, rest, dtype, seed, with_output):
    total, n, off = sum(sizes), sizes[ctx.rank], sum(sizes[: ctx.rank])
    if dtype == "int32":
        g = torch.Generator().manual_seed(seed)
        parts = [torch.randint(-100, 100, (total, *rest), generator=g, dtype=torch.int32) for _ in range(ctx.world)]
    else:
        parts = partials(seed, ctx.world, total, tuple(rest), DTYPES[dtype])
    out = None
    if with_output:
        out = torch.full((n, *rest), POISON if dtype != "int32" else -1).to(parts[0].dtype)
    return parts, out, n, off


def _check(ctx, result, parts, out, n, off, dtype) -> float:
    if out is not None and result.data_ptr() != out.data_ptr():
        raise AssertionError("the result is not the output tensor that was passed")
    truth, abs_sum = exact_sum(parts, off, n)
    if tuple(result.shape) != tuple(truth.shape):
        raise AssertionError(f"result shape {tuple(result.shape)}, expected {tuple(truth.shape)}")
    if dtype == "int32":
        if not torch.equal(result.double(), truth):
            raise AssertionError("int32 result differs from the exact sum")
        return 0.0
    return assert_close("engine reduce_scatterv vs float64 sum", result, truth,
                        tolerance(DTYPES[dtype], truth, abs_sum, ctx.world))


def _epochs(groups) -> list[int]:
    return [rsv.workspace(g, "cpu").epoch if _has_workspace(g) else None for g in groups]


def _call(ctx, call, groups, parts, out, n, off, dtype) -> dict:
    before = _epochs(groups)
    logged = len(_state["logs"].messages)
    try:
        result = call()
    except Exception as e:  # noqa: BLE001 - the engine's own method raises on CPU; the test reads it
        return {"error": f"{type(e).__name__}: {e}", "kernel": [], "logs": _state["logs"].messages[logged:]}
    after = _epochs(groups)
    return {"error": None, "worst": _check(ctx, result, parts, out, n, off, dtype),
            "kernel": [b != a for b, a in zip(before, after)], "logs": _state["logs"].messages[logged:]}


def sglang_call(ctx, *, sizes, rest=(16,), dtype="bfloat16", seed=0, with_output=True, deterministic=False) -> dict:
    """``GroupCoordinator.reduce_scatterv(input_, output=, sizes=)`` of SGLang's TP group."""
    os.environ["SGLANG_ENABLE_DETERMINISTIC_INFERENCE"] = "1" if deterministic else "0"
    coordinator = _state["coordinator"]
    parts, out, n, off = _inputs(ctx, sizes, rest, dtype, seed, with_output)
    inp = parts[ctx.rank]
    call = (lambda: coordinator.reduce_scatterv(inp, output=out, sizes=sizes)) if with_output else \
        (lambda: coordinator.reduce_scatterv(inp, sizes=sizes))
    try:
        return _call(ctx, call, [coordinator.device_group], parts, out, n, off, dtype)
    finally:
        os.environ["SGLANG_ENABLE_DETERMINISTIC_INFERENCE"] = "0"


def sglang_graph_capture(ctx) -> dict:
    """Enter (and leave) the TP group's capture entry: the reservation made at start-up stays as it
    is (nothing grows). Returns the workspace's byte size before and after."""
    from types import SimpleNamespace

    coordinator = _state["coordinator"]
    ws = rsv.workspace(coordinator.device_group, "cpu")
    before = ws.layout.total_bytes
    # SGLang's graph_capture needs CUDA streams; the hook runs before it (the CUDA part then fails)
    try:
        with coordinator.graph_capture(graph_capture_context=SimpleNamespace(stream=None)):
            pass
    except Exception as e:  # noqa: BLE001 - the CUDA part of SGLang's capture entry fails on CPU
        err = type(e).__name__
    else:
        err = None
    return {"before": before, "after": ws.layout.total_bytes, "error": err}


# ---- vLLM
def vllm_setup(ctx, *, switch: list[str] | None = None, cpu_emulation: bool = True, ubatch_size: int = 0) -> dict:
    """``load_general_plugins()`` (allowlist VLLM_PLUGINS), then vLLM's groups with data parallelism
    over every rank (TP 1), so that the DP group, the one ``AgRsAll2AllManager.combine`` reduces
    over, spans the pool; ``ubatch_size``: micro-batching (a workspace per micro-batch)."""
    _prepare("vllm", switch, cpu_emulation)
    from vllm.config import ParallelConfig, VllmConfig, set_current_vllm_config
    from vllm.distributed import parallel_state as ps
    from vllm.plugins import load_general_plugins

    cls = ps.GroupCoordinator
    names = ("__init__", "reduce_scatterv", "reduce_scatterv_into_output", "graph_capture")
    originals = {n: getattr(cls, n) for n in names}
    load_general_plugins()
    config = VllmConfig(parallel_config=ParallelConfig(data_parallel_size=ctx.world, data_parallel_rank=ctx.rank))
    if ubatch_size:
        # vLLM 0.32's config validation allows micro-batching only with the DeepEP / NIXL all2all
        # backends, which never call reduce_scatterv; set it after validation to exercise the
        # plugin's guard for a release that allows both
        config.parallel_config.ubatch_size = ubatch_size
    try:
        with set_current_vllm_config(config):
            ps.init_distributed_environment(1, 0, "env://", 0, backend="gloo")
            ps.initialize_model_parallel(tensor_model_parallel_size=1)
    except RuntimeError as e:
        return {"error": str(e)}
    _state["coordinator"] = ps.get_dp_group()
    _state["groups"] = {"dp": ps.get_dp_group(), "ep": ps.get_ep_group(), "world": ps.get_world_group()}
    report = _report(ps.get_dp_group(), originals, cls)
    report["served_names"] = sorted(n for n, g in _state["groups"].items() if getattr(g, "_kernels_served", None))
    return report


def vllm_call(ctx, *, sizes, rest=(16,), dtype="bfloat16", seed=0, with_output=False, dim=0,
              batch_invariant=False, ubatch=0, group="dp") -> dict:
    """``reduce_scatterv(input_, dim=, sizes=)`` or, with ``with_output``,
    ``reduce_scatterv_into_output(input_, output, dim=, sizes=)`` of vLLM's ``group``, as micro-batch
    ``ubatch`` (set the way vLLM's ubatch threads set it)."""
    from vllm.v1.worker import ubatching

    os.environ["VLLM_BATCH_INVARIANT"] = "1" if batch_invariant else "0"
    coordinator = _state["groups"][group]
    served = getattr(coordinator, "_kernels_served", None)
    groups = served.groups if served is not None else [coordinator.device_group]
    parts, out, n, off = _inputs(ctx, sizes, rest, dtype, seed, with_output)
    inp = parts[ctx.rank]
    call = (lambda: coordinator.reduce_scatterv_into_output(inp, out, dim=dim, sizes=sizes)) if with_output else \
        (lambda: coordinator.reduce_scatterv(inp, dim=dim, sizes=sizes))
    if ubatch:
        ubatching._THREAD_ID_TO_CONTEXT[threading.get_ident()] = ubatch
    try:
        return _call(ctx, call, groups, parts, out, n, off, dtype)
    finally:
        ubatching._THREAD_ID_TO_CONTEXT.pop(threading.get_ident(), None)
        os.environ["VLLM_BATCH_INVARIANT"] = "0"


def compiled_call(ctx, *, engine: str, sizes, rest=(16,), dtype="bfloat16", seed=5, backend="aot_eager") -> dict:
    """The engine's ``reduce_scatterv`` inside ``torch.compile(fullgraph=True)``: Dynamo traces the
    plugin's hook down to the custom op (a graph break raises). Returns the graph count and the error
    against the float64 sum."""
    import torch._dynamo.testing

    torch._dynamo.reset()
    coordinator = _state["coordinator"]
    parts, out, n, off = _inputs(ctx, sizes, rest, dtype, seed, True)

    if engine == "sglang":
        def f(x, o):
            return coordinator.reduce_scatterv(x * 2, output=o, sizes=sizes) * 0.5
    else:
        def f(x, o):
            return coordinator.reduce_scatterv_into_output(x * 2, o, dim=0, sizes=sizes) * 0.5

    served = getattr(coordinator, "_kernels_served", None)
    groups = served.groups if served is not None else [coordinator.device_group]
    counter = torch._dynamo.testing.CompileCounterWithBackend(backend)
    before = _epochs(groups)
    got = torch.compile(f, backend=counter, fullgraph=True)(parts[ctx.rank], out)
    moved = [b != a for b, a in zip(before, _epochs(groups))]
    return {"graphs": counter.frame_count, "kernel": moved, "worst": _check(ctx, got, parts, None, n, off, dtype)}
