"""SGLang plugin: ``GroupCoordinator.reduce_scatterv`` of the TP group on the fused kernel.

Entry point ``reduce_scatterv`` of group ``sglang.srt.plugins`` (``pyproject.toml``); SGLang's
``load_plugins()`` calls :func:`register` in every scheduler process, then applies the hooks.
Off unless ``KERNELS_ENGINE_PLUGIN=1``. Hooks, on ``sglang.srt.distributed.parallel_state.GroupCoordinator``:

- ``__init__`` (AFTER, also when off): the plugin meets the group: the ranks' switches are compared
  (a mismatch raises on every rank); when on, the TP group's workspace is created and reserved
  (``KERNELS_ENGINE_WORKSPACE_MB``) before SGLang loads weights and sizes its KV cache;
- ``graph_capture`` (AROUND, when on): the capture entry; the workspace is ready before capture;
- ``reduce_scatterv(input_, output=None, sizes=None)`` (AROUND, when on): the fused kernel, on the
  caller's current stream (the DP-attention overlap stream of ``dp_reduce_scatterv_async`` too);
  SGLang's own method for what the kernel does not serve (see ``common.refusal``), and always under
  ``SGLANG_ENABLE_DETERMINISTIC_INFERENCE=1``.

Callers (SGLang 0.5.23): ``MoeRowTransport.return_output`` (DeepSeek V4), ``dp_reduce_scatterv_async``,
``layer_boundary/ops.py``, the standard and flashinfer token dispatchers, all on the TP group.
"""

from __future__ import annotations

import torch

from .. import settings
from . import common

ENGINE = "sglang"
TARGET = "sglang.srt.distributed.parallel_state.GroupCoordinator"
SERVED_GROUPS = ("tp",)  # SGLang calls reduce_scatterv on its TP group only
DETERMINISTIC = "SGLANG_ENABLE_DETERMINISTIC_INFERENCE"


def register() -> None:
    """The entry point: register the hooks (SGLang's ``load_plugins`` applies them)."""
    from sglang.srt.plugins.hook_registry import HookRegistry, HookType

    HookRegistry.register(f"{TARGET}.__init__", _after_init, HookType.AFTER)
    if settings.engine_plugin():
        HookRegistry.register(f"{TARGET}.reduce_scatterv", _reduce_scatterv, HookType.AROUND)
        HookRegistry.register(f"{TARGET}.graph_capture", _graph_capture, HookType.AROUND)
    common.log_once(ENGINE, ("switch",), f"{common.SWITCH}={int(settings.engine_plugin())}: GroupCoordinator."
                    f"reduce_scatterv of the {'/'.join(SERVED_GROUPS)} group "
                    f"{'runs the fused kernel' if settings.engine_plugin() else 'is left to SGLang'}", 20)


def _modes() -> dict[str, bool]:
    from sglang.srt.environ import envs

    return {DETERMINISTIC: bool(envs.SGLANG_ENABLE_DETERMINISTIC_INFERENCE.get())}


def _after_init(result, coordinator, *args, **kwargs) -> None:
    import torch.distributed as dist

    name = coordinator.unique_name
    meeting = common.meet(ENGINE, name, cpu_group=coordinator.cpu_group, world_size=coordinator.world_size,
                          device=torch.device(coordinator.device), backend=str(dist.get_backend(coordinator.device_group)),
                          engine_modes=_modes())
    coordinator._kernels_served = None
    coordinator._kernels_reason = None
    if not meeting.on:
        return None
    if name.split(":")[0] not in SERVED_GROUPS:
        coordinator._kernels_reason = f"SGLang calls reduce_scatterv on its {'/'.join(SERVED_GROUPS)} group only"
    elif meeting.reason is not None:
        coordinator._kernels_reason = meeting.reason
        common.log_unserved(ENGINE, name, meeting.reason)
    else:
        coordinator._kernels_served = common.reserve(ENGINE, name, [coordinator.device_group],
                                                     torch.device(coordinator.device))
        if coordinator._kernels_served is None:
            coordinator._kernels_reason = "no workspace could be reserved"
    return None


def _graph_capture(original, coordinator, *args, **kwargs):
    served = getattr(coordinator, "_kernels_served", None)
    if served is not None:
        common.ready_for_capture(served)
    return original(coordinator, *args, **kwargs)


def _reduce_scatterv(original, coordinator, input_, output=None, sizes=None):
    served = getattr(coordinator, "_kernels_served", None)
    if served is None:
        if getattr(coordinator, "_kernels_reason", None):
            common.log_unserved(ENGINE, coordinator.unique_name, coordinator._kernels_reason)
        return original(coordinator, input_, output, sizes)
    why = common.refusal(served, input_, 0, _modes())
    if why is not None:
        common.log_refusal(served, *why)
        return original(coordinator, input_, output, sizes)
    return common.run(served, input_, output, sizes)
