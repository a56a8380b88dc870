from chatforge.eval.generative import (
    eval_gsm8k, eval_humaneval, extract_code, humaneval_program, load_chat_probes, load_gsm8k,
    load_humaneval, reply_for_display, reply_text, run_chat_probes,
)

PROBLEM = {
    "task_id": "Toy/0",
    "prompt": 'import math\n\n\ndef add(a, b):\n    """Return a + b."""\n',
    "entry_point": "add",
    "test": "def check(f):\n    assert f(2, 3) == 5\n    assert f(-1, 1) == 0\n",
}


def test_reply_helpers():
    parts = [{"type": "text", "text": "Let me compute. "}, {"type": "python", "text": "6*7"},
             {"type": "python_output", "text": "42"}, {"type": "text", "text": "The answer is 42."}]
    assert reply_text(parts) == "Let me compute. The answer is 42."
    assert "[python] 6*7" in reply_for_display(parts) and "[output] 42" in reply_for_display(parts)
    assert reply_text("plain") == "plain"
    assert reply_text(None) == "" and "longer than the model's context" in reply_for_display(None)


def test_eval_gsm8k_with_fake_chat():
    problems = [{"question": "2+2?", "gold": "4"}, {"question": "3*3?", "gold": "9"}, {"question": "long", "gold": "1"}]
    seen = []

    def answer(messages):
        if messages[-1]["content"] == "long":
            return None  # did not fit the context
        if messages[-1]["content"] == "2+2?":
            return [{"type": "python", "text": "2+2"}, {"type": "python_output", "text": "4"},
                    {"type": "text", "text": "#### 4"}]
        return "I think it is 8."

    def chat(conversations, max_new_tokens, tools):
        seen.append((len(conversations), tools))
        return [answer(m) for m in conversations]

    r = eval_gsm8k(chat, problems, tools=True)
    assert r["n"] == 3 and r["acc"] == 1 / 3 and r["tool_calls_per_problem"] == 1 / 3
    assert r["prompt_too_long"] == 1
    assert seen == [(3, True)]  # one batched call
    assert r["samples"][1]["pred"] == "8" and not r["samples"][1]["correct"]


def test_extract_code_and_program():
    assert extract_code("Sure:\n```python\ndef add(a, b):\n    return a + b\n```\nDone") == "def add(a, b):\n    return a + b\n"
    assert extract_code("```\nx = 1") == "x = 1\n"  # unclosed block
    assert extract_code("    return a + b") == "    return a + b\n"
    full = humaneval_program(PROBLEM, "def add(a, b):\n    return a + b\n")
    body = humaneval_program(PROBLEM, "    return a + b\n")
    ns1, ns2 = {}, {}
    exec(full, ns1)  # both run their check() without raising
    exec(body, ns2)


def test_eval_humaneval_runs_tests_in_the_sandbox():
    replies = iter(["```python\ndef add(a, b):\n    return a + b\n```", "```python\ndef add(a, b):\n    return a - b\n```",
                    "    while True: pass\n"])

    def chat(conversations, max_new_tokens, tools):
        assert all("def add(a, b):" in m[0]["content"] for m in conversations)
        return [next(replies) for _ in conversations]

    r = eval_humaneval(chat, [PROBLEM] * 3, timeout=2.0)
    assert r["n"] == 3 and abs(r["pass@1"] - 1 / 3) < 1e-9


def test_real_sets_load(shared_data):
    g = load_gsm8k(limit=5)
    assert len(g) == 5 and g[0]["gold"] == "18"
    h = load_humaneval(limit=3)
    assert h[0]["task_id"] == "HumanEval/0" and "def " in h[0]["prompt"]
    # the canonical solution passes through our program builder
    prog = humaneval_program(h[0], h[0]["canonical_solution"])
    exec(prog, {})
    probes = load_chat_probes(limit=6)
    assert [p["source"].split("/")[0] for p in probes[:2]] == ["self-instruct", "mt-bench"]
    out = run_chat_probes(lambda convs, max_new_tokens, tools: ["ok"] * len(convs), probes[:2])
    assert out[0]["answer"] == "ok" and out[0]["prompt"] == probes[0]["prompt"]
