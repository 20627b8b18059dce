"""Which part of the protocol costs the push modes their 3-14% against the kernels before it (2x H200)?
An A/B by stubs, not a product path: each VARIANT replaces protocol functions before anything
compiles (one torchrun per variant, alternated; results in bench/NOTES.md).
    VARIANT=base|no_err_poll|no_fault_poll|no_uniform|no_begin_err|no_digest|no_uniform_max|lean \
        torchrun --nproc-per-node 2 bench/push_parts.py
  no_begin_err    no ERR load (and its CTA-wide reduction) at the start of a call
  no_digest       no CALL words: nothing posted, polled or checked
  no_uniform_max  every CTA-wide reduction of a decision replaced by the thread's own value
  lean            no_fault_poll + no_begin_err + no_digest + no_uniform_max
Calls: flagged words (mode ll) at even 2 / 8 / 32 rows per rank, the plain push (ll off) at even
128 / 256 and uneven 32 / 128 (sizes as bench.sweep's "uneven")."""
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
from reduce_scatterv import push_kernel  # noqa: E402
from reduce_scatterv.signals import ERR_TIMEOUT, header_words, now, word_ptr, _behind  # noqa: E402,F401

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


@triton.jit
def begin_call_no_err(table_addr, base_addr, pid, timeout, W: tl.constexpr):
    table = table_addr.to(tl.int64).to(tl.pointer_type(tl.int64))
    my_base = base_addr.to(tl.int64)
    epoch = tl.load(word_ptr(my_base, pid))
    err_ptr = word_ptr(my_base, header_words(W)[7])
    return table, my_base, epoch, pid < 0, now(err_ptr) + timeout


@triton.jit
def post_digest_none(bases, call_row, rank, digest, peers):
    pass


@triton.jit
def check_digests_none(seen, call_slots, digest, peers):
    return (digest * 0).to(tl.int32)


@triton.jit
def await_digests_none(my_base, call_row, digest, peers, deadline, err_ptr, lanes):
    return (digest * 0).to(tl.int32)


@triton.jit
def digest_fault_none(seen, digest, peers):
    return (digest * 0).to(tl.int32)


poll_flagged_full = push_kernel.poll_flagged


@triton.jit
def poll_flagged_no_calls(slots, live, flag, call_slots, call_live, digest, deadline, err_ptr):
    return poll_flagged_full(slots, live, flag, call_slots, call_live & (deadline < 0), digest, deadline, err_ptr)


@triton.jit
def uniform_max_none(x):
    return x


fault_status = signals.fault_status
if VARIANT == "no_err_poll":
    signals.fault_status = fault_status_timer_only
elif VARIANT == "no_fault_poll":
    signals.fault_status = fault_status_never
elif VARIANT == "no_uniform":
    push_kernel.wait_words = wait_words_plain
if VARIANT in ("no_begin_err", "lean"):
    push_kernel.begin_call = begin_call_no_err
if VARIANT in ("no_digest", "lean"):
    signals.post_digest = post_digest_none
    push_kernel.check_digests = check_digests_none
    push_kernel.await_digests = await_digests_none
    push_kernel.digest_fault = digest_fault_none
    push_kernel.poll_flagged = poll_flagged_no_calls
if VARIANT in ("no_uniform_max", "lean"):
    signals.uniform_max = uniform_max_none
    push_kernel.uniform_max = uniform_max_none
if VARIANT == "lean":
    signals.fault_status = fault_status_never

import reduce_scatterv as rsv  # noqa: E402
from reduce_scatterv.timing import time_call  # noqa: E402

from bench.sweep import distribution  # noqa: E402

rank, world = dist.get_rank(), dist.get_world_size()
CASES = [("ll", "even", 2), ("ll", "even", 8), ("ll", "even", 32), ("push", "even", 128), ("push", "even", 256),
         ("push", "uneven", 32), ("push", "uneven", 128)]
HIDDEN = 7168 if device.type == "cuda" else 64  # CPU emulation: a smoke run of the stubs
res = {}
for mode, dist_name, rows in CASES:
    sizes = distribution(dist_name, rows, world)
    inp = rsv.workspace().empty(sum(sizes), HIDDEN, dtype=torch.bfloat16)
    inp.copy_(torch.randn(inp.shape, device=device))
    out = torch.empty((sizes[rank], HIDDEN), dtype=torch.bfloat16, device=device)
    ref = inp.float()
    dist.all_reduce(ref)
    ref = ref[sum(sizes[:rank]):sum(sizes[:rank + 1])]
    with rsv.api.overrides(MODES_OFF=frozenset() if mode == "ll" else frozenset({"ll"})):
        call = lambda: rsv.reduce_scatterv(inp, out, sizes=sizes)  # noqa: E731
        call()
        assert (out.float() - ref).abs().max() < 0.1, "wrong sum"
        res[f"{mode}-{dist_name}-{rows}"] = time_call(call, device, calls_per_graph=20, replays=30)
if rank == 0:
    print(json.dumps(dict(variant=VARIANT, **{str(k): round(v, 2) for k, v in res.items()})), flush=True)
dist.destroy_process_group()
