"""PyTorch references for the benchmarks: the same LLaMA-style model (RMSNorm, RoPE, SwiGLU),
batch and optimizer as bench/bench-small.yaml (preset small) or bench/bench-medium.yaml (preset
medium), on 2 gloo ranks x 1 thread, wrapped in DDP or in FSDP2 (`fully_shard` per block, then the
root: ZeRO-3's layout). Attention is F.scaled_dot_product_attention (causal), PyTorch's fastest
CPU path. --dtype bf16: FSDP2 with MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32), DDP
under torch.autocast(bf16). Prints the median tokens/s over the timed steps and rank 0's peak RSS
in MiB as `<mode>_tokens_per_s <tps> <rss>`.
usage: torch_reference.py {ddp|fsdp2} [steps] [--preset small|medium] [--dtype fp32|bf16]"""
import argparse, math, os, resource, statistics, sys, time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

PRESETS = {  # vocab, hidden, layers, heads, intermediate, seq, micro-batch per rank
    "small": (4096, 384, 6, 6, 1024, 256, 4),
    "medium": (24576, 768, 12, 12, 2048, 512, 1),
    # bench/bench-gpu-1b.yaml: the ~1B LLaMA of the GPU benchmark (torch_reference_gpu.py)
    "gpu1b": (32000, 2048, 16, 16, 5632, 2048, 4),
}
VOCAB, HIDDEN, LAYERS, HEADS, INTER, SEQ, MBS = PRESETS["small"]


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


def rotary(x, theta=10000.0):
    seq, dim = x.shape[-2], x.shape[-1]
    arange = lambda *a: torch.arange(*a, dtype=torch.float32, device=x.device)
    inv_freq = 1.0 / theta ** (arange(0, dim, 2) / dim)
    freqs = torch.outer(arange(seq), inv_freq)
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
        q, k = rotary(q).to(v.dtype), rotary(k).to(v.dtype)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        a = a.transpose(1, 2).reshape(b, t, HIDDEN)
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


def wrap(model, mode, world, dtype):
    if mode == "ddp":
        return nn.parallel.DistributedDataParallel(model)
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh("cpu", (world,))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) \
        if dtype == "bf16" else MixedPrecisionPolicy()
    for block in model.blocks:
        fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


def worker(rank, mode, world, steps, port, queue, preset, dtype, compiled):
    global VOCAB, HIDDEN, LAYERS, HEADS, INTER, SEQ, MBS
    VOCAB, HIDDEN, LAYERS, HEADS, INTER, SEQ, MBS = PRESETS[preset]
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = wrap(Model(), mode, world, dtype)
    if compiled:  # inductor: the first steps compile (minutes on 2 cores); they are not timed
        model = torch.compile(model)
    autocast = mode == "ddp" and dtype == "bf16"
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
    gen = torch.Generator().manual_seed(rank)
    times = []
    for step in range(steps):
        ids = torch.randint(0, 256, (MBS, SEQ + 1), generator=gen)
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            logits = model(ids[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, VOCAB), ids[:, 1:].reshape(-1))
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["ddp", "fsdp2"])
    parser.add_argument("steps", type=int, nargs="?", default=12)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="small")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--compile", action="store_true", help="torch.compile the wrapped model")
    args = parser.parse_args()
    port = int(os.environ.get("DDP_PORT", "29533"))
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    mp.spawn(worker, args=(args.mode, 2, args.steps, port, queue, args.preset, args.dtype,
                             args.compile),
             nprocs=2, join=True)
    tokens_per_s, rss_mb = queue.get()
    key = args.mode + ("_compiled" if args.compile else "")
    print(f"{key}_tokens_per_s {tokens_per_s:.1f} {rss_mb:.0f}")


if __name__ == "__main__":
    main()
