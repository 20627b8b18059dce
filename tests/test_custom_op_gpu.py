"""``torch.ops.rsv.reduce_scatterv`` on GPUs (NCCL group, symmetric memory): eager, opcheck,
``torch.compile(fullgraph=True)`` with inductor, and CUDA-graph capture with device sizes (the op
alone, and a compiled function around it), replayed with new sizes. Skipped (with the reason) on
machines with fewer than 2 GPUs (``RSV_RANKS_ON_ONE_GPU=N``: N ranks on GPU 0, a gloo group;
``tests/gpus.py``); the engine plugins against the engines run on CPU (test_engine_*.py), their
shared path on GPUs in test_plugins_gpu.py.

    pytest tests/test_custom_op_gpu.py            # spawns one process per GPU itself
"""

from __future__ import annotations

import pytest

from tests.gpus import NEEDS_TWO, worlds

pytestmark = NEEDS_TWO
WORLDS = worlds(2, 4)
CASES = "tests.custom_op_cases"


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("sizes", [[3, 0, 5, 1], [0, 0, 0, 0], [4, 4, 4, 4], [0, 700, 1, 2]], ids=str)
@pytest.mark.parametrize("device_sizes", [False, True])
def test_the_op_returns_the_sum_of_this_ranks_rows(gpu_pools, world, sizes, device_sizes):
    gpu_pools[world].run(f"{CASES}:eager_case", sizes=sizes[:world], rest=(7168,), device_sizes=device_sizes,
                         spare_rows=3 if device_sizes else 0, through="ops")


@pytest.mark.parametrize("device_sizes", [False, True])
def test_opcheck_passes(gpu_pools, device_sizes):
    for report in gpu_pools[2].run(f"{CASES}:opcheck_case", sizes=[3, 1], rest=(256,), device_sizes=device_sizes):
        assert report and all(v == "SUCCESS" for v in report.values()), report


@pytest.mark.parametrize("sizes,device_sizes", [([3, 1], False), ([0, 0], False), ([1, 5], True)])
def test_compiled_with_fullgraph_and_inductor_makes_one_graph(gpu_pools, sizes, device_sizes):
    for frames, _ in gpu_pools[2].run(f"{CASES}:compile_case", sizes=sizes, rest=(4096,), backend="inductor",
                                      device_sizes=device_sizes, spare_rows=2 if device_sizes else 0):
        assert frames == 1


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("compiled", [False, True])
@pytest.mark.parametrize("per_rank_capacity", [16, 1024])  # push and pull modes
def test_cuda_graph_of_the_op_replays_with_new_device_sizes(gpu_pools, world, compiled, per_rank_capacity):
    size_sets = [[1] * world, [0] * world, [per_rank_capacity] + [0] * (world - 1),
                 [(3 * r + 1) % (per_rank_capacity + 1) for r in range(world)], [per_rank_capacity] * world]
    gpu_pools[world].run(f"{CASES}:graph_case", per_rank_capacity=per_rank_capacity, hidden=7168, dtype="bfloat16",
                         size_sets=size_sets, seed=world, compiled=compiled)
