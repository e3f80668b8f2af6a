"""PyTorch 2.11 eager reference of the GPU benchmark (scripts/device_check.sh): the LLaMA of
bench/torch_reference.py at preset gpu1b (bench/bench-gpu-1b.yaml: vocab 32000, hidden 2048, 16
layers, 16 heads, intermediate 5632, seq 2048, micro-batch 4), one GPU, fp32 parameters under
torch.autocast(bf16), AdamW (fused), gradient clipping 1.0, SDPA attention. --compile wraps the
model in torch.compile. Prints `torch_eager_gpu <tokens/s> <MFU> <peak allocated MiB>` (median
step after two warm-up steps; MFU against the dense bf16 peak given by --peak-flops).
usage: torch_reference_gpu.py [steps] [--compile] [--peak-flops F]"""
import argparse, statistics, time

import torch
import torch.nn.functional as F

import torch_reference as ref


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("steps", type=int, nargs="?", default=10)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--peak-flops", type=float, default=989e12)
    args = parser.parse_args()
    ref.VOCAB, ref.HIDDEN, ref.LAYERS, ref.HEADS, ref.INTER, ref.SEQ, ref.MBS = ref.PRESETS["gpu1b"]
    torch.manual_seed(0)
    model = ref.Model().cuda()
    parameters = sum(p.numel() for p in model.parameters())
    step_model = torch.compile(model) if args.compile else model
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1,
                            fused=True)
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(args.steps):
        ids = torch.randint(0, 256, (ref.MBS, ref.SEQ + 1), generator=gen).cuda()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = step_model(ids[:, :-1])
        loss = F.cross_entropy(logits.float().reshape(-1, ref.VOCAB), ids[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    tokens_per_s = ref.MBS * ref.SEQ / statistics.median(times[2:])
    mfu = tokens_per_s * 6 * parameters / args.peak_flops
    key = "torch_compiled_gpu" if args.compile else "torch_eager_gpu"
    print(f"{key} {tokens_per_s:.1f} {mfu:.3f} {torch.cuda.max_memory_allocated() / 2**20:.0f}"
          f" parameters {parameters}")


if __name__ == "__main__":
    main()
