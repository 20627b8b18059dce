"""Fused uneven reduce-scatter (reduce_scatterv) over symmetric memory, in Triton.

    import reduce_scatterv as rsv
    out = rsv.reduce_scatterv(partials, sizes=[3, 0, 5, 1])           # drop-in for SGLang's
    ws = rsv.workspace()                                              # the group's symmetric workspace
    buf = ws.empty(sum(sizes), hidden, dtype=torch.bfloat16)          # producer writes here: no copy

CUDA tensors run compiled Triton over PyTorch symmetric memory; CPU tensors (gloo group) run the
same kernels in Triton's interpreter over shared memory, one process per rank.
``torch.ops.rsv.reduce_scatterv`` is the same call as a torch custom op (``custom_op.py``), for
``torch.compile`` and captured graphs; ``plugins/`` route SGLang's and vLLM's reduce_scatterv to it
when ``KERNELS_ENGINE_PLUGIN=1``.

The repository folder is ``kernels/``; the installed package is ``reduce_scatterv``, so that it sits
beside Hugging Face's ``kernels`` package (``_import_name.py``). From a checkout's root ``import
kernels`` still gives this code (the same modules as ``reduce_scatterv`` where that is installed
from the checkout), unless Hugging Face's ``kernels`` is installed: then it gives that package.
"""

from ._import_name import INSTALLED_NAME, alias_to_installed, defer_to_namesake

if __name__ == INSTALLED_NAME or not (defer_to_namesake(__name__, __path__[0])
                                      or alias_to_installed(__name__, __path__[0])):
    from . import custom_op  # noqa: F401  (registers torch.ops.rsv.reduce_scatterv)
    from .api import all_gatherv, reduce_scatterv
    from .workspace import Workspace, release, workspace

__all__ = ["all_gatherv", "reduce_scatterv", "workspace", "Workspace", "release"]
