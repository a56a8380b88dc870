"""`chatforge eval --tasks facts --facts QA`: does the model answer what it knows, refuse what it
doesn't, and use search well?

Held-out questions only: a fact-world QA file's `eval` questions (entities the probe never saw,
in phrasings SFT never used); a user's QA file without roles is used whole. Each question is asked
once, greedily, and graded like the probe (`knowledge_probe.grade`: correct / refused / wrong):
- acc_seen: correct answers about entities pretraining saw (the model could know them);
- refusal_unseen: "I don't know" about entities it never saw (the right answer without search);
- confident_wrong: wrong answers that were not refusals, over all questions (hallucinations);
- with a search index: the same questions under the search system prompt with the search tool on:
  acc_unseen_search (vs acc_unseen without), acc_seen_search, search_rate.
A base run is asked with the probe's few-shot prompt, a chat run as a chat.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path


def load_eval_questions(path, limit: int | None = None) -> list[dict]:
    from chatforge.data.factworld import load_qa

    qa = load_qa(path)
    held = [q for q in qa if q.get("role") == "eval"] or qa
    return held[:limit] if limit else held


def _rates(rows: list[dict], key: str) -> dict:
    c = Counter(r[key] for r in rows)
    n = max(1, len(rows))
    return {"n": len(rows), "correct": c["correct"] / n, "refused": c["refused"] / n, "wrong": c["wrong"] / n}


def eval_facts(model, tokenizer, kind: str, questions: list[dict], search_index=None, progress=None) -> dict:
    from chatforge.posttrain.knowledge_probe import SEARCH_SYSTEM, ask, grade, reply_text

    replies = ask(model, tokenizer, questions, kind, temperature=0.0)
    rows = []
    for q, reps in zip(questions, replies):
        text = reply_text(reps[0]).strip()
        rows.append({"question": q["question"], "answer": q["answer"], "seen": q.get("seen"), "reply": text,
                     "grade": grade(text, q["answer"])})
    if progress:
        progress(len(questions))
    if search_index and kind != "base":  # a base model has learned no tool calls
        from chatforge.infer.search import search_tool
        from chatforge.infer.tools import ToolRegistry

        tools = ToolRegistry([search_tool(search_index, tokenizer=tokenizer)])
        sreplies = ask(model, tokenizer, questions, kind, temperature=0.0, system=SEARCH_SYSTEM, tools=tools,
                       max_tokens=48)
        for r, reps in zip(rows, sreplies):
            parts = reps[0]
            r["searched"] = [p["text"] for p in parts if p["type"] == "search"]
            r["reply_search"] = reply_text(parts).strip()
            r["grade_search"] = grade(r["reply_search"], r["answer"])
    return summarize(rows)


def summarize(rows: list[dict]) -> dict:
    """Graded rows ({"seen", "grade"} and, with search, {"grade_search", "searched"}) -> the metrics."""
    seen = [r for r in rows if r["seen"] is True]
    unseen = [r for r in rows if r["seen"] is False]
    all_r = _rates(rows, "grade")
    out = {"n": len(rows), "acc": all_r["correct"], "confident_wrong": all_r["wrong"], "refusal": all_r["refused"]}
    if seen or unseen:
        s, u = _rates(seen, "grade"), _rates(unseen, "grade")
        out.update({"n_seen": s["n"], "acc_seen": s["correct"], "refusal_seen": s["refused"],
                    "wrong_seen": s["wrong"], "n_unseen": u["n"], "acc_unseen": u["correct"],
                    "refusal_unseen": u["refused"], "wrong_unseen": u["wrong"]})
    if rows and "grade_search" in rows[0]:
        a = _rates(rows, "grade_search")
        out.update({"acc_search": a["correct"], "confident_wrong_search": a["wrong"],
                    "search_rate": sum(bool(r["searched"]) for r in rows) / max(1, len(rows))})
        if seen or unseen:
            out.update({"acc_seen_search": _rates(seen, "grade_search")["correct"],
                        "acc_unseen_search": _rates(unseen, "grade_search")["correct"],
                        "search_rate_seen": sum(bool(r["searched"]) for r in seen) / max(1, len(seen)),
                        "search_rate_unseen": sum(bool(r["searched"]) for r in unseen) / max(1, len(unseen))})
    out["answers"] = rows
    return out


def facts_section(out_dir) -> str:
    """The report card's factuality section: without vs with probing, and search on vs off."""
    out_dir = Path(out_dir)

    def facts(p):
        p = out_dir / "eval" / p
        return json.loads(p.read_text()).get("tasks", {}).get("facts") if p.is_file() else None

    probed, base = facts("sft.json"), facts("facts_noprobe.json")
    if not probed:
        return ""
    lines = ["Held-out fact-world questions (entities and phrasings no SFT example used), greedy. "
             "Without probing: SFT answers every fact question confidently (the usual recipe); with probing: "
             "`chatforge probe` labelled each fact by sampling the base model, and SFT answers known facts and "
             "refuses unknown ones.", ""]
    keys = [("acc_seen", "correct, entities seen in pretraining"),
            ("refusal_unseen", "refused, never-seen entities"),
            ("confident_wrong", "confident-wrong, all questions (lower is better)"),
            ("acc_unseen", "correct, never-seen entities, no search"),
            ("acc_unseen_search", "correct, never-seen entities, search on"),
            ("acc_seen_search", "correct, seen entities, search on"),
            ("search_rate_unseen", "searched, never-seen entities"),
            ("search_rate_seen", "searched, seen entities")]
    fmt = lambda d, k: "—" if not d or d.get(k) is None else f"{d[k]:.3f}"
    lines += ["| metric | without probing | with probing |", "|---|---|---|"]
    lines += [f"| {label} | {fmt(base, k)} | {fmt(probed, k)} |" for k, label in keys
              if (probed.get(k) is not None or (base or {}).get(k) is not None)]
    if base and base.get("confident_wrong") is not None:
        cw0, cw1 = base["confident_wrong"], probed["confident_wrong"]
        ratio = f"{cw0 / cw1:.1f}x fewer" if cw1 > 0 else ("none left" if cw0 > 0 else "none either way")
        lines += ["", f"Confident-wrong answers: {cw0:.3f} -> {cw1:.3f} ({ratio}); correct answers on seen "
                  f"entities: {base.get('acc_seen', 0):.3f} -> {probed.get('acc_seen', 0):.3f} "
                  f"({100 * (probed.get('acc_seen', 0) - base.get('acc_seen', 0)):+.1f} points)."]
    pj = out_dir / "probe" / "probe.json"
    if pj.is_file():
        p = json.loads(pj.read_text())
        by = p.get("by_seen", {})
        lines += ["", f"Probe of the base model ({p['questions']} questions x {p['k']} samples): labels "
                  + ", ".join(f"{g}: " + " / ".join(f"{c.get(k, 0)} {k}" for k in ("known", "partly", "unknown"))
                              for g, c in by.items()) + "."]
    ex = [r for r in probed.get("answers", []) if r.get("seen") is False][:2] + \
         [r for r in probed.get("answers", []) if r.get("seen") is True][:2]
    if ex:
        lines += ["", "| question | truth | reply | with search |", "|---|---|---|---|"]
        for r in ex:
            clean = lambda s: (s or "").replace("|", "/").replace("\n", " ")[:80]
            lines.append(f"| {clean(r['question'])} | {r['answer']} | {clean(r['reply'])} ({r['grade']}) | "
                         f"{clean(r.get('reply_search'))} ({r.get('grade_search', '—')}) |")
    return "\n".join(lines)
