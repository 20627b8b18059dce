"""reduce_scatterv and all_gatherv on any number of ranks, checked against torch's own sum.

    torchrun --nproc-per-node 2 examples/quickstart.py     # GPUs: one per rank, NCCL + symmetric memory
    torchrun --nproc-per-node 3 examples/quickstart.py     # no GPU: CPU emulation (gloo, Triton's interpreter)

Every rank holds a partial sum of all ranks' rows (sizes: rows per rank, uneven, one rank idle);
reduce_scatterv gives each rank the full sum of its own rows; all_gatherv puts every rank's rows
back together in rank order.
"""

import os

import torch
import torch.distributed as dist

import reduce_scatterv as rsv

gpu = torch.cuda.is_available() and torch.cuda.device_count() >= int(os.environ.get("WORLD_SIZE", "1"))
dist.init_process_group("nccl" if gpu else "gloo")
rank, world = dist.get_rank(), dist.get_world_size()
device = torch.device("cuda", rank) if gpu else torch.device("cpu")
if gpu:
    torch.cuda.set_device(device)

sizes = [(2 * r + 1) % 5 for r in range(world)]  # e.g. [1, 3, 0] on 3 ranks: rank 2 is idle
hidden = 256
torch.manual_seed(rank)
partial = torch.randn(sum(sizes), hidden, device=device, dtype=torch.bfloat16)  # this rank's partials

mine = rsv.reduce_scatterv(partial, sizes=sizes)  # [sizes[rank], hidden]: the sum over ranks of my rows

everyone = [torch.empty_like(partial) for _ in range(world)]
dist.all_gather(everyone, partial)  # the reference: the whole sum in fp32, then my rows
offset = sum(sizes[:rank])
want = torch.stack(everyone).float().sum(0)[offset:offset + sizes[rank]]
# summed in fp32, rounded once to bfloat16: within one bf16 spacing (round to nearest on GPUs; Triton's
# interpreter truncates), plus a little for the fp32 sums' own order
bound = 2.0**-7 * want.abs() + 1e-5
ratio = ((mine.float() - want).abs() / bound).max().item() if sizes[rank] else 0.0

rows = rsv.all_gatherv(mine, sizes=sizes)  # [sum(sizes), hidden]: every rank's summed rows, rank order
in_place = torch.equal(rows[offset:offset + sizes[rank]], mine)
print(f"rank {rank}: {sizes[rank]} rows, worst error {ratio:.2f} of the bound; gathered {tuple(rows.shape)}, "
      f"own rows in place: {in_place}", flush=True)
rsv.workspace().check()  # raises what the kernels flagged, on every rank
dist.destroy_process_group()
raise SystemExit(0 if ratio <= 1 and in_place else 1)
