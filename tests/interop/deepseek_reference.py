"""Tiny DeepSeek-V2/V3 models made by transformers, the references for our deepseek_v2 and
deepseek_v3 families (tests/interop/test_deepseek_interop.sh).

  make VERSION OUT_DIR [--yarn] [--no-q-lora] [--topk-method M] [--no-interleave] [--seed S]
      a DeepseekV{2,3}ForCausalLM in the shape of transformers' own DeepseekV3ModelTester
      (hidden 32, 8 routed + 1 shared expert, lora ranks 32/16, head dims 16/16/32, n_group 2,
      topk_group 1, first_k_dense_replace 1), its weights drawn at random with scales that make
      routing and attention non-trivial (V3's correction bias too), saved by save_pretrained.
  fuse IN_DIR OUT_DIR
      the same model with the routed experts in transformers v5's fused names
      (mlp.experts.gate_up_proj [E, 2*I, H], mlp.experts.down_proj [E, H, I]) and an MTP layer
      past num_hidden_layers, as some exports hold them.
"""
import argparse
import json
import os
import re
import shutil

import torch
from safetensors.torch import load_file, save_file


def make(args):
    from transformers import (DeepseekV2Config, DeepseekV2ForCausalLM, DeepseekV3Config,
                              DeepseekV3ForCausalLM)

    common = dict(vocab_size=259, hidden_size=32, intermediate_size=37, moe_intermediate_size=12,
                  num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
                  n_shared_experts=1, n_routed_experts=8, kv_lora_rank=16,
                  q_lora_rank=None if args.no_q_lora else 32, qk_rope_head_dim=16,
                  v_head_dim=32, qk_nope_head_dim=16, n_group=2, topk_group=1,
                  num_experts_per_tok=2, first_k_dense_replace=1, max_position_embeddings=128,
                  rms_norm_eps=1e-5)
    if args.yarn:
        common["rope_scaling"] = dict(type="yarn", factor=4.0, original_max_position_embeddings=16,
                                      beta_fast=32, beta_slow=1, mscale=1.0, mscale_all_dim=0.8)
    if args.version == "v3":
        config = DeepseekV3Config(**common, routed_scaling_factor=2.5, norm_topk_prob=True,
                                  rope_interleave=not args.no_interleave)
        model_class = DeepseekV3ForCausalLM
    else:
        config = DeepseekV2Config(**common, routed_scaling_factor=1.5, topk_method=args.topk_method)
        model_class = DeepseekV2ForCausalLM
    torch.manual_seed(args.seed)
    model = model_class(config).float()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # norm weights around 1
                p.copy_(1 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.25 if "gate.weight" in name else 0.12)
        for name, b in model.named_buffers():
            if name.endswith("e_score_correction_bias"):
                b.copy_(0.1 * torch.randn_like(b))
    model.save_pretrained(args.out, safe_serialization=True)
    print(f"ok: {args.version} model in {args.out}")


def fuse(args):
    shutil.copytree(args.inp, args.out, dirs_exist_ok=True)
    tensors = load_file(os.path.join(args.inp, "model.safetensors"))
    config = json.load(open(os.path.join(args.inp, "config.json")))
    experts = {}
    out = {}
    for name, t in tensors.items():
        m = re.match(r"(model\.layers\.\d+\.mlp\.experts)\.(\d+)\.(\w+)_proj\.weight", name)
        if m:
            experts.setdefault(m.group(1), {}).setdefault(int(m.group(2)), {})[m.group(3)] = t
        else:
            out[name] = t
    for prefix, by_expert in experts.items():
        ids = sorted(by_expert)
        out[prefix + ".gate_up_proj"] = torch.stack(
            [torch.cat([by_expert[e]["gate"], by_expert[e]["up"]], 0) for e in ids]).contiguous()
        out[prefix + ".down_proj"] = torch.stack([by_expert[e]["down"] for e in ids]).contiguous()
    mtp = config["num_hidden_layers"]
    out[f"model.layers.{mtp}.eh_proj.weight"] = torch.zeros(4, 4)
    out[f"model.layers.{mtp}.enorm.weight"] = torch.ones(4)
    save_file(out, os.path.join(args.out, "model.safetensors"), metadata={"format": "pt"})
    print(f"ok: fused experts in {args.out}")


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    mk = sub.add_parser("make")
    mk.add_argument("version", choices=["v2", "v3"])
    mk.add_argument("out")
    mk.add_argument("--yarn", action="store_true")
    mk.add_argument("--no-q-lora", action="store_true")
    mk.add_argument("--no-interleave", action="store_true")
    mk.add_argument("--topk-method", default="group_limited_greedy")
    mk.add_argument("--seed", type=int, default=3)
    fu = sub.add_parser("fuse")
    fu.add_argument("inp")
    fu.add_argument("out")
    args = parser.parse_args()
    {"make": make, "fuse": fuse}[args.command](args)


if __name__ == "__main__":
    main()
