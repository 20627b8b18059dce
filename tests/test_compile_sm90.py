"""The kernels compile for the GPU (sm_90: H100 / H200), checked on a machine without one: every
variant the launchers ask for in the calls of ``tests/compile_cases.py`` (modes, dtypes, host and
device sizes, idle ranks, epilogues, the gather's words, the multi-node hierarchy, hc_post), with
Triton's real argument specialisation and a stand-in driver. What the interpreter cannot see (it
runs Python): an integer argument small enough arrives as an int32, which must be widened before it
becomes a pointer or an offset; a kernel that forgets fails here."""

from __future__ import annotations

import pytest

from tests.rank_pool import RankPool

KERNELS = {"reduce_scatterv_push_kernel", "reduce_scatterv_kernel", "all_gatherv_ll_kernel", "all_gatherv_kernel",
           "hop_prologue_kernel", "hop_fault_kernel", "hop_finish_kernel", "hop_gather_check_kernel",
           "hop_gather_copy_kernel", "hc_post_kernel"}


@pytest.mark.cpu_emulation
@pytest.mark.parametrize("world,keywords", [
    (2, {}),  # every group (every mode), dtype, sizes form, epilogue; the hierarchy as 2 nodes x 1
    (4, dict(dtypes=["bfloat16"], only=["world", "large", "nodes"])),  # 4-rank variants; the hierarchy as 2 x 2
], ids=["2-ranks", "4-ranks"])
def test_every_kernel_variant_the_launchers_use_compiles_for_sm90(world, keywords):
    pool = RankPool(world, "cpu", env={"TRITON_INTERPRET": "0"}, timeout=1500)
    try:
        compiled = pool.run("tests.compile_cases:compile_case", **keywords)
    finally:
        pool.close()
    for names in compiled:
        assert set(names) >= KERNELS, sorted(KERNELS - set(names))
