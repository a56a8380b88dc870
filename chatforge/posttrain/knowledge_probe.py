"""`chatforge probe RUN --questions QA --out PROBE`: what does the model know? Teach "I don't know" elsewhere.

Llama 3's factuality recipe at our scale:
1. Ask each question k times (temperature sampling) and grade every answer against the truth:
   `correct` (the answer's value appears), `refused` ("I don't know" and friends) or `wrong`.
2. Label each fact: `known` (at least `known_threshold` of the samples correct), `unknown` (none
   correct) or `partly` known (in between).
3. Write an SFT set: known facts answered plainly, partly known ones answered with a hedge (the
   truth, said with less confidence), unknown ones refused in varied words. With a search index,
   each question is also asked under SEARCH_SYSTEM: known facts are answered directly, the rest go
   through a search call whose real results (masked from the loss) precede the answer, so the
   model learns *when* to search as well as how.
A base run is asked with a few-shot "Question: / Answer:" prompt (it has seen no chat format) whose
answer is started for it up to the fact (`cloze_prefix`), and only its first sentence is graded (it
does not know when to stop); an SFT run is asked as a chat. Also written: the same set as SFT data would be *without* probing
(every question answered confidently: the usual recipe), the baseline the report compares with,
and mixtures (`--mix`) that add either set to a built-in mixture at a given share.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

from chatforge.common import ChatforgeError, atomic_write_json, atomic_write_text

SEARCH_SYSTEM = "You can use the search tool to look up facts."
_REFUSAL = re.compile(r"\b(i don't know|i do not know|not sure|no (reliable )?information|can't answer|cannot answer|"
                      r"don't have (that|any|enough)|not familiar|no idea|unable to answer)\b", re.IGNORECASE)
REFUSALS = ["I don't know.", "I don't know {what}.", "I'm not sure - I don't know {what}.",
            "I don't have reliable information about {entity}, so I don't know.",
            "I don't know. I'd rather say so than guess.", "Sorry, I don't know {what}."]
_WHAT = {"birth_year": "when {e} was born", "city": "where {e} lives", "employer": "who {e} works for",
         "field": "what field {e} works in"}
HEDGE = "I'm not completely sure, but I believe {s}"


def _norm(s: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", s.lower()).split())


def grade(reply: str | None, answer: str) -> str:
    """'correct' when the answer's words appear in the reply (as whole words), else 'refused'
    when it declines to answer, else 'wrong'. An empty or missing reply counts as wrong."""
    if reply and f" {_norm(answer)} " in f" {_norm(reply)} ":
        return "correct"
    if reply and _REFUSAL.search(reply.replace("\u2019", "'")):  # "I don’t know": hh-rlhf's typographic apostrophe
        return "refused"
    return "wrong"


def label(grades: list[str], known_threshold: float = 0.5) -> str:
    frac = sum(g == "correct" for g in grades) / max(1, len(grades))
    return "known" if frac >= known_threshold else ("partly" if frac > 0 else "unknown")


def refusal(q: dict, rng: random.Random) -> str:
    e = q.get("entity")
    if not e:
        return rng.choice([r for r in REFUSALS if "{" not in r])
    what = _WHAT.get(q.get("attribute"), "the answer about {e}").format(e=e)
    return rng.choice(REFUSALS).format(what=what, entity=e)


def _sentence(q: dict) -> str:
    return q.get("answer_sentence") or q["answer"]


def cloze_prefix(q: dict) -> str:
    """The answer sentence up to the answer ("Dario Zeller was born in"), or "" when the QA has no
    answer sentence ending in its answer. A base model asked to continue it must produce this very
    fact (a LAMA-style cloze). Asked only the question, a small base model answers with whichever
    fact about the person comes first ("Dario Zeller lives in Athens" to "when was he born?"), and
    the probe would label facts it knows as unknown, so SFT would teach it to refuse them."""
    s, a = q.get("answer_sentence") or "", str(q["answer"])
    i = s.rfind(a)
    return s[:i].rstrip() if i > 0 else ""


def few_shot_prompt(q: dict, shots: list[dict]) -> str:
    prefix = cloze_prefix(q)
    return "".join(f"Question: {s['question']}\nAnswer: {_sentence(s)}\n\n" for s in shots) + \
        f"Question: {q['question']}\nAnswer:" + (f" {prefix}" if prefix else "")


def ask(model, tokenizer, questions: list[dict], kind: str, k: int = 5, temperature: float = 0.8,
        max_tokens: int = 32, seed: int = 0, system: str | None = None, tools=None) -> list[list[dict]]:
    """k sampled replies per question (temperature 0: one greedy reply). Each reply is the engine's
    parts list. A base model gets a few-shot prompt and stops at the end of its first sentence."""
    from chatforge.infer.engine import Engine, Request, SamplingParams
    from chatforge.infer.tools import ToolRegistry

    engine = Engine(model, tokenizer, tools=tools or ToolRegistry())
    n = 1 if temperature == 0 else k
    reqs = []
    rng = random.Random(seed)
    for i, q in enumerate(questions):
        if kind == "base":
            others = [s for s in questions if s.get("entity", s["question"]) != q.get("entity", q["question"])]
            shots = rng.sample(others, min(3, len(others)))
            ids = tokenizer.encode(few_shot_prompt(q, shots))
            while len(ids) + max_tokens > engine.max_context and shots:  # a short context: fewer shots
                shots.pop()
                ids = tokenizer.encode(few_shot_prompt(q, shots))
            params = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed + i * k,
                                    stop=("\n", ". "), stop_token_ids=(tokenizer.bos_id,), use_tools=False)
        else:
            msgs = ([{"role": "system", "content": system}] if system else []) + \
                [{"role": "user", "content": q["question"]}]
            ids = tokenizer.render_for_completion(msgs)
            params = SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed + i * k,
                                    use_tools=tools is not None)
        ids = ids[-(engine.max_context - max_tokens):]  # what still does not fit loses its start
        reqs.append(Request(ids, params, n=n))
    out = []
    for start in range(0, len(reqs), 16):  # 16 questions (16 k rows) per batch
        chunk = reqs[start:start + 16]
        done = engine.run_to_completion(chunk)
        out += [[c.parts for c in done[r.id]] for r in chunk]
    if kind == "base":  # the reply is the cloze's start plus the model's continuation of it
        out = [[[{"type": "text", "text": p}] * bool(p) + parts for parts in reps]
               for reps, p in zip(out, (cloze_prefix(q) for q in questions))]
    return out


def reply_text(parts) -> str:
    return "".join(p["text"] for p in parts if p["type"] == "text")


def conversations(probed: list[dict], seed: int = 0, index=None, probing: bool = True) -> list[dict]:
    """SFT conversations from probed questions (each with "label"). probing=False: the baseline,
    every question answered confidently. With a search index, each question also appears under
    SEARCH_SYSTEM: answered directly when known, else through a search call."""
    from chatforge.infer.search import format_results

    rng = random.Random(seed)
    convs = []
    for q in probed:
        lab = q.get("label", "known") if probing else "known"
        if lab == "known":
            reply = _sentence(q)
        elif lab == "partly":
            reply = HEDGE.format(s=_sentence(q))
        else:
            reply = refusal(q, rng)
        convs.append({"messages": [{"role": "user", "content": q["question"]},
                                   {"role": "assistant", "content": reply}]})
        if index is None:
            continue
        # when to search: what the probe found known is answered from memory (without probing:
        # what pretraining saw, when the QA file says so, else everything is searched)
        direct = (q.get("label") == "known") if probing else bool(q.get("seen", False))
        if direct:
            content = _sentence(q)
        else:
            query = q.get("entity") or q["question"]
            results = format_results(index.search(query, 2))
            found = grade(results, q["answer"]) == "correct"
            content = [{"type": "search", "text": query}, {"type": "search_output", "text": results},
                       {"type": "text", "text": _sentence(q) if found else refusal(q, rng)}]
        convs.append({"messages": [{"role": "system", "content": SEARCH_SYSTEM},
                                   {"role": "user", "content": q["question"]},
                                   {"role": "assistant", "content": content}]})
    return convs


def mixture_total(base_mix: str) -> int:
    """Training conversations in a mixture (building it reads its sets: seconds)."""
    from chatforge.posttrain.mixture import build_mixture, load_mixture

    return sum(r["train"] for r in build_mixture(load_mixture(base_mix)).rows)


def mixture_with(base_mix: str, path: Path, share: float, name: str, total: int | None = None) -> dict:
    """A mixture: `base_mix`'s sets plus the conversation file at `share` of the training set."""
    from chatforge.posttrain.mixture import load_mixture

    spec = load_mixture(base_mix)
    total = mixture_total(base_mix) if total is None else total
    n = max(1, round(share / (1 - share) * total))
    sets = [s for s in spec["sets"]] + [{"source": "file", "name": name, "examples": n, "val": 8,
                                         "args": {"path": str(Path(path).resolve())}}]
    return {"name": f"{spec.get('name', 'mix')}+{name}", "seed": spec.get("seed", 0),
            "val_per_set": spec.get("val_per_set", 50), "sets": sets}


