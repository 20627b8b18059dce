"""vLLM plugin: ``GroupCoordinator.reduce_scatterv`` / ``reduce_scatterv_into_output`` on the fused kernel.

Entry point ``reduce_scatterv`` of group ``vllm.general_plugins`` (``pyproject.toml``);
``vllm.plugins.load_general_plugins()`` calls :func:`register` in every process (engine core,
workers). Off unless ``KERNELS_ENGINE_PLUGIN=1``. It wraps methods of
``vllm.distributed.parallel_state.GroupCoordinator`` (vLLM has no hook registry; wrapping is
idempotent, as vLLM asks of plugins loaded more than once):

- ``__init__`` (also when off): the plugin meets the group: the ranks' switches are compared (a
  mismatch raises on every rank); when on, the group that ``AgRsAll2AllManager.combine`` reduces
  over (the DP group; the EP group under sequence-parallel MoE or DP+PCP with EP; the PCP group
  without DP) gets its workspace created and reserved (``KERNELS_ENGINE_WORKSPACE_MB``) before vLLM
  profiles memory and sizes its KV cache. With micro-batching (DBO, ``ubatch_size``) each
  micro-batch gets a process group, hence a workspace, of its own (one workspace serves one call
  at a time), created here on every rank alike;
- ``graph_capture`` (when on): the capture entry; the workspaces are ready before capture;
- ``reduce_scatterv(input_, dim=-1, sizes=None)`` and ``reduce_scatterv_into_output(input_, output,
  dim=-1, sizes=None)`` (when on): the fused kernel on the caller's current stream, in the current
  micro-batch's workspace; vLLM's own method (``CudaCommunicator._reduce_scatterv``) for the rest
  (see ``common.refusal``), always under ``VLLM_BATCH_INVARIANT=1``.
"""

from __future__ import annotations

import functools

import torch

from .. import settings
from . import common

ENGINE = "vllm"
BATCH_INVARIANT = "VLLM_BATCH_INVARIANT"


def register() -> None:
    """The entry point: wrap ``GroupCoordinator``'s methods (once per process)."""
    from vllm.distributed import parallel_state as ps

    gc = ps.GroupCoordinator
    if getattr(gc.__init__, "_kernels_plugin", False):
        return
    _wrap(gc, "__init__", _init)
    if settings.engine_plugin():
        _wrap(gc, "reduce_scatterv", _reduce_scatterv)
        _wrap(gc, "reduce_scatterv_into_output", _reduce_scatterv_into_output)
        _wrap(gc, "graph_capture", _graph_capture)
    common.log_once(ENGINE, ("switch",), f"{common.SWITCH}={int(settings.engine_plugin())}: GroupCoordinator."
                    f"reduce_scatterv {'runs the fused kernel' if settings.engine_plugin() else 'is left to vLLM'}", 20)


def _wrap(cls, name: str, hook) -> None:
    original = getattr(cls, name)

    @functools.wraps(original)
    def wrapper(self, *args, **kwargs):
        return hook(original, self, *args, **kwargs)

    wrapper._kernels_plugin = True
    setattr(cls, name, wrapper)


def _modes() -> dict[str, bool]:
    import vllm.envs as envs

    return {BATCH_INVARIANT: bool(envs.VLLM_BATCH_INVARIANT)}


def served_groups(parallel_config) -> set[str]:
    """Names of the groups ``AgRsAll2AllManager.combine`` calls reduce_scatterv on, for this config
    (``_get_comm_group`` of vLLM 0.32): none unless the all2all backend is all-gather/reduce-scatter."""
    pc = parallel_config
    if pc is None or not pc.use_all2all or pc.all2all_backend not in ("naive", "allgather_reducescatter"):
        return set()
    names = {"ep"} if pc.use_sequence_parallel_moe else set()
    if pc.data_parallel_size > 1:
        names.add("ep" if pc.enable_expert_parallel and pc.prefill_context_parallel_size > 1 else "dp")
    elif pc.prefill_context_parallel_size > 1:
        names.add("pcp")
    return names


def _parallel_config():
    from vllm.config import get_current_vllm_config_or_none

    config = get_current_vllm_config_or_none()
    return config.parallel_config if config is not None else None


def _init(original, coordinator, *args, **kwargs) -> None:
    import torch.distributed as dist

    original(coordinator, *args, **kwargs)
    name = coordinator.unique_name
    device = torch.device(coordinator.device)
    meeting = common.meet(ENGINE, name, cpu_group=coordinator.cpu_group, world_size=coordinator.world_size,
                          device=device, backend=str(dist.get_backend(coordinator.device_group)),
                          engine_modes=_modes())
    coordinator._kernels_served = None
    coordinator._kernels_reason = None
    pc = _parallel_config()
    if not meeting.on:
        return
    serves = served_groups(pc)
    if name.split(":")[0] not in serves:
        coordinator._kernels_reason = ("vLLM does not call reduce_scatterv on this group in this configuration (the "
                                       f"plugin serves {'/'.join(sorted(serves)) or 'no group'} here)")
        return
    # one group per micro-batch: made by every process for every partition, in order, as vLLM makes
    # its groups, whatever this partition's verdict (the decision uses config facts only)
    groups = [coordinator.device_group]
    for _ in range(1, pc.num_ubatches if pc.use_ubatching else 1):
        mine = None
        for ranks in coordinator.group_ranks:
            g = dist.new_group(ranks, backend=coordinator.torch_distributed_backend)
            if coordinator.rank in ranks:
                mine = g
        groups.append(mine)
    if meeting.reason is not None:
        coordinator._kernels_reason = meeting.reason
        common.log_unserved(ENGINE, name, meeting.reason)
        return
    coordinator._kernels_served = common.reserve(ENGINE, name, groups, device)
    if coordinator._kernels_served is None:
        coordinator._kernels_reason = "no workspace could be reserved"


def _graph_capture(original, coordinator, *args, **kwargs):
    served = getattr(coordinator, "_kernels_served", None)
    if served is not None:
        common.ready_for_capture(served)
    return original(coordinator, *args, **kwargs)


def _ubatch() -> int:
    from vllm.v1.worker.ubatching import dbo_current_ubatch_id

    return dbo_current_ubatch_id()


def _serve(coordinator, input_, dim) -> tuple[common.Served | None, int]:
    """(the group's Served, the micro-batch) when the fused kernel takes this call, else (None, 0)."""
    served = getattr(coordinator, "_kernels_served", None)
    if served is None:
        if getattr(coordinator, "_kernels_reason", None):
            common.log_unserved(ENGINE, coordinator.unique_name, coordinator._kernels_reason)
        return None, 0
    why = common.refusal(served, input_, dim, _modes())
    ubatch = _ubatch() if why is None else 0
    if why is None and ubatch >= len(served.groups):
        why = f"ubatch {ubatch}", f"micro-batch {ubatch} (workspaces were made for {len(served.groups)})"
    if why is not None:
        common.log_refusal(served, *why)
        return None, 0
    return served, ubatch


def _reduce_scatterv(original, coordinator, input_, dim=-1, sizes=None):
    served, ubatch = _serve(coordinator, input_, dim)
    if served is None:
        return original(coordinator, input_, dim, sizes)
    return common.run(served, input_, None, sizes, ubatch)


def _reduce_scatterv_into_output(original, coordinator, input_, output, dim=-1, sizes=None):
    served, ubatch = _serve(coordinator, input_, dim)
    if served is None:
        return original(coordinator, input_, output, dim, sizes)
    return common.run(served, input_, output, sizes, ubatch)
