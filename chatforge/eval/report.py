"""The report card: DIR/report.md for one speedrun directory.

Everything is read from files the stages already wrote, so a report can be rebuilt at any time
(every `chatforge speedrun` call rewrites it at its end; or call `write_report`):
  DIR/timings.json          {stage: seconds} written by the speedrun (plus preset and cost rate)
  DIR/docs/stats.json       the data build's per-step counts (in / kept / dropped per rule)
  DIR/tok/                  the tokenizer (vocab size; compression measured here on held-out text)
  DIR/base/log.jsonl, DIR/sft/log.jsonl    training logs -> PNG curves (matplotlib, Agg backend)
  DIR/eval/base.json, DIR/eval/sft.json    `chatforge eval` results -> one table, base vs chat
Missing pieces are reported as missing, never invented.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from chatforge.common import REPO_ROOT, atomic_write_text, human_bytes


# ---------------------------------------------------------------- environment


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _ram_bytes() -> int | None:
    try:
        import psutil
        return psutil.virtual_memory().total
    except Exception:
        return None


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha + (" (with uncommitted changes)" if dirty else "")) if sha else "unknown (not a git checkout)"
    except (OSError, subprocess.SubprocessError):
        return "unknown (git not available)"


def environment() -> dict:
    import torch

    env = {
        "date (UTC)": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "git commit": git_commit(),
        "OS": f"{platform.system()} {platform.release()}",
        "CPU": f"{_cpu_model()}, {os.cpu_count()} logical cores",
        "RAM": human_bytes(_ram_bytes()) if _ram_bytes() else "unknown",
        "GPU": ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())) or "none",
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    for mod in ("numpy", "tiktoken", "lxml", "trafilatura"):  # lxml: the default extractor's parser
        try:
            env[mod] = __import__(mod).__version__
        except Exception:
            pass
    return env


# ---------------------------------------------------------------- sections


def _md_table(header: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        out.append("| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in r) + " |")
    return "\n".join(out)


def _fmt_seconds(s: float) -> str:
    s = float(s)
    return f"{s:.1f} s" if s < 120 else f"{s / 60:.1f} min"


def timings_section(timings: dict) -> str:
    stages = timings.get("stages", {})
    if not stages:
        return "_no stage timings recorded_"
    rate = float(timings.get("usd_per_hour", 0.0))
    rows, total = [], 0.0
    for name, st in stages.items():
        secs = st.get("seconds")
        status = st.get("status", "")
        if secs is not None:
            total += secs
        rows.append([name, status, _fmt_seconds(secs) if secs is not None else "—",
                     f"${secs / 3600 * rate:.2f}" if (secs is not None and rate) else "—", st.get("command", "")])
    rows.append(["**total**", "", f"**{_fmt_seconds(total)}**", f"**${total / 3600 * rate:.2f}**" if rate else "—", ""])
    note = (f"Cost at ${rate:.2f}/hour ({timings.get('cost_note', '')})." if rate
            else "Cost: no cloud rate for this preset (local CPU).")
    return _md_table(["stage", "status", "time", "cost", "command"], rows) + "\n\n" + note


def _find_step_stats(obj) -> list[dict]:
    """All {name, in, kept, dropped} dicts anywhere inside the data stage's stats.json."""
    found = []
    if isinstance(obj, dict):
        if {"name", "in", "kept"} <= obj.keys():
            return [obj]
        for v in obj.values():
            found += _find_step_stats(v)
    elif isinstance(obj, list):
        for v in obj:
            found += _find_step_stats(v)
    return found


def data_section(stats_path: Path) -> str:
    if not stats_path.is_file():
        return f"_no data stats ({stats_path.name} missing)_"
    stats = json.loads(stats_path.read_text())
    steps = _find_step_stats(stats)
    if not steps:
        return "```json\n" + json.dumps(stats, indent=1)[:3000] + "\n```"
    rows = []
    for s in steps:
        dropped = s.get("dropped") or {}
        drop_txt = ", ".join(f"{k}: {v:,}" for k, v in sorted(dropped.items(), key=lambda kv: -kv[1])) or "—"
        rows.append([s["name"], f"{s['in']:,}", f"{s['kept']:,}", drop_txt,
                     f"{human_bytes(s.get('bytes_in', 0))} → {human_bytes(s.get('bytes_out', 0))}",
                     f"{s.get('seconds', 0):.1f}"])
    return _md_table(["step", "docs in", "kept", "dropped (per rule)", "bytes in → out", "seconds"], rows)


