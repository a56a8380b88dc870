"""Speedrun presets: every knob of one end-to-end run, in one readable place.

cpu-tiny   the default. A 2-core laptop, no GPU, no internet, <= 15 minutes: a d3 model (2.9M
           parameters, 3 layers x 192) on 1.3M tokens of real text, a short SFT, evaluations on
           small samples. Idle 2 cores train d3 at ~4-5k tokens/s (8-14 minutes in all); far below
           Chinchilla's 20 tokens/parameter, a small model on more tokens beats a bigger one.
smoke      cpu-tiny shrunk until the whole chain runs in about a minute (CI).
gpu-d12    one H100, under an hour in total: a d12 model (~110M parameters), 20 tokens per
           parameter, but at most 3 passes over the data: offline, ../shared/data gives only a
           few million tokens, so pass --inputs with FineWeb parquet/WARC files for a full run.
           (Measured on the 3.9M-token offline corpus: held-out bpb was best after ~3 passes and
           rose from 1.52 to 2.71 by 16 passes; docs/benchmarks.md. With so little data also pass
           --batch-tokens 65536 so the run takes enough optimizer steps.)
           Each stage is one resumable command; `--time-limit 500` runs it as a chain of
           < 9-minute calls.
gpu-d20    8 H100s (torchrun), the nanochat-scale run: a d20 model (~500M parameters) on ~10B
           tokens of FineWeb-like data. Documented here; it needs data we do not have offline,
           so run it with --inputs pointing at real shards (or on one GPU with fewer tokens).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from chatforge.common import ChatforgeError


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    # data: which inputs (see pipeline.inputs) and how much of them
    inputs: str = "shared"          # "shared" / "shared-small" (../shared/data, else local text) or "local"
    input_max_mb: float = 30.0      # cap on text collected from this machine when local
    # tokenizer
    vocab_size: int = 4096
    # pretraining
    model: str = "d4"
    seq_len: int = 256
    train_tokens: int = 6_000_000
    max_epochs: float = 0.0         # if > 0: cap train_tokens at this many passes over the train shards
    batch_tokens: int = 8192
    train_extra: tuple[str, ...] = ()
    # SFT
    sft_mix: str = "default"
    sft_steps: int = 150
    sft_batch_size: int = 8
    sft_extra: tuple[str, ...] = ()
    # RL (chatforge rl) from the SFT run: 0 steps = no rl stage
    rl_task: str = "arithmetic:1"
    rl_steps: int = 0
    rl_extra: tuple[str, ...] = ()
    # a "cold start" before RL (DeepSeek-R1): this many SFT steps on the rl_cold_start_mix alone, so
    # RL starts from a model that solves some problems (a sampled group with no right answer teaches
    # nothing); 0 = RL straight from the SFT run
    rl_cold_start: int = 0
    rl_cold_start_mix: str = "arithmetic"
    rl_cold_start_extra: tuple[str, ...] = ()
    # DPO (chatforge dpo) from the SFT run on preference pairs: 0 steps = no dpo stage
    dpo_pairs: str = "hh-rlhf"      # 'synthetic' without ../shared/data
    dpo_steps: int = 0
    dpo_extra: tuple[str, ...] = ()
    # factuality (chatforge data factworld / probe / index): 0 = off
    facts_share: float = 0.0        # the fact world's share of the pretraining corpus (characters)
    facts_entities: int = 16        # people seen in pretraining, and as many never seen
    facts_sft_share: float = 0.3    # the probe's SFT set's share of the SFT mixture
    # eval caps (0 = whole set)
    eval_limits: dict = field(default_factory=lambda: {
        "bpb_tokens": 50_000, "limit_mc": 200, "limit_gsm8k": 32, "limit_humaneval": 16, "limit_probes": 8})
    device: str | None = None       # None: cuda when present, else cpu
    nproc: int = 1                  # GPUs for torchrun
    usd_per_hour: float = 0.0
    cost_note: str = ""


PRESETS = {
    "cpu-tiny": Preset(
        name="cpu-tiny",
        description="2 CPU cores, offline, <= 15 min: d3 model (2.9M parameters), 1.3M tokens of real text",
        # the whole run: 1.5M tokens 16.0 min; 1.3M 12.1 and 9.0 (idle, 2026-12-02), 7.9 (idle, 2026-12-03),
        # 11.8 with the RL cold start (idle, 2026-12-03; its pretraining took 4.9 min against 4.4 the run before),
        # 10.9 and later 13.5 on the same box once it had slowed (its unchanged tokenizer stage 5.4 s -> 9.3 s)
        model="d3", seq_len=512, train_tokens=1_300_000, batch_tokens=8192,
        train_extra=("--eval-every", "30", "--eval-tokens", "16384", "--save-every", "30"),
        sft_steps=100, sft_batch_size=8, sft_extra=("--eval-every", "0"),
        # the d3 chat model solves no arithmetic after its 100 mixed SFT steps; 60 steps of level-0
        # conversations bring it to 68% greedy on the 155 held-out problems, and GRPO's setting that
        # learns at this size (temperature 0.7, AdamW at 0.03 of the pretraining rates) raised that to
        # 82% in 40 steps, and to 92% in 30 with another seed (2026-12-03, docs/benchmarks.md)
        rl_task="arithmetic:0", rl_cold_start=60, rl_cold_start_extra=("--batch-size", "16", "--lr-frac", "0.3"),
        rl_steps=30, rl_extra=("--max-new-tokens", "20", "--temperature", "0.7", "--adamw-only", "--lr-frac", "0.03",
                               "--eval-every", "15", "--eval-problems", "0", "--pass-k", "8", "--save-every", "10"),
        # 25 steps of 8 pairs (40 took 51 s idle, 2026-12-02), reference log-probs of ~400 pairs precomputed; 99 CPU-seconds on one
        # thread at the 600-pair limit (docs/benchmarks.md, DPO), ~85 at this one
        dpo_steps=25, dpo_extra=("--batch-size", "8", "--limit", "500", "--val-frac", "0.15", "--max-val", "64",
                                 "--max-seq-len", "320", "--lr-frac", "0.05", "--eval-every", "0", "--save-every", "20"),
        facts_share=0.2, facts_entities=8,  # few people, many renderings: a d3 model must learn some facts
        device="cpu",
    ),
    "smoke": Preset(
        name="smoke",
        description="CI smoke run: the whole chain on tiny settings in about a minute",
        inputs="shared-small", input_max_mb=3.0, vocab_size=512, model="d2", seq_len=128,
        train_tokens=40_000, batch_tokens=2048, train_extra=("--eval-every", "10", "--eval-tokens", "4096"),
        sft_mix="tiny", sft_steps=8, sft_batch_size=4, sft_extra=("--eval-every", "0", "--no-probes"),
        rl_steps=2, rl_extra=("--prompts", "2", "--group", "2", "--max-new-tokens", "12", "--eval-problems", "4",
                              "--pass-k", "2", "--eval-every", "0", "--save-every", "0"),
        dpo_pairs="synthetic", dpo_steps=3, dpo_extra=("--batch-size", "4", "--limit", "48", "--max-val", "8",
                                                     "--eval-every", "0", "--save-every", "0"),
        eval_limits={"bpb_tokens": 2000, "limit_mc": 12, "limit_gsm8k": 4, "limit_humaneval": 2, "limit_probes": 2},
        device="cpu",
    ),
    "gpu-d12": Preset(
        name="gpu-d12",
        description="one H100, under an hour: d12 model, vocab 32768, context 2048",
        vocab_size=32768, model="d12", seq_len=2048,
        train_tokens=1_700_000_000, max_epochs=3, batch_tokens=524_288, sft_steps=600, sft_batch_size=32,
        train_extra=("--save-every", "100", "--eval-every", "100"), sft_extra=("--save-every", "100"),
        dpo_steps=130, dpo_extra=("--batch-size", "32", "--max-val", "256", "--eval-every", "50"),
        # GRPO on GSM8K's train split with the python tool, held-out pass@1 on 500 test problems before and after
        rl_task="gsm8k", rl_steps=150,
        rl_extra=("--prompts", "16", "--group", "8", "--max-new-tokens", "256", "--eval-problems", "500",
                  "--pass-k", "4", "--eval-every", "50", "--save-every", "50", "--device-batch-size", "64"),
        facts_share=0.2, facts_entities=100,  # 100 people in pretraining, 100 never seen
        # whole WikiText-2 test and HumanEval; GSM8K and T0 multiple choice sampled to keep eval in minutes
        eval_limits={"bpb_tokens": 0, "limit_mc": 2000, "limit_gsm8k": 500, "limit_humaneval": 0, "limit_probes": 24},
        usd_per_hour=3.0, cost_note="one H100 at a typical on-demand price",
    ),
    "gpu-d20": Preset(
        name="gpu-d20",
        description="8 H100s (torchrun), nanochat scale: d20 model, ~10B tokens",
        vocab_size=65536, model="d20", seq_len=2048,
        train_tokens=10_000_000_000, max_epochs=8, batch_tokens=524_288, sft_steps=1000, sft_batch_size=32,
        train_extra=("--save-every", "100", "--eval-every", "250"), sft_extra=("--save-every", "100"),
        eval_limits={"bpb_tokens": 0, "limit_mc": 0, "limit_gsm8k": 0, "limit_humaneval": 0, "limit_probes": 24},
        nproc=8, usd_per_hour=24.0, cost_note="8 H100s at a typical on-demand price",
    ),
}


def get_preset(name: str, **overrides) -> Preset:
    if name not in PRESETS:
        raise ChatforgeError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    p = PRESETS[name]
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return replace(p, **overrides) if overrides else p
