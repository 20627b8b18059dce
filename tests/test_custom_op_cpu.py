"""``torch.ops.rsv.reduce_scatterv`` on CPU emulation (gloo): eager, opcheck, the fake
implementation, and ``torch.compile(fullgraph=True)`` with the ``aot_eager`` backend (Dynamo and
AOTAutograd trace the op as one node; the graph runs eagerly) and with ``inductor`` (C++ code
around the op; needs a C++ compiler). The GPU versions, with CUDA-graph capture, are in
test_custom_op_gpu.py."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.strategies import sizes as sizes_strategy

EXAMPLES = int(os.environ.get("RSV_CPU_EXAMPLES", "40")) // 4 or 1
CASES = "tests.custom_op_cases"
SIZE_SETS = [[3, 0], [0, 0], [4, 4], [0, 5], [1, 2]]  # uneven, all zero, even, idle rank 0


@pytest.mark.parametrize("sizes", SIZE_SETS)
@pytest.mark.parametrize("with_output", [True, False])
def test_the_op_returns_the_sum_of_this_ranks_rows(cpu_pools, sizes, with_output):
    cpu_pools[2].run(f"{CASES}:eager_case", sizes=sizes, with_output=with_output)


@pytest.mark.parametrize("through", ["ops", "wrapper"])
def test_device_sizes_leave_rows_past_the_count_untouched(cpu_pools, through):
    cpu_pools[2].run(f"{CASES}:eager_case", sizes=[2, 5], device_sizes=True, spare_rows=2, through=through)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_the_op_matches_the_float64_sum_for_drawn_calls(cpu_pools, data):
    world = data.draw(st.sampled_from([2, 3]))
    device_sizes = data.draw(st.booleans())
    cpu_pools[world].run(f"{CASES}:eager_case", sizes=data.draw(sizes_strategy(world, 8)),
                         rest=data.draw(st.sampled_from([(1,), (8,), (2, 12)])),
                         dtype=data.draw(st.sampled_from(["bfloat16", "float16", "float32"])),
                         seed=data.draw(st.integers(0, 2**16)), with_output=data.draw(st.booleans()),
                         device_sizes=device_sizes, spare_rows=data.draw(st.integers(0, 2)) if device_sizes else 0,
                         through=data.draw(st.sampled_from(["ops", "wrapper"])))


@pytest.mark.parametrize("device_sizes", [False, True])
def test_opcheck_passes(cpu_pools, device_sizes):
    """Schema (``output`` mutated, ``input`` not), fake tensor, AOT dispatch static and dynamic."""
    for report in cpu_pools[2].run(f"{CASES}:opcheck_case", sizes=[3, 1], device_sizes=device_sizes):
        assert report and all(v == "SUCCESS" for v in report.values()), report


def test_the_fake_implementation_launches_nothing(cpu_pools):
    assert cpu_pools[2].run(f"{CASES}:fake_case", sizes=[3, 1]) == [(3, 8), (1, 8)]


@pytest.mark.parametrize("sizes,device_sizes", [([3, 1], False), ([0, 0], False), ([2, 2], False), ([1, 4], True)])
def test_compiled_with_fullgraph_makes_one_graph(cpu_pools, sizes, device_sizes):
    """``torch.compile(fullgraph=True, backend=aot_eager)``: one graph (a break would raise), right sums."""
    for frames, _ in cpu_pools[2].run(f"{CASES}:compile_case", sizes=sizes, device_sizes=device_sizes,
                                      spare_rows=2 if device_sizes else 0):
        assert frames == 1


@pytest.mark.parametrize("sizes,device_sizes", [([3, 1], False), ([1, 4], True)])
def test_compiled_with_fullgraph_and_inductor_makes_one_graph(cpu_pools, sizes, device_sizes):
    for frames, _ in cpu_pools[2].run(f"{CASES}:compile_case", sizes=sizes, device_sizes=device_sizes,
                                      spare_rows=2 if device_sizes else 0, backend="inductor"):
        assert frames == 1
