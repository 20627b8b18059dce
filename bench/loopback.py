"""Two ranks of the flagged-word kernels on one GPU ("loopback"): what the kernels cost without NVLink.

Each rank's workspace is a buffer on the same GPU and the peer table holds both; every call
launches rank 0's kernel and rank 1's on two streams of one CUDA graph (fork, both, join), so that
they run at once and exchange their flagged words through this GPU's memory. NVLink's write latency
is absent; what the kernels do around it (the call's prologue, the polls, the sums, the epilogue,
the grid) remains, so variants can be compared on one GPU: the combine with and without the fused
hc_post, the gather in plain and in packed flagged words (``--packed``), the plain push (``--push``),
and tile shapes. Every variant's result is checked against torch before it is timed (bf16 sums
within one rounding; hc_post within two).

    python bench/loopback.py [--rows 1,2,4,8] [--shapes 512:4,256:1] [--variant one_store]    # one sm_90 GPU

Prints us per call (the pair of kernels, fork and join included; median of replays), WRONG for a
wrong result, FAULT for a call that ended in a fault (NaN: see ``_faulted``); "floor" is a pair of
plain elementwise kernels of a row's size under the same fork and join; "comb,hc_kernel" the combine
and then hc_post as its own kernel (the V4 block above its fused hc_post's limit). Not a
collective's time: no number here is to be compared with NCCL.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from types import SimpleNamespace

import torch

from reduce_scatterv.timing import graph_samples

HIDDEN, HC, TIMEOUT_NS = 7168, 4, 20_000_000_000


def _workspaces(world: int = 2, epoch: int = 0):
    """One workspace per rank on this GPU, each header as call ``epoch`` expects it (the values the
    call before would have left: ``layout.initial_header``), slots zero."""
    from reduce_scatterv.layout import Layout
    from reduce_scatterv.workspace import header_image

    layout = Layout(world, ll_bytes=1 << 20, push_bytes=1 << 21, scratch_bytes=0, arena_bytes=0)
    bufs = [torch.zeros(layout.total_bytes, dtype=torch.uint8, device="cuda") for _ in range(world)]
    words = header_image(world, epoch)
    for b in bufs:
        b[: words.numel() * 8].view(torch.int64).copy_(words)
    table = torch.tensor([b.data_ptr() for b in bufs], dtype=torch.int64, device="cuda")
    return [SimpleNamespace(table_addr=table.data_ptr(), base=b.data_ptr(), world_size=world, rank=r, layout=layout,
                            keep=(b, table)) for r, b in enumerate(bufs)]


def _combine_case(sizes, epilogue: bool):
    """Per rank: (launch args without the config, the check)."""
    from reduce_scatterv.epilogues import HcPost
    from reduce_scatterv.validation import Call

    total = sum(sizes)
    inputs = [torch.randn(total, HIDDEN, dtype=torch.bfloat16, device="cuda") for _ in sizes]
    fsum = inputs[0].float() + inputs[1].float()
    ranks = []
    for r, n in enumerate(sizes):
        call = Call(total, (HIDDEN,), HIDDEN, tuple(sizes), None, n)
        out = torch.full((n, HIDDEN), float("nan"), dtype=torch.bfloat16, device="cuda")
        f = fsum[sum(sizes[:r]):sum(sizes[:r]) + n]
        if not epilogue:
            ranks.append(((inputs[r], out, call, None), lambda out=out, f=f: _close(out.float(), f, 1)))
            continue
        res = torch.randn(n, HC, HIDDEN, dtype=torch.bfloat16, device="cuda")
        post = torch.rand(n, HC, device="cuda")
        comb = torch.rand(n, HC, HC, device="cuda")
        new = torch.full_like(res, float("nan"))
        want = post[:, :, None] * f[:, None, :] + torch.einsum(
            "tij,tih->tjh", comb, res.float())
        ranks.append(((inputs[r], out, call, HcPost(res, post, comb, new)),
                      lambda new=new, want=want: _close(new.float(), want, 2)))
    return ranks


def _unfused_case(sizes):
    """The combine alone, then hc_post as one Triton kernel (``deepseek_v4.hc_post_kernel``) on each
    rank: what the V4 block runs above its fused hc_post's row limit."""
    from deepseek_v4 import hc_post_kernel

    ranks = []
    for (args, _), r, n in zip(_combine_case(sizes, False), range(len(sizes)), sizes):
        res = torch.randn(n, HC, HIDDEN, dtype=torch.bfloat16, device="cuda")
        post, comb = torch.rand(n, HC, device="cuda"), torch.rand(n, HC, HC, device="cuda")
        new = torch.full_like(res, float("nan"))
        f = args[1]

        def check(f=f, res=res, post=post, comb=comb, new=new):
            want = post[:, :, None] * f.float()[:, None, :] + torch.einsum("tij,tih->tjh", comb, res.float())
            return _close(new.float(), want, 2)

        ranks.append(((*args[:3], None, lambda f=f, res=res, post=post, comb=comb, new=new:
                       hc_post_kernel.launch(f, res, post, comb, new)), check))
    # compiled and loaded now: loading a module waits for the kernels in flight, and rank 0's
    # combine, launched first, waits for rank 1's, which this process launches after it
    ranks[0][0][4]()
    torch.cuda.synchronize()
    return ranks


