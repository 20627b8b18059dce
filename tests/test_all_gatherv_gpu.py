"""all_gatherv on GPUs, one rank per GPU, against NCCL's all-gather and the exact concatenation.
Skipped, with the reason, on machines with fewer than 2 GPUs, unless ``RSV_RANKS_ON_ONE_GPU=N`` puts
N ranks on GPU 0 with gloo as the reference (``tests/gpus.py``)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gpus import NEEDS_TWO, worlds
from tests.strategies import sizes

pytestmark = NEEDS_TWO
WORLDS = worlds(2, 3, 4)
EXAMPLES = int(os.environ.get("RSV_GPU_EXAMPLES", "60"))
CASES = "tests.all_gatherv_cases"


@pytest.mark.parametrize("world", WORLDS)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_fuzz_every_rank_gets_every_ranks_rows_in_order(gpu_pools, world, data):
    device_sizes = data.draw(st.booleans())
    gpu_pools[world].run(f"{CASES}:gather_case", sizes=data.draw(sizes(world, max_rows=300)),
                         rest=data.draw(st.sampled_from([(8,), (7168,), (4096,), (2, 24)])),
                         dtype=data.draw(st.sampled_from(["bfloat16", "float16", "float32"])),
                         seed=data.draw(st.integers(0, 2**20)), with_output=data.draw(st.booleans()),
                         resident=data.draw(st.booleans()), device_sizes=device_sizes,
                         spare_rows=data.draw(st.integers(0, 2)) if device_sizes else 0)


@pytest.mark.parametrize("world", WORLDS)
def test_graph_replays_with_new_device_sizes(gpu_pools, world):
    size_sets = [[1] * world, [0] * world, [64] + [0] * (world - 1), [(3 * r + 1) % 65 for r in range(world)],
                 [64] * world]
    gpu_pools[world].run(f"{CASES}:gather_graph_case", per_rank_capacity=64, hidden=7168, size_sets=size_sets,
                         seed=world)


def test_gathers_and_reduce_scatters_back_to_back_share_one_workspace(gpu_pools):
    gpu_pools[2].run(f"{CASES}:mixed_case", calls=24, seed=3)


@pytest.mark.parametrize("kind", ["sizes", "dtype"])
def test_ranks_that_pass_different_sizes_or_dtypes_all_get_an_error(gpu_pools, kind):
    results = gpu_pools[2].run(f"{CASES}:gather_disagree_case", timeout_s=3.0, kind=kind)
    assert all(seen and "different calls" in seen[0] for seen in results), results


@pytest.mark.parametrize("dtype,rest", [("int64", (1,)), ("int64", (7,)), ("uint8", (7168,)), ("float64", (4096,)),
                                        ("int16", (3,)), ("bool", (2, 24)), ("float8_e4m3fn", (7168,))], ids=str)
@pytest.mark.parametrize("sizes,device_sizes", [([3, 0], False), ([1, 1], False), ([40, 300], False),
                                                ([5, 2], True)], ids=str)
def test_rows_of_other_dtypes_come_back_bit_for_bit(gpu_pools, dtype, rest, sizes, device_sizes):
    """Token ids and other dtypes as words of the same bits, flagged words and pull (300 rows)."""
    gpu_pools[2].run(f"{CASES}:gather_bits_case", sizes=sizes, rest=rest, dtype=dtype, seed=len(rest),
                     device_sizes=device_sizes, spare_rows=2 if device_sizes else 0)
