"""reduce_scatterv on GPUs against NCCL: the CPU properties again, plus CUDA-graph replay and a
hypothesis fuzz run. Skipped (with the reason) on machines with fewer than 2 GPUs, unless
``RSV_RANKS_ON_ONE_GPU=N`` puts N ranks on GPU 0 with gloo as the reference (``tests/gpus.py``).

    pytest tests/test_reduce_scatterv_gpu.py            # spawns one process per GPU itself
    RSV_GPU_EXAMPLES=300 pytest tests/test_reduce_scatterv_gpu.py -k fuzz
    KERNELS_SYMM_MEM_BACKEND=nvshmem pytest tests/test_reduce_scatterv_gpu.py   # every workspace on NVSHMEM
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gpus import NEEDS_TWO, skip_beyond, worlds
from tests.protocol_expectations import ABSENT_MODES, DISAGREEMENTS, assert_absent_rank_fails_everyone, assert_every_rank_errs
from tests.strategies import calls

pytestmark = NEEDS_TWO
WORLDS = worlds(2, 3, 4)
EXAMPLES = int(os.environ.get("RSV_GPU_EXAMPLES", "60"))
CASE = "tests.cases:reduce_scatterv_case"


@pytest.mark.parametrize("world", WORLDS)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_small_shapes_match_nccl(gpu_pools, world, data):
    gpu_pools[world].run(CASE, **data.draw(calls(world)))


@pytest.mark.parametrize("world", WORLDS)
@settings(max_examples=max(EXAMPLES // 3, 5), deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_fuzz_model_shapes_match_nccl(gpu_pools, world, data):
    """DeepSeek V4 widths (4096, 7168) with decode to prefill row counts, both variants."""
    case = data.draw(calls(world, max_rows=600))
    case["rest"] = (data.draw(st.sampled_from([4096, 7168, 7168 + 8, 2 * 7168])),)
    gpu_pools[world].run(CASE, **case)


@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("resident", [True, False])
@pytest.mark.parametrize("per_rank_capacity", [16, 2048])  # push and large variants
def test_cuda_graph_replays_with_new_device_sizes(gpu_pools, world, resident, per_rank_capacity):
    size_sets = [[1] * world, [0] * world, [per_rank_capacity] + [0] * (world - 1),
                 [(3 * r + 1) % (per_rank_capacity + 1) for r in range(world)], [per_rank_capacity] * world,
                 [0] * (world - 1) + [5]]
    gpu_pools[world].run("tests.cases:graph_case", per_rank_capacity=per_rank_capacity, hidden=7168,
                         dtype="bfloat16", size_sets=size_sets, resident=resident, seed=world)


@pytest.mark.parametrize("world", [3, 4])
@pytest.mark.parametrize("group", ["world", "large"])
@pytest.mark.parametrize("sizes", [[2500, 0, 0, 0], [250, 0, 0, 0], [700, 0, 0, 0], [40, 300, 0, 10],
                                   [64, 900, 20, 1500], [0, 1, 2048, 600]])
def test_heavy_owners_rows_are_relayed_and_match_nccl(gpu_pools, world, group, sizes):
    """Skewed sizes large enough to be relayed (the owner's excess rows reduced by its peers and
    pushed to it), input in the workspace or not. By default 250 rows of one owner are pushed
    directly (3.6 MB, under the 4-GPU push limit) and the others pulled, relaying; the "large"
    group relays by the pull."""
    skip_beyond(world)
    for resident in (True, False):
        gpu_pools[world].run(CASE, sizes=sizes[:world], rest=(7168,), seed=world, group=group, resident=resident)


@pytest.mark.parametrize("world", WORLDS)
def test_many_back_to_back_calls(gpu_pools, world):
    """One workspace through every mode in turn (scale 1: flagged push, 16: plain push, 90: the pull
    kernel past the push limit), then the large-only group: the slots' parity and the epochs
    stay in step across mode changes."""
    for i in range(24):
        sizes = [(i * 7 + r * 3) % 9 * (1, 16, 90)[i % 3] for r in range(world)]
        gpu_pools[world].run(CASE, sizes=sizes, rest=(7168,), seed=i, group=("world", "world", "world", "large")[i % 4],
                             repeat=2, resident=i % 5 == 0)


BAD_GPU = ["rows_mismatch", "negative_size", "too_many_sizes", "dtype_float64", "output_rows", "output_dtype",
           "sizes_tensor_dtype", "device_sizes_no_output"]


@pytest.mark.parametrize("kind", BAD_GPU + ["device_sizes_exceed_input", "device_sizes_negative"])
def test_bad_input_raises_on_every_rank(gpu_pools, kind):
    results = gpu_pools[2].run("tests.cases:bad_input_case", kind=kind)
    assert all(r is not None for r in results), results
    assert len({r[0] for r in results}) == 1, results
    gpu_pools[2].run(CASE, sizes=[1, 2], rest=(64,))


@pytest.mark.parametrize("group", ["world", "push", "large"])  # flagged words, plain push, pull
def test_an_output_too_small_on_one_rank_fails_there_alone(gpu_pools, group):
    results = gpu_pools[2].run("tests.cases:short_output_case", sizes=[2, 3], short_rank=1, group=group)
    assert results[1] is not None and "output's row capacity" in results[1], results
    assert results[0] is None, results
    gpu_pools[2].run(CASE, sizes=[1, 2], rest=(64,), group=group)


# ---- the protocol's guarantees (tests/protocol_cases.py; the CPU versions in test_protocol_cpu.py)
PROTO = "tests.protocol_cases"


@pytest.mark.parametrize("start", [2**15 - 2, 2**16 - 2, 2**31 - 2, 2**32 - 2, 2**43 - 2, 2**44 - 2, 2**63 - 2, 2**64 - 2])
def test_every_mode_stays_right_across_each_wrap_point_with_a_late_rank(gpu_pools, start):
    gpu_pools[2].run(f"{PROTO}:wrap_case", start_epoch=start, calls=12, late_rank=1, seed=start % 1000)


def test_flagged_words_are_never_confused_with_pushed_data(gpu_pools):
    gpu_pools[2].run(f"{PROTO}:stale_flag_case", seed=11)


def test_reset_leaves_no_stale_word_and_moves_the_epoch_forward(gpu_pools):
    gpu_pools[2].run(f"{PROTO}:reset_case", seed=5, calls=20)


@pytest.mark.parametrize("mode", ABSENT_MODES)
def test_an_absent_rank_poisons_the_call_and_fails_every_rank_until_reset(gpu_pools, mode):
    """One rank skips a call: the other's output is NaN, check() raises on both, the next call is NaN
    too, reset() recovers and the next 100 calls are right."""
    results = gpu_pools[2].run(f"{PROTO}:dead_peer_case", absent_rank=1, mode=mode, timeout_s=2.0, calls_after=100,
                               seed=7)
    assert_absent_rank_fails_everyone(results, absent_rank=1, waited_s=(1.5, 10))  # the global timer: about 2 s


@pytest.mark.parametrize("kind, world", DISAGREEMENTS)
def test_ranks_that_make_different_calls_all_get_an_error(gpu_pools, kind, world):
    skip_beyond(world)
    results = gpu_pools[world].run(f"{PROTO}:disagree_case", kind=kind, timeout_s=3.0, seed=13)
    assert_every_rank_errs(results, kind, max_wait_s=30)


@pytest.mark.parametrize("world", WORLDS)
def test_bursts_with_random_late_ranks_across_modes_stay_right(gpu_pools, world):
    """Back-to-back calls cycling flagged words, plain push and pull, a random rank delayed on the
    GPU (torch.cuda._sleep) before many of them; then the same under CUDA-graph replay."""
    gpu_pools[world].run("tests.protocol_cases:burst_case", calls=60, replays=20, seed=world)


def test_calls_on_two_streams_are_ordered_by_the_library(gpu_pools):
    gpu_pools[2].run(f"{PROTO}:two_streams_case", calls=30, seed=5)


def test_start_epoch_is_kept_and_creation_keywords_cannot_change(gpu_pools):
    gpu_pools[2].run(f"{PROTO}:keywords_case")


def test_the_workspace_is_on_the_backend_asked_for(gpu_pools):
    """``KERNELS_SYMM_MEM_BACKEND`` (default cuda) picks PyTorch's symmetric-memory backend: with
    nvshmem, every test of this file ran on NVSHMEM."""
    want = os.environ.get("KERNELS_SYMM_MEM_BACKEND", "cuda").lower()
    for ours, torchs in gpu_pools[2].run("tests.cases:backend_case"):
        assert ours == want, (ours, want)
        if want == "nvshmem":
            assert torchs is not None and torchs.upper() == "NVSHMEM", torchs