def tokenizer_section(tok_dir: Path, sample_texts: list[str] | None = None) -> str:
    if not tok_dir.is_dir():
        return "_no tokenizer directory_"
    try:
        from chatforge.tokenizer import Tokenizer
        tok = Tokenizer.load(tok_dir)
    except Exception as e:  # report, don't crash the whole card
        return f"_tokenizer could not be loaded: {e}_"
    rows = [["vocab size (specials included)", f"{tok.vocab_size:,}"]]
    lens = tok.token_byte_lengths()
    normal = [n for n in lens if n > 0]
    if normal:
        rows.append(["mean bytes per vocab entry", f"{sum(normal) / len(normal):.2f}"])
        rows.append(["longest token (bytes)", max(normal)])
    for name, text in (sample_texts or []):
        ids = tok.encode(text)
        if ids:
            rows.append([f"compression on {name}", f"{len(text.encode('utf-8')) / len(ids):.3f} bytes/token "
                         f"({len(ids):,} tokens)"])
    return _md_table(["tokenizer", "value"], rows)


def read_log(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill: skip it
    return rows


def plot_curves(logs: dict[str, list[dict]], out_png: Path, keys: tuple[str, ...], title: str) -> bool:
    """One PNG, one panel per run (base, sft: their steps are separate): every numeric series whose
    name contains one of `keys`, against step. False (and no file) when there is nothing to plot."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {}
    for run, rows in logs.items():
        series = {}
        for r in rows:
            step = r.get("step")
            if step is None:
                continue
            for k, v in r.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and any(s in k for s in keys):
                    series.setdefault(k, []).append((step, v))
        if series:
            panels[run] = series
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.2), dpi=80, squeeze=False)
    for ax, (run, series) in zip(axes[0], panels.items()):
        for label, pts in sorted(series.items()):
            pts.sort()
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label,
                    marker="o" if len(pts) < 20 else None, markersize=3)
        ax.set_xlabel("step")
        ax.set_title(f"{run}: {title}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_png.with_name("." + out_png.name + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    os.replace(tmp, out_png)
    return True


def training_summary(run_dir: Path) -> list[str]:
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        return []
    cfg = json.loads(cfg_path.read_text())
    m = cfg.get("model", {})
    log = read_log(run_dir / "log.jsonl")
    last = {}
    for r in log:
        last.update({k: v for k, v in r.items() if isinstance(v, (int, float))})
    bits = [f"kind {cfg.get('kind', '?')}", f"step {cfg.get('step', last.get('step', '?'))}"]
    if m:
        bits.append(f"{m.get('n_layer')} layers × {m.get('n_embd')} wide, context {m.get('seq_len')}, "
                    f"vocab {m.get('vocab_size')}")
    for k in ("params", "num_params", "tokens", "tokens_seen"):
        if k in cfg:
            bits.append(f"{k} {cfg[k]:,}" if isinstance(cfg[k], int) else f"{k} {cfg[k]}")
    for k in ("loss", "val_loss", "val_bpb"):
        if k in last:
            bits.append(f"last {k} {last[k]:.4f}")
    return bits


def base_samples(rows: list[dict]) -> str:
    """The continuations the trainer sampled at its last evaluation (log rows with "samples")."""
    last = next((r for r in reversed(rows) if isinstance(r.get("samples"), list) and r["samples"]), None)
    if last is None:
        return ""
    lines = [f"Base model continuations sampled by the trainer at step {last.get('step', '?')}:", ""]
    lines += ["- " + str(t).replace("\n", " ")[:300] for t in last["samples"]]
    return "\n".join(lines)


def sample_conversations(chat_eval: dict | None, n: int = 4) -> str:
    if not chat_eval:
        return "_no chat evaluation_"
    out = []
    answers = chat_eval.get("tasks", {}).get("probes", {}).get("answers", [])
    for a in answers[:n]:
        out.append(f"**User** ({a['source']}): {a['prompt'][:500]}\n\n**Assistant**: {a['answer'][:800] or '(empty)'}")
    for task in ("gsm8k_tools", "gsm8k"):
        for s in chat_eval.get("tasks", {}).get(task, {}).get("samples", [])[:1]:
            mark = "correct" if s["correct"] else f"wrong, gold {s['gold']}"
            out.append(f"**User** (GSM8K, {task}): {s['question']}\n\n**Assistant** ({mark}): {s['reply'] or '(empty)'}")
    return "\n\n---\n\n".join(out) if out else "_no sample conversations recorded_"


def probes_table(chat_eval: dict | None, n: int = 10) -> str:
    answers = (chat_eval or {}).get("tasks", {}).get("probes", {}).get("answers", [])
    if not answers:
        return ""
    rows = [[a["source"], a["prompt"][:120], a["answer"][:200]] for a in answers[:n]]
    return _md_table(["source", "prompt", "answer"], rows)


# ---------------------------------------------------------------- the card


def build_report(out_dir, title: str = "chatforge report card", plots_dir: Path | None = None,
                 tokenizer_samples: list[tuple[str, str]] | None = None, compare: dict | None = None) -> str:
    """The markdown text of DIR/report.md; writes the PNG plots into plots_dir (default DIR).

    compare: {name: directory holding another run's base.json / sft.json} -> extra columns in the
    eval table (e.g. the committed cpu-tiny results next to a gpu-d12 run)."""
    from chatforge.eval.run import load_results, results_table

    out_dir = Path(out_dir)
    plots_dir = Path(plots_dir) if plots_dir else out_dir
    timings = json.loads((out_dir / "timings.json").read_text()) if (out_dir / "timings.json").is_file() else {}
    base_eval = load_results(out_dir / "eval" / "base.json")
    chat_eval = load_results(out_dir / "eval" / "sft.json")

    parts = [f"# {title}", ""]
    if timings.get("preset"):
        parts += [f"Preset `{timings['preset']}`" + (f": {timings['preset_description']}" if timings.get("preset_description") else "")
                  + (f". Reproduce with `{timings['command']}`." if timings.get("command") else ""), ""]
    parts += ["## Environment", "", _md_table(["", ""], [[k, v] for k, v in environment().items()]), ""]
    parts += ["## Time and cost per stage", "", timings_section(timings), ""]
    parts += ["## Data", "", data_section(out_dir / "docs" / "stats.json"), ""]
    parts += ["## Tokenizer", "", tokenizer_section(out_dir / "tok", tokenizer_samples), ""]

    parts += ["## Training", ""]
    logs = {name: read_log(out_dir / name / "log.jsonl") for name in ("base", "sft")}
    for name in ("base", "sft"):
        summ = training_summary(out_dir / name)
        if summ:
            parts.append(f"- **{name}**: " + "; ".join(summ))
    parts.append("")
    for fname, keys, ttl in (("loss.png", ("loss",), "loss (nats/token)"), ("bpb.png", ("bpb",), "bits per byte")):
        if plot_curves({k: v for k, v in logs.items() if v}, plots_dir / fname, keys, ttl):
            rel = os.path.relpath(plots_dir / fname, out_dir)
            parts += [f"![{ttl}]({rel})", ""]
        else:
            parts += [f"_no {ttl} values in the training logs_", ""]
    samples = base_samples(logs.get("base", []))
    if samples:
        parts += [samples, ""]

    parts += ["## Evaluation", ""]
    if base_eval or chat_eval:
        columns = {"base": base_eval, "chat (sft)": chat_eval}
        if (out_dir / "eval" / "rl.json").is_file():
            columns["chat (rl)"] = load_results(out_dir / "eval" / "rl.json")
        for name, d in (compare or {}).items():
            columns[f"{name} base"] = load_results(Path(d) / "base.json")
            columns[f"{name} chat"] = load_results(Path(d) / "sft.json")
        parts += [results_table(columns), ""]
        parts += ["bpb: bits per byte on held-out text (lower is better). Multiple choice: log-likelihood of each "
                  "choice; acc_norm divides by the choice's bytes. gsm8k_tools: the python tool enabled.", ""]
    else:
        parts += ["_no evaluation results_", ""]
    table = probes_table(chat_eval)
    if table:
        parts += ["### Chat probes", "", table, ""]
    from chatforge.posttrain.rl import rl_report_section
    rl_text = rl_report_section(out_dir)
    if rl_text:
        parts += ["### Reinforcement learning (GRPO) on held-out arithmetic", "", rl_text, ""]
    from chatforge.posttrain.dpo import dpo_report_section
    dpo_text = dpo_report_section(out_dir)
    if dpo_text:
        parts += ["### Preference tuning (DPO) on held-out pairs", "", dpo_text, ""]
    from chatforge.eval.facts import facts_section
    facts = facts_section(out_dir)
    if facts:
        parts += ["### Factuality: knowledge probing and search", "", facts, ""]
    parts += ["## Sample conversations", "", sample_conversations(chat_eval), ""]
    if (out_dir / "export").is_dir():
        from chatforge.export.card import exported_files_section
        parts += ["## Exported model", "", exported_files_section(out_dir / "export", out_dir), ""]
    return "\n".join(parts)


def write_report(out_dir, **kw) -> Path:
    out_dir = Path(out_dir)
    text = build_report(out_dir, **kw)
    atomic_write_text(out_dir / "report.md", text)
    return out_dir / "report.md"
