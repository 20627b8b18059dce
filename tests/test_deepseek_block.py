"""The V4 MoE block under DP attention + TP MoE, each path against the unsharded block: fused
(gather, combine and hc_post fused), fused_combine and reference agree with it; the pre-fix scatter
does not. CPU emulation always; the GPU
version (pro preset at decode-like counts) skips with a reason below 2 GPUs (``RSV_RANKS_ON_ONE_GPU``:
on one GPU, without the NCCL reference path; ``tests/gpus.py``)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gpus import NEEDS_TWO, ON_ONE_GPU, RANKS

TOL = 2e-2  # bfloat16, norm-wise relative
CASE = "tests.model_cases:block_case"


def _check(results, combine):
    errs = [r for r in results if r is not None]
    if combine == "scatter":
        # every rank with tokens misses the other ranks' shards of its MoE output
        assert errs and all(max(e) > 5 * TOL for e in errs), errs
    else:
        assert all(max(e) <= TOL for e in errs), errs


@pytest.mark.parametrize("combine", ["fused", "fused_combine", "reference", "scatter"])
@settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_block_matches_unsharded_computation_except_scatter(cpu_pools, combine, data):
    world = data.draw(st.integers(2, 4), label="world")
    tokens = data.draw(st.lists(st.integers(0, 5), min_size=world, max_size=world).filter(lambda t: sum(t) > 0),
                       label="tokens")
    _check(cpu_pools[world].run(CASE, tokens=tokens, combine=combine, seed=data.draw(st.integers(0, 99))), combine)


def test_fused_block_above_the_fused_hc_post_limit_matches_too(cpu_pools):
    """Past ``FUSED_HC_POST_MAX_ROWS`` rows on some rank the fused path runs the fused combine and
    then the one-kernel hc_post (faster there, measured): still the unsharded block's result."""
    from deepseek_v4.post_path import FUSED_HC_POST_MAX_ROWS

    _check(cpu_pools[2].run(CASE, tokens=[FUSED_HC_POST_MAX_ROWS + 1, 2], combine="fused", seed=7), "fused")


@pytest.mark.cpu_emulation
def test_demo_command_passes_fused_and_fails_scatter():
    """The README's command, as a user runs it."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "deepseek_v4", "--world-size", "3", "--tokens", "0,5,2", "--combine"]
    ok = subprocess.run(cmd + ["fused"], capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0 and ok.stdout.strip().splitlines()[-1].endswith("PASS"), ok.stdout + ok.stderr
    bad = subprocess.run(cmd + ["scatter"], capture_output=True, text=True, timeout=600)
    assert bad.returncode == 1 and "FAIL" in bad.stdout.strip().splitlines()[-1], bad.stdout + bad.stderr


@NEEDS_TWO
@pytest.mark.parametrize("combine", ["fused", "fused_combine", "reference", "scatter"])
def test_pro_block_on_gpus_at_decode_counts(gpu_pools, combine):
    if combine == "reference" and ON_ONE_GPU:
        pytest.skip("SGLang's combine is NCCL's reduce_scatter; RSV_RANKS_ON_ONE_GPU runs the ranks over gloo")
    world = min(RANKS, 4)
    tokens = [1, 8, 0, 32][:world]
    _check(gpu_pools[world].run(CASE, tokens=tokens, combine=combine, preset_name="pro"), combine)
