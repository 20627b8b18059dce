"""Host-side checks of a reduce_scatterv or all_gatherv call.

Every check depends only on the call's arguments, so when every rank passes the same bad input,
every rank raises the same error before any rank enters the kernel (no rank is left waiting).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

SUPPORTED_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
SIZE_DTYPES = (torch.int32, torch.int64)


@dataclass(frozen=True)
class Call:
    """A validated call. ``sizes`` is a tuple of ints, or None when ``sizes_dev`` holds them on the device."""

    rows: int  # rows of input_ (sum(sizes), or the capacity with device sizes)
    rest: tuple[int, ...]  # trailing shape of a row
    hidden: int  # elements per row
    sizes: tuple[int, ...] | None
    sizes_dev: torch.Tensor | None
    out_rows: int  # rows this rank receives (host sizes) or the output's capacity (device sizes)

    @property
    def largest_rows(self) -> int:
        """Rank-agreed bound on any one rank's rows: the largest host size, or with device sizes the
        input's row capacity (what sizes the grid, the per-peer bytes and the mode)."""
        return max(self.sizes) if self.sizes is not None else self.rows


def _check_tensor_sizes(sizes: torch.Tensor, world: int, device: torch.device, op: str) -> None:
    if sizes.dtype not in SIZE_DTYPES:
        raise TypeError(f"{op}: a sizes tensor must be int32 or int64, got {sizes.dtype}")
    if sizes.dim() != 1 or sizes.numel() != world:
        raise ValueError(f"{op}: sizes must hold one count per rank ({world}), got shape {tuple(sizes.shape)}")
    if sizes.device != device:
        raise ValueError(f"{op}: sizes is on {sizes.device} but input_ is on {device}")


def _check_list_sizes(sizes: Sequence[int], world: int, op: str) -> tuple[int, ...]:
    if len(sizes) != world:
        raise ValueError(f"{op}: sizes has {len(sizes)} entries for a group of {world} ranks")
    if not all(isinstance(s, int) and not isinstance(s, bool) for s in sizes):
        raise TypeError(f"{op}: sizes must be ints, got {list(sizes)!r}")
    if any(s < 0 for s in sizes):
        raise ValueError(f"{op}: sizes must not be negative, got {list(sizes)}")
    return tuple(int(s) for s in sizes)


def _check_output(output: torch.Tensor, input_: torch.Tensor, rows: int | None, op: str) -> None:
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"{op}: output must be a torch.Tensor, got {type(output).__name__}")
    if output.dtype != input_.dtype:
        raise TypeError(f"{op}: output dtype {output.dtype} differs from input_ dtype {input_.dtype}")
    if output.device != input_.device:
        raise ValueError(f"{op}: output is on {output.device} but input_ is on {input_.device}")
    want_rest = tuple(input_.shape[1:])
    if output.dim() != input_.dim() or tuple(output.shape[1:]) != want_rest or (rows is not None and output.shape[0] != rows):
        want = f"({rows if rows is not None else 'rows'}, {', '.join(map(str, want_rest))})"
        raise ValueError(f"{op}: output has shape {tuple(output.shape)}, expected {want}")


def _check_input(input_, op: str) -> tuple[int, tuple[int, ...], int]:
    """(rows, trailing shape, elements per row) of a valid input."""
    if not isinstance(input_, torch.Tensor):
        raise TypeError(f"{op}: input_ must be a torch.Tensor, got {type(input_).__name__}")
    if input_.dim() == 0:
        raise ValueError(f"{op}: input_ must have a row dimension, got a 0-d tensor")
    if input_.dtype not in SUPPORTED_DTYPES:
        raise TypeError(f"{op}: dtype {input_.dtype} is not supported; use bfloat16, float16 or float32")
    rest = tuple(input_.shape[1:])
    hidden = 1
    for d in rest:
        hidden *= d
    return input_.shape[0], rest, hidden


def _device_sizes_call(input_, output, sizes: torch.Tensor, world: int, op: str, shape: tuple,
                       capacity_rows: int | None = None) -> Call:
    """A call with sizes on the device: input and output are capacities, and the output is required
    (or, for an epilogue, which writes its own outputs, ``capacity_rows``: their row capacity).
    ``shape``: ``_check_input``'s (rows, trailing shape, elements per row)."""
    rows, rest, hidden = shape
    _check_tensor_sizes(sizes, world, input_.device, op)
    if output is None and capacity_rows is not None:
        return Call(rows, rest, hidden, None, sizes, capacity_rows)
    if output is None:
        raise ValueError(f"{op}: with sizes on the device, pass output (its rows are a capacity)")
    _check_output(output, input_, None, op)
    return Call(rows, rest, hidden, None, sizes, output.shape[0])


def check_call(input_, output, sizes, world: int, rank: int, capacity_rows: int | None = None) -> Call:
    """Validate a call the way ``GroupCoordinator.reduce_scatterv`` is used; raise on anything wrong.
    ``capacity_rows``: with an epilogue (no ``output``), the row capacity of its tensors."""
    op = "reduce_scatterv"
    rows, rest, hidden = shape = _check_input(input_, op)
    if isinstance(sizes, torch.Tensor):
        return _device_sizes_call(input_, output, sizes, world, op, shape, capacity_rows)
    if sizes is None:
        if rows % world:
            raise ValueError(f"reduce_scatterv: sizes=None splits evenly, but {rows} rows do not divide by {world} ranks")
        sizes = [rows // world] * world
    elif not isinstance(sizes, (list, tuple)):
        raise TypeError(f"reduce_scatterv: sizes must be a list/tuple of ints, an integer tensor or None, "
                        f"got {type(sizes).__name__}")
    sizes = _check_list_sizes(sizes, world, op)
    if sum(sizes) != rows:
        raise ValueError(f"reduce_scatterv: input_ has {rows} rows but sum(sizes) = {sum(sizes)} ({list(sizes)})")
    if output is not None:
        _check_output(output, input_, sizes[rank], op)
    return Call(rows, rest, hidden, sizes, None, sizes[rank])


def check_gather_call(input_, output, sizes, world: int, rank: int) -> Call:
    """Validate a call the way ``GroupCoordinator.all_gatherv`` is used: ``input_`` holds this rank's
    ``sizes[rank]`` rows (a capacity with device sizes), the output ``sum(sizes)`` (a capacity with
    device sizes, then required); raise on anything wrong. In the returned ``Call``, ``rows`` is the
    input's row count and ``out_rows`` the output's."""
    op = "all_gatherv"
    rows, rest, hidden = shape = _check_input(input_, op)
    if isinstance(sizes, torch.Tensor):
        return _device_sizes_call(input_, output, sizes, world, op, shape)
    if sizes is None:
        sizes = [rows] * world
    elif not isinstance(sizes, (list, tuple)):
        raise TypeError(f"all_gatherv: sizes must be a list/tuple of ints, an integer tensor or None, "
                        f"got {type(sizes).__name__}")
    sizes = _check_list_sizes(sizes, world, op)
    if sizes[rank] != rows:
        raise ValueError(f"all_gatherv: input_ has {rows} rows but sizes[{rank}] = {sizes[rank]} ({list(sizes)})")
    if output is not None:
        _check_output(output, input_, sum(sizes), op)
    return Call(rows, rest, hidden, sizes, None, sum(sizes))
