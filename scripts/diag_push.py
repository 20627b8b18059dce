"""Diagnostic: one plain-push and one pull call on 2 GPUs with a short timeout; prints errors and words."""
import os, time, torch, torch.distributed as dist
import kernels
from kernels import distributed_env as de, layout as L
dev = de.init()
r, W = dist.get_rank(), dist.get_world_size()
for name, kw, sizes in (("push", dict(ll_bytes=0), [16, 48]), ("large", dict(ll_bytes=0, push_bytes=0), [64, 0]),
                        ("push8", dict(ll_bytes=0), [2, 6])):
    g = dist.new_group([0, 1])
    ws = kernels.workspace(g, dev, timeout_s=3, **kw)
    for i in range(3):
        x = torch.randn(sum(sizes), 7168, device=dev, dtype=torch.bfloat16)
        out = torch.full((sizes[r], 7168), float("nan"), device=dev, dtype=torch.bfloat16)
        t0 = time.time()
        kernels.reduce_scatterv(x, out, sizes=sizes, group=g)
        torch.cuda.synchronize()
        e = ws.errors()
        hdr = ws.buffer[: L.header_words(W) * 8].view(torch.int64).cpu()
        o = L.word_offsets(W)
        print(f"rank {r} {name} call {i}: {time.time()-t0:.2f}s err={e:#x} nan_rows={int(torch.isnan(out.float()).any(1).sum())}"
              f" CNT0={int(hdr[0])} PUSH[0..3]={hdr[o['PUSH']:o['PUSH']+4].tolist()} SIGS={hdr[o['SIG_START']:o['SIG_START']+4].tolist()}"
              f" CALL={hdr[o['CALL']:o['CALL']+4].tolist()} CALL1={hdr[o['CALL']+L.PMAX*W:o['CALL']+L.PMAX*W+4].tolist()}", flush=True)
        if e:
            ws.reset()
    kernels.release(g)
dist.destroy_process_group()
