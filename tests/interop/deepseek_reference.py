"""Tiny DeepSeek-V2/V3 models made by transformers, the references for our deepseek_v2 and
deepseek_v3 families (tests/interop/test_deepseek_interop.sh).

  make VERSION OUT_DIR [--yarn] [--no-q-lora] [--topk-method M] [--no-interleave] [--seed S]
      a DeepseekV{2,3}ForCausalLM in the shape of transformers' own DeepseekV3ModelTester
      (hidden 32, 8 routed + 1 shared expert, lora ranks 32/16, head dims 16/16/32, n_group 2,
      topk_group 1, first_k_dense_replace 1), its weights drawn at random with scales that make
      routing and attention non-trivial (V3's correction bias too), saved by save_pretrained.
  check-gguf GGUF_FILE HF_DIR
      the `gguf` library reads our `deepseek2` export of HF_DIR: llama.cpp's metadata keys and
      values, every tensor name and shape llama.cpp's loader checks, kv_b_proj split into
      attn_k_b (transposed) / attn_v_b, experts stacked, router and norms in f32.
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
import sys

import torch
from safetensors.torch import load_file, save_file


def make(args):
    from transformers import (DeepseekV2Config, DeepseekV2ForCausalLM, DeepseekV3Config,
                              DeepseekV3ForCausalLM)

    common = dict(vocab_size=args.vocab, hidden_size=32, intermediate_size=args.intermediate, moe_intermediate_size=args.moe_intermediate,
                  num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
                  n_shared_experts=1, n_routed_experts=8, kv_lora_rank=16,
                  q_lora_rank=None if args.no_q_lora else 32, qk_rope_head_dim=16,
                  v_head_dim=32, qk_nope_head_dim=16,
                  num_experts_per_tok=2, first_k_dense_replace=1, max_position_embeddings=128,
                  n_group=args.n_group, topk_group=args.topk_group,
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


def check_gguf(args):
    import numpy as np
    from gguf import GGUFReader

    def fail(message):
        print(f"FAIL: {message}")
        sys.exit(1)

    reader = GGUFReader(args.gguf)
    config = json.load(open(os.path.join(args.model, "config.json")))
    hf = load_file(os.path.join(args.model, "model.safetensors"))

    def field(key):
        f = reader.fields.get(key)
        if f is None:
            fail(f"no key {key}")
        value = f.parts[f.data[0]]
        return bytes(value).decode() if f.types[0].name == "STRING" else value.tolist()[0]

    v3 = config["model_type"] == "deepseek_v3"
    layers = config["num_hidden_layers"]
    expected = {
        "general.architecture": "deepseek2", "deepseek2.block_count": layers,
        "deepseek2.attention.head_count": config["num_attention_heads"],
        "deepseek2.attention.head_count_kv": 1,
        "deepseek2.attention.key_length": config["kv_lora_rank"] + config["qk_rope_head_dim"],
        "deepseek2.attention.value_length": config["kv_lora_rank"],
        "deepseek2.attention.key_length_mla": config["qk_nope_head_dim"] + config["qk_rope_head_dim"],
        "deepseek2.attention.value_length_mla": config["v_head_dim"],
        "deepseek2.attention.kv_lora_rank": config["kv_lora_rank"],
        "deepseek2.rope.dimension_count": config["qk_rope_head_dim"],
        "deepseek2.leading_dense_block_count": config["first_k_dense_replace"],
        "deepseek2.expert_count": config["n_routed_experts"],
        "deepseek2.expert_used_count": config["num_experts_per_tok"],
        "deepseek2.expert_shared_count": config["n_shared_experts"],
        "deepseek2.expert_feed_forward_length": config["moe_intermediate_size"],
        "deepseek2.expert_gating_func": 2 if v3 else 1,
        "deepseek2.expert_weights_norm": bool(v3 and config["norm_topk_prob"]),
    }
    if config.get("q_lora_rank"):
        expected["deepseek2.attention.q_lora_rank"] = config["q_lora_rank"]
    for key, value in expected.items():
        if field(key) != value:
            fail(f"{key} = {field(key)!r}, expected {value!r}")
    if abs(field("deepseek2.expert_weights_scale") - config["routed_scaling_factor"]) > 1e-6:
        fail("deepseek2.expert_weights_scale")
    tensors = {t.name: t for t in reader.tensors}

    def values(name):
        t = tensors.get(name)
        if t is None:
            fail(f"no tensor {name}")
        return np.asarray(t.data, dtype=np.float32).reshape(
            [int(d) for d in reversed(t.shape.tolist())])

    heads, nope, v = (config["num_attention_heads"], config["qk_nope_head_dim"],
                      config["v_head_dim"])
    latent = config["kv_lora_rank"]
    count = 3
    for i in range(layers):
        kv_b = hf[f"model.layers.{i}.self_attn.kv_b_proj.weight"].numpy().reshape(
            heads, nope + v, latent)
        if not np.array_equal(values(f"blk.{i}.attn_k_b.weight"),
                              kv_b[:, :nope, :].transpose(0, 2, 1)):
            fail(f"blk.{i}.attn_k_b.weight is not kv_b_proj's key part, transposed")
        if not np.array_equal(values(f"blk.{i}.attn_v_b.weight"), kv_b[:, nope:, :]):
            fail(f"blk.{i}.attn_v_b.weight is not kv_b_proj's value part")
        count += 10 if config.get("q_lora_rank") else 8  # 2 norms, q, kv_a, kv norm, k_b, v_b, o
        if i < config["first_k_dense_replace"]:
            count += 3
            continue
        for p in ("gate", "up", "down"):
            stacked = np.stack([hf[f"model.layers.{i}.mlp.experts.{e}.{p}_proj.weight"].numpy()
                                for e in range(config["n_routed_experts"])])
            if not np.array_equal(values(f"blk.{i}.ffn_{p}_exps.weight"), stacked):
                fail(f"blk.{i}.ffn_{p}_exps.weight is not the experts' {p}_proj stacked")
        if tensors[f"blk.{i}.ffn_gate_inp.weight"].tensor_type.name != "F32":
            fail(f"blk.{i}.ffn_gate_inp.weight is not f32")
        count += 4 + 3 + (1 if v3 else 0)
        if v3 and not np.array_equal(
                values(f"blk.{i}.exp_probs_b.bias"),
                hf[f"model.layers.{i}.mlp.gate.e_score_correction_bias"].numpy()):
            fail(f"blk.{i}.exp_probs_b.bias is not the correction bias")
    for name, t in tensors.items():
        if len(t.shape) == 1 and t.tensor_type.name != "F32":
            fail(f"{name} is {t.tensor_type.name}, 1-D tensors must be F32")
    if len(tensors) != count:
        fail(f"{len(tensors)} tensors, llama.cpp loads exactly {count}")
    print(f"ok: {args.gguf}: deepseek2 metadata and {count} tensors as llama.cpp loads them")


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
    mk.add_argument("--n-group", type=int, default=2)
    mk.add_argument("--vocab", type=int, default=259)
    mk.add_argument("--intermediate", type=int, default=37)
    mk.add_argument("--moe-intermediate", type=int, default=12)
    mk.add_argument("--topk-group", type=int, default=1)
    cg = sub.add_parser("check-gguf")
    cg.add_argument("gguf")
    cg.add_argument("model")
    fu = sub.add_parser("fuse")
    fu.add_argument("inp")
    fu.add_argument("out")
    args = parser.parse_args()
    {"make": make, "fuse": fuse, "check-gguf": check_gguf}[args.command](args)


if __name__ == "__main__":
    main()
