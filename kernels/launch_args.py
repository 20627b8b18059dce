"""Host-side pieces every kernel launch shares: dtype maps, the call's common arguments, the grid."""

from __future__ import annotations

import math

import torch
import triton.language as tl

from .configs import KernelConfig, register_cap
from .layout import MAX_ROUNDS, PMAX

TL_DTYPES = {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16, torch.float32: tl.float32}
TL_SIZE_DTYPES = {torch.int32: tl.int32, torch.int64: tl.int64}


# A rank with no rows passes this for its empty tensors instead of their address, 0. Triton types an
# integer argument by its value (0 is i32, an address i64), so 0 would make that rank's kernel a
# variant of its own, compiled on its first such call while its peers' kernels already wait for it.
# Never dereferenced (every access to an empty tensor is masked off); above the 47-bit user address
# space, so a bug that did dereference it would fault rather than read or write real memory.
EMPTY_ADDRESS = 1 << 60


def address(t: torch.Tensor) -> int:
    """``t``'s address as a kernel argument: ``EMPTY_ADDRESS`` for an empty tensor."""
    return t.data_ptr() if t.numel() else EMPTY_ADDRESS


def vector_align(hidden: int, elt: int, *addresses: int) -> int:
    """Largest power-of-two element count <= 16 bytes dividing the row length and every address."""
    align = 16 // elt
    while align > 1 and (hidden % align or any(a % (align * elt) for a in addresses)):
        align //= 2
    return align


def grid_size(max_rows: int, hidden: int, block: int, programs_per_sm: int, tiles_per_program: int,
              multiprocessors: int) -> int:
    """Programs per launch, from rank-agreed quantities only (every rank must launch the same grid)."""
    tiles = math.ceil(max_rows * hidden / block)
    cap = min(PMAX, multiprocessors * programs_per_sm)
    return max(1, min(cap, math.ceil(tiles / tiles_per_program)))


def call_arguments(ws, inp: torch.Tensor, out: torch.Tensor, call):
    """What every kernel takes first: ``(args, constexprs, max_rows)`` where ``args`` are the table,
    this rank's base, input, output and sizes addresses, the eight host sizes, rank, capacities and row length;
    ``constexprs`` W, WP, DTYPE, SIZES_DTYPE; ``max_rows`` (rank-agreed) sizes the grid."""
    host_sizes = list(call.sizes) if call.sizes is not None else [0] * ws.world_size
    args = (ws.table_addr, ws.base, address(inp), address(out),
            call.sizes_dev.data_ptr() if call.sizes_dev is not None else 0,
            *(host_sizes + [0] * (8 - len(host_sizes))), ws.rank, call.rows, call.out_rows, call.hidden)
    constexprs = dict(W=ws.world_size, WP=max(2, 1 << (ws.world_size - 1).bit_length()), DTYPE=TL_DTYPES[inp.dtype],
                      SIZES_DTYPE=TL_SIZE_DTYPES[call.sizes_dev.dtype] if call.sizes_dev is not None else None)
    return args, constexprs, call.largest_rows


def tile_elements(config: KernelConfig, hidden: int, row_tiles: bool) -> int:
    """Elements per tile: ``config.block``, or one row (``hidden``) with row tiles."""
    return hidden if row_tiles else config.block


def rounds_fit(max_rows: int, hidden: int, config: KernelConfig, multiprocessors: int, row_tiles: bool = False) -> bool:
    """Whether a call's tiles per program stay below the 2^20 - 1 rounds or relayed tiles that a
    PUSH / RELAY word can count within one call (``signals.py``); rank-agreed."""
    block = tile_elements(config, hidden, row_tiles)
    grid = grid_size(max_rows, hidden, block, config.programs_per_sm, config.tiles_per_program, multiprocessors)
    return math.ceil(max_rows * hidden / block / grid) <= MAX_ROUNDS


def run(kernel, args: tuple, constexprs: dict, max_rows: int, hidden: int, config: KernelConfig,
        multiprocessors: int, fit_programs: int | None = None, row_tiles: bool = False) -> None:
    """Launch ``kernel`` with ``config``'s knobs on the grid they imply. ``fit_programs``: cap the
    registers per thread so that this many programs fit on one SM at once (``register_cap``; the
    grid is sized for ``programs_per_sm``, and programs that do not fit wait for a free slot).
    ``row_tiles``: a tile is one row (``tiles.tile``; ``config.block`` >= hidden)."""
    grid = grid_size(max_rows, hidden, tile_elements(config, hidden, row_tiles), config.programs_per_sm,
                     config.tiles_per_program, multiprocessors)
    cap = register_cap(config.num_warps, fit_programs) if fit_programs else None
    kernel[(grid,)](*args, config.programs_per_sm, config.tiles_per_program, **constexprs, BLOCK=config.block,
                    num_warps=config.num_warps, **({"maxnreg": cap} if cap else {}))
