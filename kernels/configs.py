"""Launch configurations: defaults, and the tune file written by ``python -m bench.tune``.

A configuration is looked up on the host from rank-agreed facts (mode, world size, dtype, row
length, size bucket), never tuned at call time, so calls are CUDA-graph safe. The tune files are
merged, an entry of a file overriding the same entry of the files after it: the file named by
``KERNELS_TUNE_FILE``; ``~/.cache/reduce_scatterv/<gpu>.json`` (what ``bench.tune`` writes on this
machine: tuning one mode keeps the shipped entries of the others); the file shipped in
``kernels/tuned/<gpu>.json``. Where no file has an entry for a mode/world/dtype/row length, the
defaults below apply.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from . import settings


@dataclass(frozen=True)
class KernelConfig:
    """The kernel's knobs.

    block: elements per tile (power of two); num_warps: warps per program; programs_per_sm: grid cap
    per multiprocessor; tiles_per_program: tiles of the largest destination per program before the
    grid grows; relay: let peers reduce the excess rows of a heavy owner and push them to it (W >= 3).
    """

    block: int = 4096
    num_warps: int = 8
    programs_per_sm: int = 2
    tiles_per_program: int = 1
    relay: bool = True

    def to_json(self) -> dict:
        return asdict(self)


REGISTERS_PER_SM = 65536  # 32-bit registers of one SM (every Hopper and Ampere data-centre GPU)


def register_cap(num_warps: int, programs_per_sm: int) -> int | None:
    """Registers per thread (ptxas ``maxnreg``) that let ``programs_per_sm`` programs of ``num_warps``
    warps be resident on one SM at once, or None where 255 (the most a thread can have) fit."""
    cap = REGISTERS_PER_SM // (32 * num_warps * programs_per_sm) // 8 * 8
    return None if cap >= 255 else max(cap, 32)


DEFAULTS = {
    "ll": KernelConfig(block=1024, num_warps=4, programs_per_sm=1, tiles_per_program=1),
    "push": KernelConfig(block=8192, num_warps=4, programs_per_sm=2, tiles_per_program=1),
    "small": KernelConfig(block=2048, num_warps=4, programs_per_sm=1, tiles_per_program=1),
    "large": KernelConfig(block=4096, num_warps=8, programs_per_sm=2, tiles_per_program=1),
}
# The gather's modes ("gather_ll": flagged words, "gather": the pull) take the reduce-scatter's
# entries (or defaults) of the same kind where the tune file has none of their own; packed flagged
# words ("gather_packed") the flagged words'.
FALLBACK = {"gather_ll": "ll", "gather": "large", "gather_packed": "gather_ll"}
CPU_DEFAULT = KernelConfig(block=64, num_warps=1, programs_per_sm=2, tiles_per_program=2)


def size_bucket(nbytes: int) -> int:
    """log2 bucket of the largest per-destination byte count: 2^(b-1) < nbytes <= 2^b."""
    return max(0, math.ceil(math.log2(max(nbytes, 1))))


def table_key(mode: str, world: int, dtype: str, hidden: int, bucket: int) -> str:
    return f"{mode}/W{world}/{dtype}/H{hidden}/b{bucket}"


def gpu_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def tune_paths(slug: str) -> list[Path]:
    paths = []
    if settings.tune_file():
        paths.append(Path(settings.tune_file()))
    paths.append(Path.home() / ".cache" / "reduce_scatterv" / f"{slug}.json")
    paths.append(Path(__file__).parent / "tuned" / f"{slug}.json")
    return paths


@lru_cache(maxsize=None)
def load_table(slug: str) -> dict[str, KernelConfig]:
    """Every tune file's entries for this GPU, merged (the first of ``tune_paths`` wins a clash)."""
    table = {}
    for path in reversed(tune_paths(slug)):
        if path.is_file():
            table.update({k: KernelConfig(**v) for k, v in json.loads(path.read_text())["entries"].items()})
    return table


def table_digest(slug: str) -> str:
    """A short hash of the merged tune table for this GPU (part of the ranks' fingerprint)."""
    text = json.dumps({k: v.to_json() for k, v in sorted(load_table(slug).items())}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def lookup(slug: str, mode: str, world: int, dtype: str, hidden: int, nbytes: int) -> KernelConfig:
    """Best known config for a call; nearest tuned bucket of the same mode/world/dtype/hidden, else the
    ``FALLBACK`` mode's, else default."""
    return _lookup_bucket(slug, mode, world, dtype, hidden, size_bucket(nbytes))


@lru_cache(maxsize=4096)
def _lookup_bucket(slug: str, mode: str, world: int, dtype: str, hidden: int, bucket: int) -> KernelConfig:
    table = load_table(slug)
    exact = table.get(table_key(mode, world, dtype, hidden, bucket))
    if exact is not None:
        return exact
    prefix = table_key(mode, world, dtype, hidden, 0)[: -len("b0")]
    near = [(abs(int(k[len(prefix) + 1:]) - bucket), k) for k in table if k.startswith(prefix)]
    if near:
        return table[min(near)[1]]
    if mode in FALLBACK:
        return _lookup_bucket(slug, FALLBACK[mode], world, dtype, hidden, bucket)
    return DEFAULTS[mode]
