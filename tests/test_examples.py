"""The README's example, run as a user runs it: ``torchrun`` with several ranks, on GPUs when the
machine has one per rank, otherwise in CPU emulation; it checks its own results and exits 1 if any
rank's rows are off."""

from __future__ import annotations

import re
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
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    # every rank's report, wherever the ranks' output interleaved (two reports can share a line)
    found = re.findall(r"rank (\d+): \d+ rows, worst error [\d.]+ of the bound; gathered \([\d, ]+\), "
                       r"own rows in place: (True|False)", done.stdout)
    assert sorted(int(r) for r, _ in found) == list(range(ranks)), done.stdout
    assert all(ok == "True" for _, ok in found), done.stdout
