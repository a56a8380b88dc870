"""The Hugging Face export loads in transformers without chatforge, with our logits and chat ids."""

import json
import subprocess
import sys

import pytest
import torch

from chatforge.common import ChatforgeError
from chatforge.export.hf import export_hf
from chatforge.model import load_run

pytest.importorskip("transformers")

CONVERSATIONS = [
    [{"role": "user", "content": "Hello there, how are you?"}],
    [{"role": "system", "content": "You are terse.\nAnswer in one line."},
     {"role": "user", "content": "What is 12 * 7?  Explain 'why'."},
     {"role": "assistant", "content": "84, because 12 * 7 = 84."},
     {"role": "user", "content": [{"type": "text", "text": "And "}, {"type": "text", "text": "13 * 7?"}]}],
    [{"role": "user", "content": "Compute 2**100 with python, then look up Gauß."},
     {"role": "assistant", "content": [
         {"type": "text", "text": "Let me compute it."},
         {"type": "python", "text": "print(2**100)\n"},
         {"type": "python_output", "text": "1267650600228229401496703205376\n"},
         {"type": "text", "text": " Now a search: "},
         {"type": "search", "text": "Carl Friedrich Gauß"},
         {"type": "search_output", "text": "German mathematician (1777–1855)."},
         {"type": "text", "text": "Done."}]},
     {"role": "user", "content": "Thanks! 😀"}],
    # a trailing assistant message is dropped by render_for_completion, and so by the template
    [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "hi"}],
]

# Runs in a fresh interpreter that refuses to import chatforge (installed editable, so it would
# otherwise be importable from anywhere): the folder must stand on its own.
CHILD = r'''
import importlib.abc, json, sys
class NoChatforge(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "chatforge" or name.startswith("chatforge."):
            raise ImportError("chatforge is blocked in this process")
sys.meta_path.insert(0, NoChatforge())
try:
    import chatforge  # noqa: F401
    raise SystemExit("chatforge was importable")
except ImportError:
    pass
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
folder, ids, conversations = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
tok = AutoTokenizer.from_pretrained(folder)
with torch.no_grad():
    logits = model(torch.tensor(ids)).logits
chat = [list(tok.apply_chat_template(c, add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
        for c in conversations]
print(json.dumps({"class": type(model).__name__, "logits": logits.tolist(), "chat": chat,
                  "eos": model.generation_config.eos_token_id}))
'''


def run_child(folder, ids, conversations):
    r = subprocess.run([sys.executable, "-c", CHILD, str(folder), json.dumps(ids), json.dumps(conversations)],
                       capture_output=True, text=True, timeout=300, cwd=folder)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_folder_loads_in_transformers_without_chatforge(tiny_run, tmp_path):
    out = tmp_path / "hf"
    export_hf(tiny_run, out)
    model, tok, _ = load_run(tiny_run)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, tok.vocab_size, (2, 40), generator=g).tolist()
    got = run_child(out, ids, CONVERSATIONS)
    assert got["class"] == "LlamaForCausalLM"
    with torch.no_grad():
        ours = model(torch.tensor(ids))
    theirs = torch.tensor(got["logits"])
    assert ours.std() > 0.5  # random weights: logits that differ a lot between tokens
    assert torch.allclose(ours, theirs, atol=1e-4), (ours - theirs).abs().max()
    assert got["eos"] == tok.special_id("assistant_end")
    for conv, chat in zip(CONVERSATIONS, got["chat"]):
        assert chat == tok.render_for_completion(conv), conv


def test_dtype_and_metadata(tiny_run, tmp_path):
    from safetensors import safe_open

    export_hf(tiny_run, tmp_path, dtype="bfloat16")
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["rope_theta"] == 50_000.0 and cfg["rms_norm_eps"] == 1e-6
    assert cfg["num_key_value_heads"] == 1 and cfg["torch_dtype"] == "bfloat16"
    card = (tmp_path / "README.md").read_text()
    assert "2 / 1 (head dim 64)" in card and "supervised fine-tuning" in card


def test_model_card_has_the_eval_table(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "sft"
    shutil.copytree(tiny_run, run)
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "sft.json").write_text(json.dumps(
        {"run": str(run), "step": 1, "device": "cpu", "tasks": {"gsm8k": {"accuracy": 0.125, "n": 8}}}))
    export_hf(run, tmp_path / "hf")
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "| gsm8k | accuracy | 0.125 |" in card and "| gsm8k | n | 8 |" in card


def test_unmappable_architecture_is_a_one_line_error(tiny_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    cfg = json.loads((run / "config.json").read_text())
    cfg["model"]["logit_softcap"] = 15.0
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ChatforgeError, match="logit_softcap") as e:
        export_hf(run, tmp_path / "hf")
    assert "\n" not in str(e.value)
    with pytest.raises(ChatforgeError, match="not a run directory"):
        export_hf(tmp_path / "nothing", tmp_path / "hf")


def test_tied_embeddings_and_multi_head_load_with_our_logits(tiny_tokenizer, make_run, tmp_path):
    # in-process (the no-chatforge subprocess test above covers the standalone load)
    from transformers import AutoModelForCausalLM

    run = make_run(tmp_path / "tied", tiny_tokenizer, seed=3, tie_embeddings=True, n_kv_head=2,
                          norm_gains=False)
    export_hf(run, tmp_path / "hf")
    cfg = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert cfg["tie_word_embeddings"] is True and cfg["num_key_value_heads"] == 2
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    model, tok, _ = load_run(run)
    ids = torch.randint(0, tok.vocab_size, (1, 33), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(model(ids), hf(ids).logits, atol=1e-4)
