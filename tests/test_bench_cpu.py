"""The benchmark and tuning entry points, run as a user would, on CPU emulation (tiny sizes; the
timings mean nothing there and are labelled so)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.cpu_emulation
def test_bench_entry_point_runs_and_writes_results(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "bench", "--preset", "tiny",
           "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    files = list(tmp_path.glob("*.jsonl"))
    assert len(files) == 1 and list(tmp_path.glob("*.png"))
    lines = [json.loads(s) for s in files[0].read_text().splitlines()]
    meta, recs = lines[0], lines[1:]
    assert meta["kind"] == "meta" and "timings meaningless" in meta["card"]
    fused = [r for r in recs if r["impl"] == "fused"]
    assert len(fused) == 8 and {r["distribution"] for r in fused} == {"even", "uneven", "idle_rank", "one_owner"}
    for r in fused:  # fused agreed with the reference collective on the same inputs
        assert r["max_rel_err_vs_nccl"] < 2 ** -6, r
        assert r["config"]["mode"] in ("ll", "push", "large")
    assert {r["impl"] for r in recs} >= {"fused", "fused_copy", "nccl_rsv", "allreduce_slice"}


def test_tune_entry_point_explains_itself():
    done = subprocess.run([sys.executable, "-m", "bench.tune", "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "triton.autotune" in done.stdout


@pytest.mark.parametrize("group,mode", [("world", "gather_ll"), ("large", "gather")])
def test_the_tuners_gather_calls_are_gathers(cpu_pools, group, mode):
    """``bench.tune --modes gather_ll,gather`` times the kernel with arguments built as the API builds
    them: each mode serves the call its workspace's limits give it, and one launch gathers."""
    assert cpu_pools[2].run("tests.all_gatherv_cases:tune_arguments_case", group=group) == [[mode], [mode]]


def _records(module: str, tmp_path, *extra: str) -> list[dict]:
    """Run ``python -m <module> --preset tiny`` on 2 CPU-emulation ranks as a user would; its records."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", module, "--preset", "tiny",
           "--out", str(tmp_path), *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (path,) = tmp_path.glob("*-tiny.jsonl")
    return [json.loads(s) for s in path.read_text().splitlines()][1:]


@pytest.mark.cpu_emulation
def test_gather_bench_runs_checks_every_implementation_and_writes_results(tmp_path):
    """``python -m bench.gather``: every implementation's result equals the first's (it raises
    otherwise) before it is timed; one record per implementation and case."""
    recs = _records("bench.gather", tmp_path)
    assert len(recs) == 6 * 5 and {r["impl"] for r in recs} == {"fused", "fused_copy", "fused_pull",
                                                                 "nccl_allreduce", "nccl_allgatherv"}


@pytest.mark.cpu_emulation
def test_layer_bench_runs_every_path_and_writes_results(tmp_path):
    """``python -m bench.layer``: the V4 block's communication + epilogue per layer, every path timed,
    also with the ranks brought in step before each call (``--in-step``)."""
    recs = _records("bench.layer", tmp_path, "--in-step")
    assert len(recs) == 4 * 3 and {r["path"] for r in recs} == {"fused", "fused_combine", "reference"}
    assert all(r["gather"] > 0 and r["combine"] > 0 and r["total"] > 0 for r in recs)
    assert all({"gather_in_step", "combine_in_step", "total_in_step"} <= r.keys() for r in recs if r["path"] == "fused")
