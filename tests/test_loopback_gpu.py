"""The flagged-word combine (with and without the fused hc_post), the combine followed by the
hc_post kernel, the gather and the plain push, compiled for the GPU, with two ranks on one GPU
(``bench/loopback.py``): each rank's kernel on its own stream, their words exchanged through this
GPU's memory. Every result is checked against torch (the script exits 1 on a wrong one). It needs
one sm_90+ GPU, so it runs where a two-GPU test cannot."""

from __future__ import annotations

import pytest
import torch

ONE_HOPPER = pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 9,
    reason="needs an sm_90+ GPU (two ranks' kernels at once on one GPU)")


@ONE_HOPPER
@pytest.mark.parametrize("rows", ["1,3", "8,17"])
def test_two_ranks_on_one_gpu_get_the_right_sums_and_epilogue(rows, capsys):
    from bench.loopback import main

    code = main(["--rows", rows, "--shapes", "512:4,1024:4", "--push"])
    out = capsys.readouterr().out
    assert code == 0 and "WRONG" not in out, out

