"""Every environment variable the library reads, in one place (as vLLM's ``envs.py``).

Every knob is a way for ranks to disagree, so there are few, and what a rank's choices depend on is
compared across ranks: the protocol's when a workspace is created (``Workspace`` fingerprint), the
engine plugins' when a plugin first meets an engine's process group (``plugins.common``). Tests and A/B runs
override through arguments (``reduce_scatterv.workspace(..., timeout_s=...)``, ``api.overrides``), never
through ``os.environ``.

KERNELS_TIMEOUT_S  default 60. Seconds any wait of a call may last before the call gives up, poisons
                   the rows it could not complete and puts the group in the failed state. Read when a
                   workspace is created (the ``timeout_s`` keyword wins). 60 s covers a rank that is
                   late by a first call's Triton compile or a slow host, and still ends a hang.
KERNELS_CHECK      default 0. 1: raise flagged errors after every call (a host sync per call, for
                   debugging). Read at import. Per rank; changes nothing in the protocol.
KERNELS_TUNE_FILE  default unset. A tune file whose entries override the per-user cache and the
                   shipped file (``configs.py``). Read when configs are first looked up; the merged
                   table is part of the fingerprint the ranks compare.
KERNELS_SYMM_MEM_BACKEND
                   default "cuda". Which backend of PyTorch symmetric memory holds the GPU workspaces:
                   "cuda" (PyTorch's default) or "nvshmem" (``torch.distributed._symmetric_memory.
                   set_backend("NVSHMEM")``, needs the ``nvshmem`` extra). Read when a workspace is
                   created (the ``backend`` keyword wins); part of the fingerprint the ranks compare.
                   The backend is per process (PyTorch fixes it at the first symmetric allocation), so
                   every workspace of a process must use the same one. CPU emulation ignores it.
KERNELS_ENGINE_PLUGIN
                   default 0. 1: the SGLang and vLLM plugins of this package (loaded by the engines
                   from the entry points in pyproject.toml) route the engine's reduce_scatterv to
                   the fused kernel (``kernels/plugins``). Read when the engine loads its plugins.
                   Off by default: installing the package must not change an engine. Compared
                   across the ranks of every group the plugin meets (a mismatch raises on every rank).
KERNELS_ENGINE_WORKSPACE_MB
                   default 256. Cap, in MiB, on the symmetric workspace the plugins reserve per
                   served group at start-up (before the engine sizes its KV cache); calls whose input
                   is larger than the reserved workspace run the engine's own method. 256 MiB serves
                   inputs up to 128 MiB (about 9000 rows of 7168 bf16 values, all ranks' rows
                   together) on 2 to 8 ranks: every decode batch and most prefill chunks of DeepSeek
                   V4; compared across ranks like the switch.
"""

from __future__ import annotations

import os

DEFAULT_TIMEOUT_S = 60.0


def timeout_s() -> float:
    """``KERNELS_TIMEOUT_S`` if set, else 60."""
    value = os.environ.get("KERNELS_TIMEOUT_S")
    return DEFAULT_TIMEOUT_S if value is None else float(value)


CHECK_EVERY_CALL = os.environ.get("KERNELS_CHECK", "0") == "1"


def tune_file() -> str | None:
    """``KERNELS_TUNE_FILE`` if set."""
    return os.environ.get("KERNELS_TUNE_FILE") or None


DEFAULT_ENGINE_WORKSPACE_MB = 256


def engine_plugin() -> bool:
    """``KERNELS_ENGINE_PLUGIN`` is 1 (the engine plugins are on)."""
    return os.environ.get("KERNELS_ENGINE_PLUGIN", "0").strip() == "1"


def engine_workspace_bytes() -> int:
    """``KERNELS_ENGINE_WORKSPACE_MB`` (default 256) in bytes."""
    value = os.environ.get("KERNELS_ENGINE_WORKSPACE_MB")
    mib = DEFAULT_ENGINE_WORKSPACE_MB if value is None or not value.strip() else float(value)
    if mib < 0:
        raise ValueError(f"KERNELS_ENGINE_WORKSPACE_MB must be >= 0, got {value!r}")
    return int(mib * (1 << 20))


SYMM_MEM_BACKENDS = ("cuda", "nvshmem")


def symm_mem_backend() -> str:
    """``KERNELS_SYMM_MEM_BACKEND`` (lower case) if set, else "cuda"."""
    value = (os.environ.get("KERNELS_SYMM_MEM_BACKEND") or "cuda").strip().lower()
    if value not in SYMM_MEM_BACKENDS:
        raise ValueError(f"KERNELS_SYMM_MEM_BACKEND={value!r}: use one of {SYMM_MEM_BACKENDS}")
    return value
