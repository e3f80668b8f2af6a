"""Hugging Face references for the interop tests (tests/interop/test_hf_interop.sh).

Each subcommand checks one thing dstrain wrote with the library users read it with, and exits 1
with one "FAIL:" line when it does not hold:
  logits MODEL_DIR OURS [--adapter DIR] [--tol T]
      transformers (and PEFT with --adapter) logits for OURS's input_ids equal OURS's logits
      (OURS: `dstrain eval --dump-logits` output).
  save-sharded MODEL_DIR OUT_DIR
      save_pretrained of MODEL_DIR in float32 as several safetensors shards with an index.
  make-lora MODEL_DIR OUT_DIR
      a PEFT LoRA adapter for MODEL_DIR with random A and B (B not zero), saved by PEFT.
  generate MODEL_DIR PROMPT_IDS OURS_IDS --max-new-tokens N [--adapter DIR] [--forward-loop]
      transformers' greedy generate(do_sample=False) of each prompt (a line of ids) gives the
      ids of the same line of OURS_IDS (`dstrain generate --greedy --print-ids`).
      --forward-loop: the reference is argmax of a full forward per step instead (PEFT prefix
      tuning: transformers 5.25's generate() drops PEFT's prefix from its cache).
  gguf GGUF_FILE HF_DIR [--tokenizer JSON] --dtype D
      the `gguf` library reads our GGUF export of HF_DIR: llama metadata from config.json,
      llama.cpp tensor names and shapes, every weight equal (q8_0: within half a step), q/k rows
      in llama.cpp's interleaved rotary order, and the tokenizer's tokens, types and merges.
  same-tensors A B [--tol T]
      two safetensors files hold the same names, shapes and values (within T).
"""
import argparse
import sys

import torch
from safetensors.torch import load_file


def fail(message):
    print(f"FAIL: {message}")
    sys.exit(1)


def load_model(model_dir, adapter=None):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    return model.eval()


def compare_logits(args):
    ours = load_file(args.ours)
    model = load_model(args.model, args.adapter)
    with torch.no_grad():
        reference = model(input_ids=ours["input_ids"]).logits.float()
    if reference.shape != ours["logits"].shape:
        fail(f"logits of shape {tuple(ours['logits'].shape)}, transformers gives "
             f"{tuple(reference.shape)}")
    diff = (reference - ours["logits"]).abs().max().item()
    scale = reference.abs().max().item()
    what = f"{args.model}" + (f" + adapter {args.adapter}" if args.adapter else "")
    if not diff <= args.tol:
        fail(f"{what}: max |logit difference| {diff:.3g} > {args.tol} (logits up to {scale:.3g})")
    print(f"ok: {what}: max |logit difference| {diff:.3g} <= {args.tol} "
          f"(logits up to {scale:.3g}, {reference.numel()} values)")


def save_sharded(args):
    model = load_model(args.model)
    model.save_pretrained(args.out, max_shard_size="100KB", safe_serialization=True)
    print(f"ok: {args.model} saved in shards to {args.out}")


def make_lora(args):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(11)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                        init_lora_weights=False, lora_dropout=0.1, task_type="CAUSAL_LM")
    model = get_peft_model(load_model(args.model), config)
    model.save_pretrained(args.out)
    print(f"ok: PEFT LoRA adapter for {args.model} in {args.out}")


