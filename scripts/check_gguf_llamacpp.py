"""Checks a GGUF export numerically with llama.cpp itself (not run in CI: llama-cpp-python builds
llama.cpp from source, minutes on a small machine).

    python3 -m venv /tmp/lv && /tmp/lv/bin/pip install llama-cpp-python numpy safetensors
    /tmp/lv/bin/python scripts/check_gguf_llamacpp.py build/dstrain MODEL_DIR TOKENIZER_JSON WORKDIR

MODEL_DIR: a Hugging Face folder of a Llama or DeepSeek-V2/V3 model whose vocabulary is
TOKENIZER_JSON's (e.g. a dstrain run exported with `ckpt convert --to hf`, or
`tests/interop/deepseek_reference.py make v3 DIR --vocab 32022 --n-group 1`). The script exports f32 and q8_0 GGUF files,
runs the same token ids through llama.cpp and through `dstrain eval --dump-logits`, and prints
the largest logit difference (f32: must be <= 1e-3) and the mean token loss of both exports; it
also tokenizes a few texts with the embedded tokenizer in llama.cpp and with `dstrain tokenize`
(must be equal).

Measured 2026-12-05 (llama-cpp-python 0.3.16, a 2-layer hidden-64 model with deepseek-coder's
vocabulary, 64 tokens): f32 max |logit difference| 2.0e-4; q8_0 9.5e-3, perplexity ratio
0.99989; tokenization equal on all texts.
DeepSeek (`deepseek2`), 3 layers, hidden 32, 8 experts, deepseek-coder's vocabulary, 64 tokens,
f32 max |logit difference| / q8_0 perplexity ratio: V3 with YaRN (mscale 1, mscale_all_dim
0.8) 1.8e-4 / 0.997; V2 greedy with YaRN 7.0e-5 / 0.994; V3 half-split rotary 6.2e-5 / 0.990
(random weights: q8_0 noise flips expert choices, hence q8_0 logit differences up to 3).
"""
import math
import os
import random
import subprocess
import sys

import numpy as np
from llama_cpp import Llama
from safetensors.numpy import load_file


def mean_loss(logits, ids):
    logits = logits[:-1].astype(np.float64)
    top = logits.max(axis=1, keepdims=True)
    log_probs = logits - top - np.log(np.exp(logits - top).sum(axis=1, keepdims=True))
    return -np.mean(log_probs[np.arange(len(ids) - 1), ids[1:]])


TEXTS = ["Hello world", "def f(x):\n    return x ** 2", "中文分词测试 naïve café 😀 123456",
         "  spaces\tand\ttabs\n\n"]


def check_tokenizer(dstrain, gguf, tokenizer):
    llm = Llama(model_path=gguf, vocab_only=True, verbose=False)
    for text in TEXTS:
        theirs = llm.tokenize(text.encode(), add_bos=False, special=False)
        ours = subprocess.run([dstrain, "tokenize", "--tokenizer", tokenizer], input=text.encode(),
                              capture_output=True, check=True).stdout.split()
        if list(map(int, ours)) != theirs:
            print(f"FAIL: {text!r}: llama.cpp {theirs}, dstrain {ours}")
            sys.exit(1)
    print(f"llama.cpp tokenizes {len(TEXTS)} texts as dstrain does")


def main(dstrain, model_dir, tokenizer, work):
    os.makedirs(work, exist_ok=True)
    rng = random.Random(5)
    ids = [rng.randrange(256) for _ in range(64)]
    ids_file = os.path.join(work, "ids.txt")
    with open(ids_file, "w") as f:
        f.write(" ".join(map(str, ids)) + "\n")
    ours_file = os.path.join(work, "ours.safetensors")
    subprocess.run([dstrain, "eval", "--model", model_dir, "--ids", ids_file, "--seq-len",
                    str(len(ids)), "--dump-logits", ours_file], check=True)
    ours = load_file(ours_file)["logits"][0]
    results = {}
    for dtype in ("f32", "q8_0"):
        gguf = os.path.join(work, f"model-{dtype}.gguf")
        subprocess.run([dstrain, "ckpt", "convert", model_dir, "--to", "gguf", gguf, "--dtype",
                        dtype, "--tokenizer", tokenizer], check=True)
        # An f32 key/value cache: llama.cpp's default f16 one adds ~1e-3 to the logits.
        llm = Llama(model_path=gguf, n_ctx=len(ids), logits_all=True, verbose=False, type_k=0,
                    type_v=0)
        llm.eval(ids)
        theirs = np.array(llm.scores[: len(ids)], dtype=np.float32)
        results[dtype] = (np.abs(theirs - ours).max(), mean_loss(theirs, ids))
        if dtype == "f32":
            check_tokenizer(dstrain, gguf, tokenizer)
    ours_loss = mean_loss(ours, ids)
    print(f"dstrain: mean token loss {ours_loss:.6f}")
    for dtype, (diff, loss) in results.items():
        print(f"llama.cpp {dtype}: max |logit difference| {diff:.3g}, mean token loss {loss:.6f} "
              f"(perplexity ratio {math.exp(loss - ours_loss):.5f})")
    if not results["f32"][0] <= 1e-3:
        print("FAIL: f32 logits differ by more than 1e-3")
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main(*sys.argv[1:5])
