"""Multi-node reduce_scatterv and all_gatherv (``kernels/hierarchy.py``) on GPUs of one host, against NCCL.

On 4 GPUs: 2 "nodes" x 2 (``ranks_per_node=2``): the fused node step over NVLink, the hop on NCCL
over NVLink too (it stands in for the network), hypothesis over sizes vs NCCL's flat
reduce_scatter (all_gatherv: the exact concatenation and NCCL's flat all-gather), CUDA-graph
capture with device sizes, both collectives back to back, disagreement, a failed node, bad input.
On 2 GPUs: 2 x 1 (``ranks_per_node=1``), a smoke test of the wiring only: the node step is a
copy, so it measures nothing of the hierarchy. Skipped, with the reason, where GPUs are missing.

    pytest -q tests/test_hierarchy_gpu.py
    KERNELS_SYMM_MEM_BACKEND=nvshmem pytest -q tests/test_hierarchy_gpu.py     # on NVSHMEM
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gpus import GPUS, NEEDS_NCCL, NEEDS_TWO
from tests.strategies import sizes

pytestmark = [NEEDS_TWO, NEEDS_NCCL]  # the hop between nodes is NCCL's
NEEDS_FOUR = pytest.mark.skipif(GPUS < 4, reason=f"2 nodes x 2 needs 4 GPUs; this machine has {GPUS}")
EXAMPLES = int(os.environ.get("RSV_GPU_EXAMPLES", "60"))
CASES = "tests.hierarchy_cases"


CALL_CASES = {"reduce_scatterv": "hier_case", "all_gatherv": "hier_gather_case"}


def _draw(data, world: int, max_rows: int, op: str = "reduce_scatterv") -> dict:
    device_sizes = data.draw(st.booleans())
    drawn = dict(sizes=data.draw(sizes(world, max_rows)),
                 rest=data.draw(st.sampled_from([(8,), (40,), (4096,), (7168,), (2, 24)])),
                 dtype=data.draw(st.sampled_from(["bfloat16", "float16", "float32"])),
                 seed=data.draw(st.integers(0, 2**20)), device_sizes=device_sizes,
                 spare_rows=data.draw(st.integers(0, 2)) if device_sizes else 0,
                 with_output=data.draw(st.booleans()), noncontig=data.draw(st.integers(0, 3)) == 0)
    if op == "reduce_scatterv":
        drawn["hop_fp32"] = data.draw(st.integers(0, 3)) == 0
    return drawn


# ---- 2 GPUs: 2 nodes x 1 (wiring only)
@pytest.mark.parametrize("op", sorted(CALL_CASES))
@settings(max_examples=max(EXAMPLES // 3, 5), deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_smoke_two_nodes_of_one_gpu_match_nccl(gpu_pools, op, data):
    """The wiring (rail order or blocks, check rows, NCCL's hop, the owner's check and copy); the node
    step is trivial: measures nothing of the hierarchy."""
    gpu_pools[2].run(f"{CASES}:{CALL_CASES[op]}", ranks_per_node=1, **_draw(data, 2, 300, op))


def test_smoke_two_nodes_of_one_gpu_graph_replays(gpu_pools):
    gpu_pools[2].run(f"{CASES}:hier_graph_case", per_rank_capacity=64, hidden=7168, seed=2, ranks_per_node=1,
                     size_sets=[[1, 1], [0, 0], [64, 0], [3, 17], [64, 64], [0, 5]])


# ---- 4 GPUs: 2 nodes x 2
@NEEDS_FOUR
@pytest.mark.parametrize("op", sorted(CALL_CASES))
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_two_nodes_of_two_match_nccl(gpu_pools, op, data):
    gpu_pools[4].run(f"{CASES}:{CALL_CASES[op]}", **_draw(data, 4, 600, op))


@NEEDS_FOUR
@pytest.mark.parametrize("hop_fp32", [False, True])
@pytest.mark.parametrize("per_rank_capacity", [16, 1024])
def test_cuda_graph_replays_with_new_device_sizes(gpu_pools, hop_fp32, per_rank_capacity):
    c = per_rank_capacity
    gpu_pools[4].run(f"{CASES}:hier_graph_case", per_rank_capacity=c, hidden=7168, seed=4, hop_fp32=hop_fp32,
                     size_sets=[[1] * 4, [0] * 4, [c, 0, 0, 0], [(3 * r + 1) % (c + 1) for r in range(4)], [c] * 4,
                                [0, 0, 0, 5]])


@NEEDS_FOUR
def test_many_back_to_back_calls_across_node_modes(gpu_pools):
    for i in range(18):
        sz = [(i * 7 + r * 3) % 9 * (1, 16, 90)[i % 3] for r in range(4)]
        gpu_pools[4].run(f"{CASES}:hier_case", sizes=sz, rest=(7168,), seed=i, repeat=2, device_sizes=i % 4 == 3,
                         spare_rows=1 if i % 4 == 3 else 0)


@NEEDS_FOUR
@pytest.mark.parametrize("kind", ["same_rail_swap_on_one_rank", "other_node_device_sizes", "other_node_dtype"])
def test_ranks_that_disagree_all_get_an_error(gpu_pools, kind):
    results = gpu_pools[4].run(f"{CASES}:hier_disagree_case", kind=kind, timeout_s=3.0, seed=3)
    for rank, (seconds, seen, nan) in enumerate(results):
        assert seen and nan and seconds < 30, (rank, seconds, seen, nan)


@NEEDS_FOUR
@pytest.mark.parametrize("case,device_sizes", [("hier_fault_case", None), ("hier_gather_fault_case", False),
                                               ("hier_gather_fault_case", True)],
                         ids=["reduce_scatterv", "all_gatherv", "all_gatherv-device_sizes"])
def test_a_failed_node_fails_every_rank_until_reset(gpu_pools, case, device_sizes):
    keywords = {} if device_sizes is None else {"device_sizes": device_sizes}
    results = gpu_pools[4].run(f"{CASES}:{case}", failed_node=1, seed=5, **keywords)
    for rank, seen in enumerate(results):
        assert seen["call"] and seen["call_nan"] and seen["sticky"] and seen["sticky_nan"], (rank, seen)


BAD = {"reduce_scatterv": ("hier_bad_input_case", "hier_case", ["rows_mismatch", "dtype_float64"]),
       "all_gatherv": ("hier_gather_bad_input_case", "hier_gather_case", ["rows_vs_sizes", "odd_row_bytes"])}
BAD_KINDS = [(op, k) for op, (_, _, kinds) in BAD.items()
             for k in kinds + ["device_sizes_exceed_capacity", "device_sizes_negative"]]


@NEEDS_FOUR
@pytest.mark.parametrize("op,kind", BAD_KINDS, ids=[f"{op}-{kind}" for op, kind in BAD_KINDS])
def test_bad_input_raises_on_every_rank(gpu_pools, op, kind):
    bad, good, _ = BAD[op]
    results = gpu_pools[4].run(f"{CASES}:{bad}", kind=kind)
    assert all(r is not None for r in results) and len({r[0] for r in results}) == 1, results
    gpu_pools[4].run(f"{CASES}:{good}", sizes=[1, 0, 2, 1], rest=(64,))


# ---- all_gatherv: 2 x 1 (wiring only), then 2 x 2
def test_smoke_all_gatherv_two_nodes_of_one_gpu_graph_replays(gpu_pools):
    gpu_pools[2].run("tests.all_gatherv_cases:gather_graph_case", per_rank_capacity=64, hidden=7168, seed=2,
                     ranks_per_node=1, size_sets=[[1, 1], [0, 0], [64, 0], [3, 17], [64, 64], [0, 5]])


@NEEDS_FOUR
@pytest.mark.parametrize("per_rank_capacity", [16, 1024])
def test_all_gatherv_cuda_graph_replays_with_new_device_sizes(gpu_pools, per_rank_capacity):
    c = per_rank_capacity
    gpu_pools[4].run("tests.all_gatherv_cases:gather_graph_case", per_rank_capacity=c, hidden=7168, seed=4,
                     ranks_per_node=2, size_sets=[[1] * 4, [0] * 4, [c, 0, 0, 0],
                                                  [(3 * r + 1) % (c + 1) for r in range(4)], [c] * 4, [0, 0, 0, 5]])


@NEEDS_FOUR
def test_all_gatherv_and_reduce_scatterv_back_to_back(gpu_pools):
    """Both collectives alternate on one workspace, host and device sizes, decode to prefill sizes."""
    for i in range(12):
        sz = [(i * 7 + r * 3) % 9 * (1, 16, 90)[i % 3] for r in range(4)]
        dev = i % 4 == 3
        case = "hier_gather_case" if i % 2 else "hier_case"
        gpu_pools[4].run(f"{CASES}:{case}", sizes=sz, rest=(7168,), seed=i, repeat=2, device_sizes=dev,
                         spare_rows=1 if dev else 0)


@NEEDS_FOUR
@pytest.mark.parametrize("kind", ["sizes_swapped_across_nodes", "other_node_device_sizes", "other_node_dtype"])
def test_all_gatherv_ranks_that_disagree_all_get_an_error(gpu_pools, kind):
    results = gpu_pools[4].run(f"{CASES}:hier_gather_disagree_case", kind=kind, timeout_s=3.0, seed=3)
    for rank, (seconds, seen, nan) in enumerate(results):
        assert len(seen) == 2 and nan and seconds < 30, (rank, seconds, seen, nan)
