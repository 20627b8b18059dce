"""The engine plugins' shared decisions (``kernels/plugins/common.py``), engine-free and in one
process: the footprint and its cap, the per-call refusal table, the settings comparison. The
plugins against the engines' real code are in test_engine_sglang.py / test_engine_vllm.py."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from reduce_scatterv import settings
from reduce_scatterv.layout import Layout
from reduce_scatterv.plugins import common
from reduce_scatterv.workspace import default_ll_bytes, default_push_bytes


@pytest.mark.parametrize("world", range(2, 9))
def test_256_mib_gives_128_mib_of_input_on_2_to_8_ranks(world):
    """settings.py's claim for the default cap, and that the reservation fits under it."""
    cap = settings.DEFAULT_ENGINE_WORKSPACE_MB << 20
    limit = common.max_input_bytes(world, cap)
    assert limit == 128 << 20
    assert common.footprint_bytes(world, limit) <= cap < common.footprint_bytes(world, 2 * limit)


@given(world=st.integers(2, 8), cap_mib=st.integers(0, 4096))
def test_the_reservation_is_the_largest_power_of_2_under_the_cap(world, cap_mib):
    cap = cap_mib << 20
    limit = common.max_input_bytes(world, cap)
    if limit == 0:
        assert common.footprint_bytes(world, common.MIN_INPUT_BYTES) > cap
        return
    assert limit & (limit - 1) == 0 and limit >= common.MIN_INPUT_BYTES
    assert common.footprint_bytes(world, limit) <= cap < common.footprint_bytes(world, 2 * limit)


@given(world=st.integers(2, 8), input_bytes=st.integers(1, 1 << 30))
def test_the_footprint_is_what_the_workspace_grows_to(world, input_bytes):
    """``footprint_bytes`` mirrors ``Workspace.reserve(max_input_bytes=...)`` on a fresh workspace."""
    fresh = Layout(world, default_ll_bytes(world), 0, 0, 0, **common.engine_keywords(world))
    grown = fresh.grown(scratch_bytes=input_bytes, arena_bytes=0,
                        push_bytes=min(input_bytes, default_push_bytes(world)))
    assert common.footprint_bytes(world, input_bytes) == grown.total_bytes


SERVED = common.Served("test", "tp:0", [None], torch.device("cpu"), 1 << 20)
REFUSALS = [  # (input, dim, engine modes, expected kind or None)
    (torch.empty(4, 8, dtype=torch.bfloat16), 0, {}, None),
    (torch.empty(4, 8, dtype=torch.float16), -2, {}, None),
    (torch.empty(0, 8, dtype=torch.float32), 0, {}, None),
    (torch.empty(4, 8, dtype=torch.float32), -1, {}, "dim"),
    (torch.empty(4, 8, dtype=torch.float32), 1, {}, "dim"),
    (torch.empty(4, 8, dtype=torch.int32), 0, {}, "dtype torch.int32"),
    (torch.empty(4, 8, dtype=torch.float8_e4m3fn), 0, {}, "dtype torch.float8_e4m3fn"),
    (torch.empty(4, 8, dtype=torch.bfloat16), 0, {"SGLANG_ENABLE_DETERMINISTIC_INFERENCE": True},
     "SGLANG_ENABLE_DETERMINISTIC_INFERENCE"),
    (torch.empty(4, 8, dtype=torch.bfloat16), 0, {"VLLM_BATCH_INVARIANT": False}, None),
    (torch.empty(1 << 18, 2, dtype=torch.float32), 0, {}, "size"),  # 2 MiB > 1 MiB reserved
    (torch.empty(1 << 17, 2, dtype=torch.float32), 0, {}, None),  # exactly 1 MiB
    (torch.empty(4, 8, device="meta"), 0, {}, "device meta"),
]


@pytest.mark.parametrize("inp,dim,modes,kind", REFUSALS)
def test_refusals_follow_rank_agreed_facts(inp, dim, modes, kind):
    got = common.refusal(SERVED, inp, dim, modes)
    assert (got[0] if got else None) == kind


def test_settings_that_differ_are_named_with_every_ranks_value():
    on = {common.SWITCH: 1, common.CAP: 256, "cpu emulation (tests)": False, "X_MODE": False}
    assert common._disagreement("e", "g", [on, dict(on)]) is None
    off = dict(on, **{common.SWITCH: 0})
    msg = common._disagreement("e", "tp:0", [on, off])
    assert "disagree on KERNELS_ENGINE_PLUGIN: rank 0 = 1, rank 1 = 0" in msg
    msg = common._disagreement("e", "tp:0", [on, dict(on, **{common.CAP: 64})])
    assert "KERNELS_ENGINE_WORKSPACE_MB: rank 0 = 256, rank 1 = 64" in msg
    # with the switch off everywhere, nothing else matters
    assert common._disagreement("e", "tp:0", [off, dict(off, **{common.CAP: 64})]) is None


def test_a_reason_is_logged_once_per_key(caplog):
    with caplog.at_level("WARNING", logger="test.kernels_plugin"):
        assert common.log_once("test", ("g", "why"), "first")
        assert not common.log_once("test", ("g", "why"), "again")
    assert [r.getMessage() for r in caplog.records] == ["reduce_scatterv plugin: first"]


@pytest.mark.parametrize("value,on", [(None, False), ("0", False), ("", False), ("1", True), (" 1 ", True),
                                      ("true", False)])
def test_the_switch_is_on_for_1_only(monkeypatch, value, on):
    if value is None:
        monkeypatch.delenv("KERNELS_ENGINE_PLUGIN", raising=False)
    else:
        monkeypatch.setenv("KERNELS_ENGINE_PLUGIN", value)
    assert settings.engine_plugin() is on


def test_an_invalid_cap_is_compared_not_raised_alone(monkeypatch):
    """A rank whose cap does not parse must not raise before the comparison (its peers would wait in
    the all-gather): the value is compared, and the mismatch raises on every rank."""
    monkeypatch.setenv("KERNELS_ENGINE_WORKSPACE_MB", "lots")
    assert str(common.plugin_settings({})[common.CAP]).startswith("invalid")


def _kinds(refusals):
    return [r[0].split()[0] if r else None for r in refusals]


def test_the_plugin_path_in_cpu_emulation_serves_the_engines_call_shapes(cpu_pools):
    """``plugins/common.py`` as the engines drive it (meet, reserve, calls with SGLang's decode sizes,
    vLLM's ``sizes=None``, an uneven prefill list), against the fp64 sum and gloo; the GPU version
    adds a side stream and a captured graph (``tests/test_plugins_gpu.py``)."""
    for said in cpu_pools[2].run("tests.plugin_path_cases:plugin_path_case", hidden=64, decode_rows=(1, 3),
                                 prefill=(5, 0), seed=4):
        assert said["max_input_bytes"] == common.max_input_bytes(2, 64 << 20)
        assert said["gather_ll_bytes"] == default_ll_bytes(2)  # the engine's workspace: no larger gather slots
        assert _kinds(said["refusals"]) == ["dtype", "size", "dim"], said["refusals"]


def test_a_workspace_the_application_made_first_is_served_as_it_is(cpu_pools):
    """The plugin reserves an existing workspace instead of raising over its creation keywords."""
    from reduce_scatterv.workspace import default_gather_ll_bytes

    for said in cpu_pools[2].run("tests.plugin_path_cases:existing_workspace_case"):
        assert said == dict(served=True, gather_ll_bytes=default_gather_ll_bytes(2)), said
