"""The engine plugins' shared path on GPUs (NCCL, symmetric memory), driven as the engines drive it
with no engine installed (the lent GPU machines have none; the plugins against SGLang's and vLLM's
real code run in CPU emulation, ``tests/test_engine_*.py``): meet and reserve at start-up, then
SGLang's decode sizes eagerly and in a captured CUDA graph, vLLM's ``sizes=None``, an uneven
prefill list, a call on a side stream, and the refusals, against NCCL and the float64 sum.

    pytest tests/test_plugins_gpu.py            # spawns one process per GPU itself
"""

from __future__ import annotations

import pytest

from tests.gpus import NEEDS_NCCL, NEEDS_TWO, worlds

pytestmark = [NEEDS_TWO, NEEDS_NCCL]  # the engines' device groups are NCCL's


@pytest.mark.parametrize("world", worlds(2, 4))
def test_the_plugin_path_serves_the_engines_call_shapes_on_gpus(gpu_pools, world):
    for said in gpu_pools[world].run("tests.plugin_path_cases:plugin_path_case", hidden=7168, seed=world,
                                     prefill=(5, 0, 130, 1)):
        assert [r[0].split()[0] if r else None for r in said["refusals"]] == ["dtype", "size", "dim"], said
