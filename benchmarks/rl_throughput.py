"""GRPO throughput: `chatforge rl` (our engine's rollouts) vs TRL's GRPOTrainer (HF `generate`).

Same model (our random-init GPT; TRL gets the same weights in transformers' LlamaForCausalLM),
same prompts (arithmetic word problems rendered in our chat format), same group size, rollout
length, temperature / top-k, stop token (<|assistant_end|> only) and one optimizer step per batch
of prompts x group rollouts; no KL penalty in either (ours still computes and logs the KL to the
reference: one more forward, counted against us); python tool off (TRL's trainer has none).
Random weights: throughput does not depend on them, and nearly every rollout runs to the length cap
in both, so both write the same number of tokens.

Reported per system, over the steps after the first `--warmup` (CUDA graphs, allocator; TRL's
step times were still falling over its first four steps on an H200):
  rollout tok/s   completion tokens / time spent generating them
  step s          wall time of one optimizer step (rollouts + reward + loss + update)
  steps/hour      3600 / step s
and ours / TRL as a ratio.

    python benchmarks/rl_throughput.py --device cpu --preset d2 --prompts 4 --group 4 --new-tokens 32 --steps 4
    python benchmarks/rl_throughput.py --device cuda --preset d12 --prompts 16 --group 8 --new-tokens 256 --steps 6
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(__file__))
from inference import random_gpt, synthetic_tokenizer  # noqa: E402  (the same random model and tokenizer)


def prompts_and_answers(n: int, seed: int = 0):
    from chatforge.posttrain.tasks import get_task

    task = get_task("arithmetic:1", seed)
    return [task.problem(i) for i in range(n)]


def run_ours(run_dir: Path, args, out: Path) -> dict:
    from chatforge.posttrain.rl import RLConfig, run_rl
    from chatforge.tokenizer import Tokenizer

    tok = Tokenizer.load(run_dir / "tokenizer")
    cfg = RLConfig(base=str(run_dir), out=str(out), task="arithmetic:1", steps=args.steps, prompts=args.prompts,
                   group=args.group, max_new_tokens=args.new_tokens, temperature=1.0, top_k=args.top_k,
                   eval_every=0, eval_problems=2, pass_k=0, save_every=0, tools=False, device=args.device,
                   device_batch_size=args.device_batch_size,
                   stop_token_ids=(tok.special_id("<|assistant_end|>"),))
    if args.profile:  # where our step's time goes: the top device kernels and host ops of all steps
        from torch.profiler import ProfilerActivity, profile
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
        with profile(activities=acts) as prof:
            run_rl(cfg, log=lambda *a: None)
        sort = "self_cuda_time_total" if args.device.startswith("cuda") else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=sort, row_limit=30))
    else:
        run_rl(cfg, log=lambda *a: None)
    recs = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    tr = [r for r in recs if r["kind"] == "train"][args.warmup:]
    rows = args.prompts * args.group
    tokens = sum(r["response_len"] * rows for r in tr)
    return {"rollout_tok_s": tokens / sum(r["rollout_s"] for r in tr),
            "step_s": statistics.mean(r["rollout_s"] + r["train_s"] for r in tr),
            "rollout_s": statistics.mean(r["rollout_s"] for r in tr), "train_s": statistics.mean(r["train_s"] for r in tr),
            "mean_len": statistics.mean(r["response_len"] for r in tr)}


def run_trl(model, tok_dir: Path, args, out: Path) -> dict:
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from chatforge.posttrain.tasks import verify_number
    from chatforge.tokenizer import Tokenizer

    ours_tok = Tokenizer.load(tok_dir)
    hf_tok = PreTrainedTokenizerFast(tokenizer_file=str(tok_dir / "tokenizer.json"))
    hf_tok.eos_token, hf_tok.pad_token, hf_tok.bos_token = "<|assistant_end|>", "<|bos|>", "<|bos|>"
    hf_tok.padding_side = "left"
    n_prompts = args.prompts * (args.steps + 1)
    probs = prompts_and_answers(n_prompts)
    data = Dataset.from_list([{"prompt": ours_tok.decode(ours_tok.render_for_completion(p.messages())),
                               "answer": p.answer} for p in probs])

    cuda = args.device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    cfg = LlamaConfig(**model.config.to_hf_llama(), attn_implementation="sdpa")
    cfg.bos_token_id = cfg.pad_token_id = hf_tok.convert_tokens_to_ids("<|bos|>")
    cfg.eos_token_id = hf_tok.convert_tokens_to_ids("<|assistant_end|>")
    with torch.device(args.device):
        hf = LlamaForCausalLM(cfg)
    missing, unexpected = hf.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all("rotary" in k for k in missing), (missing, unexpected)
    hf.to(dtype)

    def reward(prompts, completions, answer, **kw):
        return [float(verify_number(c, a)) for c, a in zip(completions, answer)]

    gen_time = []
    orig_generate = hf.generate

    def timed_generate(*a, **k):  # TRL's rollouts: HF generate on the policy
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        res = orig_generate(*a, **k)
        if cuda:
            torch.cuda.synchronize()
        gen_time.append(time.perf_counter() - t)
        return res

    hf.generate = timed_generate
    step_times, lens = [], []

    class Timer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            if cuda:
                torch.cuda.synchronize()
            step_times.append(time.perf_counter() - self.t)

        def on_log(self, a, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                lens.append(logs["completions/mean_length"])

    rows = args.prompts * args.group
    gcfg = GRPOConfig(output_dir=str(out), per_device_train_batch_size=rows, gradient_accumulation_steps=1,
                      num_generations=args.group, steps_per_generation=1, num_iterations=1,
                      max_completion_length=args.new_tokens, temperature=1.0, top_k=args.top_k, beta=0.0,
                      learning_rate=1e-6, max_steps=args.steps, logging_steps=1, save_strategy="no",
                      report_to=[], bf16=cuda, use_cpu=not cuda, shuffle_dataset=False, disable_dropout=True,
                      dataloader_num_workers=0, seed=0)
    trainer = GRPOTrainer(model=hf, reward_funcs=reward, args=gcfg, train_dataset=data, processing_class=hf_tok,
                          callbacks=[Timer()])
    trainer.train()
    st, gt, ln = step_times[args.warmup:], gen_time[args.warmup:], lens[args.warmup:]
    mean_len = statistics.mean(ln) if ln else float(args.new_tokens)
    return {"rollout_tok_s": mean_len * rows * len(gt) / sum(gt), "step_s": statistics.mean(st), "mean_len": mean_len}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--preset", default="d12")
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--group", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--top-k", type=int, default=50)
    ap.add_argument("--steps", type=int, default=6, help="optimizer steps per system, warm-up included")
    ap.add_argument("--warmup", type=int, default=1, help="steps per system left out of the timing")
    ap.add_argument("--device-batch-size", type=int, default=128, help="our rollouts per forward/backward")
    ap.add_argument("--skip-trl", action="store_true")
    ap.add_argument("--profile", action="store_true", help="print a torch.profiler table of our run (slows it)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()

    from chatforge.model import save_run

    tmp = Path(tempfile.mkdtemp(prefix="rl_bench_"))
    tok = synthetic_tokenizer(args.vocab)
    tok.save(tmp / "tok")
    model = random_gpt(args.preset, tok.vocab_size, 1024, "cpu", torch.float32)
    run = save_run(tmp / "base", model, tmp / "tok", kind="sft", step=0)
    res = {"ours": run_ours(run, args, tmp / "rl")}
    o = res["ours"]  # printed now too: a run cut short inside TRL's side keeps our number
    print(f"ours: {o['rollout_tok_s']:,.0f} rollout tok/s, {o['step_s']:.3f} s a step "
          f"(rollouts {o['rollout_s']:.3f} + train {o['train_s']:.3f})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    if not args.skip_trl:
        res["trl"] = run_trl(model, tmp / "tok", args, tmp / "trl")
    dev = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    import trl
    print(f"\nGRPO throughput, {args.preset} (random weights, vocab {tok.vocab_size}), {args.prompts} prompts x "
          f"{args.group} samples, <= {args.new_tokens} new tokens, {args.steps - args.warmup} timed steps; {dev}; "
          f"torch {torch.__version__}, trl {trl.__version__}")
    print(f"{'system':<28} {'rollout tok/s':>14} {'step s':>9} {'steps/hour':>11} {'mean len':>9}")
    for name, r in res.items():
        label = "ours (chatforge rl)" if name == "ours" else "TRL GRPOTrainer (HF generate)"
        print(f"{label:<28} {r['rollout_tok_s']:>14,.0f} {r['step_s']:>9.2f} {3600 / r['step_s']:>11,.0f} {r['mean_len']:>9.1f}")
        if "train_s" in r:
            print(f"{'  of which rollouts / train':<28} {r['rollout_s']:>14.3f} {r['train_s']:>9.3f}")
    if "trl" in res:
        o, t = res["ours"], res["trl"]
        res["ratio"] = {"rollout_tok_s": o["rollout_tok_s"] / t["rollout_tok_s"], "steps_per_hour": t["step_s"] / o["step_s"]}
        print(f"{'ours / TRL':<28} {res['ratio']['rollout_tok_s']:>13.2f}x {'':>9} {res['ratio']['steps_per_hour']:>10.2f}x")
    if args.json:
        res["settings"] = vars(args) | {"device_name": dev, "torch": torch.__version__, "trl": trl.__version__}
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
