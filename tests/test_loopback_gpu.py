"""The flagged-word combine (with and without the fused hc_post), the combine followed by the
hc_post kernel, the gather (in plain and packed flagged words) and the plain push, compiled
for the GPU, with two ranks on one GPU (``bench/loopback.py``): each rank's kernel on its own
stream, their words exchanged through this GPU's memory. Every result is checked against torch (the
script exits 1 on a wrong one). It needs one sm_90+ GPU, so it runs where a two-GPU test cannot."""

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

    code = main(["--rows", rows, "--shapes", "512:4,1024:4", "--push", "--packed"])
    out = capsys.readouterr().out
    assert code == 0 and "WRONG" not in out, out



# packed flags mod 2^15, 16-bit halves; flags mod 2^31, 32-bit halves; PUSH words (E * 2^20); int64
WRAPS = [2**15, 2**16, 2**31, 2**32, 2**43, 2**44, 2**63, 2**64]


@ONE_HOPPER
@pytest.mark.parametrize("wrap", WRAPS, ids=lambda w: f"2^{w.bit_length() - 1}")
def test_calls_across_an_epoch_wrap_with_a_late_rank_stay_right(wrap):
    """Both headers set as the call two before ``wrap`` expects them (mod 2^64), then calls of every
    kind across the wrap, ranks with no rows among them, a different rank late each time (about
    0.1-0.3 ms): every result right."""
    from bench import loopback
    from reduce_scatterv._triton_mode import kernel_module

    kern = kernel_module("cuda")
    calls = [("combine", [3, 2]), ("hc_post", [2, 1]), ("push", [5, 3]), ("gather", [4, 1]), ("combine", [1, 0]),
             ("gather_packed", [3, 5]), ("hc_post", [0, 2]), ("push", [2, 2]), ("gather", [0, 3]),
             ("gather_packed", [0, 2])]
    # no warm-up: a rank without rows must launch the variant its peer compiled (one host thread
    # launches both ranks here, so a variant of its own would be compiled while the peer waits)
    wss = loopback._workspaces(epoch=(wrap - 2) % 2**64)
    for i, (kind, sizes) in enumerate(calls):
        assert loopback.call_once(kern, wss, kind, sizes, late=i % 2, cycles=200_000 * (1 + i % 3)), \
            f"call {i} ({kind}, sizes {sizes}) wrong at epoch {(wrap - 2 + i) % 2**64}"
