"""Every environment variable the library reads, in one place (as vLLM's ``envs.py``).

Every knob is a way for ranks to disagree, so there are three, and what the protocol depends on is
compared across ranks when a workspace is created (``Workspace`` fingerprint). Tests and A/B runs
override through arguments (``kernels.workspace(..., timeout_s=...)``, ``api.overrides``), never
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