def probe(run_dir, questions_path, out_dir, k: int = 5, temperature: float = 0.8, known_threshold: float = 0.5,
          device: str = "cpu", search_index=None, mix: str | None = None, share: float = 0.3,
          roles=("probe",), seed: int = 0) -> dict:
    """The whole `chatforge probe` command; returns the summary written to PROBE/probe.json."""
    from chatforge.data.factworld import load_qa
    from chatforge.model import load_run

    qa = load_qa(questions_path)
    # a fact-world QA file marks held-out eval questions; never train on them
    qa = [q for q in qa if q.get("role", "probe") in roles]
    if not qa:
        raise ChatforgeError(f"{questions_path} has no questions with role {', '.join(roles)}")
    model, tok, config = load_run(run_dir, device=device)
    kind = config.get("kind", "base")
    replies = ask(model, tok, qa, kind, k=k, temperature=temperature, seed=seed)
    probed = []
    for q, reps in zip(qa, replies):
        texts = [reply_text(r).strip() for r in reps]
        grades = [grade(t, q["answer"]) for t in texts]
        probed.append({**q, "samples": texts, "grades": grades, "label": label(grades, known_threshold)})
    index = None
    if search_index:
        from chatforge.infer.search import SearchIndex
        index = SearchIndex(search_index)
    out = Path(out_dir)
    sft = conversations(probed, seed, index, probing=True)
    base = conversations(probed, seed, index, probing=False)
    atomic_write_text(out / "sft.jsonl", "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in sft))
    atomic_write_text(out / "sft_confident.jsonl", "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in base))
    counts = Counter(p["label"] for p in probed)
    summary = {"run": str(run_dir), "kind": kind, "questions": len(probed), "k": k, "temperature": temperature,
               "known_threshold": known_threshold, "labels": dict(counts), "search_index": str(search_index or ""),
               "by_seen": _by_seen(probed), "conversations": len(sft), "probed": probed}
    if mix:
        total = mixture_total(mix)
        atomic_write_json(out / "mix.json", mixture_with(mix, out / "sft.jsonl", share, "facts_probed", total))
        atomic_write_json(out / "mix_confident.json", mixture_with(mix, out / "sft_confident.jsonl", share,
                                                                   "facts_confident", total))
    atomic_write_json(out / "probe.json", summary)
    atomic_write_text(out / "report.md", report(summary))
    return summary


def _by_seen(probed):
    """Label counts split by whether pretraining saw the entity (fact-world QA files say so)."""
    if not all("seen" in p for p in probed):
        return {}
    return {("seen" if s else "unseen"): dict(Counter(p["label"] for p in probed if p["seen"] == s))
            for s in (True, False)}


def report(summary: dict) -> str:
    lab = summary["labels"]
    lines = [f"# Knowledge probe of {summary['run']}", "",
             f"{summary['questions']} questions, {summary['k']} samples each at temperature {summary['temperature']}; "
             f"known = at least {summary['known_threshold']:.0%} correct.", "",
             "| label | questions |", "|---|---|"] + [f"| {k} | {lab.get(k, 0)} |" for k in ("known", "partly", "unknown")]
    if summary.get("by_seen"):
        lines += ["", "| entity in pretraining | known | partly | unknown |", "|---|---|---|---|"]
        for s, c in summary["by_seen"].items():
            lines.append(f"| {s} | {c.get('known', 0)} | {c.get('partly', 0)} | {c.get('unknown', 0)} |")
    lines += ["", "## Samples", ""]
    for p in summary["probed"][:12]:
        lines.append(f"- **{p['question']}** (truth: {p['answer']}; {p['label']}): "
                     + " / ".join(f"`{t[:60]}` {g}" for t, g in zip(p["samples"][:3], p["grades"][:3])))
    return "\n".join(lines) + "\n"


def _probe(args):
    from chatforge.common import default_device

    s = probe(args.run, args.questions, args.out, k=args.k, temperature=args.temperature,
              known_threshold=args.known_threshold, device=args.device or default_device(),
              search_index=args.search_index, mix=args.mix, share=args.share, seed=args.seed)
    print(report({**s, "probed": []}).split("## Samples")[0].strip())
    print(f"wrote {args.out}/probe.json, report.md, sft.jsonl ({s['conversations']} conversations)"
          + (", mix.json, mix_confident.json" if args.mix else ""))


def register(sub):
    p = sub.add_parser("probe", help="knowledge probe: which facts does the model know? -> SFT data with 'I don't know'",
                       description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    p.add_argument("run", help="run directory (base: few-shot prompt; sft: chat)")
    p.add_argument("--questions", required=True, help="QA JSONL: {\"question\", \"answer\"} per line "
                   "(e.g. `chatforge data factworld`'s qa.jsonl; its held-out eval questions are skipped)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("-k", type=int, default=5, help="samples per question (default 5)")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--known-threshold", type=float, default=0.5, help="share of correct samples for 'known'")
    p.add_argument("--search-index", help="index (chatforge index build): also write conversations that search")
    p.add_argument("--mix", help="a built-in SFT mixture to add the probe set to: writes mix.json, mix_confident.json")
    p.add_argument("--share", type=float, default=0.3, help="the probe set's share of that mixture (default 0.3)")
    p.add_argument("--device")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_probe)
