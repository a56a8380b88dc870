"""`chatforge rm` and `chatforge dpo`: learning from preference pairs (registered by posttrain/cli.py).

  chatforge rm --base RUN --pairs PAIRS --out RM_RUN [--half 0|1]   train a reward model
  chatforge rm score RM_RUN --pairs PAIRS                            its pair accuracy on a file
  chatforge rm score RM_RUN --conversations CONVS                    one score per conversation
  chatforge rm winrate JUDGE_RUN --a DPO_RUN --b SFT_RUN             A's win rate over B, judged by it
  chatforge dpo --base SFT_RUN --pairs PAIRS --out DPO_RUN           DPO fine-tuning

PAIRS is a JSONL file (hh-rlhf or TRL's prompt/chosen/rejected formats) or `hh-rlhf` for the copy
in ../shared/data. Heavy imports stay inside the handlers.
"""

from __future__ import annotations

import argparse


def _device(arg):
    from chatforge.common import default_device

    return arg or default_device()


def _rm(args):
    from chatforge.common import ChatforgeError

    if args.action:
        if args.action[0] == "winrate" and len(args.action) == 2:
            return _rm_winrate(args.action[1], args)
        if args.action[0] != "score" or len(args.action) != 2:
            raise ChatforgeError("usage: chatforge rm score RM_RUN (--pairs PAIRS | --conversations CONVS), "
                                 "or chatforge rm winrate JUDGE_RUN --a RUN_A --b RUN_B [--pairs PAIRS]")
        return _rm_score(args.action[1], args)
    if not (args.base and args.pairs and args.out):
        raise ChatforgeError("chatforge rm needs --base RUN --pairs PAIRS --out RM_RUN (or: rm score RM_RUN ...)")
    from chatforge.posttrain.reward_model import RMConfig, run_rm

    run_rm(RMConfig(base=args.base, pairs=args.pairs, out=args.out, steps=args.steps, batch_size=args.batch_size,
                    device_batch_size=args.device_batch_size, max_seq_len=args.max_seq_len, lr_frac=args.lr_frac,
                    head_lr=args.head_lr, val_frac=args.val_frac, max_val=args.max_val, half=args.half,
                    limit=args.limit, eval_every=args.eval_every, save_every=args.save_every,
                    log_every=args.log_every, device=_device(args.device), seed=args.seed, resume=args.resume))
    return 0


def _rm_score(run_dir, args):
    import json
    from collections import Counter

    from chatforge.common import ChatforgeError
    from chatforge.posttrain.reward_model import RewardScorer, pair_rewards, preference_metrics

    scorer = RewardScorer(run_dir, device=_device(args.device))
    if args.pairs:
        from chatforge.posttrain.pairs import format_stats, read_pairs, tokenize_pairs

        stats = Counter()
        pairs = tokenize_pairs(scorer.tokenizer, read_pairs(args.pairs, stats, args.limit), scorer.max_len, stats)
        res = preference_metrics(*pair_rewards(scorer.model, pairs, scorer.tokenizer.bos_id, scorer.device))
        print(f"{args.pairs}: {format_stats(stats)}")
        print(json.dumps(res, indent=1))
        return 0
    if args.conversations:
        from chatforge.posttrain.conversation import read_conversations_jsonl

        convs = list(read_conversations_jsonl(args.conversations))[:args.limit]
        items = [c["messages"][:-1] for c in convs]
        replies = [c["messages"][-1]["content"] for c in convs]
        replies = [r if isinstance(r, str) else "".join(p["text"] for p in r) for r in replies]
        for conv, s in zip(convs, scorer.score(items, replies)):
            print(json.dumps({"score": round(s, 4), "messages": conv["messages"]}, ensure_ascii=False))
        return 0
    raise ChatforgeError("chatforge rm score needs --pairs PAIRS or --conversations CONVS")


def _rm_winrate(judge, args):
    import json

    from chatforge.common import ChatforgeError
    from chatforge.posttrain.reward_model import win_rate

    if not (args.a and args.b):
        raise ChatforgeError("chatforge rm winrate JUDGE_RUN needs --a RUN_A --b RUN_B (e.g. the DPO and SFT runs)")
    res = win_rate(judge, args.a, args.b, args.pairs or "hh-rlhf", args.n, args.max_new_tokens, _device(args.device),
                   args.seed)
    print(json.dumps(res, indent=1, ensure_ascii=False))
    print(f"{args.a} beats {args.b} on {res['win_rate']:.1%} of {res['n']} held-out prompts (ties half), "
          f"judged by {judge}")
    return 0