def _gather_case(sizes):
    from reduce_scatterv.validation import Call

    inputs = [torch.randn(n, HIDDEN, dtype=torch.bfloat16, device="cuda") for n in sizes]
    want = torch.cat(inputs)
    ranks = []
    for r, n in enumerate(sizes):
        out = torch.full((sum(sizes), HIDDEN), float("nan"), dtype=torch.bfloat16, device="cuda")
        ranks.append(((inputs[r], out, Call(n, (HIDDEN,), HIDDEN, tuple(sizes), None, sum(sizes))),
                      lambda out=out: bool(torch.equal(out, want))))
    return ranks


def _faulted(case) -> bool:
    """Whether some rank's output holds NaN: the poison of a fault (a timeout), never of a wrong sum
    (inputs are never NaN). In loopback a timeout can be the harness's own: both ranks' grids share
    one GPU's SMs, so a grid that fills them (one program per SM at its registers) keeps the other
    rank's programs, which it waits for, from starting."""
    outs = [t for args, _ in case if args is not None
            for t in (args[1], args[3].out if len(args) > 3 and args[3] is not None else None) if t is not None]
    return any(bool(torch.isnan(t.float()).any()) for t in outs if t.numel())


def _close(got, want, roundings: int) -> bool:
    tol = roundings * 2.0 ** -8 * want.abs().clamp_min(1.0)
    return bool(((got - want).abs() <= tol).all())


def call_once(kern, wss, kind: str, sizes, late: int | None = None, cycles: int = 0,
              timeout_ns: int = TIMEOUT_NS) -> bool:
    """One eager call of ``kind`` (combine, hc_post, push, gather, gather_packed) with ``sizes`` on
    the loopback workspaces ``wss``, rank ``late`` starting ``cycles`` GPU cycles after the other (a sleep on its
    stream before its kernel); fresh inputs, NaN-poisoned outputs. Returns whether every rank's
    result is right.

    Both ranks live in this process: where rank 1's kernel were a variant not yet compiled, its
    compile and load would happen while rank 0's kernel already waits for it, and the call would
    time out (a fault: NaN outputs, the workspaces in the failed state). A rank without rows runs
    its peers' variant (``launch_args.EMPTY_ADDRESS``); a ``timeout_ns`` below 2^31 is a variant
    of its own (int32). (Ranks in processes of their own do not wait for each other's compiles
    this way: a late rank is only late.)"""
    from reduce_scatterv.configs import KernelConfig

    case = _case(kind, sizes)
    launch = _launchers(kern, wss, case, kind, KernelConfig(block=512, num_warps=4, programs_per_sm=1,
                                                            tiles_per_program=1), timeout_ns)
    streams = [torch.cuda.current_stream()] + [torch.cuda.Stream() for _ in sizes[1:]]
    torch.cuda.synchronize()
    for r, stream in enumerate(streams):
        with torch.cuda.stream(stream):
            if r == late:
                torch.cuda._sleep(cycles)
            launch[r]()
    torch.cuda.synchronize()
    return all(check() for _, check in case)


def _case(kind: str, sizes):
    """Per rank (the launch's arguments, the check) for ``kind``: gather*, comb,hc_kernel, else a
    combine (flagged words or, push*, the plain push) with hc_post fused where the kind names it."""
    if kind.startswith("gather"):
        return _gather_case(sizes)
    if kind == "comb,hc_kernel":
        return _unfused_case(sizes)
    return _combine_case(sizes, "hc_post" in kind)


