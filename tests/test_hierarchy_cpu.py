"""Multi-node reduce_scatterv and all_gatherv (``kernels/hierarchy.py``) in CPU emulation: 4 processes
as 2 nodes x 2 ranks (``ranks_per_node=2``), the node step on the real kernels in Triton's
interpreter, the hop on gloo between the "nodes"; 2 processes as 2 nodes x 1 for the trivial node
step. reduce_scatterv is checked against the float64 sum of fresh random inputs and gloo's flat
reduce_scatter, all_gatherv against the exact concatenation and gloo's flat all-gather, outputs
poisoned first. Kept small: four interpreter processes share CI's two cores."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reduce_scatterv.hierarchy import Topology, find_topology
from tests.strategies import sizes

EXAMPLES = int(os.environ.get("RSV_HIER_EXAMPLES", "10"))
CASES = "tests.hierarchy_cases"


@settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_two_nodes_of_two_match_the_flat_reference(cpu_pools, data):
    """Any sizes (uneven, idle ranks, one owner, all zero), widths, dtypes, host or device sizes,
    output given or not, contiguous or not, hop in the dtype or in fp32."""
    device_sizes = data.draw(st.booleans())
    cpu_pools[4].run(f"{CASES}:hier_case", sizes=data.draw(sizes(4)),
                     rest=data.draw(st.sampled_from([(8,), (40,), (2, 24), (100,)])),
                     dtype=data.draw(st.sampled_from(["bfloat16", "float16", "float32"])),
                     seed=data.draw(st.integers(0, 2**20)), device_sizes=device_sizes,
                     spare_rows=data.draw(st.integers(0, 2)) if device_sizes else 0,
                     with_output=data.draw(st.booleans()), noncontig=data.draw(st.integers(0, 3)) == 0,
                     hop_fp32=data.draw(st.integers(0, 3)) == 0)


@pytest.mark.parametrize("case", [
    dict(sizes=[0, 0, 0, 0]),
    dict(sizes=[0, 0, 0, 0], device_sizes=True, spare_rows=2),
    dict(sizes=[9, 0, 0, 0], rest=(64,)),  # one owner: its rail carries everything
    dict(sizes=[0, 0, 0, 7], rest=(64,), device_sizes=True, spare_rows=1),
    dict(sizes=[3, 1, 0, 5], rest=(24,), dtype="float32", hop_fp32=True),
    dict(sizes=[2, 2, 2, 2], rest=(8,), repeat=3),  # back to back, fresh inputs each
])
def test_focused_cases(cpu_pools, case):
    cpu_pools[4].run(f"{CASES}:hier_case", **case)


def test_back_to_back_calls_mix_host_and_device_sizes_and_node_modes(cpu_pools):
    """One workspace, calls in a row with fresh inputs: host and device sizes alternate, and the node
    step takes flagged words, the plain push and the pull in turn (node limits 512 B / 4 KiB)."""
    calls = [([0, 0, 0, 0], False, "ll"), ([3, 3, 3, 3], False, "push"), ([40, 3, 9, 0], False, "large"),
             ([1, 2, 0, 1], True, None), ([0, 1, 0, 0], False, "push"), ([9, 0, 0, 30], True, None),
             ([2, 3, 2, 3], False, "push")]
    for i, (sz, dev, mode) in enumerate(calls):
        if mode:
            assert set(cpu_pools[4].run(f"{CASES}:node_modes", sizes=sz, hidden=64)) == {mode}, (sz, mode)
        cpu_pools[4].run(f"{CASES}:hier_case", sizes=sz, rest=(64,), device_sizes=dev, spare_rows=1 if dev else 0,
                         seed=i, mixed=True)


@pytest.mark.parametrize("device_sizes", [False, True])
def test_two_nodes_of_one_rank_the_trivial_node_step(cpu_pools, device_sizes):
    cpu_pools[2].run(f"{CASES}:hier_case", sizes=[3, 0], rest=(8,), ranks_per_node=1, device_sizes=device_sizes,
                     spare_rows=1 if device_sizes else 0)


@pytest.mark.parametrize("kind", ["same_rail_swap_on_one_rank", "other_node_device_sizes", "other_node_dtype"])
def test_ranks_that_disagree_all_get_an_error(cpu_pools, kind):
    """Calls that differ while the hop's counts still match (a swap within a rail, other device
    sizes on another node, another dtype on another node): every rank gets an error and NaN, no
    rank waits past the timeout, and after reset() the next call is right. (Calls whose hop counts
    differ between nodes get the backend's behaviour: gloo aborts the process, NCCL waits for its
    watchdog; see kernels/hierarchy.py.)"""
    results = cpu_pools[4].run(f"{CASES}:hier_disagree_case", kind=kind, timeout_s=3.0, seed=3)
    for rank, (seconds, seen, nan) in enumerate(results):
        assert seen, f"rank {rank}: no error for {kind}"
        assert nan, f"rank {rank}: a result that is not NaN for {kind}"
        assert seconds < 60, f"rank {rank}: waited {seconds:.0f} s"
        assert any("did not add up" in s or "different calls" in s for s in seen), seen


@pytest.mark.parametrize("case,device_sizes", [("hier_fault_case", None), ("hier_gather_fault_case", False),
                                               ("hier_gather_fault_case", True)],
                         ids=["reduce_scatterv", "all_gatherv", "all_gatherv-device_sizes"])
def test_a_failed_node_fails_every_rank_until_reset(cpu_pools, case, device_sizes):
    """Node 0's workspace is in the failed state: every rank's call is NaN and flagged, the other node
    learning it from the check rows (the fault element), and it stays so until reset()."""
    keywords = {} if device_sizes is None else {"device_sizes": device_sizes}
    results = cpu_pools[4].run(f"{CASES}:{case}", failed_node=0, seed=5, **keywords)
    for rank, seen in enumerate(results):
        assert seen["call"] and seen["call_nan"], (rank, seen)
        assert seen["sticky"] and seen["sticky_nan"] and "failed state" in seen["sticky"], (rank, seen)
        if rank >= 2:
            assert "did not add up" in seen["call"], (rank, seen)


BAD = {  # (collective, kind): (exception type, words of its message, {rank} filled in)
    ("reduce_scatterv", "rows_mismatch"): ("ValueError", "rows but sum(sizes)"),
    ("reduce_scatterv", "negative_size"): ("ValueError", "negative"),
    ("reduce_scatterv", "dtype_float64"): ("TypeError", "float64 is not supported"),
    ("reduce_scatterv", "output_rows"): ("ValueError", "output has shape"),
    ("reduce_scatterv", "device_sizes_exceed_capacity"): ("RuntimeError", "output's row capacity"),
    ("reduce_scatterv", "device_sizes_negative"): ("RuntimeError", "negative"),
    ("all_gatherv", "rows_vs_sizes"): ("ValueError", "input_ has 2 rows but sizes[{rank}] = 3"),
    ("all_gatherv", "negative"): ("ValueError", "negative"),
    ("all_gatherv", "output_rows"): ("ValueError", "output has shape"),
    ("all_gatherv", "odd_row_bytes"): ("TypeError", "must be a whole number of 2 bytes"),
    ("all_gatherv", "device_sizes_exceed_capacity"): ("RuntimeError", "device sizes were negative or summed"),
    ("all_gatherv", "device_sizes_negative"): ("RuntimeError", "device sizes were negative or summed"),
}
BAD_CASES = {"reduce_scatterv": ("hier_bad_input_case", "hier_case"),  # the bad call, then a good one
             "all_gatherv": ("hier_gather_bad_input_case", "hier_gather_case")}


@pytest.mark.parametrize("op,kind", sorted(BAD), ids=[f"{op}-{kind}" for op, kind in sorted(BAD)])
def test_bad_input_raises_the_same_clear_error_on_every_rank(cpu_pools, op, kind):
    bad, good = BAD_CASES[op]
    results = cpu_pools[4].run(f"{CASES}:{bad}", kind=kind)
    want_type, want_words = BAD[op, kind]
    for rank, got in enumerate(results):
        assert got is not None and got[0] == want_type and want_words.format(rank=rank) in got[1], (rank, got)
    cpu_pools[4].run(f"{CASES}:{good}", sizes=[1, 0, 2, 1])  # the group still works afterwards


def test_ranks_per_node_is_a_creation_keyword_in_the_fingerprint(cpu_pools):
    for seen in cpu_pools[4].run(f"{CASES}:hier_keywords_case"):
        again, disagree, invalid = seen
        assert "ranks_per_node=1 differs" in again, seen
        assert "ranks_per_node" in disagree and "rank 0 = 1" in disagree and "rank 3 = 2" in disagree, seen
        assert "ranks_per_node=3 must be" in invalid, seen


@pytest.mark.parametrize("hosts, keyword, want", [
    (["a"] * 4, None, Topology(4, 1, "")),
    (["a"] * 4, 2, Topology(2, 2, "")),
    (["a", "a", "b", "b"], None, Topology(2, 2, "")),
    (["a"] * 8 + ["b"] * 8, None, Topology(8, 2, "")),
    (["a", "b", "a", "b"], None, "not contiguous"),
    (["a", "a", "a", "b"], None, "different numbers"),
    (["a"] * 16 + ["b"] * 16, None, "at most 8"),
    (["a"] * 16, None, Topology(16, 1, "")),  # one host above 8 ranks: the call raises (api.MAX_WORLD)
])
def test_topology_from_host_names_and_the_override(hosts, keyword, want):
    got = find_topology(hosts, keyword)
    if isinstance(want, str):
        assert isinstance(got, str) and want in got, got
    else:
        assert (got.ranks_per_node, got.nodes) == (want.ranks_per_node, want.nodes), got


@pytest.mark.parametrize("keyword", [3, 0, 9, True, "2"])
def test_invalid_ranks_per_node_raises(keyword):
    with pytest.raises(ValueError, match="ranks_per_node"):
        find_topology(["a"] * 4 if keyword != 9 else ["a"] * 18, keyword)


# ---- all_gatherv: the hierarchical gather (rail all-gather on gloo, then the node's fused gather)
@settings(max_examples=EXAMPLES, deadline=None, derandomize=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_all_gatherv_on_two_nodes_of_two_is_the_concatenation(cpu_pools, data):
    """Any sizes (uneven, idle ranks, one owner, all zero, a node all idle), widths, dtypes, host or
    device sizes, output given or not, input contiguous or not: the output (poisoned first) is the
    concatenation of every rank's fresh rows bit for bit and gloo's flat all-gather; rows past
    sum(sizes) untouched; no warning; the node step ran."""
    device_sizes = data.draw(st.booleans())
    sz = data.draw(st.one_of(sizes(4), st.tuples(st.integers(0, 12), st.integers(0, 12)).map(
        lambda t: [0, 0, *t] if t[0] % 2 else [*t, 0, 0])))  # the second: a node all idle
    cpu_pools[4].run(f"{CASES}:hier_gather_case", sizes=sz,
                     rest=data.draw(st.sampled_from([(1,), (8,), (40,), (2, 24), (100,)])),
                     dtype=data.draw(st.sampled_from(["bfloat16", "float16", "float32"])),
                     seed=data.draw(st.integers(0, 2**20)), device_sizes=device_sizes,
                     spare_rows=data.draw(st.integers(0, 2)) if device_sizes else 0,
                     with_output=data.draw(st.booleans()), noncontig=data.draw(st.integers(0, 3)) == 0)


@pytest.mark.parametrize("case", [
    dict(sizes=[0, 0, 0, 0]),
    dict(sizes=[0, 0, 0, 0], device_sizes=True, spare_rows=2),
    dict(sizes=[0, 0, 5, 2], rest=(24,)),  # node 0 all idle
    dict(sizes=[9, 0, 0, 0], rest=(64,)),  # one owner: rail 0 pads node 1's block to 9 rows
    dict(sizes=[0, 0, 0, 7], rest=(64,), device_sizes=True, spare_rows=1),
    dict(sizes=[3, 1, 0, 5], rest=(1,), dtype="float32", device_sizes=True),  # H = 1: 65 + 128 check rows
    dict(sizes=[2, 2, 2, 2], rest=(8,), repeat=3),  # back to back, fresh rows each
])
def test_all_gatherv_focused_cases(cpu_pools, case):
    cpu_pools[4].run(f"{CASES}:hier_gather_case", **case)


def test_all_gatherv_and_reduce_scatterv_back_to_back_on_one_workspace(cpu_pools):
    """One workspace (node limits 512 B / 4 KiB: the node steps take flagged words, the plain push and
    the pull), calls in a row with fresh inputs: gathers and reduce-scatters alternate, host and
    device sizes mixed, each checked."""
    calls = [("gather", [0, 0, 0, 0], False, "gather_ll"), ("rsv", [3, 3, 3, 3], False, None),
             ("gather", [40, 3, 9, 0], False, "gather"), ("gather", [1, 2, 0, 1], True, None),
             ("rsv", [40, 3, 9, 0], False, None), ("gather", [0, 1, 0, 0], False, "gather"),
             ("rsv", [9, 0, 0, 30], True, None), ("gather", [9, 0, 0, 30], True, None),
             ("gather", [0, 0, 0, 0], False, "gather_ll"), ("rsv", [0, 1, 0, 0], False, None)]
    for i, (op, sz, dev, mode) in enumerate(calls):
        if mode:
            assert set(cpu_pools[4].run(f"{CASES}:node_gather_mode", sizes=sz, hidden=64)) == {mode}, (sz, mode)
        case = "hier_gather_case" if op == "gather" else "hier_case"
        cpu_pools[4].run(f"{CASES}:{case}", sizes=sz, rest=(64,), device_sizes=dev, spare_rows=1 if dev else 0,
                         seed=100 + i, mixed=True)


@pytest.mark.parametrize("dtype,rest", [("int64", (3,)), ("uint8", (10,)), ("float64", (4,))], ids=str)
@pytest.mark.parametrize("device_sizes", [False, True])
def test_all_gatherv_on_two_nodes_of_two_moves_other_dtypes_bit_for_bit(cpu_pools, dtype, rest, device_sizes):
    """Token ids and other dtypes through the hierarchy as words of the same bits (``words.py``)."""
    cpu_pools[4].run("tests.all_gatherv_cases:gather_bits_case", sizes=[2, 0, 5, 1], rest=rest, dtype=dtype, seed=11,
                     device_sizes=device_sizes, spare_rows=1 if device_sizes else 0, ranks_per_node=2)


@pytest.mark.parametrize("device_sizes", [False, True])
def test_all_gatherv_on_two_nodes_of_one_rank_the_trivial_node_step(cpu_pools, device_sizes):
    cpu_pools[2].run(f"{CASES}:hier_gather_case", sizes=[3, 0], rest=(8,), ranks_per_node=1,
                     device_sizes=device_sizes, spare_rows=1 if device_sizes else 0, repeat=2)


@pytest.mark.parametrize("kind", ["sizes_swapped_across_nodes", "other_node_device_sizes", "other_node_dtype",
                                  "int64_vs_float64_across_nodes"])
def test_all_gatherv_ranks_that_disagree_all_get_an_error(cpu_pools, kind):
    """The nodes make different gathers whose hop and node-step counts match (the gloo / NCCL hop
    cannot notice): every rank gets an error naming the hop's check and NaN output, sticky until
    reset(), no rank waits past the timeout, and after reset() the next call is right.
    Mutation check (2026-11-30): with the digest bits left out of the comparison in
    ``hop_gather_check_kernel`` the ``sizes_swapped_across_nodes`` and ``other_node_dtype`` cases
    fail here (silent results that are not NaN; see the case's docstring)."""
    results = cpu_pools[4].run(f"{CASES}:hier_gather_disagree_case", kind=kind, timeout_s=3.0, seed=3)
    for rank, (seconds, seen, nan) in enumerate(results):
        assert nan, f"rank {rank}: a result that is not NaN for {kind}: {seen}"
        assert len(seen) == 2, f"rank {rank}: not an error from the call and from the next check(): {seen}"
        assert all("did not add up" in s and "failed state" in s for s in seen), (rank, seen)
        assert seconds < 60, f"rank {rank}: waited {seconds:.0f} s"


@pytest.mark.parametrize("start", [2**31 - 3, 2**32 - 3, 2**64 - 3])
def test_both_collectives_stay_right_across_the_wrap_points_of_the_node_step(cpu_pools, start):
    """The protocol's wrap-safety (test_protocol_cpu.py) holds through the hierarchy: the node
    workspaces start just before each wrap point; twelve calls of both collectives in every node
    mode, a rank late on every other call; the epoch counted on (one node-step call per call)."""
    for epoch in cpu_pools[4].run(f"{CASES}:hier_wrap_case", start_epoch=start, calls=12, seed=start % 1000):
        assert epoch == (start + 12) % 2**64, epoch
