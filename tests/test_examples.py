"""The README's example, run as a user runs it: ``torchrun`` with several ranks, on GPUs when the
machine has one per rank, otherwise in CPU emulation; it checks its own results and exits 1 if any
rank's rows are off."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.cpu_emulation
@pytest.mark.parametrize("ranks", [2, 3])
def test_quickstart_runs_and_checks_itself(ranks):
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(ranks),
                           str(ROOT / "examples" / "quickstart.py")], capture_output=True, text=True, timeout=600,
                          cwd=ROOT)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("rank ")]
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert len(lines) == ranks and all("own rows in place: True" in ln for ln in lines), lines