def _launchers(kern, wss, case, kind: str, cfg, timeout_ns: int = TIMEOUT_NS) -> list:
    """One launcher per rank of ``kind`` on ``case`` (``_case``): flagged-word programs of ``cfg``,
    the plain push (push*) with the API's flat-tile epilogue config."""
    from reduce_scatterv.configs import KernelConfig

    sms = torch.cuda.get_device_properties(0).multi_processor_count
    protocol = (timeout_ns, 7, 0)
    if kind.startswith("gather"):  # gather, gather_packed
        return [lambda ws=ws, a=a: kern.gather_ll_launch(ws, *a, cfg, sms, protocol, packed=kind == "gather_packed")
                for ws, (a, _) in zip(wss, case)]
    if kind == "comb,hc_kernel":  # the combine, then the hc_post kernel
        return [lambda ws=ws, a=a: (kern.push_launch(ws, a[0], a[1], a[2], True, cfg, sms, protocol, None), a[4]())
                for ws, (a, _) in zip(wss, case)]
    flagged = not kind.startswith("push")
    c = cfg if flagged else KernelConfig(block=2048, num_warps=4, programs_per_sm=2, tiles_per_program=1)
    return [lambda ws=ws, a=a: kern.push_launch(ws, a[0], a[1], a[2], flagged, c, sms, protocol, a[3])
            for ws, (a, _) in zip(wss, case)]


def _time(calls, replays: int = 30, per_graph: int = 20) -> float:
    """us per call of ``calls`` (one launcher per rank), both ranks' kernels at once (two streams)."""
    main, side = torch.cuda.Stream(), torch.cuda.Stream()

    def one():
        side.wait_stream(main)
        calls[0]()
        with torch.cuda.stream(side):
            calls[1]()
        main.wait_stream(side)

    with torch.cuda.stream(main):
        one()
    torch.cuda.synchronize()
    return statistics.median(graph_samples(lambda: [one() for _ in range(per_graph)], per_graph, replays,
                                           stream=main))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python bench/loopback.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="1,2,4,8", help="rows per rank (even sizes), comma separated")
    ap.add_argument("--shapes", default="512:4", help="block:warps of the flagged-word programs")
    ap.add_argument("--variant", default="base",
                    help="one of bench/epilogue_parts.py's stubs (post_only, one_store, terms_after_poll, f_only)")
    ap.add_argument("--push", action="store_true", help="also the plain push (data + progress signals)")
    ap.add_argument("--packed", action="store_true", help="also the gather in packed flagged words (flagged_words.py)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 9:
        print("loopback: needs an sm_90+ GPU (the two ranks' kernels must run at once)", file=sys.stderr)
        return 2
    from bench.epilogue_parts import apply_variant
    from reduce_scatterv._triton_mode import kernel_module
    from reduce_scatterv.configs import KernelConfig

    apply_variant(args.variant)  # before the kernels compile

    kern = kernel_module("cuda")
    shapes = [tuple(int(v) for v in s.split(":")) for s in args.shapes.split(",")]
    print(f"# loopback: 2 ranks on one {torch.cuda.get_device_name()}, H {HIDDEN} bf16, even rows; us per call "
          f"(both ranks' kernels, fork/join included; no NVLink: not a collective's time); variant {args.variant}")
    kinds = ("floor", "combine", "hc_post", "comb,hc_kernel", "gather")
    kinds += (("push", "push+hc_post") if args.push else ()) + (("gather_packed",) if args.packed else ())
    print(f"{'rows':>4} {'block:warps':>11} | " + " ".join(f"{k:>12}" for k in kinds))
    worst = 0
    for rows in (int(v) for v in args.rows.split(",")):
        for block, warps in shapes:
            cfg = KernelConfig(block=block, num_warps=warps, programs_per_sm=1, tiles_per_program=1)
            cells = []
            for kind in kinds:
                wss = _workspaces()  # fresh: each kind starts at epoch 0 on both ranks
                if kind == "floor":  # two plain elementwise kernels, one a rank, under the same fork/join
                    a, b = (torch.randn(rows, HIDDEN, dtype=torch.bfloat16, device="cuda") for _ in range(2))
                    outs = [torch.empty_like(a) for _ in range(2)]
                    case = [(None, lambda o=o: bool(torch.equal(o, a + b))) for o in outs]
                    calls = [lambda o=o: torch.add(a, b, out=o) for o in outs]
                else:
                    case = _case(kind, [rows, rows])
                    calls = _launchers(kern, wss, case, kind, cfg)
                us = _time(calls)
                ok = all(check() for _, check in case)  # the last replayed call's result
                # stubs that are wrong by design
                stub = kind.endswith("hc_post") and args.variant in ("post_only", "one_store", "f_only")
                worst |= not ok and not stub
                cells.append(f"{us:12.2f}" if ok or stub else f"{'FAULT' if _faulted(case) else 'WRONG':>12}")
            print(f"{rows:>4} {f'{block}:{warps}':>11} | {' '.join(cells)}", flush=True)
    return 1 if worst else 0


if __name__ == "__main__":
    sys.exit(main())
