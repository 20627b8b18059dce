"""Every rank of a call launches the same compiled kernel variant, whatever its own rows (single
process, no kernel run).

Triton compiles one variant per signature of the arguments' types, and an integer's type follows its
value (an int32 below 2^31, an int64 above). A rank whose kernel needs a variant the others do not
compiles it on its first such call while its peers' kernels already wait for it in their polls. So
the arguments that differ between ranks (its tensors' addresses, its rank, its rows) must type the
same on a rank with no rows as on one with rows."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from reduce_scatterv._triton_mode import kernel_module
from reduce_scatterv.epilogues import HcPost, ResidualRMSNorm
from reduce_scatterv.layout import Layout
from reduce_scatterv.validation import Call

# the kernel modules are imported once this process's Triton mode is fixed, as the API does
kernel_module("cuda" if torch.cuda.is_available() else "cpu")
from reduce_scatterv import all_gatherv_kernel, all_gatherv_ll_kernel, push_kernel, reduce_scatterv_kernel  # noqa: E402
from reduce_scatterv.launch_args import EMPTY_ADDRESS, address  # noqa: E402

mangle_type = pytest.importorskip("triton.runtime.jit").__dict__.get("mangle_type")
needs_mangle = pytest.mark.skipif(mangle_type is None, reason="this Triton has no triton.runtime.jit.mangle_type")

H, HC, SIZES = 256, 4, (3, 0)  # rank 1 has no rows
PROTOCOL = (20_000_000_000, 7, 0)


class _Arena:
    """Test tensors carved from one 64 MiB buffer: glibc maps so large a block above the heap, so
    their addresses are int64 as a GPU's are (small CPU tensors may lie in a heap below 2^31, as they
    do where Python is not position-independent)."""

    def __init__(self):
        self.buf, self.used = torch.empty(64 << 20, dtype=torch.uint8), 0
        assert self.buf.data_ptr() >= 2**31

    def randn(self, *shape, dtype=torch.bfloat16):
        n = torch.Size(shape).numel() * dtype.itemsize
        t = self.buf[self.used:self.used + n].view(dtype).view(shape)
        self.used += -(-n // 256) * 256
        return t.normal_() if t.is_floating_point() else t


def _workspace(rank: int, base: int):
    """What the launchers read of a Workspace; the table's and bases' addresses are int64 as on a GPU."""
    return SimpleNamespace(table_addr=0x7F00_0000_0000, base=base, world_size=2, rank=rank,
                           layout=Layout(2, ll_bytes=1 << 20, push_bytes=1 << 20, scratch_bytes=1 << 20,
                                         arena_bytes=0))


def _epilogue(mem: _Arena, kind: str, rows: int):
    if kind == "hc_post":
        return HcPost(mem.randn(rows, HC, H), mem.randn(rows, HC, dtype=torch.float32),
                      mem.randn(rows, HC, HC, dtype=torch.float32), mem.randn(rows, HC, H))
    if kind == "rmsnorm":
        return ResidualRMSNorm(mem.randn(rows, H), mem.randn(H), 1e-6, mem.randn(rows, H), mem.randn(rows, H))
    return None


def _arguments(kernel: str, rank: int, epilogue: str | None):
    """(args, constexprs) that ``kernel``'s launcher builds for ``rank`` of a call with ``SIZES``."""
    ws, mem = _workspace(rank, base=0x7F10_0000_0000 + rank * (1 << 32)), _Arena()
    n, total = SIZES[rank], sum(SIZES)
    if kernel.startswith("gather"):
        inp, out = mem.randn(n, H), mem.randn(total, H)
        call = Call(n, (H,), H, SIZES, None, total)
        if kernel == "gather_ll":
            return all_gatherv_ll_kernel.arguments(ws, inp, out, call, PROTOCOL)[:2]
        return all_gatherv_kernel.arguments(ws, inp, out, call, True, PROTOCOL)[:2]
    inp, out = mem.randn(total, H), mem.randn(n, H)
    call, ep = Call(total, (H,), H, SIZES, None, n), _epilogue(mem, epilogue, n)
    if kernel == "pull":
        variant = reduce_scatterv_kernel.Variant(stage=True, relay=False)
        return reduce_scatterv_kernel.kernel_arguments(ws, inp, out, call, variant, PROTOCOL, ep)[:2]
    return push_kernel.push_arguments(ws, inp, out, call, kernel == "ll", PROTOCOL, ep)[:2]


CASES = [("ll", None), ("ll", "hc_post"), ("push", None), ("push", "hc_post"), ("push", "rmsnorm"), ("pull", None),
         ("pull", "rmsnorm"), ("gather_ll", None), ("gather", None)]


@needs_mangle
@pytest.mark.parametrize("kernel,epilogue", CASES, ids=lambda c: str(c))
def test_a_rank_without_rows_types_its_arguments_as_the_others_do(kernel, epilogue):
    with_rows, without = _arguments(kernel, 0, epilogue), _arguments(kernel, 1, epilogue)
    types = [[mangle_type(a) for a in args] for args, _ in (with_rows, without)]
    assert types[0] == types[1], [(i, a, b) for i, (a, b) in enumerate(zip(*types)) if a != b]
    assert with_rows[1] == without[1]  # the constexprs too


def test_an_empty_tensor_passes_an_int64_address_no_kernel_can_reach():
    assert address(torch.empty(0, H)) == EMPTY_ADDRESS and EMPTY_ADDRESS >= 2**47  # above user space
    assert 2**31 <= EMPTY_ADDRESS < 2**63 and EMPTY_ADDRESS % 128 == 0  # int64, aligned as any buffer
    t = torch.randn(2, H)
    assert address(t) == t.data_ptr()
