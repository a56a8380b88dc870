"""SFT: loss only on assistant tokens, no leakage across padded rows, exact resume, and a tiny
run on CPU that lowers the held-out assistant loss."""

import json

import pytest
import torch

from chatforge.common import ChatforgeError
from chatforge.posttrain import sft as sft_mod
from chatforge.posttrain.sft import collate, conversation_to_row, evaluate_loss, step_rows
from .helpers import assert_same_weights, stop_at_call

TOOL_CONV = {"messages": [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 6 times 7?"},
    {"role": "assistant", "content": [{"type": "text", "text": "Let me check. "},
                                      {"type": "python", "text": "6*7"},
                                      {"type": "python_output", "text": "42"},
                                      {"type": "text", "text": " It is 42."}]},
    {"role": "user", "content": "Thanks!"},
    {"role": "assistant", "content": "You're welcome."},
]}


def test_loss_only_on_assistant_tokens(tiny_tokenizer):
    tok = tiny_tokenizer
    row = conversation_to_row(tok, TOOL_CONV, max_seq_len=512)
    assert len(row.ids) == len(row.targets) + 1
    learned = [t for t in row.targets if t != -1]
    assert tok.decode(learned) == ("Let me check. <|python_start|>6*7<|python_end|> It is 42.<|assistant_end|>"
                                   "You're welcome.<|assistant_end|>")
    # every target is the next input token (a shift, nothing else)
    assert all(t == -1 or t == row.ids[i + 1] for i, t in enumerate(row.targets))
    # nothing of the system, user or tool-output text is ever a target
    ids = row.ids
    for special in ("<|output_start|>", "<|output_end|>", "<|user_start|>", "<|user_end|>",
                    "<|system_start|>", "<|system_end|>", "<|assistant_start|>", "<|bos|>"):
        assert tok.special_id(special) not in learned
    out_start = ids.index(tok.special_id("<|output_start|>"))
    out_end = ids.index(tok.special_id("<|output_end|>"))
    assert all(row.targets[i - 1] == -1 for i in range(out_start, out_end + 1))


def test_truncated_conversation_without_assistant_tokens_is_dropped(tiny_tokenizer):
    conv = {"messages": [{"role": "user", "content": "word " * 200}, {"role": "assistant", "content": "ok"}]}
    assert conversation_to_row(tiny_tokenizer, conv, max_seq_len=32) is None
    full = conversation_to_row(tiny_tokenizer, TOOL_CONV, max_seq_len=512)
    cut = len(full.ids) - 5
    row = conversation_to_row(tiny_tokenizer, TOOL_CONV, max_seq_len=cut - 1)
    assert row.ids == full.ids[:cut] and row.targets == full.targets[:cut - 1] and row.n_loss > 0


def _random_model(tok, seed=0, seq_len=256):
    from chatforge.model import GPT, GPTConfig

    torch.manual_seed(seed)
    model = GPT(GPTConfig.from_preset("d2", vocab_size=tok.vocab_size, seq_len=seq_len))
    with torch.no_grad():  # zero-init projections would make every position independent: no test
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def test_padding_does_not_leak_across_conversations(tiny_tokenizer):
    tok = tiny_tokenizer
    model = _random_model(tok)
    convs = [TOOL_CONV,
             {"messages": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi."}]},
             {"messages": [{"role": "user", "content": "Tell me a long story. " * 5},
                           {"role": "assistant", "content": "Once upon a time " * 6}]}]
    rows = [conversation_to_row(tok, c, 512) for c in convs]
    x, y = collate(rows, pad_id=tok.bos_id, device="cpu")
    assert x.shape == (3, max(len(r.targets) for r in rows))
    with torch.no_grad():
        batched = model(x)
        for i, r in enumerate(rows):
            n = len(r.targets)
            alone = model(torch.tensor([r.ids[:-1]]))
            torch.testing.assert_close(batched[i, :n], alone[0], rtol=1e-4, atol=1e-4)
            # and a different neighbour / pad token changes nothing either
            x2 = x.clone()
            x2[(i + 1) % 3] = torch.randint(0, tok.vocab_size, x2[(i + 1) % 3].shape)
            x2[i, n:] = 7
            torch.testing.assert_close(model(x2)[i, :n], batched[i, :n], rtol=1e-4, atol=1e-4)
    for i, r in enumerate(rows):  # padding positions carry no target
        assert (y[i, len(r.targets):] == -1).all()
    # the batched validation loss equals the per-conversation token-weighted mean
    res = evaluate_loss(model, rows, tok.bos_id, "cpu", batch_size=3)
    per = [evaluate_loss(model, [r], tok.bos_id, "cpu")["val_loss"] for r in rows]
    n = [r.n_loss for r in rows]
    assert res["val_loss"] == pytest.approx(sum(p * k for p, k in zip(per, n)) / sum(n), rel=1e-5)


def test_step_rows_cover_each_epoch_once():
    n, bs = 10, 4
    seen = [i for s in range(5) for i in step_rows(n, bs, s, seed=3)]  # 20 = two epochs
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    assert step_rows(n, bs, 2, seed=3) == step_rows(n, bs, 2, seed=3)
    assert seen[:10] != [i for s in range(3) for i in step_rows(n, bs, s, seed=4)][:10]


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread):
    """Every test here runs on one torch thread (see tests/conftest.py)."""
    yield


