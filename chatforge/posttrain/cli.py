"""`chatforge sft`: supervised fine-tuning of a base run on a conversation mixture.

Heavy imports (torch) stay inside the handler so `chatforge --help` is instant.
"""

from __future__ import annotations


def _sft(args):
    from chatforge.posttrain.mixture import MIXTURES, build_mixture, format_mixture_table, load_mixture

    if args.list_mixtures:
        import json

        from chatforge.common import ChatforgeError

        for name in MIXTURES:
            print(f"== {name}")
            try:
                print(format_mixture_table(build_mixture(load_mixture(name))))
            except ChatforgeError as e:  # e.g. ../shared/data absent: show the spec and why
                print(json.dumps(MIXTURES[name], indent=1))
                print(f"  (not built: {e})")
        return 0
    if args.probe:
        from chatforge.posttrain.probes import run_probes

        run_probes(args.probe, device=args.device or _default_device(), write=False)
        return 0
    from chatforge.common import ChatforgeError

    if not args.base or not args.out:
        raise ChatforgeError("chatforge sft needs --base RUN and --out SFT_RUN (or --list-mixtures / --probe RUN)")
    if args.dry_run:
        print(format_mixture_table(build_mixture(load_mixture(args.mix))))
        return 0
    from chatforge.posttrain.sft import SFTConfig, run_sft

    cfg = SFTConfig(base=args.base, out=args.out, mix=args.mix, steps=args.steps, batch_size=args.batch_size,
                    device_batch_size=args.device_batch_size, max_seq_len=args.max_seq_len, lr_frac=args.lr_frac,
                    schedule=args.schedule, warmup_steps=args.warmup_steps, use_muon=not args.adamw_only,
                    eval_every=args.eval_every, save_every=args.save_every, log_every=args.log_every,
                    device=args.device, seed=args.seed, resume=args.resume, compile=args.compile,
                    probes=not args.no_probes, name=args.name, creator=args.creator)
    run_sft(cfg)
    return 0


def _default_device():
    from chatforge.common import default_device

    return default_device()


def register(sub):
    p = sub.add_parser(
        "sft", help="supervised fine-tuning on conversations",
        description="Fine-tune a base run on a conversation mixture (loss on assistant tokens only) "
                    "into a chat run that chat/serve/eval load.")
    p.add_argument("--base", help="base run directory (from `chatforge train`)")
    p.add_argument("--mix", default="default",
                   help="mixture: a built-in name (default, tiny, synthetic), or a .json / .py file (default: default)")
    p.add_argument("--out", help="SFT run directory to write")
    p.add_argument("--steps", type=int, help="optimizer steps (default: one pass over the mixture)")
    p.add_argument("--batch-size", type=int, default=32, help="conversations per step (default 32)")
    p.add_argument("--device-batch-size", type=int, default=8,
                   help="conversations per forward pass; the rest is gradient accumulation (default 8)")
    p.add_argument("--max-seq-len", type=int, help="context in tokens (default: the base model's); longer conversations are cut")
    p.add_argument("--lr-frac", "--lr", dest="lr_frac", type=float, default=0.02,
                   help="learning rates as a fraction of pretraining's (default 0.02)")
    p.add_argument("--schedule", default="linear", choices=["linear", "wsd", "cosine", "constant"],
                   help="LR schedule (default linear decay to 0)")
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--adamw-only", action="store_true", help="AdamW for every weight (no Muon)")
    p.add_argument("--eval-every", type=int, default=100, help="steps between validation passes (0: start and end only)")
    p.add_argument("--save-every", type=int, default=200, help="steps between checkpoints (0: none until the end)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (GPU)")
    p.add_argument("--name", help="the assistant's name the identity conversations teach (default chatforge)")
    p.add_argument("--creator", help="who made it, for the identity conversations (default: the chatforge project)")
    p.add_argument("--no-probes", action="store_true", help="skip the 10 chat probes at the end")
    p.add_argument("--dry-run", action="store_true", help="build and print the mixture, then stop")
    p.add_argument("--list-mixtures", action="store_true", help="print every built-in mixture's table")
    p.add_argument("--probe", metavar="RUN", help="only answer the 10 chat probes with RUN's model (base or sft)")
    p.set_defaults(func=_sft, _parser=p)
    _register_rl(sub)

    from chatforge.posttrain.pref_cli import register as register_preference

    register_preference(sub)  # chatforge rm, chatforge dpo


