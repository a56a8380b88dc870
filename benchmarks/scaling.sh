#!/usr/bin/env bash
# Issue 8: d20 (T=2048) training throughput on 1..K GPUs, DDP and FSDP2, one JSON row per run.
#   bash benchmarks/scaling.sh "1 2 4" "ddp fsdp" OUT_DIR [extra train_throughput.py args]
# Weak scaling: each GPU runs 32 x 2048 tokens per optimizer step (micro 16, 2 accumulation steps).
# Rows append to OUT_DIR/scaling.jsonl (runs may be split across calls); the table covers them all.
# NVLink multicast stays off: on a shared host a program that uses it can take the GPUs out of service.
set -u
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
gpus=${1:-"1 2 4"}; modes=${2:-"ddp fsdp"}; out=${3:-scaling-out}; shift 3 || true
mkdir -p "$out"
for mode in $modes; do
  for k in $gpus; do
    log="$out/$mode-$k.log"
    echo "== $mode on $k GPU(s)"
    timeout 200 torchrun --standalone --nproc_per_node="$k" benchmarks/train_throughput.py \
      --dist "$mode" --presets d20 --warmup 3 --steps 8 --repeats 2 "$@" >"$log" 2>&1
    echo "rc $?"
    grep '^{' "$log" | tail -1 | tee -a "$out/scaling.jsonl"
  done
done
# the table: efficiency = tok/s(K) / (K x tok/s of the 1-GPU row)
python3 - "$out/scaling.jsonl" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
one = next((r for r in rows if r["world"] == 1), None)
print("\n| GPUs | mode | step ms | tok/s (global) | MFU per GPU | efficiency | peak GB per GPU |")
print("|---:|---|---:|---:|---:|---:|---:|")
for r in sorted(rows, key=lambda r: (r["dist"] != "single", r["dist"], r["world"])):
    eff = f"{r['tok_s'] / (r['world'] * one['tok_s']):.3f}" if one else "-"
    print(f"| {r['world']} | {r['dist']} | {r['step_ms']:.1f} | {r['tok_s'] / 1e3:.1f}k | "
          f"{100 * r['mfu']:.1f}% | {eff} | {r['mem_gb']:.1f} |")
PY
