"""Fused uneven reduce-scatter (reduce_scatterv) over symmetric memory, in Triton.

    import kernels
    out = kernels.reduce_scatterv(partials, sizes=[3, 0, 5, 1])        # drop-in for SGLang's
    ws = kernels.workspace()                                          # the group's symmetric workspace
    buf = ws.empty(sum(sizes), hidden, dtype=torch.bfloat16)          # producer writes here: no copy

CUDA tensors run compiled Triton over PyTorch symmetric memory; CPU tensors (gloo group) run the
same kernels in Triton's interpreter over shared memory, one process per rank.
``torch.ops.rsv.reduce_scatterv`` is the same call as a torch custom op (``kernels.custom_op``), for
``torch.compile`` and captured graphs; ``kernels.plugins`` route SGLang's and vLLM's reduce_scatterv
to it when ``KERNELS_ENGINE_PLUGIN=1``.
"""

from . import custom_op  # noqa: F401  (registers torch.ops.rsv.reduce_scatterv)
from .api import all_gatherv, reduce_scatterv
from .workspace import Workspace, release, workspace

__all__ = ["all_gatherv", "reduce_scatterv", "workspace", "Workspace", "release"]
