"""Muon's Newton-Schulz split across ranks (optim._orthogonalize) gives what one process computes,
for DDP (replicated updates) and FSDP2 (row shards), including stacks that do not divide by the
world size (padded)."""

import socket

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from chatforge.train.optim import _orthogonalize, zeropower_via_newtonschulz5

WORLD = 2
# (matrices, shape): 3 and 1 pad the stack to the world size; 5 rows do not split evenly over 2
# ranks (FSDP2 shards 3 + 2), which takes the gather-everything path
CASES = ((3, (8, 6)), (4, (6, 10)), (1, (4, 4)), (2, (5, 4)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, port, results):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        out = {}
        for n, shape in CASES:
            gen = torch.Generator().manual_seed(n)
            full = [torch.randn(*shape, generator=gen) for _ in range(n)]
            # DDP: every rank holds the full updates; plain tensors as params
            out[("ddp", n)] = _orthogonalize(torch.stack(full), full, 5)
            # FSDP2: rows sharded; params are DTensors, updates their local shards
            mesh = init_device_mesh("cpu", (WORLD,))
            params = [distribute_tensor(u, mesh, [Shard(0)]) for u in full]
            local = [p.to_local() for p in params]
            out[("fsdp", n)] = _orthogonalize(torch.stack(local), params, 5)
        results[rank] = out
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_split_newton_schulz_matches_one_process():
    port = _free_port()
    results = mp.Manager().dict()
    mp.spawn(_worker, args=(port, results), nprocs=WORLD, join=True)
    for n, shape in CASES:
        gen = torch.Generator().manual_seed(n)
        full = torch.stack([torch.randn(*shape, generator=gen) for _ in range(n)])
        ref = zeropower_via_newtonschulz5(full, 5)
        rows = -(-shape[0] // WORLD)  # FSDP2's Shard(0): ceil-sized shards, the last one smaller
        for rank in range(WORLD):
            got = results[rank]
            torch.testing.assert_close(got[("ddp", n)], ref, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(got[("fsdp", n)], ref[:, rank * rows:(rank + 1) * rows], atol=1e-5, rtol=1e-5)