def _rl(args):
    from chatforge.posttrain.rl import RLConfig, run_rl

    # KL to the SFT model: on by default against a learned reward (RLHF), off against a verifier
    kl = args.kl if args.kl is not None else (0.05 if args.reward.startswith("rm:") else 0.0)
    cfg = RLConfig(base=args.base, out=args.out, task=args.task, reward=args.reward, steps=args.steps,
                   prompts=args.prompts, group=args.group, max_new_tokens=args.max_new_tokens,
                   temperature=args.temperature, top_k=args.top_k or None, lr_frac=args.lr_frac,
                   use_muon=not args.adamw_only, updates=args.updates, clip=args.clip, kl=kl,
                   std_norm=args.std_norm, device_batch_size=args.device_batch_size, eval_every=args.eval_every,
                   eval_problems=args.eval_problems, pass_k=args.pass_k, save_every=args.save_every,
                   tools=not args.no_tools, device=args.device, seed=args.seed, resume=args.resume,
                   snapshots=args.snapshots)
    if args.judge:  # RLHF with the reward-hacking guard (posttrain/guard.py)
        from chatforge.posttrain.guard import run_guarded

        run_guarded(cfg, args.judge, args.guard_patience)
    else:
        run_rl(cfg)
    return 0


def _register_rl(sub):
    p = sub.add_parser(
        "rl", help="reinforcement learning (GRPO) on problems with checkable answers",
        description="GRPO from a chat run: per problem a group of samples from the engine (python tool on), "
                    "rewards from a verifier (or a reward model), a policy-gradient step on the sampled tokens.")
    p.add_argument("--base", required=True, help="the chat run to start from (from `chatforge sft`)")
    p.add_argument("--task", default="arithmetic",
                   help="gsm8k | arithmetic[:LEVEL 0-4] | jsonl:PATH (prompt, answer, verifier per line) (default arithmetic)")
    p.add_argument("--out", required=True, help="RL run directory to write")
    p.add_argument("--reward", default="verifier", help="verifier (default) | rm:RM_RUN (a trained reward model)")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--prompts", type=int, default=8, help="problems per step (default 8)")
    p.add_argument("--group", type=int, default=8, help="samples per problem, G (default 8)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="tokens a sample may write (tool output not counted)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=50, help="0: no top-k cut (default 50)")
    p.add_argument("--lr-frac", "--lr", dest="lr_frac", type=float, default=0.05,
                   help="learning rates as a fraction of pretraining's (default 0.05)")
    p.add_argument("--adamw-only", action="store_true", help="AdamW for every weight (no Muon)")
    p.add_argument("--updates", type=int, default=1, help="gradient updates per batch; > 1 clips the ratio (default 1)")
    p.add_argument("--clip", type=float, default=0.2, help="PPO ratio clip with --updates > 1 (default 0.2)")
    p.add_argument("--kl", type=float, default=None,
                   help="KL-to-reference coefficient (default: 0.05 with --reward rm:, else 0, logged only)")
    p.add_argument("--judge", metavar="JUDGE_RUN",
                   help="with --reward rm:RM_RUN: a reward model trained on the other half of the pairs "
                        "(`chatforge rm --half 1`); the guard stops the run when the reward rises while it falls")
    p.add_argument("--guard-patience", type=int, default=3,
                   help="evaluations in a row with the judge below its best and the reward above its value there, before the guard stops (default 3)")
    p.add_argument("--std-norm", action="store_true", help="divide advantages by the group's std")
    p.add_argument("--device-batch-size", type=int, default=32, help="rollouts per forward/backward (default 32)")
    p.add_argument("--eval-every", type=int, default=10, help="steps between held-out evaluations (0: start and end)")
    p.add_argument("--eval-problems", type=int, default=200, help="held-out problems (0: all)")
    p.add_argument("--pass-k", type=int, default=4, help="samples per held-out problem for pass@k (default 4)")
    p.add_argument("--save-every", type=int, default=50, help="steps between checkpoints (0: only the end)")
    p.add_argument("--no-tools", action="store_true", help="no python tool in rollouts")
    p.add_argument("--snapshots", action="store_true", help="save weights at each evaluation (OUT/snapshots/)")
    p.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint")
    p.set_defaults(func=_rl, _parser=p)
