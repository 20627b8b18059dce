"""``torch.ops.rsv.reduce_scatterv``: the fused call as a torch custom op.

``reduce_scatterv.reduce_scatterv`` is Python that launches Triton; ``torch.compile`` would trace into it
(and break the graph at its host logic). The op hides it behind a schema::

    rsv::reduce_scatterv(Tensor input, Tensor(a!) output, SymInt[]? sizes, Tensor? sizes_dev,
                         str group_name) -> ()

- ``output`` is declared mutated (the result is written into it; the op returns nothing, since an
  op may not return an alias of an input), ``input`` is not;
- host sizes travel as ``int[]``, device sizes as a tensor (the CUDA-graph form: ``input`` and
  ``output`` are then capacities), neither for an even split;
- the group travels by name (``ProcessGroup.group_name``), resolved inside the op.

Its fake implementation does nothing (the output already has its shape), so the op traces under
``torch.compile(fullgraph=True)`` as one opaque node, and inside CUDA-graph capture it runs the
real launch (size the workspace first: ``reduce_scatterv.workspace(group).reserve(...)``).
:func:`reduce_scatterv` below is the same call as ``reduce_scatterv.reduce_scatterv``, through the op.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.distributed as dist
from torch.distributed.distributed_c10d import _resolve_process_group

from . import api
from ._import_name import INSTALLED_NAME

# One registration per copy of the code: the installed package owns rsv::; a checkout imported as
# `kernels` beside an install from elsewhere is a second copy and registers under its own namespace
NAMESPACE = "rsv" if __name__.rpartition(".")[0] == INSTALLED_NAME else "rsv_" + __name__.rpartition(".")[0]
OP_NAME = f"{NAMESPACE}::reduce_scatterv"


@torch.library.custom_op(OP_NAME, mutates_args=("output",))
def _reduce_scatterv_op(input: torch.Tensor, output: torch.Tensor, sizes: list[int] | None,
                        sizes_dev: torch.Tensor | None, group_name: str) -> None:
    if sizes is not None and sizes_dev is not None:
        raise ValueError(f"{OP_NAME}: pass sizes (host) or sizes_dev (device), not both")
    api.reduce_scatterv(input, output, sizes_dev if sizes_dev is not None else sizes,
                        _resolve_process_group(group_name))


@_reduce_scatterv_op.register_fake
def _(input, output, sizes, sizes_dev, group_name) -> None:
    return None


def reduce_scatterv(
    input_: torch.Tensor,
    output: torch.Tensor | None = None,
    sizes: Sequence[int] | torch.Tensor | None = None,
    group: dist.ProcessGroup | None = None,
) -> torch.Tensor:
    """``reduce_scatterv.reduce_scatterv`` through ``torch.ops.rsv.reduce_scatterv``: same arguments, same
    result, traceable by ``torch.compile(fullgraph=True)`` without a graph break.

    Args:
        input_: ``[sum(sizes), *rest]`` partial sums (a capacity with device sizes).
        output: ``[sizes[rank], *rest]``; allocated here when None (host sizes or even split only).
        sizes: a list/tuple of ints, an int32/int64 device tensor (then ``output`` is required), or
            None (even split).
        group: the process group (the default group if None).

    Returns:
        ``output``, holding this rank's rows of the sum.
    """
    group = group if group is not None else dist.group.WORLD
    host_sizes = None if sizes is None or isinstance(sizes, torch.Tensor) else [int(s) for s in sizes]
    if output is None:
        if isinstance(sizes, torch.Tensor):
            raise ValueError("reduce_scatterv: with sizes on the device, pass output (its rows are a capacity)")
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        rows = host_sizes[rank] if host_sizes is not None else input_.shape[0] // world
        output = input_.new_empty((rows, *input_.shape[1:]))
    getattr(torch.ops, NAMESPACE).reduce_scatterv(input_, output, host_sizes,
                                                  sizes if isinstance(sizes, torch.Tensor) else None, group.group_name)
    return output