def _dpo(args):
    from chatforge.posttrain.dpo import DPOConfig, run_dpo

    run_dpo(DPOConfig(base=args.base, pairs=args.pairs, out=args.out, beta=args.beta, ref=args.ref, steps=args.steps,
                      batch_size=args.batch_size, device_batch_size=args.device_batch_size,
                      max_seq_len=args.max_seq_len, lr_frac=args.lr_frac, val_frac=args.val_frac,
                      max_val=args.max_val, limit=args.limit, eval_every=args.eval_every,
                      save_every=args.save_every, log_every=args.log_every, device=_device(args.device),
                      seed=args.seed, resume=args.resume, compile=args.compile,
                      shared_prompt=args.shared_prompt, optimizer=args.optimizer))
    return 0


def _common(p, lr_frac):
    p.add_argument("--pairs", help="preference pairs: a JSONL file (hh-rlhf, TRL prompt/chosen/rejected) or 'hh-rlhf'")
    p.add_argument("--steps", type=int, help="optimizer steps (default: one pass over the training pairs)")
    p.add_argument("--batch-size", type=int, default=16, help="pairs per step (default 16)")
    p.add_argument("--device-batch-size", type=int, default=8, help="pairs per forward pass (default 8)")
    p.add_argument("--max-seq-len", type=int, help="context in tokens (default the model's); longer pairs are skipped")
    p.add_argument("--lr-frac", type=float, default=lr_frac,
                   help=f"learning rates as a fraction of pretraining's (default {lr_frac})")
    p.add_argument("--val-frac", type=float, default=0.1, help="share of pairs held out (default 0.1)")
    p.add_argument("--max-val", type=int, default=256, help="at most this many held out (default 256)")
    p.add_argument("--limit", type=int, help="read at most this many pairs")
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--device", help="cpu, cuda, ... (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")


def register(sub):
    p = sub.add_parser("rm", help="train a reward model on preference pairs, or score with one",
                       description="Bradley-Terry reward model: the base/SFT run's Transformer with a scalar head.")
    p.add_argument("action", nargs="*", metavar="score|winrate RM_RUN",
                   help="score with a trained reward model, or judge two runs' replies with it")
    p.add_argument("--base", help="base or SFT run to start from")
    p.add_argument("--out", help="reward-model run directory to write")
    p.add_argument("--half", type=int, choices=[0, 1],
                   help="train on one of two disjoint halves of the training pairs (a held-out judge uses the other)")
    p.add_argument("--head-lr", type=float, default=1e-3, help="AdamW rate of the score head (default 1e-3)")
    p.add_argument("--conversations", help="with `score`: a {\"messages\": [...]} JSONL file to score")
    p.add_argument("--a", help="with `winrate`: the run whose replies are compared (e.g. the DPO run)")
    p.add_argument("--b", help="with `winrate`: the run it is compared against (e.g. the SFT run)")
    p.add_argument("--n", type=int, default=64, help="with `winrate`: held-out prompts (default 64)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="with `winrate`: reply length cap (default 128)")
    _common(p, 0.02)
    p.set_defaults(func=_rm, _parser=p)

    p = sub.add_parser("dpo", help="Direct Preference Optimization of an SFT run on preference pairs",
                       description="DPO: beta-scaled log-ratio margin loss against the frozen SFT model.")
    p.add_argument("--base", required=True, help="SFT run (the policy's start and the frozen reference)")
    p.add_argument("--out", required=True, help="DPO run directory to write")
    p.add_argument("--beta", type=float, default=0.1, help="KL strength: reward = beta * log-ratio (default 0.1)")
    p.add_argument("--ref", default="precompute", choices=["precompute", "online"],
                   help="reference log-probs: once before training (default) or every step")
    p.add_argument("--compile", action="store_true", help="torch.compile the policy's blocks (GPU)")
    p.add_argument("--optimizer", default="muon", choices=["muon", "adamw"],
                   help="muon: Muon on the hidden matrices + AdamW (default, as pretraining and SFT); adamw: "
                        "AdamW on everything (TRL's choice; a cheaper step at small batches)")
    p.add_argument("--shared-prompt", action=argparse.BooleanOptionalAction, default=None,
                   help="one row per pair, its prompt read once and a mask keeping the replies apart (same "
                        "log-probs, fewer tokens), or --no-shared-prompt: one row per side, the prompt read twice "
                        "(TRL's layout). Default: shared on a CPU, two rows on a GPU (where the mask costs the "
                        "flash-attention kernel more than the fewer tokens save)")
    _common(p, 0.01)
    p.set_defaults(func=_dpo, _parser=p)