def greedy_generate(args):
    model = load_model(args.model, args.adapter)
    prompts = [list(map(int, line.split())) for line in open(args.prompts) if line.strip()]
    ours = [list(map(int, line.split())) for line in open(args.ours)]
    if len(prompts) != len(ours):
        fail(f"{len(prompts)} prompts, {len(ours)} lines of generated ids")
    for prompt, got in zip(prompts, ours):
        with torch.no_grad():
            if args.forward_loop:
                sequence = list(prompt)
                for _ in range(args.max_new_tokens):
                    logits = model(input_ids=torch.tensor([sequence])).logits
                    sequence.append(int(logits[0, -1].argmax()))
                expected = sequence[len(prompt):]
            else:
                out = model.generate(torch.tensor([prompt]), do_sample=False,
                                     max_new_tokens=args.max_new_tokens, min_new_tokens=0,
                                     attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
                expected = out[0, len(prompt):].tolist()
        if got != expected:
            fail(f"prompt {prompt[:8]}...: transformers generates {expected}, dstrain {got}")
    print(f"ok: {args.model}: greedy generation of {len(prompts)} prompts equals transformers'")


def check_gguf(args):
    import json
    import numpy as np
    from gguf import GGUFReader, GGMLQuantizationType
    from gguf.quants import dequantize

    reader = GGUFReader(args.gguf)
    config = json.load(open(f"{args.model}/config.json"))

    def field(key):
        f = reader.fields.get(key)
        if f is None:
            fail(f"{args.gguf}: no metadata key {key}")
        return f.contents()

    expect = {"general.architecture": "llama", "llama.block_count": config["num_hidden_layers"],
              "llama.embedding_length": config["hidden_size"],
              "llama.feed_forward_length": config["intermediate_size"],
              "llama.attention.head_count": config["num_attention_heads"],
              "llama.attention.head_count_kv": config["num_key_value_heads"],
              "llama.context_length": config["max_position_embeddings"]}
    for key, value in expect.items():
        if field(key) != value:
            fail(f"{args.gguf}: {key} = {field(key)}, expected {value}")
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config["hidden_size"] // heads
    weights = load_file(f"{args.model}/model.safetensors")
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    parts = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
             "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for layer in range(config["num_hidden_layers"]):
        for hf, gg in parts.items():
            names[f"model.layers.{layer}.{hf}.weight"] = f"blk.{layer}.{gg}.weight"
    ours = {t.name: t for t in reader.tensors}
    if sorted(ours) != sorted(names[n] for n in weights):
        fail(f"{args.gguf}: tensors {sorted(ours)}, expected {sorted(names[n] for n in weights)}")
    types = {"f32": GGMLQuantizationType.F32, "f16": GGMLQuantizationType.F16,
             "bf16": GGMLQuantizationType.BF16, "q8_0": GGMLQuantizationType.Q8_0}
    for hf_name, expected in weights.items():
        t = ours[names[hf_name]]
        expected = expected.float().numpy()
        if list(t.shape) != list(reversed(expected.shape)):
            fail(f"{t.name}: ggml shape {list(t.shape)}, expected {list(reversed(expected.shape))}")
        want_type = types[args.dtype] if expected.ndim == 2 else GGMLQuantizationType.F32
        if t.tensor_type != want_type:
            fail(f"{t.name}: type {t.tensor_type.name}, expected {want_type.name}")
        if t.name.endswith(("attn_q.weight", "attn_k.weight")):
            # llama.cpp pairs the two halves of each head: row 2i of a head is its row i, row
            # 2i + 1 its row head_dim / 2 + i.
            h = heads if "attn_q" in t.name else kv_heads
            rows = np.arange(expected.shape[0]).reshape(h, head_dim)
            order = np.stack([rows[:, : head_dim // 2], rows[:, head_dim // 2:]], axis=2).reshape(-1)
            expected = expected[order]
        if t.tensor_type in (GGMLQuantizationType.F32, GGMLQuantizationType.F16):
            got = np.asarray(t.data, dtype=np.float32).reshape(expected.shape)
        else:
            got = dequantize(t.data, t.tensor_type).reshape(expected.shape)
        step = {"f32": 0.0, "f16": 1e-3, "bf16": 8e-3, "q8_0": 1 / 127}[args.dtype] if expected.ndim == 2 else 0
        bound = np.abs(expected).max() * step + 1e-7
        diff = np.abs(got - expected).max()
        if not diff <= bound:
            fail(f"{t.name}: max difference {diff:.3g} > {bound:.3g}")
    if args.pre and field("tokenizer.ggml.pre") != args.pre:
        fail(f"{args.gguf}: tokenizer.ggml.pre = {field('tokenizer.ggml.pre')}, expected {args.pre}")
    if args.tokenizer:
        spec = json.load(open(args.tokenizer, encoding="utf-8"))
        tokens = field("tokenizer.ggml.tokens")
        types_ = field("tokenizer.ggml.token_type")
        for token, index in spec["model"]["vocab"].items():
            if tokens[index] != token or types_[index] != 1:
                fail(f"token {index}: {tokens[index]!r} type {types_[index]}, expected {token!r} (normal)")
        for added in spec["added_tokens"]:
            want = 3 if added["special"] else 4
            if tokens[added["id"]] != added["content"] or types_[added["id"]] != want:
                fail(f"added token {added['id']}: {tokens[added['id']]!r}, expected {added['content']!r}")
        merges = [m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]]
        if field("tokenizer.ggml.merges") != merges:
            fail(f"{args.gguf}: merges differ from {args.tokenizer}")
        if len(tokens) != config["vocab_size"]:
            fail(f"{len(tokens)} tokens for a vocabulary of {config['vocab_size']}")
        # llama.cpp assumes id 11 when a BPE vocabulary names no EOS: it must be named.
        eos = field("tokenizer.ggml.eos_token_id")
        if types_[eos] != 3:
            fail(f"tokenizer.ggml.eos_token_id {eos} ({tokens[eos]!r}) is not a special token")
    print(f"ok: {args.gguf}: {len(ours)} tensors ({args.dtype}), metadata and tokenizer as expected")


def same_tensors(args):
    a, b = load_file(args.a), load_file(args.b)
    if sorted(a) != sorted(b):
        fail(f"{args.a} and {args.b} hold different tensors: {sorted(set(a) ^ set(b))[:4]}")
    for name in sorted(a):
        if a[name].shape != b[name].shape:
            fail(f"{name}: shape {tuple(a[name].shape)} in {args.a}, {tuple(b[name].shape)} in {args.b}")
        diff = (a[name].float() - b[name].float()).abs().max().item()
        if not diff <= args.tol:
            fail(f"{name}: max difference {diff:.3g} > {args.tol}")
    print(f"ok: {args.a} and {args.b}: {len(a)} tensors equal within {args.tol}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    logits = sub.add_parser("logits")
    logits.add_argument("model")
    logits.add_argument("ours")
    logits.add_argument("--adapter")
    logits.add_argument("--tol", type=float, default=1e-4)
    logits.set_defaults(run=compare_logits)
    sharded = sub.add_parser("save-sharded")
    sharded.add_argument("model")
    sharded.add_argument("out")
    sharded.set_defaults(run=save_sharded)
    lora = sub.add_parser("make-lora")
    lora.add_argument("model")
    lora.add_argument("out")
    lora.set_defaults(run=make_lora)
    gen = sub.add_parser("generate")
    gen.add_argument("model")
    gen.add_argument("prompts")
    gen.add_argument("ours")
    gen.add_argument("--max-new-tokens", type=int, required=True)
    gen.add_argument("--adapter")
    gen.add_argument("--forward-loop", action="store_true")
    gen.set_defaults(run=greedy_generate)
    gg = sub.add_parser("gguf")
    gg.add_argument("gguf")
    gg.add_argument("model")
    gg.add_argument("--tokenizer")
    gg.add_argument("--dtype", required=True)
    gg.add_argument("--pre")
    gg.set_defaults(run=check_gguf)
    same = sub.add_parser("same-tensors")
    same.add_argument("a")
    same.add_argument("b")
    same.add_argument("--tol", type=float, default=0.0)
    same.set_defaults(run=same_tensors)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
