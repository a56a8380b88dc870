#!/usr/bin/env bash
# The ten-minute d12 quality run of docs/benchmarks.md, as resumable parts for a GPU box whose
# commands are time-limited. Each call tokenizes the corpus if needed, then trains until STOP (a
# step; unset = the end) and leaves a checkpoint; the next call resumes it. Outputs go to OUT.
#
#   CORPUS=docs/ TOK=tok/ HELDOUT=wikitext2-test-shards/ STOP=330 bash scripts/gpu_quality_run.sh
#   CORPUS=docs/ TOK=tok/ HELDOUT=wikitext2-test-shards/ bash scripts/gpu_quality_run.sh
#
# CORPUS: `chatforge data build` output; TOK: the tokenizer; HELDOUT: token shards of held-out text
# (`chatforge data tokenize --val-fraction 0`), evaluated every EVERY steps, never trained on.
set -euo pipefail
: "${CORPUS:?set CORPUS}" "${TOK:?set TOK}" "${HELDOUT:?set HELDOUT}"
SHARDS=${SHARDS:-/tmp/quality-shards} RUN=${RUN:-/tmp/quality-run} OUT=${OUT:-$RUN}
PY=${PYTHON:-python3}
if [ ! -f "$SHARDS/meta.json" ]; then
  $PY -m chatforge data tokenize "$CORPUS" --tokenizer "$TOK" --out "$SHARDS" --val-fraction 0 2>&1 | tail -1
fi
resume=""
[ -d "$RUN/checkpoint" ] && resume="--resume"
$PY -m chatforge train --preset "${PRESET:-d12}" --data "$SHARDS" --val-data "$HELDOUT" --tokenizer "$TOK" \
  --out "$RUN" --tokens "${TOKENS:-320M}" --eval-every "${EVERY:-50}" --save-every 100 --log-every 10 \
  ${STOP:+--stop-after $STOP} $resume ${EXTRA:-} 2>&1 | tee "$OUT/train-$(date +%s).txt" | grep -v "^   >" | tail -5
[ "$OUT" = "$RUN" ] || cp "$RUN/log.jsonl" "$OUT/"
