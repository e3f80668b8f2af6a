#!/usr/bin/env bash
# Fine-tuning end to end with LoRA on 2 ranks: makes a base model (the quickstart run, exported
# as a Hugging Face folder), writes a small "private" corpus (synthetic text with planted PII),
# prepares it (cleaning, de-duplication, PII scrubbing, tokenization, packing), fine-tunes with
# configs/finetune_lora.yaml, and compares the base and the merged model on the validation split.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install_deps.sh
bash scripts/build.sh
source scripts/mpi_env.sh
if [ ! -f runs/quickstart/checkpoints/latest ]; then
  mkdir -p data
  build/dstrain synth data/quickstart.txt --docs 20000 --seed 1
  mpirun -np 2 --bind-to none build/dstrain train configs/quickstart.yaml train.steps=150
fi
base_checkpoint="runs/quickstart/checkpoints/$(cat runs/quickstart/checkpoints/latest)"
build/dstrain ckpt convert "$base_checkpoint" --to hf runs/quickstart/hf

mkdir -p data/finetune
build/dstrain synth data/finetune/notes.txt --docs 6000 --seed 7
cat >> data/finetune/notes.txt <<'TXT'
Contact the on-call engineer at oncall@example.com or +1 (555) 010-4477 before 9 am.
The staging database listens on 10.20.30.40 and the backup card is 4111 1111 1111 1111.
Badge EMP-004217 belongs to the operations team; call 555-010-9921 for access.
TXT
build/dstrain prepare configs/finetune_lora.yaml
mpirun -np 2 --bind-to none build/dstrain train configs/finetune_lora.yaml "$@"
echo "[finetune] base model:"
build/dstrain eval --model runs/quickstart/hf --data data/finetune_prepared
echo "[finetune] LoRA-merged model:"
build/dstrain eval --model runs/finetune_lora/merged --data data/finetune_prepared
echo "[finetune] adapter (PEFT format) in runs/finetune_lora/adapter, merged model in runs/finetune_lora/merged"
