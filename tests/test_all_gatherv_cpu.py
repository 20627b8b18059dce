"""all_gatherv on CPU emulation: the real kernel in Triton's interpreter, one process per rank,
against gloo's all-gather and the exact concatenation. Runs on every CI run."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.strategies import sizes

EXAMPLES = int(os.environ.get("RSV_CPU_EXAMPLES", "40")) // 2
CASES = "tests.all_gatherv_cases"


@pytest.mark.parametrize("world", [2, 3])
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_every_rank_gets_every_ranks_rows_in_order(cpu_pools, world, data):
    """Any sizes (idle ranks, one owner, all zero), widths, dtypes, input in the workspace or not,
    sizes on the host or the device: the output is the concatenation, bit for bit, and equals gloo's."""
    device_sizes = data.draw(st.booleans())
    cpu_pools[world].run(f"{CASES}:gather_case", sizes=data.draw(sizes(world)),
                         rest=data.draw(st.sampled_from([(1,), (8,), (40,), (2, 24)])),
                         dtype=data.draw(st.sampled_from(["bfloat16", "float16", "float32"])),
                         seed=data.draw(st.integers(0, 2**20)), with_output=data.draw(st.booleans()),
                         resident=data.draw(st.booleans()), device_sizes=device_sizes,
                         spare_rows=data.draw(st.integers(0, 2)) if device_sizes else 0,
                         group=data.draw(st.sampled_from(["world", "large", "gather_ll"])),
                         packed=data.draw(st.booleans()))


@pytest.mark.parametrize("sizes,rest,dtype", [([5, 3], (40,), "bfloat16"), ([0, 7], (6,), "bfloat16"),
                                              ([9, 1], (8,), "float32"), ([4, 4], (2, 24), "float16"),
                                              ([3, 0], (10,), "bfloat16")])
def test_packed_flagged_words_carry_every_row(cpu_pools, sizes, rest, dtype):
    """Four data words in three flagged words (``flagged_words.py``): rows of 3, 5 and 20 words,
    tiles that end inside a group of four, idle ranks; bit for bit, and equal to gloo's gather."""
    cpu_pools[2].run(f"{CASES}:gather_case", sizes=sizes, rest=rest, dtype=dtype, seed=sum(sizes), packed=True,
                     repeat=2, chaos_seed=5)


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_rows_of_other_dtypes_come_back_bit_for_bit(cpu_pools, data):
    """int64 token ids, int32, int16, uint8, bool, float64, float8: copied as words of the same bits
    (random bytes: every NaN pattern of the words included), returned in the caller's dtype, through
    the flagged words and the pull, into a given, a strided or a new output, host or device sizes."""
    from tests.all_gatherv_cases import BIT_DTYPES

    dtype = data.draw(st.sampled_from(sorted(BIT_DTYPES)))
    shapes = [(2,), (8,), (40,), (2, 24), (6, 3)] + ([(3,)] if BIT_DTYPES[dtype].itemsize >= 2 else [])
    device_sizes = data.draw(st.booleans())
    with_output = device_sizes or data.draw(st.booleans())
    cpu_pools[2].run(f"{CASES}:gather_bits_case", sizes=data.draw(sizes(2)), rest=data.draw(st.sampled_from(shapes)),
                     dtype=dtype, seed=data.draw(st.integers(0, 2**20)), with_output=with_output,
                     device_sizes=device_sizes, spare_rows=data.draw(st.integers(0, 2)) if device_sizes else 0,
                     group=data.draw(st.sampled_from(["world", "large"])),
                     strided_output=with_output and not device_sizes and data.draw(st.booleans()))


@pytest.mark.parametrize("sizes,kernel", [([12, 3], "gather_ll"), ([0, 12], "gather_ll"), ([13, 3], "gather"),
                                          ([1, 13], "gather")])
def test_the_gathers_flagged_words_run_to_their_own_limit(cpu_pools, sizes, kernel):
    """``gather_ll_bytes`` (1 KiB: 12 rows of 80 B per source) decides the gather's kernel on its own;
    the reduce-scatter keeps ``ll_bytes`` (64 B: one 80-byte row per destination is past it)."""
    results = cpu_pools[2].run(f"{CASES}:gather_limit_case", sizes=sizes, seed=sum(sizes))
    assert all(r == dict(gather=[kernel], reduce_scatterv="push") for r in results), results


def test_gathers_and_reduce_scatters_back_to_back_share_one_workspace(cpu_pools):
    cpu_pools[2].run(f"{CASES}:mixed_case", calls=12, seed=3)


@pytest.mark.parametrize("kind", ["sizes", "dtype"])
def test_ranks_that_pass_different_sizes_or_dtypes_all_get_an_error(cpu_pools, kind):
    results = cpu_pools[2].run(f"{CASES}:gather_disagree_case", timeout_s=3.0, kind=kind)
    assert all(seen and "different calls" in seen[0] for seen in results), results


@pytest.mark.parametrize("kind", ["rows_vs_sizes", "negative", "output_rows", "odd_row_bytes", "output_dtype",
                                  "output_row_shape"])
def test_bad_input_raises_before_any_communication(cpu_pools, kind):
    results = cpu_pools[2].run("tests.all_gatherv_cases:bad_gather_input_case", kind=kind)
    assert all(r is not None and r[0] in ("ValueError", "TypeError") for r in results), results