TINY_MIX = {"name": "test", "seed": 0, "val_per_set": 8, "sets": [
    {"source": "identity", "examples": 120, "args": {"name": "Testbot", "creator": "the test suite"}},
    {"source": "dont_know", "examples": 40},
]}


@pytest.fixture()
def base_run(tiny_tokenizer, tmp_path):
    from chatforge.model import GPT, GPTConfig, save_run

    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("d2", vocab_size=tiny_tokenizer.vocab_size, seq_len=256))
    return save_run(tmp_path / "base", model, tiny_tokenizer, kind="base", step=0)


def _sft(base, out, **kw):
    args = dict(mix=TINY_MIX, batch_size=8, device_batch_size=8, lr_frac=1.0, device="cpu", eval_every=0,
                save_every=0, log_every=5, probes=False)
    args.update(kw)
    return sft_mod.sft(base, out_dir=out, log=lambda *a: None, **args)


def test_tiny_sft_lowers_heldout_assistant_loss(base_run, tmp_path):
    from chatforge.model import load_run

    out = _sft(base_run, tmp_path / "sft", steps=25, name="Quill")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["mixture"]["sets"][0]["args"] == {"name": "Quill", "creator": "the test suite"}
    assert cfg["kind"] == "sft" and cfg["step"] == 25
    before, after = cfg["val_before"]["val_loss"], cfg["val_after"]["val_loss"]
    assert after < before - 1.0, (before, after)
    assert cfg["val_after"]["val/identity"] < cfg["val_before"]["val/identity"]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if r.get("kind") == "train"] == [5, 10, 15, 20, 25]
    assert not (out / "checkpoint").exists()
    model, tok, config = load_run(out)  # what chat / serve / eval do
    assert config["kind"] == "sft" and tok.vocab_size == model.config.vocab_size
    with pytest.raises(ChatforgeError, match="already holds a run"):
        _sft(base_run, out, steps=2)
    assert _sft(base_run, out, steps=2, resume=True) == out  # finished: nothing to redo
    assert json.loads((out / "config.json").read_text())["step"] == 25


def test_resume_continues_exactly(base_run, tmp_path, monkeypatch):
    full = _sft(base_run, tmp_path / "full", steps=6)
    stop_at_call(monkeypatch, sft_mod, "micro_batches", 5, lambda: _sft(base_run, tmp_path / "cut", steps=6, save_every=2))
    assert json.loads((tmp_path / "cut" / "config.json").read_text())["step"] == 4
    _sft(base_run, tmp_path / "cut", steps=6, save_every=2, resume=True)
    assert_same_weights(full, tmp_path / "cut")
    cfg = json.loads((tmp_path / "cut" / "config.json").read_text())
    assert cfg["val_before"]["val_loss"] == json.loads((full / "config.json").read_text())["val_before"]["val_loss"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    from chatforge.cli import main

    assert main(["sft", "--base", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --base") and "Traceback" not in err
    assert main(["sft", "--base", "x", "--out", "y", "--mix", "no-such-mix", "--dry-run"]) == 2
    assert "neither a built-in" in capsys.readouterr().err


def test_probes_run_on_the_engine(base_run, tiny_tokenizer):
    from chatforge.model import load_run
    from chatforge.posttrain.probes import SFT_PROBES, answer_probes, probes_markdown

    model, tok, _ = load_run(base_run)
    results = answer_probes(model, tok, max_new_tokens=4)
    assert [r["prompt"] for r in results] == [p for _, p in SFT_PROBES]
    assert all(isinstance(r["answer"], str) and r["tool_calls"] >= 0 for r in results)
    md = probes_markdown(results, "t")
    assert md.count("\n| ") == len(SFT_PROBES) + 1  # header + one row per probe


def test_torchrun_two_processes_match_one(base_run, tmp_path, run_reporting_hangs):
    """DDP on 2 CPU processes (gloo), same global batch: the same weights as one process."""
    import sys

    from safetensors.torch import load_file

    mix = tmp_path / "mix.json"
    mix.write_text(json.dumps(TINY_MIX))
    args = ["sft", "--base", str(base_run), "--mix", str(mix), "--steps", "3", "--batch-size", "8",
            "--device-batch-size", "4", "--lr-frac", "1", "--device", "cpu", "--eval-every", "0",
            "--save-every", "0", "--no-probes"]
    one = run_reporting_hangs([sys.executable, "-m", "chatforge", *args, "--out", str(tmp_path / "one")])
    assert one.returncode == 0, one.stderr[-2000:]
    two = run_reporting_hangs([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                               "-m", "chatforge", *args, "--out", str(tmp_path / "two")])
    assert two.returncode == 0, two.stderr[-2000:]
    a, b = load_file(str(tmp_path / "one" / "model.safetensors")), load_file(str(tmp_path / "two" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    va = json.loads((tmp_path / "one" / "config.json").read_text())["val_after"]
    vb = json.loads((tmp_path / "two" / "config.json").read_text())["val_after"]
    assert va["val_loss"] == pytest.approx(vb["val_loss"], rel=1e-5) and va["val_tokens"] == vb["val_tokens"]
