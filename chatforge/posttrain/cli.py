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
