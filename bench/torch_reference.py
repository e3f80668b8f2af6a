"""PyTorch references for bench-small: the same LLaMA-style model (RMSNorm, RoPE, SwiGLU), batch
and optimizer as bench/bench-small.yaml, on 2 gloo ranks x 1 thread, wrapped in DDP or in FSDP2
(`fully_shard` per block, then the root: ZeRO-3's layout). Prints the median tokens/s over the
timed steps and rank 0's peak RSS in MB as `<mode>_tokens_per_s <tps> <rss>`.
usage: torch_reference.py {ddp|fsdp2} [steps]"""
import math, os, resource, statistics, sys, time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

VOCAB, HIDDEN, LAYERS, HEADS, INTER, SEQ, MBS = 4096, 384, 6, 6, 1024, 256, 4


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotary(x, theta=10000.0):
    seq, dim = x.shape[-2], x.shape[-1]
    inv_freq = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)
    freqs = torch.outer(torch.arange(seq, dtype=torch.float32), inv_freq)
    emb = torch.cat([freqs, freqs], -1)
    x1, x2 = x.chunk(2, -1)
    return x * emb.cos() + torch.cat([-x2, x1], -1) * emb.sin()


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.q = nn.Linear(HIDDEN, HIDDEN, bias=False)
        self.k = nn.Linear(HIDDEN, HIDDEN, bias=False)
        self.v = nn.Linear(HIDDEN, HIDDEN, bias=False)
        self.o = nn.Linear(HIDDEN, HIDDEN, bias=False)
        self.gate = nn.Linear(HIDDEN, INTER, bias=False)
        self.up = nn.Linear(HIDDEN, INTER, bias=False)
        self.down = nn.Linear(INTER, HIDDEN, bias=False)
        self.n1, self.n2 = RMSNorm(HIDDEN), RMSNorm(HIDDEN)

    def forward(self, x):
        b, t, _ = x.shape
        h = self.n1(x)
        q, k, v = (p(h).view(b, t, HEADS, -1).transpose(1, 2) for p in (self.q, self.k, self.v))
        q, k = rotary(q), rotary(k)
        s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        s = s.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf"))
        a = (s.softmax(-1) @ v).transpose(1, 2).reshape(b, t, HIDDEN)
        x = x + self.o(a)
        h = self.n2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, HIDDEN)
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.norm = RMSNorm(HIDDEN)
        self.head = nn.Linear(HIDDEN, VOCAB, bias=False)

    def forward(self, ids):
        x = self.embed(ids)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x))


def wrap(model, mode, world):
    if mode == "ddp":
        return nn.parallel.DistributedDataParallel(model)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world,))
    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def worker(rank, mode, world, steps, port, queue):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = wrap(Model(), mode, world)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    gen = torch.Generator().manual_seed(rank)
    times = []
    for step in range(steps):
        ids = torch.randint(0, 256, (MBS, SEQ + 1), generator=gen)
        t0 = time.perf_counter()
        logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=False)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    if rank == 0:
        timed = times[2:] if len(times) > 4 else times
        queue.put((world * MBS * SEQ / statistics.median(timed),
                   resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0))
    dist.destroy_process_group()


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "ddp"
    if mode not in ("ddp", "fsdp2"):
        sys.exit(f"torch_reference.py: mode must be ddp or fsdp2, not {mode!r}")
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 12
    port = int(os.environ.get("DDP_PORT", "29533"))
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.spawn(worker, args=(mode, 2, steps, port, queue), nprocs=2, join=True)
    tokens_per_s, rss_mb = queue.get()
    print(f"{mode}_tokens_per_s {tokens_per_s:.1f} {rss_mb:.0f}")


if __name__ == "__main__":
    main()
