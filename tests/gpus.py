"""What the GPU test files share: how many GPUs this machine has, the world sizes to test, and the
skip (with its reason) where there are too few to run against NCCL."""

from __future__ import annotations

import pytest
import torch

GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
NEEDS_TWO = pytest.mark.skipif(GPUS < 2, reason=f"needs 2+ GPUs to run against NCCL; this machine has {GPUS}")


def worlds(*candidates: int) -> list[int]:
    """The ``candidates`` this machine can run (at least [2], which the skip above covers)."""
    return [w for w in candidates if w <= GPUS] or [2]
