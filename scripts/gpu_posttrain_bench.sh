#!/usr/bin/env bash
# The post-training speed benchmarks of docs/benchmarks.md on one GPU box, in one call (< 10 min):
# GRPO steps/hour (ours vs TRL's GRPOTrainer) and DPO steps/s (ours vs TRL's DPOTrainer), d12.
# TRL, datasets, dill and multiprocess must be importable (the GPU image lacks them: carry their
# py3 wheels and `pip install --no-deps --target DIR`, DIR on PYTHONPATH). Results go to $OUT as they
# come (a command cut by its limit keeps what finished). TRL's first GRPO step takes ~20 s on a
# fresh box, hence the generous limits.
#
#   OUT=DIR bash scripts/gpu_posttrain_bench.sh
set -uo pipefail
PY=${PYTHON:-python3}
OUT=${OUT:-posttrain-bench-out}
mkdir -p "$OUT"
timeout 240 $PY benchmarks/rl_throughput.py --device cuda --preset d12 --prompts 16 --group 8 --new-tokens 256 \
  --steps 6 --json "$OUT/rl_throughput.json" > "$OUT/rl_throughput.log" 2>&1
echo "rl_throughput: exit $?"; grep -A6 "^ours:\|^GRPO throughput" "$OUT/rl_throughput.log"
timeout 200 $PY benchmarks/dpo_throughput.py --preset d12 --vocab 32768 --batch 8 --prompt 384 --reply 128 \
  --steps 20 --warmup 3 --ref online --json "$OUT/dpo_throughput.json" > "$OUT/dpo_throughput.log" 2>&1
echo "dpo_throughput: exit $?"; tail -5 "$OUT/dpo_throughput.log"
