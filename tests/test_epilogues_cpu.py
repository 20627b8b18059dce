"""Epilogues fused into reduce_scatterv, on CPU emulation (the real kernels in Triton's interpreter,
one process per rank): every output equals the float64 epilogue of the unrounded sum within one
rounding of the output, in every mode that runs it; rows past the count untouched; a fault leaves
every output of the epilogue NaN; bad epilogues raise on the host. Disagreement on the epilogue:
``other_epilogue`` in ``tests/protocol_expectations.py`` (run by ``test_protocol_cpu.py``)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.strategies import sizes as sizes_strategy

CASE = "tests.epilogue_cases:epilogue_case"
EXAMPLES = int(os.environ.get("RSV_EPILOGUE_EXAMPLES", "12"))
# group (the workspace's byte limits, tests/rank_pool.py) -> the mode small calls take there
GROUP_MODE = {"world": "ll", "push": "push", "large": "large"}


@pytest.mark.parametrize("group", sorted(GROUP_MODE))
def test_hc_post_is_fused_in_every_mode(cpu_pools, group):
    """Flagged words (even and odd elements of each word), plain push, pull; with and without f_out.
    Rows of 24 and 160 elements in the CPU's 64-element tiles: tiles longer than a row, within one
    row, and across two rows (``epilogue_functions._hc_post``'s three paths)."""
    for i, (hidden, with_f) in enumerate(((24, False), (160, True))):
        modes = cpu_pools[2].run(CASE, kind="hc_post", sizes=[2, 3], hidden=hidden, group=group, with_f=with_f,
                                 seed=i)
        assert all(m == [GROUP_MODE[group]] for m in modes), modes


@pytest.mark.parametrize("group", sorted(GROUP_MODE))
def test_residual_rmsnorm_runs_with_row_tiles_in_push_and_pull_never_as_flagged_words(cpu_pools, group):
    """Row tiles: rows of 40 and 100 elements (BLOCK 64 and 128: masked columns), residual updated in
    place or into its own tensor."""
    want = "push" if group == "world" else GROUP_MODE[group]
    for i, (hidden, in_place) in enumerate(((40, False), (100, True))):
        modes = cpu_pools[2].run(CASE, kind="rmsnorm", sizes=[3, 2], hidden=hidden, group=group, in_place=in_place,
                                 with_f=True, seed=i)
        assert all(m == [want] for m in modes), modes


@pytest.mark.parametrize("kind", ["hc_post", "rmsnorm"])
def test_relayed_tiles_reach_the_owners_epilogue_unrounded(cpu_pools, kind):
    """3 ranks, one heavy owner, the pull: its excess tiles (rows, for rmsnorm) are reduced by the
    others, who hand over fp32 sums; input staged and in the workspace; device sizes too."""
    from types import SimpleNamespace

    from reduce_scatterv.api import RELAY_MAX_COST_PCT, relayed_tiles

    sizes = [20, 0, 1]
    tile = 24 if kind == "rmsnorm" else 64  # row tiles / the CPU's flat BLOCK
    variant = SimpleNamespace(relay=True, relay_min_tiles=1, relay_max_cost_pct=RELAY_MAX_COST_PCT)
    assert relayed_tiles(sizes, 24, tile, variant) > 0
    cpu_pools[3].run(CASE, kind=kind, sizes=sizes, hidden=24, group="large", with_f=True)
    cpu_pools[3].run(CASE, kind=kind, sizes=[1, 17, 0], hidden=24, group="large", resident=True,
                     device_sizes=True, spare_rows=2)


@pytest.mark.parametrize("kind", ["hc_post", "rmsnorm"])
@pytest.mark.parametrize("group", ["world", "large"])
def test_device_sizes_leave_rows_past_the_count_untouched(cpu_pools, kind, group):
    cpu_pools[2].run(CASE, kind=kind, sizes=[0, 3], device_sizes=True, spare_rows=3, group=group, with_f=True)
    cpu_pools[2].run(CASE, kind=kind, sizes=[0, 0], device_sizes=True, spare_rows=1, group=group)


def test_epilogue_and_plain_calls_back_to_back_on_one_workspace(cpu_pools):
    """The "mixed" workspace takes every mode by size; plain calls and both epilogues alternate."""
    by_size = [[1, 1], [4, 3], [30, 0], [12, 12]]
    for i in range(4):
        sizes = by_size[i]
        cpu_pools[2].run("tests.cases:reduce_scatterv_case", sizes=sizes, rest=(16,), seed=i, group="mixed")
        cpu_pools[2].run(CASE, kind=("hc_post", "rmsnorm")[i % 2], sizes=sizes, seed=i, group="mixed")


@pytest.mark.parametrize("world", [1, 2, 3])
@settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_fuzz_every_output_matches_the_float64_epilogue_of_the_sum(cpu_pools, world, data):
    """Sizes as in DP attention (idle ranks, one owner, all zero), widths, dtypes, host or device
    sizes, modes, in place or not, f_out or not, injected delays."""
    device_sizes = data.draw(st.booleans())
    case = dict(
        kind=data.draw(st.sampled_from(["hc_post", "rmsnorm"])),
        sizes=data.draw(sizes_strategy(world, 6)),
        hidden=data.draw(st.sampled_from([2, 8, 24, 40, 66])),
        dtype=data.draw(st.sampled_from(["bfloat16", "float16", "float32"])),
        seed=data.draw(st.integers(0, 2**20)),
        device_sizes=device_sizes,
        spare_rows=data.draw(st.integers(0, 2)) if device_sizes else 0,
        group=data.draw(st.sampled_from(["world", "push", "large", "mixed"])),
        with_f=data.draw(st.booleans()),
        in_place=data.draw(st.booleans()),
        resident=data.draw(st.booleans()),
        chaos_seed=data.draw(st.sampled_from([0, 0, data.draw(st.integers(1, 2**20))])),
    )
    cpu_pools[world].run(CASE, **case)


@pytest.mark.parametrize("kind, modes_off", [("hc_post", ()), ("hc_post", ("ll",)), ("rmsnorm", ("ll", "push"))])
def test_a_fault_poisons_every_output_of_the_epilogue(cpu_pools, kind, modes_off):
    """One rank skips the call (flagged words, plain push, pull): the others' out, f_out (and
    residual_out) are NaN, the timeout is raised on every rank, and after reset() calls are right."""
    results = cpu_pools[3].run("tests.epilogue_cases:fault_case", kind=kind, absent_rank=1, sizes=[2, 1, 2],
                               modes_off=modes_off, timeout_s=3.0)
    for rank, got in enumerate(results):
        assert got["check"] and "failed state" in got["check"], (rank, got)
        if rank != 1:
            assert got["call"] and "ran past the timeout" in got["call"], (rank, got)
            assert all(got["nan"]), (rank, got)
            assert 2.5 < got["waited_s"] < 60, (rank, got)


BAD = {  # kind: (exception type, words the message must contain)
    "output_given": ("ValueError", "pass output=None"),
    "not_an_epilogue": ("TypeError", "epilogue must be one of"),
    "residual_width": ("ValueError", "residual [rows, hc, H]"),
    "residual_rows": ("ValueError", "HcPost.residual has shape (3, 4, 8), expected (2, 4, 8)"),
    "post_dtype": ("TypeError", "HcPost.post dtype"),
    "comb_shape": ("ValueError", "HcPost.comb has shape"),
    "out_dtype": ("TypeError", "HcPost.out dtype"),
    "out_noncontiguous": ("ValueError", "HcPost.out must be contiguous"),
    "rows_not_flat": ("ValueError", "rows of H elements"),
    "weight_shape": ("ValueError", "ResidualRMSNorm.weight has shape"),
    "eps_negative": ("ValueError", "eps must be a float >= 0"),
    "residual_out_shape": ("ValueError", "ResidualRMSNorm.residual_out has shape"),
    "capacities_differ": ("ValueError", "ResidualRMSNorm.residual_out has shape (3, 8)"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_a_bad_epilogue_raises_a_clear_error_before_any_communication(cpu_pools, kind):
    want_type, want_words = BAD[kind]
    for rank, got in enumerate(cpu_pools[2].run("tests.epilogue_cases:bad_epilogue_case", kind=kind)):
        assert got is not None and got[0] == want_type and want_words in got[1], (rank, got)
    cpu_pools[2].run(CASE, kind="hc_post", sizes=[1, 2])  # the group still works afterwards


@pytest.mark.parametrize("kind", ["hc_post", "rmsnorm"])
def test_the_fused_call_matches_the_reference_collective_then_the_torch_epilogue(cpu_pools, kind):
    """What SGLang runs: gloo's reduce_scatter (NCCL's on GPUs) in bf16, then mhc.hc_post or
    residual + RMSNorm in torch."""
    cpu_pools[2].run("tests.epilogue_cases:nccl_reference_case", kind=kind, sizes=[2, 3], hidden=40, seed=3)


@pytest.mark.parametrize("kind", ["hc_post", "rmsnorm"])
def test_unreachable_peers_fall_back_to_the_grouped_reduce_then_the_torch_epilogue(cpu_pools, kind):
    cpu_pools[3].run("tests.epilogue_cases:fallback_case", kind=kind, sizes=[2, 0, 3], seed=5)


@pytest.mark.parametrize("tokens, hidden, hc, dtype", [(3, 40, 4, "bfloat16"), (2, 1500, 4, "bfloat16"),
                                                       (1, 24, 3, "float32"), (0, 8, 4, "bfloat16")])
def test_the_one_kernel_hc_post_matches_mhc_hc_post(cpu_pools, tokens, hidden, hc, dtype):
    """``deepseek_v4.mhc.hc_post_one_kernel`` (the reference path's hc_post, one Triton launch)."""
    cpu_pools[1].run("tests.epilogue_cases:hc_post_kernel_case", tokens=tokens, hidden=hidden, hc=hc, dtype=dtype,
                     seed=tokens + hidden)
