"""How the GPU workspace's allocation reports PyTorch's limits (no GPU needed: PyTorch's symmetric
memory calls are stood in for, the translation is ours)."""
import types

import pytest
import torch

import reduce_scatterv.symmetric_memory as sm


def _allocate_with_rendezvous_failing(monkeypatch, error: str, backend: str):
    import torch.distributed._symmetric_memory as symm_mem

    def rendezvous(buffer, group):
        raise RuntimeError(error)

    monkeypatch.setattr(sm, "use_backend", lambda backend, device: None)
    monkeypatch.setattr(symm_mem, "empty", lambda n, dtype, device: torch.empty(n, dtype=dtype), raising=False)
    monkeypatch.setattr(symm_mem, "rendezvous", rendezvous, raising=False)
    monkeypatch.setattr(symm_mem, "enable_symm_mem_for_group", lambda name: None, raising=False)
    group = types.SimpleNamespace(group_name="7")
    return sm.allocate(group, 64, torch.device("cpu"), backend)


def test_nvshmem_out_of_teams_names_the_limit_and_the_way_out(monkeypatch):
    """PyTorch's NVSHMEM backend takes one NVSHMEM team per group and never frees it; when NVSHMEM
    runs out (seen on 2x H200 after a few dozen groups in one process), the user reads why."""
    monkeypatch.setenv("NVSHMEM_MAX_TEAMS", "32")
    with pytest.raises(RuntimeError, match=r"no team left for process group '7'.*NVSHMEM_MAX_TEAMS.*now 32") as e:
        _allocate_with_rendezvous_failing(monkeypatch, "Failed to create a new team", "nvshmem")
    assert "Failed to create a new team" in str(e.value.__cause__)


def test_other_rendezvous_errors_pass_through_unchanged(monkeypatch):
    with pytest.raises(RuntimeError, match=r"^something else$"):
        _allocate_with_rendezvous_failing(monkeypatch, "something else", "nvshmem")
    with pytest.raises(RuntimeError, match=r"^Failed to create a new team$"):
        _allocate_with_rendezvous_failing(monkeypatch, "Failed to create a new team", "cuda")
