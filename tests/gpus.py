"""What the GPU test files share: how many GPUs this machine has, how many ranks the GPU tests can
start, the world sizes to test, and the skips (with their reasons).

One rank per GPU is the rule: NCCL between the ranks is the reference collective. With
``RSV_RANKS_ON_ONE_GPU=N`` (N >= 2) the rank processes all run on GPU 0 instead, gloo between them
(NCCL refuses two ranks on one GPU) and gloo on CPU copies as the reference: the compiled kernels,
the whole host path and the protocol's scenarios (late, absent and disagreeing ranks, wrap points,
reset, CUDA graphs, two streams) on a machine with one GPU. The ranks' kernels then share that GPU
by time slices (one process's kernels at a time), so a wait lasts until the peer's slice comes:
right results, no NVLink, no timing. Tests that need NCCL itself skip there (``NEEDS_NCCL``)."""

from __future__ import annotations

import pytest
import torch

from tests.rank_pool import ranks_on_one_gpu

GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
ON_ONE_GPU = ranks_on_one_gpu() if GPUS else 0  # ranks on GPU 0 (0: one rank per GPU)
RANKS = ON_ONE_GPU or GPUS  # how many rank processes the GPU tests can start
NEEDS_TWO = pytest.mark.skipif(
    RANKS < 2, reason=f"needs 2+ GPUs to run against NCCL (or RSV_RANKS_ON_ONE_GPU=2 to run the ranks on one GPU "
                      f"against gloo); this machine has {GPUS}")
NEEDS_NCCL = pytest.mark.skipif(
    bool(ON_ONE_GPU), reason="needs NCCL between the ranks: RSV_RANKS_ON_ONE_GPU puts them on one GPU, where NCCL "
                            "refuses two ranks")


def worlds(*candidates: int) -> list[int]:
    """The ``candidates`` this machine can run (at least [2], which the skip above covers)."""
    return [w for w in candidates if w <= RANKS] or [2]


def skip_beyond(world: int) -> None:
    """Skip (with the reason) a test of ``world`` ranks where fewer can start."""
    if world > RANKS:
        pytest.skip(f"needs {world} ranks, RSV_RANKS_ON_ONE_GPU is {ON_ONE_GPU}" if ON_ONE_GPU
                    else f"needs {world} GPUs, this machine has {GPUS}")
