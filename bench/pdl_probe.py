"""How much programmatic dependent launch (PDL) saves at a kernel boundary, on one GPU.

A chain of dependent Triton kernels (each reads the previous one's output, the way the combine
reads the MoE's output) is captured in a CUDA graph and replayed; the period per kernel is reported
for: no PDL; PDL with the wait first and the trigger at the end (implicit); PDL with the trigger
right after the wait ("early"); and the early variant with a plain (non-PDL) kernel between every
two, which is what a kernel gets after a predecessor that does not take part, against the same
chain without PDL. The result of every
chain is checked against the same arithmetic in torch.

    python bench/pdl_probe.py            # GPU (sm_90+) only
"""

from __future__ import annotations

import statistics
import sys

import torch
import triton
import triton.language as tl

from reduce_scatterv.timing import graph_samples


@triton.jit
def _step(x_ptr, y_ptr, n, BLOCK: tl.constexpr, PDL: tl.constexpr, EARLY: tl.constexpr):
    if PDL:
        tl.extra.cuda.gdc_wait()  # everything the previous kernel wrote is visible after this
        if EARLY:
            tl.extra.cuda.gdc_launch_dependents()
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask)
    tl.store(y_ptr + offs, x * 0.5 + 1.0, mask=mask)


def _launch(x, y, block, warps, pdl, early):
    n = x.numel()
    _step[(triton.cdiv(n, block),)](x, y, n, BLOCK=block, PDL=pdl, EARLY=early, num_warps=warps,
                                    launch_pdl=pdl)


def _period_us(chain, kernels: int, replays: int = 30) -> float:
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        chain()
    torch.cuda.synchronize()
    return statistics.median(graph_samples(chain, kernels, replays))


def main() -> int:
    if not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 9:
        print("pdl_probe: needs an sm_90+ GPU", file=sys.stderr)
        return 2
    print(f"# PDL at a kernel boundary, {torch.cuda.get_device_name()}, torch {torch.__version__}, "
          f"triton {triton.__version__}; us per kernel (graph of a dependent chain, median of replays)")
    print(f"{'elements':>9} {'grid':>5} | {'no pdl':>7} {'pdl':>7} {'pdl early':>9} | plain between: "
          f"{'no pdl':>7} {'pdl early':>9}")
    steps = 20
    for elements, block, warps in ((7168, 512, 4), (7168 * 8, 512, 4), (7168 * 32, 2048, 8), (7168 * 128, 4096, 8)):
        bufs = [torch.randn(elements, device="cuda") for _ in range(2)]
        start = bufs[0].clone()
        rows = {}
        for name, pdl, early, between in (("plain", False, False, False), ("pdl", True, False, False),
                                          ("early", True, True, False), ("between", True, True, True),
                                          ("between_plain", False, False, True)):
            def chain(pdl=pdl, early=early, between=between):
                bufs[0].copy_(start)
                for i in range(steps):
                    _launch(bufs[i % 2], bufs[(i + 1) % 2], block, warps, pdl, early)
                    if between:
                        _launch(bufs[(i + 1) % 2], bufs[(i + 1) % 2], block, warps, False, False)
            kernels = steps * (2 if between else 1) + 1  # the copy is one node too
            rows[name] = _period_us(chain, kernels)
            ref = start.double()
            for _ in range(steps):
                ref = ref * 0.5 + 1.0
                if between:
                    ref = ref * 0.5 + 1.0
            chain()
            torch.cuda.synchronize()
            err = (bufs[steps % 2].double() - ref).abs().max().item()
            if err > 1e-5:
                print(f"WRONG RESULT: {name} at {elements} elements, max error {err}")
                return 1
        print(f"{elements:>9} {triton.cdiv(elements, block):>5} | {rows['plain']:7.2f} {rows['pdl']:7.2f} "
              f"{rows['early']:9.2f} | {'':>15}{rows['between_plain']:7.2f} {rows['between']:9.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
