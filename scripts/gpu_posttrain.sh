#!/usr/bin/env bash
# The d12 post-training runs of docs/benchmarks.md (issues 19, 20, 21) on one GPU box whose
# commands are time-limited: call it again until it prints "all done"; each call resumes.
#
#   on a CPU box:  chatforge speedrun --preset gpu-d12 --out RUN --until tokenize
#                  (data, fact world, tokenizer, token shards), then carry RUN to the GPU box
#   on the GPU:    RUN=RUN LIMIT=500 bash scripts/gpu_posttrain.sh
#   shorter:       UNTIL=dpo SPEEDRUN_ARGS="--rl-steps 0" ...  (the speedrun up to DPO, without GRPO and the
#                  report's evaluations; the factuality evaluations then run on their own, FACTS=0 skips them)
#   RLHF only:     UNTIL=sft FACTS=0 ...  (pretrain, SFT, reward model, judge, guarded RLHF; no DPO win rate)
#   RLHF, plain:   UNTIL=pretrain ...  (as above, but SFT on the default mixture, without the knowledge
#                  probe's set, whose refusals make the SFT model's chat replies degenerate from the start)
#
# 1. the gpu-d12 speedrun from pretraining on: base (3 passes over the small offline corpus, hence
#    --batch-tokens 65536 for enough optimizer steps), search index, knowledge probe, SFT with and
#    without the probe's set, GRPO on GSM8K (500 held-out test problems before and after), DPO,
#    evaluations, report card;
# 2. a reward model and a held-out judge, each on one half of hh-rlhf's training pairs;
# 3. DPO's win rate over SFT judged by the judge;
# 4. RLHF against the reward model with the judge watching (the guard), snapshots at each eval.
set -euo pipefail
: "${RUN:?set RUN (the speedrun directory made up to tokenize)}"
LIMIT=${LIMIT:-500}
PY=${PYTHON:-python3}
end=$((SECONDS + LIMIT))
left() { echo $((end - SECONDS)); }
need() { [ "$(left)" -gt "$1" ] || { echo "time limit: call again to resume"; exit 0; }; }
# a stage that would outlive the call is interrupted like Ctrl-C; its last checkpoint resumes it
capped() {
  local rc=0; timeout -s INT "$(left)" "$@" || rc=$?
  [ $rc = 124 ] && { echo "time limit: call again to resume"; exit 0; }
  return $rc
}
# a run is finished when it holds weights and no checkpoint (a checkpoint writes the weights too)
finished() { [ -f "$1/model.safetensors" ] && [ ! -d "$1/checkpoint" ]; }

UNTIL=${UNTIL:-export}
# shellcheck disable=SC2086  # SPEEDRUN_ARGS is a list of flags
$PY -m chatforge speedrun --preset gpu-d12 --out "$RUN" --from pretrain --batch-tokens 65536 --max-epochs 3 \
  --sft-steps 400 --until "$UNTIL" --time-limit "$(left)" ${SPEEDRUN_ARGS:-}
[ -f "$RUN/.speedrun/$UNTIL.json" ] || { echo "time limit: call again to resume"; exit 0; }

if [ "$UNTIL" = pretrain ] && ! finished "$RUN/sft"; then  # plain SFT: the default mixture
  need 150
  resume=""; [ -d "$RUN/sft/checkpoint" ] && resume="--resume"
  capped $PY -m chatforge sft --base "$RUN/base" --out "$RUN/sft" --steps 400 --batch-size 32 --save-every 100 $resume
fi

if [ "$UNTIL" != export ] && [ "$UNTIL" != pretrain ] && [ "${FACTS:-1}" = 1 ]; then  # the factuality evaluations the speedrun would have run (issue 21)
  for sft in sft sft-noprobe; do
    if [ -d "$RUN/$sft" ] && [ ! -f "$RUN/eval/facts_$sft.json" ]; then
      need 60
      capped $PY -m chatforge eval "$RUN/$sft" --tasks facts --facts "$RUN/factworld/qa.jsonl" \
        --search-index "$RUN/search.sqlite" --out "$RUN/eval/facts_$sft.json" --quiet
    fi
  done
fi

for half in 0 1; do
  name=$([ $half = 0 ] && echo rm || echo judge)
  if ! finished "$RUN/$name"; then
    need 90
    resume=""; [ -d "$RUN/$name/checkpoint" ] && resume="--resume"
    capped $PY -m chatforge rm --base "$RUN/sft" --pairs hh-rlhf --half $half --out "$RUN/$name" --batch-size 32 \
      --eval-every 25 --save-every 25 $resume
  fi
done

if finished "$RUN/dpo" && [ ! -f "$RUN/winrate.txt" ]; then
  need 120
  capped $PY -m chatforge rm winrate "$RUN/judge" --a "$RUN/dpo" --b "$RUN/sft" --n 256 > "$RUN/winrate.tmp"
  mv "$RUN/winrate.tmp" "$RUN/winrate.txt"; tail -1 "$RUN/winrate.txt"
fi

if ! finished "$RUN/rlhf"; then
  need 120
  resume=""; [ -d "$RUN/rlhf/checkpoint" ] && resume="--resume"
  capped $PY -m chatforge rl --base "$RUN/sft" --task pairs:hh-rlhf --reward "rm:$RUN/rm" --judge "$RUN/judge" \
    --out "$RUN/rlhf" --steps "${RLHF_STEPS:-300}" --prompts 16 --group 4 --max-new-tokens 96 --lr-frac 0.3 \
    --eval-every 10 --eval-problems 64 --pass-k 0 --save-every 10 --snapshots $resume
fi
echo "all done"
