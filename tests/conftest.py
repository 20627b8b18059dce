"""Rank pools shared by the whole test session: one per world size, started on first use."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from reduce_scatterv._triton_mode import interpreter_problem  # noqa: E402
from tests.rank_pool import RankPool  # noqa: E402


def pytest_collection_modifyitems(config, items):
    """Tests that run the kernels in Triton's interpreter (CPU rank pools, and the ``cpu_emulation``
    marked ones that start CPU ranks themselves) skip, with the reason, where its version cannot."""
    problem = interpreter_problem()
    if problem:
        for item in items:
            if "cpu_pools" in item.fixturenames or item.get_closest_marker("cpu_emulation"):
                item.add_marker(pytest.mark.skip(reason=problem))


class Pools:
    def __init__(self, device_type: str):
        self.device_type = device_type
        self._pools: dict[int, RankPool] = {}

    def __getitem__(self, world: int) -> RankPool:
        if world not in self._pools:
            self._pools[world] = RankPool(world, self.device_type)
        return self._pools[world]

    def drop(self, world: int) -> None:
        pool = self._pools.pop(world, None)
        if pool is not None:
            pool.close()

    def close(self) -> None:
        for world in list(self._pools):
            self.drop(world)


@pytest.fixture(scope="session")
def cpu_pools():
    pools = Pools("cpu")
    yield pools
    pools.close()


@pytest.fixture(scope="session")
def gpu_pools():
    pools = Pools("cuda")
    yield pools
    pools.close()
