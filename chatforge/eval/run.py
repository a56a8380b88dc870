"""`chatforge eval RUN`: run a set of evaluations on one run directory -> JSON + a table.

Tasks:
  bpb          bits per byte on held-out text (WikiText-2 test, or --bpb-text FILE)
  t0_mc        multiple choice from the T0 classification families held out of SFT
  hellaswag / arc / mmlu   multiple choice from files in those formats (--hellaswag/--arc/--mmlu PATH)
  gsm8k        GSM8K test accuracy, python tool off;  gsm8k_tools: the same with the tool on
  humaneval    HumanEval pass@1 (greedy), tests run in the python sandbox
  probes       chat probes from ../shared/data/chat-eval: prompt -> answer table
  facts        held-out fact questions (--facts QA): accuracy, refusals, confident-wrong, with search
               (--search-index INDEX) and without; added to the defaults when --facts is given
Base runs default to the likelihood tasks; chat (sft) runs add the generative ones.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from chatforge.common import ChatforgeError, atomic_write_json

LIKELIHOOD_TASKS = ["bpb", "t0_mc", "hellaswag", "arc", "mmlu"]
GENERATIVE_TASKS = ["gsm8k", "gsm8k_tools", "humaneval", "probes", "facts"]
ALL_TASKS = LIKELIHOOD_TASKS + GENERATIVE_TASKS
DEFAULT_BASE = ["bpb", "t0_mc"]
DEFAULT_CHAT = ["bpb", "t0_mc", "gsm8k", "gsm8k_tools", "humaneval", "probes"]

# per-task example caps; None = the whole set. CPU runs pass small numbers.
DEFAULT_LIMITS = {"bpb": None, "t0_mc": 1000, "hellaswag": None, "arc": None, "mmlu": None,
                  "gsm8k": None, "gsm8k_tools": None, "humaneval": None, "probes": 10, "facts": None}


def parse_tasks(spec: str | None, kind: str) -> list[str]:
    if not spec:
        return list(DEFAULT_CHAT if kind in ("sft", "rl") else DEFAULT_BASE)
    tasks = [t.strip() for t in spec.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in ALL_TASKS]
    if unknown:
        raise ChatforgeError(f"unknown eval task(s) {', '.join(unknown)}; choose from {', '.join(ALL_TASKS)}")
    return tasks


def make_chat(model, tokenizer, seed=0):
    """The chat callable the generative tasks use: the inference engine, greedy, one batched
    generation per call. A prompt that leaves no room in the context gets None (scored as wrong)."""
    from chatforge.infer.engine import Engine, Request, SamplingParams
    from chatforge.infer.tools import default_tools

    engine = Engine(model, tokenizer, tools=default_tools())

    def chat(conversations, max_new_tokens=256, tools=True):
        replies = [None] * len(conversations)
        requests = {}
        for i, messages in enumerate(conversations):
            ids = tokenizer.render_for_completion(messages)
            room = engine.max_context - len(ids) - 1
            if room < 8:
                continue
            params = SamplingParams(max_tokens=min(max_new_tokens, room), temperature=0.0, seed=seed, use_tools=tools)
            requests[i] = Request(ids, params)
        if requests:
            done = engine.run_to_completion(list(requests.values()))
            for i, req in requests.items():
                replies[i] = done[req.id][0].parts
        return replies

    return chat


class _Progress:
    """tqdm over one task's examples; silent when quiet."""

    def __init__(self, name, total, quiet):
        self.bar = None
        if not quiet:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=f"eval {name}", unit="ex", leave=False, dynamic_ncols=True)

    def __call__(self, n):
        if self.bar is not None:
            self.bar.update(n)

    def close(self):
        if self.bar is not None:
            self.bar.close()


