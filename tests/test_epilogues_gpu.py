"""Epilogues fused into reduce_scatterv on GPUs: against NCCL's reduce_scatter followed by the torch
epilogue (what SGLang runs) and against the float64 epilogue of the unrounded sum, in every mode,
eager and under CUDA-graph replay with new device sizes; a fault poisons every output of the
epilogue. Skipped (with the reason) on machines with fewer than 2 GPUs, unless
``RSV_RANKS_ON_ONE_GPU=N`` puts N ranks on GPU 0 with gloo as the reference (``tests/gpus.py``).

    pytest -q tests/test_epilogues_gpu.py -k "not fuzz"   # spawns one process per GPU itself
    RSV_GPU_EXAMPLES=100 pytest -q tests/test_epilogues_gpu.py -k fuzz

The cases share kernel variants (the NCCL test: host sizes, no f_out; the float64 and graph tests:
device sizes, f_out, input in the workspace), so a first run compiles about 13 of them.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gpus import NEEDS_TWO, skip_beyond, worlds
from tests.strategies import sizes as sizes_strategy

pytestmark = NEEDS_TWO
WORLDS = worlds(2, 4)
EXAMPLES = int(os.environ.get("RSV_GPU_EXAMPLES", "30"))
CASES = "tests.epilogue_cases"
KINDS = ["hc_post", "rmsnorm"]
# group -> (modes off, the mode a decode-size call takes): flagged words, plain push, pull
MODES = {"ll": ("world", ()), "push": ("world", ("ll",)), "large": ("large", ())}


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("sizes", [[1, 1, 1, 1], [8, 0, 3, 5], [32, 32, 32, 32], [0, 0, 0, 0], [300, 1, 0, 77]])
def test_every_mode_matches_nccl_then_the_torch_epilogue(gpu_pools, world, kind, mode, sizes):
    group, off = MODES[mode]
    if kind == "rmsnorm" and mode == "ll":
        pytest.skip("residual + RMSNorm never runs as flagged words (row tiles; kernels/epilogues.py)")
    for hidden in (7168, 4096):
        gpu_pools[world].run(f"{CASES}:nccl_reference_case", kind=kind, sizes=sizes[:world], hidden=hidden,
                             seed=hidden + world, group=group, modes_off=off)


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("group, modes_off", [("world", ()), ("world", ("ll",)), ("push", ()), ("large", ())])
def test_every_output_matches_the_float64_epilogue_at_model_widths(gpu_pools, world, kind, group, modes_off):
    """Outputs poisoned, fresh inputs, f_out, in place or not, device sizes (spare rows kept), input in
    the workspace: the kernels the graph test captures (host sizes and staged inputs: the NCCL test
    above)."""
    for i, sizes in enumerate(([3, 1, 0, 2], [64, 0, 17, 5], [600, 600, 0, 3])):
        gpu_pools[world].run(f"{CASES}:epilogue_case", kind=kind, sizes=sizes[:world], hidden=7168, seed=i,
                             group=group, modes_off=modes_off, with_f=True, in_place=i == 1, resident=True,
                             device_sizes=True, spare_rows=2)


@pytest.mark.parametrize("world", [w for w in worlds(3, 4) if w >= 3] or [3])
@pytest.mark.parametrize("kind", KINDS)
def test_relayed_tiles_reach_the_owners_epilogue(gpu_pools, world, kind):
    skip_beyond(world)
    for resident in (True, False):
        gpu_pools[world].run(f"{CASES}:epilogue_case", kind=kind, sizes=[2500, 0, 0, 0][:world], hidden=7168,
                             group="large", resident=resident, with_f=True)


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("group, modes_off, capacity", [("world", (), 16), ("world", ("ll",), 16),
                                                         ("large", (), 512)])
def test_cuda_graph_replays_with_new_device_sizes(gpu_pools, world, kind, group, modes_off, capacity):
    size_sets = [[1] * world, [0] * world, [capacity] + [0] * (world - 1), [(3 * r + 1) % (capacity + 1)
                                                                          for r in range(world)],
                 [capacity] * world, [0] * (world - 1) + [5]]
    gpu_pools[world].run(f"{CASES}:graph_case", kind=kind, capacity=capacity, hidden=7168, size_sets=size_sets,
                         seed=world, group=group, modes_off=modes_off)


@pytest.mark.parametrize("kind, modes_off", [("hc_post", ()), ("hc_post", ("ll",)), ("rmsnorm", ("ll", "push"))])
def test_a_fault_poisons_every_output_of_the_epilogue(gpu_pools, kind, modes_off):
    """One rank skips the call (sizes [2, 1] of 32 B rows: flagged words in the protocol groups, or the
    plain push / pull with the modes before them off)."""
    results = gpu_pools[2].run(f"{CASES}:fault_case", kind=kind, absent_rank=1, sizes=[2, 1], modes_off=modes_off)
    for rank, got in enumerate(results):
        assert got["check"] and "failed state" in got["check"], (rank, got)
        if rank != 1:
            assert got["call"] and "ran past the timeout" in got["call"], (rank, got)
            assert all(got["nan"]), (rank, got)
            assert 1.5 < got["waited_s"] < 10, (rank, got)


@pytest.mark.parametrize("world", WORLDS)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_epilogues_match_the_float64_epilogue(gpu_pools, world, data):
    device_sizes = data.draw(st.booleans())
    gpu_pools[world].run(
        f"{CASES}:epilogue_case", kind=data.draw(st.sampled_from(KINDS)), sizes=data.draw(sizes_strategy(world, 40)),
        hidden=data.draw(st.sampled_from([8, 100, 4096, 7168, 7168 + 8])),
        dtype=data.draw(st.sampled_from(["bfloat16", "float16", "float32"])), seed=data.draw(st.integers(0, 2**20)),
        device_sizes=device_sizes, spare_rows=data.draw(st.integers(0, 3)) if device_sizes else 0,
        group=data.draw(st.sampled_from(["world", "push", "large", "mixed"])), with_f=data.draw(st.booleans()),
        in_place=data.draw(st.booleans()), resident=data.draw(st.booleans()), repeat=data.draw(st.integers(1, 2)))


@pytest.mark.parametrize("tokens, hidden", [(1, 7168), (8, 7168), (32, 4096), (5, 100)])
def test_the_one_kernel_hc_post_matches_mhc_hc_post(gpu_pools, tokens, hidden):
    gpu_pools[2].run(f"{CASES}:hc_post_kernel_case", tokens=tokens, hidden=hidden, hc=4, dtype="bfloat16", seed=tokens)
