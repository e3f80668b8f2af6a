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
  generate MODEL_DIR PROMPT_IDS OURS_IDS --max-new-tokens N [--adapter DIR]
      transformers' greedy generate(do_sample=False) of each prompt (a line of ids) gives the
      ids of the same line of OURS_IDS (`dstrain generate --greedy --print-ids`).
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
                        init_lora_weights=False, task_type="CAUSAL_LM")
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
            out = model.generate(torch.tensor([prompt]), do_sample=False,
                                 max_new_tokens=args.max_new_tokens, min_new_tokens=0,
                                 attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
        expected = out[0, len(prompt):].tolist()
        if got != expected:
            fail(f"prompt {prompt[:8]}...: transformers generates {expected}, dstrain {got}")
    print(f"ok: {args.model}: greedy generation of {len(prompts)} prompts equals transformers'")


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
    gen.set_defaults(run=greedy_generate)
    same = sub.add_parser("same-tensors")
    same.add_argument("a")
    same.add_argument("b")
    same.add_argument("--tol", type=float, default=0.0)
    same.set_defaults(run=same_tensors)
    args = parser.parse_args()
    args.run(args)


if __name__ == "__main__":
    main()
