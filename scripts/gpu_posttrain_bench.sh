#!/usr/bin/env bash
# The post-training speed benchmarks of docs/benchmarks.md on one GPU box, in one call (< 10 min):
# GRPO steps/hour (ours vs TRL's GRPOTrainer) and DPO steps/s (ours vs TRL's DPOTrainer, ours with
# Muon and with AdamW), d12.
# TRL, datasets, dill and multiprocess must be importable (the GPU image lacks them: carry their
# py3 wheels and `pip install --no-deps --target DIR`, DIR on PYTHONPATH). Results go to $OUT as they
# come (a command cut by its limit keeps what finished). TRL's first GRPO step takes ~20 s on a
# fresh box, hence the generous limits.
#
#   OUT=DIR bash scripts/gpu_posttrain_bench.sh
#   DPO_ACCUM=2 OUT=DIR bash ...   # 2 x 8 pairs per optimizer step (`chatforge dpo`'s default 16)
#   RL=0 DPO_OPTS=adamw OUT=DIR bash ...   # DPO only, AdamW only
#   DPO_FLAGS=--ref-fp32 OUT=DIR bash ...   # extra flags for benchmarks/dpo_throughput.py
set -uo pipefail
PY=${PYTHON:-python3}
OUT=${OUT:-posttrain-bench-out}
mkdir -p "$OUT"
if [ "${RL:-1}" != 0 ]; then
  timeout 240 $PY benchmarks/rl_throughput.py --device cuda --preset d12 --prompts 16 --group 8 --new-tokens 256 \
    --steps 10 --warmup 3 --json "$OUT/rl_throughput.json" > "$OUT/rl_throughput.log" 2>&1
  echo "rl_throughput: exit $?"; grep -A6 "^ours:\|^GRPO throughput" "$OUT/rl_throughput.log"
fi
# DPO: our default optimizer (Muon + AdamW), then AdamW alone as TRL; TRL and ours in 2 rounds each
for opt in ${DPO_OPTS:-muon adamw}; do
  timeout 150 $PY benchmarks/dpo_throughput.py --preset d12 --vocab 32768 --batch 8 --prompt 384 --reply 128 \
    --accum "${DPO_ACCUM:-1}" --steps 60 --warmup 3 --repeats 2 --ref online --optimizer $opt ${DPO_FLAGS:-} \
    --json "$OUT/dpo_throughput_$opt${DPO_TAG:-}.json" \
    --profile --trace "$OUT/dpo_trace_$opt${DPO_TAG:-}.json.gz" \
    > "$OUT/dpo_throughput_$opt${DPO_TAG:-}.log" 2>&1
  echo "dpo_throughput ($opt): exit $?"; grep -A5 "^DPO steps" "$OUT/dpo_throughput_$opt${DPO_TAG:-}.log"
done
