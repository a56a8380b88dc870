"""The model card (README.md) of an exported folder, from the run's own files only.

It says what the model is (shape, parameters), what it was trained on (data, tokens, stages, from
RUN/config.json and the base run's), how to run it, and its eval table (RUN/eval.json, or the
speedrun's DIR/eval/<run>.json beside the run). Missing pieces are left out, never invented.
"""

from __future__ import annotations

import json
from pathlib import Path


def find_eval(run_dir: Path) -> dict | None:
    """The run's eval results: RUN/eval.json, else the speedrun layout's DIR/eval/<run name>.json."""
    for p in (run_dir / "eval.json", run_dir.parent / "eval" / f"{run_dir.name}.json"):
        if p.is_file():
            try:
                return json.loads(p.read_text())
            except ValueError:
                return None
    return None


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def eval_rows(results: dict) -> list[str]:
    rows = []
    for task, metrics in (results.get("tasks") or {}).items():
        if isinstance(metrics, dict):
            for k, v in metrics.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    rows.append(f"| {task} | {k} | {_fmt(v)} |")
    return rows


def _base_config(run_dir: Path, run_cfg: dict) -> dict | None:
    if run_cfg.get("kind") != "sft" or not run_cfg.get("base"):
        return run_cfg
    for p in (Path(run_cfg["base"]), run_dir.parent / Path(run_cfg["base"]).name):
        if (p / "config.json").is_file():
            return json.loads((p / "config.json").read_text())
    return None


def model_card(run_dir: Path, run_cfg: dict, tok, state: dict) -> str:
    m = run_cfg["model"]
    n_params = sum(t.numel() for t in state.values())
    kind = run_cfg.get("kind", "base")
    lines = [
        "---", "library_name: transformers", "pipeline_tag: text-generation",
        "tags: [chatforge, llama, gguf]", "---", "",
        f"# {run_dir.name}: a chatforge {'chat' if kind == 'sft' else 'base'} model", "",
        "Trained from raw web pages with chatforge and exported with "
        "`chatforge export`. Llama architecture: loads with `AutoModelForCausalLM`, no custom code.", "",
        "| | |", "|---|---|",
        f"| parameters | {n_params / 1e6:.1f} M |",
        f"| layers / width | {m['n_layer']} / {m['n_embd']} |",
        f"| heads / key-value heads | {m['n_head']} / {m['n_kv_head']} (head dim {m['n_embd'] // m['n_head']}) |",
        f"| MLP | SwiGLU, {m['intermediate_size']} |",
        f"| context | {m['seq_len']} tokens (RoPE, theta {m['rope_theta']:,.0f}) |",
        f"| vocabulary | {tok.vocab_size:,} (byte-level BPE, {len(tok.special_tokens)} special tokens) |",
        f"| embeddings | {'tied' if m.get('tie_embeddings') else 'untied'} |", "",
        "## Training", "",
    ]
    base = _base_config(run_dir, run_cfg)
    if base and base.get("train"):
        step, per_step = base.get("step"), base.get("batch_tokens")
        seen = f", {step * per_step:,} tokens" if isinstance(step, int) and isinstance(per_step, int) else ""
        lines.append(f"- pretraining: {step} steps of {per_step} tokens{seen}, preset {base['train'].get('preset')}, "
                     f"data `{Path(str(base['train'].get('data', '?'))).name}`")
    if tok.meta.get("chars"):
        lines.append(f"- tokenizer: trained on {tok.meta['chars']:,} characters")
    if kind == "sft":
        mix = run_cfg.get("mixture") or {}
        name = mix.get("name", "(custom)") if isinstance(mix, dict) else mix
        lines.append(f"- supervised fine-tuning: {run_cfg.get('step', '?')} steps on the `{name}` mixture")
        va, vb = run_cfg.get("val_after") or {}, run_cfg.get("val_before") or {}
        if "val_loss" in va and "val_loss" in vb:
            lines.append(f"- held-out assistant-token loss: {vb['val_loss']:.3f} before SFT, "
                         f"{va['val_loss']:.3f} after")
    lines += ["", "## Evaluation", ""]
    results = find_eval(run_dir)
    rows = eval_rows(results) if results else []
    if rows:
        lines += [f"On {results.get('device', '?')} at step {results.get('step', '?')}.", "",
                  "| task | metric | value |", "|---|---|---|", *rows]
    else:
        lines.append("No eval results were found beside the run (`chatforge eval RUN` writes them).")
    lines += [
        "", "## Chat format", "",
        "`<|bos|><|user_start|>…<|user_end|><|assistant_start|>…<|assistant_end|>`; the assistant may call "
        "python between `<|python_start|>` and `<|python_end|>`, and tool output comes back between "
        "`<|output_start|>` and `<|output_end|>`. `tokenizer.apply_chat_template(messages, "
        "add_generation_prompt=True)` renders it; generation stops at `<|assistant_end|>`.", "",
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "tok = AutoTokenizer.from_pretrained(PATH)",
        "model = AutoModelForCausalLM.from_pretrained(PATH)",
        "ids = tok.apply_chat_template([{\"role\": \"user\", \"content\": \"Hi!\"}], add_generation_prompt=True,",
        "                              return_tensors=\"pt\", return_dict=True)",
        "out = model.generate(**ids, max_new_tokens=64)",
        "print(tok.decode(out[0, ids['input_ids'].shape[1]:], skip_special_tokens=True))",
        "```", "",
    ]
    return "\n".join(lines)


def exported_files_section(export_dir: Path, out_dir: Path) -> str:
    """The report card's list of exported files and the one command that runs each kind."""
    files = sorted(p for p in Path(export_dir).iterdir() if p.is_file() and not p.name.startswith("."))
    if not files:
        return "_nothing exported yet_"
    rel = Path(export_dir).relative_to(out_dir) if Path(export_dir).is_relative_to(out_dir) else Path(export_dir)
    rows = [f"| `{rel / p.name}` | {p.stat().st_size / 1e6:.1f} MB |" for p in files]
    ggufs = [p.name for p in files if p.suffix == ".gguf"]
    lines = ["| file | size |", "|---|---|", *rows, ""]
    if (Path(export_dir) / "config.json").is_file():
        lines.append(f"- transformers: `AutoModelForCausalLM.from_pretrained(\"{rel}\")`, "
                     f"`AutoTokenizer.from_pretrained(\"{rel}\")` (chat template included)")
    if ggufs:
        lines.append(f"- llama.cpp: `llama-cli -m {rel / ggufs[-1]} --jinja -cnv` or `llama-server -m "
                     f"{rel / ggufs[-1]} --jinja`; LM Studio: `lms import {rel / ggufs[-1]}`")
    if (Path(export_dir) / "Modelfile").is_file():
        lines.append(f"- Ollama: `cd {rel} && ollama create chatforge -f Modelfile && ollama run chatforge`")
    lines.append("- details: docs/interop.md")
    return "\n".join(lines)
