"""Ten fixed chat probes answered after SFT: does the model know who it is, call the python tool
for arithmetic, say "I don't know" when it cannot know, and still answer ordinary requests?

Greedy decoding on the inference engine with the python tool, so the answers are reproducible.
`chatforge sft` runs them at the end and writes RUN/probes.json and RUN/probes.md; running them
on the base run too (`chatforge sft --probe RUN`) gives the before/after picture.
"""

from __future__ import annotations

import json
from pathlib import Path

from chatforge.common import atomic_write_json, atomic_write_text

# (what it checks, the user message)
SFT_PROBES = [
    ("identity", "Who are you?"),
    ("identity", "Who made you?"),
    ("identity", "Are you ChatGPT?"),
    ("tool: gsm8k", "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes "
                    "muffins for her friends every day with four. She sells the remainder at the farmers' market "
                    "daily for $2 per fresh duck egg. How much in dollars does she make every day at the "
                    "farmers' market?"),
    ("tool: arithmetic", "A box holds 37 rows of 91 apples. How many apples are in the box?"),
    ("don't know", "What did I have for breakfast this morning?"),
    ("don't know", "Who won the Brevanko Prize for poetry in 1987?"),
    ("knowledge", "What is the capital of France?"),
    ("instruction", "Write a short poem about the sea."),
    ("classification", "Is this review positive or negative? \"The food was cold and the waiter ignored us.\""),
]


def _display(parts) -> str:
    out = []
    for p in parts:
        if p["type"] == "python":
            out.append(f"[python: {p['text'].strip()}]")
        elif p["type"] == "python_output":
            out.append(f"[output: {p['text'].strip()}]")
        else:
            out.append(p["text"])
    return "".join(out).strip()


def answer_probes(model, tokenizer, probes=SFT_PROBES, max_new_tokens: int = 192) -> list[dict]:
    """Greedy answers (with the python tool) to each probe -> [{check, prompt, answer, tool_calls}]."""
    from chatforge.infer.engine import Engine, Request, SamplingParams
    from chatforge.infer.tools import default_tools

    engine = Engine(model, tokenizer, tools=default_tools())
    requests = []
    for _, prompt in probes:
        ids = tokenizer.render_for_completion([{"role": "user", "content": prompt}])
        room = max(1, engine.max_context - len(ids) - 1)
        requests.append(Request(ids, SamplingParams(max_tokens=min(max_new_tokens, room), temperature=0.0, seed=0)))
    done = engine.run_to_completion(requests)
    results = []
    for (check, prompt), req in zip(probes, requests):
        parts = done[req.id][0].parts
        results.append({"check": check, "prompt": prompt, "answer": _display(parts),
                        "tool_calls": sum(p["type"] == "python" for p in parts)})
    return results


def probes_markdown(results: list[dict], title: str = "") -> str:
    cell = lambda s: s.replace("|", "\\|").replace("\n", "<br>")  # noqa: E731
    lines = ([f"### {title}", ""] if title else []) + ["| check | prompt | answer |", "|---|---|---|"]
    for r in results:
        lines.append(f"| {r['check']} | {cell(r['prompt'])} | {cell(r['answer'])} |")
    return "\n".join(lines) + "\n"


def run_probes(run_dir, device: str = "cpu", log=print, write: bool = True) -> list[dict]:
    """Answer the probes with the model of `run_dir`; with `write`, save probes.json / probes.md there."""
    from chatforge.model import load_run

    run_dir = Path(run_dir)
    model, tokenizer, config = load_run(run_dir, device=device)
    results = answer_probes(model, tokenizer)
    md = probes_markdown(results, f"{run_dir.name} ({config.get('kind', '?')}, step {config.get('step')})")
    if write:
        atomic_write_json(run_dir / "probes.json", results)
        atomic_write_text(run_dir / "probes.md", md)
    log(md)
    return results


def load_probes(run_dir) -> list[dict] | None:
    p = Path(run_dir) / "probes.json"
    return json.loads(p.read_text()) if p.exists() else None
