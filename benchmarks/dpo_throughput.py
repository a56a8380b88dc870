"""DPO training throughput: ours (chatforge.posttrain.dpo) vs TRL's DPOTrainer, same model, batch, device.

Both train the same weights (our GPT exported to HF LlamaForCausalLM, the names map 1:1) on the
same token ids: a word-level tokenizer where "w17" is id 17, so each pair is exactly `--prompt`
prompt tokens and `--reply` tokens per reply (TRL appends EOS; our rows get the same ids). A
step is `--accum` (default 1) forward + backward passes of `--batch` pairs each, then the
optimizer step. TRL and each of our layouts run `--repeats` times, in rounds (best of each): each
pair's prompt read once (`shared prompt`: one row per pair, a mask keeps the two replies apart),
and TRL's layout (`two rows`: prompt + chosen and prompt + rejected, 2 x batch rows).
Reference log-probs: `--ref precompute` (ours: default; TRL: precompute_ref_log_probs=True),
both outside the timed steps, or `--ref online` (a reference forward inside every step).
Each side runs its own optimizer (ours: Muon + AdamW, or AdamW alone with `--optimizer adamw`;
TRL: AdamW) and precision (bf16 autocast on CUDA for both, fp32 on CPU; on CUDA our reference's
matrices are held in bf16, as in `chatforge dpo`: the same logits, see dpo.frozen_reference;
`--ref-fp32` keeps them float32 as TRL's reference does). Timed: steps after
`--warmup`, wall clock with a device sync. The ratio is only meaningful within one run (same
machine, same load).

    python benchmarks/dpo_throughput.py --preset d2 --batch 4 --prompt 96 --reply 32 --steps 10  # CPU
    python benchmarks/dpo_throughput.py --preset d12 --batch 8 --prompt 384 --reply 128 --steps 30  # GPU
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import torch


def word_tokenizer(vocab: int):
    """HF fast tokenizer whose words 'w0'..'w{V-3}' are ids 0..V-3; pad and eos are the last two ids."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = {f"w{i}": i for i in range(vocab - 2)}
    words.update({"<pad>": vocab - 2, "<eos>": vocab - 1})
    tk = Tokenizer(models.WordLevel(words, unk_token="<pad>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>")


def make_rows(n, prompt, reply, vocab, seed=0):
    g = torch.Generator().manual_seed(seed)
    text = lambda k: " ".join(f"w{i}" for i in torch.randint(0, vocab - 2, (k,), generator=g).tolist())  # noqa: E731
    return [{"prompt": text(prompt), "chosen": " " + text(reply), "rejected": " " + text(reply)} for _ in range(n)]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_trl(model_hf, ref_hf, tok, rows, args, device, out_dir):
    import datasets
    from transformers import TrainerCallback
    from trl import DPOConfig, DPOTrainer

    times = []

    class Clock(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            sync(device)
            times.append(time.perf_counter())

    cfg = DPOConfig(output_dir=out_dir, beta=0.1, per_device_train_batch_size=args.batch, max_steps=args.warmup + args.steps,
                    gradient_accumulation_steps=args.accum,
                    report_to=[], save_strategy="no", logging_steps=10 ** 6, bf16=device.type == "cuda",
                    use_cpu=device.type == "cpu", max_length=None, precompute_ref_log_probs=args.ref == "precompute",
                    dataloader_num_workers=0, learning_rate=1e-6, disable_dropout=True, gradient_checkpointing=False,
                    torch_compile=args.compile)
    try:
        dataset = datasets.Dataset.from_list(rows)
    except Exception:  # pickle.PicklingError on the GPU image (Python 3.12, pyarrow 24): datasets' content
        import uuid    # hash of the table cannot pickle pyarrow's MonthDayNano; no cache is needed here

        import datasets.arrow_dataset as arrow_dataset
        arrow_dataset.generate_fingerprint = lambda *a, **k: uuid.uuid4().hex
        dataset = datasets.Dataset.from_list(rows)
    trainer = DPOTrainer(model=model_hf, ref_model=ref_hf if args.ref == "online" else None, args=cfg,
                         processing_class=tok, train_dataset=dataset, callbacks=[Clock()])
    t0 = time.perf_counter()
    trainer.train()
    t = times[args.warmup - 1:] if args.warmup else [t0] + times
    ex = trainer.train_dataset[0]
    return (len(t) - 1) / (t[-1] - t[0]), (len(ex["prompt_ids"]), len(ex["chosen_ids"])), trainer.train_dataset


def run_ours(policy, ref, prepared, args, device, shared_prompt=True):
    from chatforge.posttrain.dpo import compile_blocks, dpo_loss, pair_logps, reply_logps
    from chatforge.posttrain.pairs import PairIds, logp_batch
    from chatforge.train.optim import build_optimizers
    from chatforge.train.trainer import autocast_for

    pairs = [PairIds(r["prompt_ids"], r["chosen_ids"], r["rejected_ids"]) for r in prepared]
    autocast = autocast_for(device)  # `chatforge dpo`'s: bf16 on CUDA, none on a CPU
    pad = policy.config.vocab_size - 2
    ref_c = ref_r = None
    if args.ref == "precompute":
        ref_c, ref_r = pair_logps(ref, pairs, pad, device, args.batch, autocast, shared_prompt)
    opts = build_optimizers(policy, use_muon=args.optimizer == "muon")
    for o in opts:
        for g in o.param_groups:
            g["lr"] = g["initial_lr"] * 0.01
    if args.compile:
        compile_blocks(policy)
    policy.train()
    times = []
    for step in range(args.warmup + args.steps):
        for micro in range(args.accum):  # `--accum` forward/backward passes per optimizer step
            first = (step * args.accum + micro) * args.batch
            sel = [(first + i) % len(pairs) for i in range(args.batch)]
            x, y, pos, mask = logp_batch([pairs[i] for i in sel], pad, device, shared_prompt)
            lp = reply_logps(policy, x, y, autocast, pos, mask)
            if ref_c is None:
                with torch.no_grad():
                    rl = reply_logps(ref, x, y, autocast, pos, mask)
                rc, rr = rl[:args.batch], rl[args.batch:]
            else:
                rc, rr = ref_c[sel].to(device), ref_r[sel].to(device)
            loss, _, _ = dpo_loss(lp[:args.batch], lp[args.batch:], rc, rr, 0.1)
            (loss / args.accum).backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        for o in opts:
            o.step()
        policy.zero_grad(set_to_none=True)
        sync(device)
        times.append(time.perf_counter())
    t = times[args.warmup - 1:]
    return (len(t) - 1) / (t[-1] - t[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="d2")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--batch", type=int, default=4, help="pairs per forward")
    ap.add_argument("--accum", type=int, default=1, help="forwards per optimizer step (TRL: gradient_accumulation_steps)")
    ap.add_argument("--prompt", type=int, default=96)
    ap.add_argument("--reply", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--ref", default="precompute", choices=["precompute", "online"])
    ap.add_argument("--optimizer", default="muon", choices=["muon", "adamw"],
                    help="ours: Muon + AdamW (chatforge dpo's default) or AdamW only (TRL's optimizer)")
    ap.add_argument("--ref-fp32", action="store_true",
                    help="ours: keep the reference's matrices in float32 on a GPU (before 2026-12-03)")
    ap.add_argument("--compile", action="store_true", help="torch.compile both: our policy's blocks, TRL's torch_compile")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=2, help="rounds over TRL and our layouts; each reports its best")
    ap.add_argument("--profile", action="store_true", help="then a torch.profiler table of our fastest layout")
    ap.add_argument("--trace", help="with --profile: also write its timeline here (gzipped chrome trace)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    device = torch.device(args.device)
    import transformers

    from chatforge.model import GPT, GPTConfig
    from chatforge.posttrain.dpo import frozen_reference

    torch.manual_seed(0)
    cfg = GPTConfig.from_preset(args.preset, vocab_size=args.vocab, seq_len=args.prompt + args.reply + 8)
    policy = GPT(cfg)
    with torch.no_grad():  # a trained-looking model: no zero-initialised projections
        for p in policy.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    state = {k: v.clone() for k, v in policy.state_dict().items()}

    def hf_model():
        m = transformers.LlamaForCausalLM(transformers.LlamaConfig(**cfg.to_hf_llama()))
        m.load_state_dict(state, strict=False)
        return m.to(device)

    n = args.batch * args.accum * (args.warmup + args.steps)
    rows = make_rows(n, args.prompt, args.reply, args.vocab)
    tok = word_tokenizer(args.vocab)
    ref = GPT(cfg).to(device)
    ref.load_state_dict(state)
    # as `chatforge dpo`: on a GPU the reference's matrices in bf16 (the same logits under autocast)
    frozen_reference(ref, bf16=device.type == "cuda" and not args.ref_fp32)
    layouts = [("shared prompt", True), ("two rows", False)]
    ours, trl_sps = {}, 0.0
    for _ in range(args.repeats):  # rounds over TRL and our layouts, best of each: no drift favours one side
        with tempfile.TemporaryDirectory() as d:
            sps, shape, prepared = run_trl(hf_model(), hf_model(), tok, rows, args, device, d)
        trl_sps = max(trl_sps, sps)
        for layout, shared in layouts:
            policy = GPT(cfg).to(device)
            policy.load_state_dict(state)  # each run trains its own copy from the same weights
            ours[layout] = max(ours.get(layout, 0.0), run_ours(policy, ref, prepared, args, device, shared))
    from chatforge.posttrain.dpo import default_shared_prompt

    default = "shared prompt" if default_shared_prompt(device) else "two rows"  # `chatforge dpo`'s layout here
    ours_sps = ours[default]
    name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU ({os.cpu_count()} cores)"
    res = {"device": name, "preset": args.preset, "params_M": round(policy.num_params() / 1e6, 1),
           "batch_pairs": args.batch, "accum": args.accum, "prompt_tokens": shape[0], "reply_tokens": shape[1], "ref": args.ref,
           "compile": args.compile, "optimizer": args.optimizer, "ref_fp32": args.ref_fp32, "torch": torch.__version__,
           "repeats": args.repeats, "ours_steps_s": ours_sps,
           "ours_layout": default, "ours_shared_prompt_steps_s": ours["shared prompt"],
           "ours_two_rows_steps_s": ours["two rows"], "trl_steps_s": trl_sps,
           "ratio": ours_sps / trl_sps}
    print(f"\nDPO steps/s on {name}: {args.preset} ({res['params_M']}M params), {args.accum} x {args.batch} pairs x "
          f"({shape[0]} prompt + {shape[1]} reply tokens), reference {args.ref}, our optimizer {args.optimizer}, "
          f"best of {args.repeats}")
    print(f"{'':38}{'steps/s':>10}{'vs TRL':>10}")
    for layout, sps in ours.items():
        label = "ours, " + layout + (" (default)" if layout == default else "")
        print(f"{label:38}{sps:>10.3f}{sps / trl_sps:>9.2f}x")
    print(f"{'TRL DPOTrainer':38}{trl_sps:>10.3f}{1:>9.2f}x", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)
    if args.profile:  # where the fastest layout's step time goes: top device kernels and host ops, a few steps
        from torch.profiler import ProfilerActivity, profile

        best = max(ours, key=ours.get)
        shared = dict(layouts)[best]
        print(f"profile of ours, {best}:")
        policy = GPT(cfg).to(device)
        policy.load_state_dict(state)
        short = argparse.Namespace(**{**vars(args), "steps": 5, "warmup": 1})
        with profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])) as prof:
            run_ours(policy, ref, prepared, short, device, shared)
        sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
        print(prof.key_averages().table(sort_by=sort, row_limit=25))
        if args.trace:  # the timeline (chrome://tracing, Perfetto): where the GPU waits on the host
            import gzip
            import shutil

            with tempfile.TemporaryDirectory() as d:
                prof.export_chrome_trace(f"{d}/trace.json")
                with open(f"{d}/trace.json", "rb") as src, gzip.open(args.trace, "wb") as dst:
                    shutil.copyfileobj(src, dst)


if __name__ == "__main__":
    main()
