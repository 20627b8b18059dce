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

import json
import math
import os
import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path


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


DEFAULTS = {
    "ll": KernelConfig(block=1024, num_warps=4, programs_per_sm=1, tiles_per_program=1),
    "push": KernelConfig(block=8192, num_warps=4, programs_per_sm=2, tiles_per_program=1),
    "small": KernelConfig(block=2048, num_warps=4, programs_per_sm=1, tiles_per_program=1),
    "large": KernelConfig(block=4096, num_warps=8, programs_per_sm=2, tiles_per_program=1),
}
CPU_DEFAULT = KernelConfig(block=64, num_warps=1, programs_per_sm=2, tiles_per_program=2)


@dataclass(frozen=True)
class DispatchModel:
    """Predicted microseconds of a large call, ``a + b * MB`` with MB = the whole input (sum(sizes)
    rows, in 1e6 bytes), fitted to the 4x H200 sweep of 2026-11-28 (bench/results, bench/NOTES.md).

    direct pull: the busiest owner reads (W-1) * max(sizes) rows, i.e. ``skew = (W-1)*max/sum`` of
    the input, at ~331 GB/s; relay: every GPU moves about the whole input once, at ~290 GB/s plus a
    second hop; NCCL's grouped reduce: the whole input through its chain at ~365 GB/s (writes), with a
    larger fixed cost that grows with the number of roots. With host sizes the API takes NCCL only
    where this predicts it faster: skewed calls of tens of MB and more, or a heavy owner from ~1 MB.
    """

    direct: tuple[float, float] = (5.0, 3.02)  # a, b per unit of skew
    relay: tuple[float, float] = (19.0, 3.43)
    nccl: tuple[float, float, float] = (9.9, 7.7, 2.74)  # a, a per root (rank with rows), b
    min_mb: float = 0.6  # below this the kernels' latency wins whatever the model says

    def prefers_nccl(self, sizes: list[int], row_bytes: int, relayed: bool) -> bool:
        total = sum(sizes)
        mb = total * row_bytes / 1e6
        if len(sizes) < 3 or mb < self.min_mb:
            return False
        if relayed:
            kernel = self.relay[0] + self.relay[1] * mb
        else:
            kernel = self.direct[0] + self.direct[1] * mb * (len(sizes) - 1) * max(sizes) / total
        roots = sum(1 for n in sizes if n)
        return self.nccl[0] + self.nccl[1] * roots + self.nccl[2] * mb < kernel


DISPATCH = DispatchModel()


def size_bucket(nbytes: int) -> int:
    """log2 bucket of the largest per-destination byte count: 2^(b-1) < nbytes <= 2^b."""
    return max(0, math.ceil(math.log2(max(nbytes, 1))))


def table_key(mode: str, world: int, dtype: str, hidden: int, bucket: int) -> str:
    return f"{mode}/W{world}/{dtype}/H{hidden}/b{bucket}"


def gpu_slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def tune_paths(slug: str) -> list[Path]:
    paths = []
    if os.environ.get("KERNELS_TUNE_FILE"):
        paths.append(Path(os.environ["KERNELS_TUNE_FILE"]))
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


def lookup(slug: str, mode: str, world: int, dtype: str, hidden: int, nbytes: int) -> KernelConfig:
    """Best known config for a call; nearest tuned bucket of the same mode/world/dtype/hidden, else default."""
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
    return DEFAULTS[mode]
