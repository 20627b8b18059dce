"""reduce_scatterv on CPU emulation: the real kernels in Triton's interpreter, one process per rank,
against gloo's reduce_scatter and a float64 sum. Runs on every CI run."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.strategies import calls

EXAMPLES = int(os.environ.get("RSV_CPU_EXAMPLES", "40"))
CASE = "tests.cases:reduce_scatterv_case"


def _settings(n=EXAMPLES):
    return settings(max_examples=n, deadline=None, derandomize=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@_settings()
@given(data=st.data())
def test_every_rank_gets_the_sum_of_its_rows(cpu_pools, world, data):
    """Any sizes (idle ranks, one owner, all zero), shapes, dtypes, output given or not, input in the
    workspace or not, contiguous or not, sizes on the host or the device: every rank's result equals
    gloo's reduce_scatter and the float64 sum within one rounding."""
    case = data.draw(calls(world))
    cpu_pools[world].run(CASE, **case)


# Regressions: relayed tiles of a heavy owner must be staged in the program that reads them, and
# the owner's own partial of a relayed tile must be exposed too (both once returned wrong sums).
@pytest.mark.parametrize("case", [
    dict(sizes=[20, 0, 1, 0], rest=(64,), group="large"),
    dict(sizes=[1, 2, 3, 4], rest=(64,), group="large", dtype="float32"),
    dict(sizes=[1, 2, 3, 4], rest=(40,), group="large", device_sizes=True, spare_rows=3),
    dict(sizes=[0, 30, 2, 1], rest=(48,), group="large", resident=True, device_sizes=True, spare_rows=3),
    dict(sizes=[0, 0, 0, 0], rest=(16,), group="large"),
    dict(sizes=[0, 0, 0, 0], rest=(16,), device_sizes=True, spare_rows=2),
])
def test_regressions(cpu_pools, case):
    cpu_pools[4].run(CASE, **case)


@pytest.mark.parametrize("world", [2, 3])
def test_back_to_back_calls_of_every_variant_stay_in_step(cpu_pools, world):
    """Signals are epochs, never reset: 40 calls in a row, each with fresh inputs, all correct. In the
    "mixed" group one workspace takes every mode in turn (flagged push, plain push, a relayed pull,
    the pull), so the slots' parity survives mode changes."""
    by_mode = [[1] * world, [4] * world, [30] + [0] * (world - 1), [40] * world]  # ll, push, pull (relayed), pull
    for i in range(8):
        sizes = [(i + r) % 4 for r in range(world)]
        for group in ("world", "push", "large"):
            cpu_pools[world].run(CASE, sizes=sizes, rest=(24,), seed=i, group=group, repeat=1, resident=i % 2 == 0)
        cpu_pools[world].run(CASE, sizes=by_mode[i % 4], rest=(24,), seed=i, group="mixed", resident=i % 3 == 0)


PLANS = {  # world: host-size sets and the (mode, relays?) the planner must pick, bf16 rows of H 7168
    # 4 ranks: flagged words up to 256 KiB per destination, plain push up to 4 MiB (292 rows), then
    # the pull kernel, which relays a heavy owner's excess rows (every excess on CPU); a heavy owner
    # within the push limit is pushed, not relayed
    4: ([[1, 1, 1, 1], [18, 0, 3, 1], [64, 64, 64, 64], [140, 0, 0, 0], [256, 256, 256, 256], [292, 0, 0, 0],
         [293, 0, 0, 0], [100, 200, 300, 280], [512] * 4],
        [("ll", False), ("ll", False), ("push", False), ("push", False), ("push", False), ("push", False),
         ("large", True), ("large", False), ("large", False)]),
    # 2 ranks push further: flagged words up to 1 MiB (73 rows), plain push up to 8 MiB (585 rows)
    2: ([[32, 32], [73, 0], [74, 1], [512, 512], [585, 100], [586, 0], [1024, 1024]],
        [("ll", False), ("ll", False), ("push", False), ("push", False), ("push", False), ("large", False),
         ("large", False)]),
}


@pytest.mark.parametrize("world", sorted(PLANS))
def test_the_planner_pushes_small_and_mid_calls_and_pulls_or_relays_the_rest(cpu_pools, world):
    """Default limits by world size (measured crossovers, bench/NOTES.md): see PLANS."""
    sets, want = PLANS[world]
    for got in cpu_pools[world].run("tests.cases:plan_case", size_sets=sets, hidden=7168):
        assert [tuple(g) for g in got] == want


BAD = {
    # kind: (exception type, words the message must contain)
    "rows_mismatch": ("ValueError", "rows but sum(sizes)"),
    "negative_size": ("ValueError", "negative"),
    "too_many_sizes": ("ValueError", "entries for a group of"),
    "too_few_sizes": ("ValueError", "entries for a group of"),
    "float_sizes": ("TypeError", "ints"),
    "dtype_float64": ("TypeError", "float64 is not supported"),
    "dtype_int32": ("TypeError", "int32 is not supported"),
    "output_rows": ("ValueError", "output has shape"),
    "output_width": ("ValueError", "output has shape"),
    "output_dtype": ("TypeError", "output dtype"),
    "output_device": ("ValueError", "output is on"),
    "sizes_tensor_dtype": ("TypeError", "int32 or int64"),
    "sizes_tensor_length": ("ValueError", "one count per rank"),
    "sizes_tensor_device": ("ValueError", "sizes is on"),
    "device_sizes_no_output": ("ValueError", "pass output"),
    "uneven_default_split": ("ValueError", "do not divide"),
    "zero_dim": ("ValueError", "row dimension"),
    "not_a_tensor": ("TypeError", "must be a torch.Tensor"),
    "device_sizes_exceed_input": ("RuntimeError", "summed to more rows than the input holds"),
    "device_sizes_negative": ("RuntimeError", "negative"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_input_raises_the_same_clear_error_on_every_rank(cpu_pools, kind):
    results = cpu_pools[3].run("tests.cases:bad_input_case", kind=kind)
    want_type, want_words = BAD[kind]
    for rank, got in enumerate(results):
        assert got is not None, f"rank {rank}: nothing raised for {kind}"
        assert got[0] == want_type and want_words in got[1], f"rank {rank}: {got}"
    cpu_pools[3].run(CASE, sizes=[1, 2, 3], rest=(8,))  # the group still works afterwards


def test_output_too_small_for_a_device_size_is_flagged_on_that_rank(cpu_pools):
    results = cpu_pools[2].run("tests.cases:bad_input_case", kind="device_size_exceeds_output")
    for got in results:
        assert got is not None and got[0] == "RuntimeError" and "output's row capacity" in got[1], got
    cpu_pools[2].run(CASE, sizes=[2, 1], rest=(8,))


@pytest.mark.parametrize("group", ["world", "push", "large"])  # flagged words, plain push, pull
def test_an_output_too_small_on_one_rank_fails_there_alone(cpu_pools, group):
    results = cpu_pools[3].run("tests.cases:short_output_case", sizes=[2, 3, 1], short_rank=1, group=group)
    assert results[1] is not None and "output's row capacity" in results[1], results
    assert results[0] is None and results[2] is None, results
    cpu_pools[3].run(CASE, sizes=[1, 2, 3], rest=(8,), group=group)  # the group still works afterwards


def test_unreachable_peers_fall_back_to_the_grouped_reduce_with_one_warning(cpu_pools):
    results = cpu_pools[3].run("tests.cases:fallback_case", sizes=[2, 0, 3], seed=5)
    for warned in results:
        assert len(warned) == 1 and "falling back to NCCL's grouped-reduce" in warned[0], warned
