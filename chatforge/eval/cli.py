"""`chatforge eval RUN [--tasks ...]`: evaluations of one run -> RUN/eval.json + a table."""

from __future__ import annotations

from chatforge.common import ChatforgeError
from chatforge.infer.cli import add_unsafe_tool_arg, announce_isolation


def _eval(args):
    from pathlib import Path

    from chatforge.common import default_device
    from chatforge.eval.run import evaluate, results_table, write_results

    run = Path(args.run)
    if not (run / "config.json").is_file():
        raise ChatforgeError(f"{run} is not a run directory (no config.json); pass the output of `chatforge train` or `sft`")
    limits = {"bpb": args.bpb_tokens, "t0_mc": args.limit_mc, "hellaswag": args.limit_mc, "arc": args.limit_mc,
              "mmlu": args.limit_mc, "gsm8k": args.limit_gsm8k, "gsm8k_tools": args.limit_gsm8k,
              "humaneval": args.limit_humaneval, "probes": args.limit_probes, "facts": args.limit_facts}
    paths = {"bpb_text": args.bpb_text, "hellaswag": args.hellaswag, "arc": args.arc, "mmlu": args.mmlu,
             "facts": args.facts, "search_index": args.search_index}
    device = args.device or default_device()
    announce_isolation(args)  # humaneval and gsm8k_tools run model-written code in the sandbox
    results = evaluate(run, tasks=args.tasks, limits=limits, device=device, paths=paths, quiet=args.quiet)
    out = write_results(results, args.out or run / "eval.json")
    print(results_table({run.name: results}))
    print(f"wrote {out}")


def register(sub):
    p = sub.add_parser("eval", help="evaluate a run: bpb, multiple choice, GSM8K, HumanEval, chat probes",
                       description=__doc__)
    p.add_argument("run", help="run directory (base or sft)")
    p.add_argument("--tasks", help="comma list of: bpb, t0_mc, hellaswag, arc, mmlu, gsm8k, gsm8k_tools, "
                   "humaneval, probes, facts (default: bpb,t0_mc for base runs, all available for chat runs)")
    p.add_argument("--out", help="results JSON (default RUN/eval.json)")
    p.add_argument("--device", help="cpu / cuda (default: cuda if available)")
    p.add_argument("--bpb-tokens", type=int, help="cap on tokens scored for bpb (0 = all; default all)")
    p.add_argument("--bpb-text", help="held-out text file instead of WikiText-2 test")
    p.add_argument("--limit-mc", type=int, help="examples per multiple-choice task (0 = all; default 1000 for t0_mc)")
    p.add_argument("--limit-gsm8k", type=int, help="GSM8K problems (0 = all 1319)")
    p.add_argument("--limit-humaneval", type=int, help="HumanEval problems (0 = all 164)")
    p.add_argument("--limit-probes", type=int, help="chat probes (default 10)")
    p.add_argument("--hellaswag", help="HellaSwag jsonl file")
    p.add_argument("--arc", help="ARC jsonl file")
    p.add_argument("--mmlu", help="MMLU csv file or directory")
    p.add_argument("--facts", metavar="QA", help="QA JSONL for the facts task (adds it to the default tasks)")
    p.add_argument("--search-index", help="search index (chatforge index build): facts also measured with search on")
    p.add_argument("--limit-facts", type=int, help="fact questions (default: all held-out ones)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_unsafe_tool_arg(p)
    p.set_defaults(func=_eval)
