"""`chatforge speedrun`: the whole pipeline in one resumable command (see pipeline/speedrun.py)."""

from __future__ import annotations


def _speedrun(args):
    from chatforge.pipeline.presets import get_preset
    from chatforge.pipeline.speedrun import speedrun

    from chatforge.common import ChatforgeError

    preset = get_preset("smoke" if args.smoke else args.preset, nproc=args.nproc, train_tokens=args.train_tokens,
                        sft_steps=args.sft_steps, batch_tokens=args.batch_tokens, max_epochs=args.max_epochs,
                        facts_share=args.facts_share, rl_steps=args.rl_steps, dpo_steps=args.dpo_steps)
    out = args.out or f"runs/{preset.name}"
    compare = {}
    for item in args.compare or []:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ChatforgeError(f"--compare wants NAME=DIR (a directory with base.json/sft.json), got {item!r}")
        compare[name] = path
    speedrun(preset, out, inputs=args.inputs, device=args.device, time_limit=args.time_limit,
             until=args.until, dry_run=args.dry_run, compare=compare, start_from=args.start_from)


def register(sub):
    from chatforge.pipeline.presets import PRESETS

    p = sub.add_parser("speedrun", help="the whole pipeline in one command: raw text -> chat model + report",
                       description="data -> tokenizer -> pretrain -> SFT -> eval -> DIR/report.md; "
                                   "rerun the same command to resume after a kill")
    p.add_argument("--preset", default="cpu-tiny", choices=list(PRESETS),
                   help="cpu-tiny (default; 2 CPU cores, offline, <= 15 min), gpu-d12 (one H100), gpu-d20 (8 GPUs)")
    p.add_argument("--out", help="run directory (default runs/<preset>)")
    p.add_argument("--smoke", action="store_true", help="a much smaller variant for CI (about a minute)")
    p.add_argument("--inputs", nargs="+", help="raw inputs instead of the preset's (files, dirs, globs)")
    p.add_argument("--device", help="cpu / cuda (default: the preset's, else cuda when present)")
    p.add_argument("--time-limit", type=float, help="seconds; stop (resumably) when reached, e.g. 500 for a "
                   "chain of < 9-minute calls")
    p.add_argument("--until", help="stop after this stage (data, tokenizer, tokenize, pretrain, sft, eval-base, eval-sft)")
    p.add_argument("--nproc", type=int, help="GPUs to train on (torchrun when > 1; default: the preset's)")
    p.add_argument("--train-tokens", type=int, help="pretraining token budget (default: the preset's)")
    p.add_argument("--facts-share", type=float, help="the fact world's share of pretraining text "
                   "(0 = no factuality stages; default: the preset's)")
    p.add_argument("--sft-steps", type=int, help="SFT steps (default: the preset's)")
    p.add_argument("--rl-steps", type=int, help="GRPO steps after SFT (0 = no RL stage; default: the preset's)")
    p.add_argument("--dpo-steps", type=int, help="DPO steps after SFT (0 = no DPO stage; default: the preset's)")
    p.add_argument("--batch-tokens", type=int, help="pretraining tokens per optimizer step (default: the preset's)")
    p.add_argument("--max-epochs", type=float, help="cap pretraining at this many passes over the corpus "
                   "(default: the preset's)")
    p.add_argument("--from", dest="start_from", metavar="STAGE",
                   help="take the outputs of the stages before STAGE as given (e.g. built on another machine "
                        "with --until tokenize and copied here)")
    p.add_argument("--dry-run", action="store_true", help="print the stage commands without running them")
    p.add_argument("--compare", action="append", metavar="NAME=DIR",
                   help="add another run's eval results (DIR/base.json, DIR/sft.json) as columns of the report's "
                        "table, e.g. cpu-tiny=docs/example-report")
    p.set_defaults(func=_speedrun)
