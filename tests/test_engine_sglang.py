"""The SGLang plugin against SGLang's real code (0.5.23) on CPU over gloo: SGLang's own
``GroupCoordinator``, the plugin loaded by SGLang's own ``load_plugins()``, the fused kernel in CPU
emulation. SGLang's own reduce_scatterv cannot run on CPU (it needs pynccl), except its
deterministic path, so a right sum from it with the switch on is the kernel's.

Needs sglang in this venv (``.ci/run`` builds one and runs this file there); skipped otherwise.
"""

from __future__ import annotations

import importlib.util
from importlib.metadata import entry_points

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.rank_pool import RankPool
from tests.strategies import sizes as sizes_strategy

pytestmark = [pytest.mark.skipif(importlib.util.find_spec("sglang") is None,
                                reason="sglang is not installed in this venv; .ci/run runs this file in a venv "
                                       "with sglang 0.5.23 (ENGINES.md)"),
              pytest.mark.cpu_emulation]
CASES = "tests.engine_cases"
SGLANG_ENGINE_ERROR = "AttributeError: 'NoneType' object has no attribute 'change_state'"  # its method on CPU
CAP_MB = 12  # a small reservation (512 KiB of input on 2 ranks), so that an over-cap call is cheap to make
ENV = {"SGLANG_PLUGINS": "reduce_scatterv", "KERNELS_ENGINE_WORKSPACE_MB": str(CAP_MB)}


def _pool(**env) -> RankPool:
    if "reduce_scatterv" not in {e.name for e in entry_points(group="sglang.srt.plugins")}:
        pytest.fail("sglang is importable but this package's entry point is not installed: pip install -e .")
    return RankPool(2, "cpu", env={**ENV, **env}, timeout=300)


@pytest.fixture(scope="module")
def on():
    pool = _pool(KERNELS_ENGINE_PLUGIN="1")
    setup = pool.run(f"{CASES}:sglang_setup")
    yield pool, setup
    pool.close()


def test_the_plugin_reserves_the_tp_groups_workspace_at_start_up(on):
    """Loaded by SGLang's loader, the hooks are applied; the TP group is served, its workspace is
    reserved when the group is created, and the footprint is logged."""
    for report in on[1]:
        assert report["replaced"] == ["__init__", "graph_capture", "reduce_scatterv"]
        assert report["served"] and report["has_workspace"] and report["workspaces"] == 1
        assert report["max_input_bytes"] == 512 << 10
        # the engine calls no gather: its workspace keeps the gather's slots at the reduce-scatter's size
        assert report["gather_ll_bytes"] == 1 << 20
        assert any("reserved" in m and "MiB of symmetric memory" in m for m in report["logs"]), report["logs"]


@pytest.mark.parametrize("sizes", [[3, 0], [0, 4], [0, 0], [4, 4], [1, 6]], ids=str)
@pytest.mark.parametrize("with_output", [True, False])
def test_sglangs_reduce_scatterv_returns_the_kernels_sum(on, sizes, with_output):
    """Uneven, idle-rank, all-zero and even sizes, with ``output=`` and without."""
    for r in on[0].run(f"{CASES}:sglang_call", sizes=sizes, with_output=with_output, seed=sum(sizes)):
        assert r["error"] is None and r["kernel"] == [True], r


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_sglangs_reduce_scatterv_matches_the_float64_sum_for_drawn_calls(on, data):
    sizes = data.draw(sizes_strategy(2, 8))
    for r in on[0].run(f"{CASES}:sglang_call", sizes=sizes, rest=data.draw(st.sampled_from([(1,), (24,), (2, 8)])),
                       dtype=data.draw(st.sampled_from(["bfloat16", "float16", "float32"])),
                       with_output=data.draw(st.booleans()), seed=data.draw(st.integers(0, 2**16))):
        assert r["error"] is None and r["kernel"] == [True], r


