"""Every kernel variant the launchers ask for, compiled for sm_90 (H100 / H200) on a machine without a
GPU, on every rank of a RankPool (gloo; ``tests/test_compile_sm90.py``).

The interpreter that runs the CPU tests executes Python, not the GPU compiler: code that the GPU
compiler rejects passes there (an empty tensor's address 0 reaches a kernel as an int32, and
``int32.to(pointer)`` does not compile). Here the real launchers run over the CPU workspace with
Triton's own argument specialisation (address 0 as int32, an int equal to 1 as a constant, the
divisibility hints), a stand-in CUDA driver that reports sm_90, and each launch turned into its
compile: nothing runs, so no output is looked at; a variant that does not compile raises.
"""

from __future__ import annotations

import importlib
import os

import torch

import reduce_scatterv as rsv

_compiled: set = set()


def compile_only() -> None:
    """Make this process compile kernels for sm_90 instead of launching them (idempotent)."""
    if getattr(compile_only, "done", False):
        return
    os.environ["TRITON_INTERPRET"] = "0"
    from triton.backends.compiler import GPUTarget
    from triton.runtime import driver
    from triton.runtime.jit import JITFunction

    class Sm90:  # the driver calls JITFunction.run makes before it compiles
        def get_current_device(self):
            return 0

        def get_current_stream(self, device=None):
            return 0

        def get_current_target(self):
            return GPUTarget("cuda", 90, 32)

        def get_active_torch_device(self):
            return torch.device("cpu")

        def is_active(self):
            return True

    driver.set_active(Sm90())
    run = JITFunction.run

    def compile_instead(self, *args, grid, warmup, **kwargs):
        try:
            kernel = run(self, *args, grid=grid, warmup=True, **kwargs)
        except Exception as e:  # name the kernel and its constants: Triton's own message may not
            raise RuntimeError(f"{self.fn.__name__} does not compile for sm_90 with {kwargs} and arguments "
                               f"{[type(a).__name__ if not isinstance(a, int) else a for a in args]}: {e}") from e
        _compiled.add((self.fn.__name__, tuple(sorted((k, str(v)) for k, v in kwargs.items()))))
        return kernel

    JITFunction.run = compile_instead
    from reduce_scatterv import _triton_mode, api

    kernel_set = importlib.import_module(f"{rsv.__name__}.kernel_set")
    _triton_mode._mode = "compile"
    _triton_mode.kernel_module = api.kernel_module = lambda device_type: kernel_set
    compile_only.done = True


def compile_case(ctx, *, hidden: int = 7168, dtypes=("bfloat16", "float16", "float32"), only=None) -> list:
    """The calls the test suites make, by mode, dtype, sizes (even, uneven with an idle rank: empty
    tensors; on the host and the device as int32 and int64), each epilogue, other dtypes of the
    gather, its packed flagged words, the multi-node hierarchy (2 x 1 on two ranks, 2 x 2 on four)
    and hc_post. Returns the kernel variants compiled (name and constants). ``only``: these groups
    (default: all)."""
    compile_only()
    from deepseek_v4.mhc import hc_post_one_kernel
    from reduce_scatterv import api
    from reduce_scatterv.epilogues import HcPost, ResidualRMSNorm
    from tests.hierarchy_cases import hier_group

    W, r = ctx.world, ctx.rank
    size_sets = [[1] * W, [0] + [3] * (W - 1), [40] * W]
    groups = dict(ctx.groups)
    groups["nodes"] = hier_group(ctx, max(1, W // 2))
    groups["nodes_fp32"] = hier_group(ctx, max(1, W // 2), hop_fp32=True)
    for name, group in groups.items():
        if only is not None and name not in only:
            continue
        for dtype in (getattr(torch, d) for d in dtypes):
            for sizes in size_sets:
                for form in ("host", torch.int32, torch.int64):
                    host = form == "host"  # host sizes: exact rows; device sizes: capacities, alike on every rank
                    arg = sizes if host else torch.tensor(sizes, dtype=form)
                    spare = 0 if host else 1
                    rsv.reduce_scatterv(torch.ones(sum(sizes) + spare, hidden, dtype=dtype),
                                        torch.empty(sizes[r] if host else max(sizes) + 1, hidden, dtype=dtype),
                                        sizes=arg, group=group)
                    rsv.all_gatherv(torch.ones(sizes[r] if host else max(sizes) + 1, hidden, dtype=dtype),
                                    torch.empty(sum(sizes) + spare, hidden, dtype=dtype), sizes=arg, group=group)
            if name.startswith("nodes"):
                continue
            for sizes in size_sets:  # the epilogues, host sizes (as the V4 block calls them)
                n = sizes[r]
                rows = torch.ones(sum(sizes), hidden, dtype=dtype)
                rsv.reduce_scatterv(rows, sizes=sizes, group=group, epilogue=HcPost(
                    torch.ones(n, 4, hidden, dtype=dtype), torch.ones(n, 4), torch.ones(n, 4, 4),
                    torch.empty(n, 4, hidden, dtype=dtype), f_out=torch.empty(n, hidden, dtype=dtype)))
                rsv.reduce_scatterv(rows, sizes=sizes, group=group, epilogue=ResidualRMSNorm(
                    torch.ones(n, hidden, dtype=dtype), torch.ones(hidden, dtype=dtype), 1e-6,
                    torch.empty(n, hidden, dtype=dtype), torch.empty(n, hidden, dtype=dtype)))
        for dtype in (torch.int64, torch.uint8):  # the gather's words
            rsv.all_gatherv(torch.ones(1, 6, dtype=dtype), sizes=[1] * W, group=group)
        with api.overrides(PACKED_MIN_BYTES=0):  # packed flagged words (where the group's gather takes flagged words)
            for dtype in (torch.bfloat16, torch.float32):
                for sizes in size_sets:
                    rsv.all_gatherv(torch.ones(sizes[r], hidden, dtype=dtype), sizes=sizes, group=group)
    for n in (0, 1, 5):
        hc_post_one_kernel(torch.ones(n, hidden, dtype=torch.bfloat16), torch.ones(n, 4, hidden, dtype=torch.bfloat16),
                           torch.ones(n, 4), torch.ones(n, 4, 4))
    return sorted(name for name, _ in _compiled)
