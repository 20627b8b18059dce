"""Rows of any dtype as 4- or 2-byte words, for ``all_gatherv``, which copies and never computes.

The gather kernels move bfloat16, float16 and float32 elements; a copy moves their bits unchanged
(loads, stores and the flagged words' bitcasts, no arithmetic). So rows of any other dtype (int64
token ids, int32, uint8 masks, float64, float8...) travel as float32 words of the same bytes (float16
words where a row's bytes are not a multiple of 4), and the result is viewed back. The call digest
carries the caller's dtype (:func:`dtype_code`), so ranks passing different dtypes of the same byte
width still disagree. ``reduce_scatterv`` sums, so it takes the three float dtypes only.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Callable

import torch

from .validation import SUPPORTED_DTYPES

_WORDS = ((4, torch.float32), (2, torch.float16))
FLOAT_CODES = {torch.bfloat16: 1, torch.float16: 2, torch.float32: 3}


def dtype_code(dtype: torch.dtype) -> int:
    """A small int naming ``dtype`` in call digests, the same in every process."""
    return FLOAT_CODES.get(dtype) or 0x100 | zlib.crc32(str(dtype).encode()) & 0xFFFF


@dataclass
class AsWords:
    """A call's tensors viewed as words, and how to give the caller its own dtype back."""

    input_: torch.Tensor
    output: torch.Tensor | None
    code: int  # dtype_code of the caller's dtype
    restore: Callable[[torch.Tensor], torch.Tensor]


def as_words(op: str, input_: torch.Tensor, output: torch.Tensor | None) -> AsWords:
    """``input_`` ``[rows, *rest]`` and ``output`` ``[rows', *rest]`` of a dtype the kernels do not
    take, as ``[rows, row_bytes / w]`` words of w = 4 (or 2) bytes; raises TypeError / ValueError,
    naming the problem, for what cannot be served (a row of an odd byte count, an output of another
    dtype or row shape)."""
    dtype, rest = input_.dtype, tuple(input_.shape[1:])
    row_elems = math.prod(rest)
    row_bytes = row_elems * input_.element_size()
    word = next((w for size, w in _WORDS if row_bytes % size == 0), None)
    if word is None:
        raise TypeError(f"{op}: rows of {list(rest)} x {dtype} are {row_bytes} bytes; dtypes other than "
                        f"{', '.join(str(d) for d in SUPPORTED_DTYPES)} are copied as 2- or 4-byte words, so a row "
                        "must be a whole number of 2 bytes")
    if output is not None:
        if output.dtype != dtype:
            raise TypeError(f"{op}: output dtype {output.dtype} differs from input_ dtype {dtype}")
        if tuple(output.shape[1:]) != rest:
            raise ValueError(f"{op}: output rows are {list(output.shape[1:])} but input_ rows are {list(rest)}")

    def words(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(t.shape[0], row_elems).view(word)

    out_words = words(output) if output is not None and output.is_contiguous() else None

    def restore(result: torch.Tensor) -> torch.Tensor:
        if out_words is not None:
            return output  # the kernels wrote into the caller's output through its word view
        got = result.view(dtype).view(result.shape[0], *rest)
        return got if output is None else output.copy_(got)

    out = out_words
    if output is not None and out_words is None:  # a strided output: gather into words, then copy
        out = torch.empty((output.shape[0], row_bytes // word.itemsize), dtype=word, device=output.device)
    return AsWords(words(input_.contiguous()), out, dtype_code(dtype), restore)
