"""`chatforge chat`: the terminal loop (history, streaming, /reset, /system, /quit) end to end."""

import io
import subprocess
import sys

from chatforge.infer.chat import PartPrinter, chat_loop
from chatforge.infer.engine import Engine, SamplingParams


def test_chat_loop_history_and_commands(tiny_model, tiny_tokenizer):
    eng = Engine(tiny_model, tiny_tokenizer)
    prompts = []
    real = eng.chat_prompt
    eng.chat_prompt = lambda msgs: prompts.append([m["role"] for m in msgs]) or real(msgs)
    lines = iter(["hello", "again", "/system be brief", "hi", "/reset", "x", "/bogus", "/quit", "never read"])
    out = io.StringIO()
    chat_loop(eng, SamplingParams(max_tokens=5, temperature=0), read=lambda _: next(lines), out=out, color=False)
    assert prompts == [["user"], ["user", "assistant", "user"], ["system", "user"], ["system", "user"]]
    text = out.getvalue()
    assert text.count("assistant> ") == 4 and "(cut at --max-tokens)" in text
    assert "(system prompt set; conversation cleared)" in text and "(conversation cleared)" in text
    assert "unknown command /bogus" in text


def test_tool_calls_are_shown_as_blocks():
    out = io.StringIO()
    p = PartPrinter(out, color=False)
    p.write([("text", "Let me check."), ("python", "print(6*7)"), ("python_output", "42\n"), ("text", "It is 42.")])
    p.close()
    assert out.getvalue() == "Let me check.\n┌─ python ─\nprint(6*7)\n\n┌─ output ─\n42\nIt is 42.\n"


def test_chat_command_on_a_run_dir(tmp_path, tiny_model, tiny_tokenizer):
    from chatforge.model import save_run

    save_run(tmp_path / "run", tiny_model, tiny_tokenizer, kind="sft")
    r = subprocess.run([sys.executable, "-m", "chatforge", "chat", str(tmp_path / "run"), "--temperature", "0",
                        "--max-tokens", "4", "--device", "cpu"], input="hi there\n/quit\n",
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "assistant> " in r.stdout and "(cut at --max-tokens)" in r.stdout
    r = subprocess.run([sys.executable, "-m", "chatforge", "chat", str(tmp_path / "nope")], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
