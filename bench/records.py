"""Where a benchmark's measurements go: one JSON-lines file per card, world size and preset, a
``kind: meta`` line first (written by rank 0 only), then one line per measurement."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import torch.distributed as dist

from reduce_scatterv import configs


def now_stamp() -> str:
    """The run's date and time (UTC), as every record carries it."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def start(out_dir: str | Path, card: str, world: int, name: str, **meta) -> Path:
    """Create ``<out_dir>/<card slug>-W<world>-<name>.jsonl`` holding the meta line; returns its path."""
    path = Path(out_dir) / f"{configs.gpu_slug(card.split(' (')[0])}-W{world}-{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(dict(kind="meta", card=card, world=world, **meta)) + "\n")
    return path


def append(path: Path, records) -> None:
    """Add measurements (dicts) to a results file, as the sweep goes (a run cut short keeps them)."""
    with open(path, "a") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)


def close(path: Path | None) -> None:
    """End a benchmark run on every rank: rank 0 names the file it wrote (``path``; None on the other
    ranks), then all leave the process group together."""
    if path is not None:
        print(f"# wrote {path}")
    dist.barrier()
    dist.destroy_process_group()