def test_sglangs_reduce_scatterv_compiles_with_fullgraph_to_one_graph_around_the_kernel(on):
    """``torch.compile(fullgraph=True, backend="aot_eager")`` of a function calling SGLang's
    reduce_scatterv: Dynamo traces the hook to the custom op (a graph break would raise)."""
    for r in on[0].run(f"{CASES}:compiled_call", engine="sglang", sizes=[3, 2]):
        assert r["graphs"] == 1 and r["kernel"] == [True], r


def test_the_capture_entry_finds_the_workspace_reserved(on):
    for r in on[0].run(f"{CASES}:sglang_graph_capture"):
        assert r["before"] == r["after"] > 0, r


def _twice_logged_once(pool, reason: str, **call) -> list:
    """Two identical calls: both go to SGLang's method; the reason is logged on the first only."""
    first = pool.run(f"{CASES}:sglang_call", **call)
    second = pool.run(f"{CASES}:sglang_call", **call)
    for a, b in zip(first, second):
        assert a["kernel"] == [] or a["kernel"] == [False], a
        assert sum(reason in m for m in a["logs"]) == 1, a["logs"]
        assert not any(reason in m for m in b["logs"]), b["logs"]
    return first + second


def test_int32_falls_back_to_sglangs_method_with_the_reason_logged_once(on):
    for r in _twice_logged_once(on[0], "dtype torch.int32", sizes=[2, 1], dtype="int32"):
        assert r["error"] == SGLANG_ENGINE_ERROR, r


def test_inputs_over_the_reservation_fall_back_with_the_reason_logged_once(on):
    # 2 * 32 rows of 2048 float32 = 512 KiB + 256 KiB > the 512 KiB a 12 MiB cap reserves on 2 ranks
    for r in _twice_logged_once(on[0], "more than the reserved workspace holds", sizes=[64, 32], rest=(2048,), dtype="float32"):
        assert r["error"] == SGLANG_ENGINE_ERROR, r


def test_deterministic_mode_runs_sglangs_all_reduce_path_with_the_reason_logged_once(on):
    """``SGLANG_ENABLE_DETERMINISTIC_INFERENCE=1``: SGLang's all-reduce + narrow (which does run on CPU)."""
    for r in _twice_logged_once(on[0], "SGLANG_ENABLE_DETERMINISTIC_INFERENCE=1", sizes=[3, 2], deterministic=True,
                                dtype="float32"):
        assert r["error"] is None, r


def test_the_switch_off_leaves_sglang_untouched():
    pool = _pool()
    try:
        for report in pool.run(f"{CASES}:sglang_setup"):
            assert report["replaced"] == ["__init__"]  # the switch check at group creation, nothing else
            assert not report["served"] and not report["has_workspace"]
        for r in pool.run(f"{CASES}:sglang_call", sizes=[3, 1]):
            assert r["error"] == SGLANG_ENGINE_ERROR and r["logs"] == [], r
        for r in pool.run(f"{CASES}:sglang_call", sizes=[3, 1], deterministic=True, dtype="float32"):
            assert r["error"] is None, r
    finally:
        pool.close()


def test_ranks_whose_switches_differ_get_a_clear_error_on_every_rank():
    pool = _pool()
    try:
        reports = pool.run(f"{CASES}:sglang_setup", switch=["1", "0"])
    finally:
        pool.close()
    for report in reports:
        assert "error" in report, report
        assert "disagree on KERNELS_ENGINE_PLUGIN: rank 0 = 1, rank 1 = 0" in report["error"], report["error"]


def test_cpu_tensors_are_not_served_unless_the_tests_ask():
    pool = _pool(KERNELS_ENGINE_PLUGIN="1")
    try:
        for report in pool.run(f"{CASES}:sglang_setup", cpu_emulation=False):
            assert not report["served"] and not report["has_workspace"]
            assert sum("CPU emulation" in m for m in report["logs"]) == 1, report["logs"]
        for r in pool.run(f"{CASES}:sglang_call", sizes=[3, 1]):
            assert r["error"] == SGLANG_ENGINE_ERROR, r
    finally:
        pool.close()
