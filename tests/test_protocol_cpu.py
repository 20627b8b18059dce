"""The protocol's guarantees on CPU emulation (the real kernels in Triton's interpreter, one process
per rank, gloo as the reference): correct at every wrap point, after reset, under injected delays,
and loud (NaN, an error on every rank, no wait past the timeout) when a rank is absent or the ranks
make different calls. Each regression names the review finding it reproduces; each failed on the
kernels before this protocol (2026-11-30: wrong sums, no flag, or a hang)."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.protocol_expectations import ABSENT_MODES, DISAGREEMENTS, assert_absent_rank_fails_everyone, assert_every_rank_errs
from tests.strategies import calls, sizes

CASES = "tests.protocol_cases"
WRAP_POINTS = [2**15 - 2, 2**16 - 2, 2**31 - 2, 2**32 - 2, 2**43 - 2, 2**44 - 2, 2**63 - 2, 2**64 - 2]


@pytest.mark.parametrize("start", WRAP_POINTS)
def test_every_mode_stays_right_across_each_wrap_point_with_a_late_rank(cpu_pools, start):
    """Finding 1 (signals wrap): plain-push words were (E << 32) + j compared signed, so from epoch
    2^31 a stale word passed at once; flagged words repeated every 2^32 calls. Ten calls cycling
    flagged / push / pull and the gather's flagged words / pull across the point, a rank late on
    every other call."""
    cpu_pools[2].run(f"{CASES}:wrap_case", start_epoch=start, calls=10, late_rank=1, seed=start % 1000)


def test_every_mode_stays_right_across_the_2_64_wrap_on_three_ranks(cpu_pools):
    cpu_pools[3].run(f"{CASES}:wrap_case", start_epoch=2**64 - 3, calls=10, late_rank=2, seed=3)


def test_flagged_words_are_never_confused_with_pushed_data(cpu_pools):
    """Finding 2: pushed data whose words carry a later flagged call's flag was taken as its data."""
    cpu_pools[2].run(f"{CASES}:stale_flag_case", seed=11)


def test_reset_leaves_no_stale_word_and_moves_the_epoch_forward(cpu_pools):
    """Finding 3: reset() zeroed the epochs but not the flagged-word slots."""
    cpu_pools[2].run(f"{CASES}:reset_case", seed=5, calls=6)


@pytest.mark.parametrize("mode", ABSENT_MODES)
def test_an_absent_rank_poisons_the_call_and_fails_every_rank_until_reset(cpu_pools, mode):
    """Finding 5: a wait that ran out of polls carried on, flagged on one rank only, and the late
    rank later matched newer signals. Now: NaN where the call could not complete, the error on every
    rank (the absent one too), sticky until reset(), then right again."""
    results = cpu_pools[3].run(f"{CASES}:dead_peer_case", absent_rank=2, mode=mode, timeout_s=2.0, calls_after=4,
                               seed=7)
    assert_absent_rank_fails_everyone(results, absent_rank=2, waited_s=(1.5, 60))  # 2 s by the clock word


@pytest.mark.parametrize("kind, world", DISAGREEMENTS)
def test_ranks_that_make_different_calls_all_get_an_error(cpu_pools, kind, world):
    """Finding 6: rank 0 sizes=[2,3], rank 1 [3,2] returned a wrong sum without an error; other row
    counts, widths or dtypes hung. Now every rank gets an error (the disagreement, or the timeout
    where one rank could not even start), nobody a silent result, nobody waits past the timeout.
    The permuted cases (3 ranks, [2, 3, 1] against [3, 1, 2], host or device sizes) passed as
    agreement under a digest that folded the sizes linearly (checked before it was replaced)."""
    results = cpu_pools[world].run(f"{CASES}:disagree_case", kind=kind, timeout_s=3.0, seed=13)
    assert_every_rank_errs(results, kind, max_wait_s=60)


@pytest.mark.parametrize("setting", ["ll_bytes", "timeout_s", "start_epoch"])
def test_workspaces_created_with_different_settings_raise_on_every_rank(cpu_pools, setting):
    results = cpu_pools[2].run(f"{CASES}:fingerprint_case", setting=setting)
    for got in results:
        assert got and setting in got and "rank 0" in got and "rank 1" in got, results


def test_start_epoch_is_kept_and_creation_keywords_cannot_change(cpu_pools):
    cpu_pools[2].run(f"{CASES}:keywords_case")


CHAOS_EXAMPLES = int(os.environ.get("RSV_CHAOS_EXAMPLES", "25"))


@pytest.mark.parametrize("world", [2, 3])
@settings(max_examples=CHAOS_EXAMPLES, deadline=None, derandomize=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_schedule_fuzzing_injected_delays_never_change_a_sum(cpu_pools, world, data):
    """Random stalls at signal, wait and tile boundaries of random programs on random ranks (seeded,
    so hypothesis shrinks a failure to one seed), over sizes x modes x back-to-back calls."""
    case = data.draw(calls(world))
    case.update(chaos_seed=data.draw(st.integers(1, 2**20)), repeat=data.draw(st.integers(2, 3)))
    cpu_pools[world].run("tests.cases:reduce_scatterv_case", **case)


@pytest.mark.parametrize("world", [2, 3])
@settings(max_examples=max(1, CHAOS_EXAMPLES // 2), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_schedule_fuzzing_injected_delays_never_change_a_gather(cpu_pools, world, data):
    """The same for all_gatherv: its flagged words ("world"), its pull ("large"), or either by
    size ("mixed"), back to back."""
    cpu_pools[world].run("tests.all_gatherv_cases:gather_case", sizes=data.draw(sizes(world)), rest=(16,),
                         dtype="bfloat16", seed=data.draw(st.integers(0, 2**20)),
                         group=data.draw(st.sampled_from(["world", "large", "mixed"])),
                         repeat=data.draw(st.integers(2, 3)), chaos_seed=data.draw(st.integers(1, 2**20)))
