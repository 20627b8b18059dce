"""Which part of the protocol costs the plain push its 6-13% at 128-512 even rows (2x H200)? An A/B
by stubs, not a product path: each VARIANT replaces one signals function before anything compiles
(one torchrun per variant; results in bench/NOTES.md, 2026-11-30 (later)).
    VARIANT=base|no_err_poll|no_fault_poll|no_uniform torchrun --nproc-per-node 2 bench/push_parts.py"""
import json
import os
import sys

sys.path.insert(0, os.getcwd())
from reduce_scatterv import distributed_env as dist_env  # noqa: E402

device = dist_env.init()
from reduce_scatterv._triton_mode import kernel_module  # noqa: E402

kernel_module(device.type)
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

from reduce_scatterv import signals  # noqa: E402
from reduce_scatterv.signals import ERR_TIMEOUT, now, _behind  # noqa: E402,F401

VARIANT = os.environ.get("VARIANT", "base")


@triton.jit
def fault_status_timer_only(err_ptr, deadline):
    late = now(err_ptr) - deadline > 0
    return tl.where(late, ERR_TIMEOUT, 0)


@triton.jit
def fault_status_never(err_ptr, deadline):
    return (deadline * 0).to(tl.int32)


@triton.jit
def wait_words_plain(slots, live, target, deadline, err_ptr, ACQUIRE: tl.constexpr):
    status = (deadline * 0).to(tl.int32)
    seen = tl.load(slots, mask=live, other=target, volatile=True)
    while _behind(seen, target, live, status):
        seen = tl.load(slots, mask=live, other=target, volatile=True)
        status = fault_status(err_ptr, deadline)
    if ACQUIRE:
        tl.atomic_add(slots, live.to(tl.int64) * 0, mask=live, sem="acquire", scope="sys")
        tl.debug_barrier()
    return status


fault_status = signals.fault_status
if VARIANT == "no_err_poll":
    signals.fault_status = fault_status_timer_only
elif VARIANT == "no_fault_poll":
    signals.fault_status = fault_status_never
elif VARIANT == "no_uniform":
    from reduce_scatterv import push_kernel
    push_kernel.wait_words = wait_words_plain

import reduce_scatterv as rsv  # noqa: E402
from reduce_scatterv.timing import time_call  # noqa: E402

rank, world = dist.get_rank(), dist.get_world_size()
res = {}
for rows in (32, 128, 256, 512):
    sizes = [rows] * world
    inp = rsv.workspace().empty(sum(sizes), 7168, dtype=torch.bfloat16)
    inp.copy_(torch.randn(inp.shape, device=device))
    out = torch.empty((rows, 7168), dtype=torch.bfloat16, device=device)
    ref = torch.empty_like(out, dtype=torch.float32)
    with rsv.api.overrides(MODES_OFF=frozenset({"ll"})):
        call = lambda: rsv.reduce_scatterv(inp, out, sizes=sizes)  # noqa: E731
        call()
        dist.reduce_scatter(ref, list(inp.float().split(sizes)))
        assert (out.float() - ref).abs().max() < 0.1, "wrong sum"
        res[rows] = time_call(call, device, calls_per_graph=20, replays=30)
if rank == 0:
    print(json.dumps(dict(variant=VARIANT, **{str(k): round(v, 2) for k, v in res.items()})), flush=True)
dist.destroy_process_group()