def evaluate(run_dir, tasks=None, limits=None, device="cpu", paths=None, quiet=False, model_bundle=None) -> dict:
    """Run `tasks` on the run directory; returns the results dict (also what RUN/eval.json holds)."""
    from chatforge.eval import generative as gen
    from chatforge.eval.bpb import bits_per_byte, text_documents, wikitext_articles
    from chatforge.eval.multiple_choice import evaluate_mc, load_arc, load_hellaswag, load_mmlu
    from chatforge.eval.t0_mc import load_t0_mc

    paths = paths or {}
    if model_bundle is None:
        from chatforge.model import load_run

        model, tokenizer, config = load_run(run_dir, device=device)
    else:
        model, tokenizer, config = model_bundle
    if tokenizer is None:
        raise ChatforgeError(f"{run_dir} has no tokenizer/ directory; it cannot be evaluated")
    kind = config.get("kind", "base")
    explicit = bool(tasks)
    tasks = parse_tasks(",".join(tasks) if isinstance(tasks, list) else tasks, kind)
    if paths.get("facts") and not explicit and "facts" not in tasks:
        tasks.append("facts")
    lim = {**DEFAULT_LIMITS, **{k: v for k, v in (limits or {}).items() if v is not None}}
    # 0 means "all" on the command line
    lim = {k: (None if v == 0 else v) for k, v in lim.items()}

    results = {"run": str(run_dir), "kind": kind, "step": config.get("step"), "device": device,
               "tasks": {}, "seconds": {}}
    chat = None
    gen_batch = 64 if str(device).startswith("cuda") else 16  # conversations generated together
    for task in tasks:
        t0 = time.time()
        if task == "bpb":
            docs = text_documents(paths["bpb_text"]) if paths.get("bpb_text") else wikitext_articles()
            max_tokens = lim["bpb"]
            prog = _Progress(task, max_tokens, quiet)
            r = bits_per_byte(model, tokenizer, docs, device=device, max_tokens=max_tokens, progress=prog)
            r["text"] = str(paths.get("bpb_text") or "WikiText-2 test")
        elif task in ("t0_mc", "hellaswag", "arc", "mmlu"):
            if task == "t0_mc":
                examples, info = load_t0_mc(limit=lim[task])
            else:
                if not paths.get(task):
                    raise ChatforgeError(f"task {task} needs its data file: pass --{task} PATH "
                                         "(these sets are not in ../shared/data)")
                loader = {"hellaswag": load_hellaswag, "arc": load_arc, "mmlu": load_mmlu}[task]
                examples, info = loader(paths[task], limit=lim[task]), {}
            prog = _Progress(task, sum(len(e.choices) for e in examples), quiet)
            r = {**evaluate_mc(model, tokenizer, examples, device=device, progress=prog), **info}
        elif task == "facts":
            from chatforge.eval.facts import eval_facts, load_eval_questions

            if not paths.get("facts"):
                raise ChatforgeError("task facts needs a QA file: pass --facts QA (e.g. the qa.jsonl of "
                                     "`chatforge data factworld`)")
            questions = load_eval_questions(paths["facts"], lim[task])
            prog = _Progress(task, len(questions), quiet)
            r = eval_facts(model, tokenizer, kind, questions, search_index=paths.get("search_index"), progress=prog)
        else:
            if chat is None:
                chat = make_chat(model, tokenizer)
            if task in ("gsm8k", "gsm8k_tools"):
                problems = gen.load_gsm8k(limit=lim[task])
                prog = _Progress(task, len(problems), quiet)
                r = gen.eval_gsm8k(chat, problems, tools=(task == "gsm8k_tools"), progress=prog, batch_size=gen_batch)
            elif task == "humaneval":
                problems = gen.load_humaneval(limit=lim[task])
                prog = _Progress(task, len(problems), quiet)
                r = gen.eval_humaneval(chat, problems, progress=prog, batch_size=gen_batch)
            else:
                probes = gen.load_chat_probes(limit=lim[task])
                prog = _Progress(task, len(probes), quiet)
                r = {"n": len(probes), "answers": gen.run_chat_probes(chat, probes, progress=prog, batch_size=gen_batch)}
        prog.close()
        results["tasks"][task] = r
        results["seconds"][task] = round(time.time() - t0, 2)
        if not quiet:
            print(f"eval {task}: {headline(task, r)} ({results['seconds'][task]:.1f}s)", flush=True)
    return results


# which number stands for each task in tables
HEADLINE = {"bpb": ("bpb", "lower is better"), "t0_mc": ("acc_norm", ""), "hellaswag": ("acc_norm", ""),
            "arc": ("acc_norm", ""), "mmlu": ("acc", ""), "gsm8k": ("acc", ""), "gsm8k_tools": ("acc", ""),
            "humaneval": ("pass@1", ""), "probes": ("n", "answers in the report"),
            "facts": ("confident_wrong", "lower is better")}


def headline(task: str, r: dict) -> str:
    metric = HEADLINE[task][0]
    v = r.get(metric)
    if v is None:
        return f"{metric} n/a"
    return f"{metric} {v:.4f}" if isinstance(v, float) else f"{metric} {v}"


def results_table(columns: dict[str, dict]) -> str:
    """Markdown table: one row per task, one column per results dict (e.g. base, chat)."""
    names = list(columns)
    tasks = [t for t in ALL_TASKS if any(t in (c or {}).get("tasks", {}) for c in columns.values())]
    lines = ["| task | metric | n | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
    for t in tasks:
        metric = HEADLINE[t][0]
        ns, vals = set(), []
        for name in names:
            r = (columns[name] or {}).get("tasks", {}).get(t)
            if r is None:
                vals.append("—")
                continue
            ns.add(r.get("n", r.get("tokens")))
            v = r.get(metric)
            vals.append("n/a" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v)))
        extra = ""
        if t in ("t0_mc", "hellaswag", "arc", "mmlu"):
            any_r = next(((columns[n] or {}).get("tasks", {}).get(t) for n in names
                          if (columns[n] or {}).get("tasks", {}).get(t)), {})
            bits = [f"chance {any_r['chance']:.3f}"] if any_r.get("chance") is not None else []
            if any_r.get("majority_baseline") is not None:
                bits.append(f"majority {any_r['majority_baseline']:.3f}")
            extra = f" ({', '.join(bits)})" if bits else ""
        n_txt = "/".join(str(n) for n in sorted(ns, key=str)) if ns else ""
        lines.append(f"| {t} | {metric}{extra} | {n_txt} | " + " | ".join(vals) + " |")
    return "\n".join(lines)


def write_results(results: dict, out_path) -> Path:
    out_path = Path(out_path)
    atomic_write_json(out_path, results)
    return out_path


def load_results(path) -> dict | None:
    p = Path(path)
    return json.loads(p.read_text()) if p.is_file() else None
