"""`chatforge speedrun`: raw text -> chat model + report card, one resumable command.

  data build -> tokenizer train -> data tokenize -> train (base) -> sft -> eval base -> eval sft -> export -> report

Each stage is the same `chatforge ...` command a user would type (printed before it runs), run as
a subprocess so a stage's memory is freed when it ends and any stage can be rerun by hand.
After a stage succeeds we write DIR/.speedrun/<stage>.json (its command, seconds). A stage is
skipped when that marker exists, its command is unchanged and its output is still there, so a
killed speedrun resumes at the stage it was in: data build resumes its own unfinished tasks, and
train / sft get `--resume` when a checkpoint from the interrupted attempt exists. If a stage's
command changed (a different preset), it reruns and every later stage's old output is discarded.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from chatforge.common import ChatforgeError, atomic_write_json
from chatforge.pipeline.inputs import resolve_inputs
from chatforge.pipeline.presets import Preset


@dataclass
class Stage:
    name: str
    argv: list[str]                     # arguments after `chatforge`
    output: Path                        # what the stage makes (a dir or file)
    resume_flag: str | None = None      # added when a partial output from a killed attempt exists
    launcher: list[str] = field(default_factory=list)  # e.g. torchrun for multi-GPU stages

    def command(self, resume=False) -> str:
        argv = self.argv + ([self.resume_flag] if resume and self.resume_flag else [])
        head = "torchrun " + " ".join(self.launcher) + " -m chatforge" if self.launcher else "chatforge"
        return head + " " + " ".join(shlex.quote(a) for a in argv)

    def exec_argv(self, resume=False) -> list[str]:
        argv = self.argv + ([self.resume_flag] if resume and self.resume_flag else [])
        if self.launcher:
            return [sys.executable, "-m", "torch.distributed.run", *self.launcher, "-m", "chatforge", *argv]
        return [sys.executable, "-m", "chatforge", *argv]


def plan(preset: Preset, out: Path, inputs: list[str], device: str, heldout: str | None = None) -> list[Stage]:
    """The stage commands. Without ../shared/data (heldout given: local held-out text), SFT uses the
    generated `synthetic` mixture and evaluation is bits-per-byte on the held-out local text."""
    docs, tok, shards, base, sft = out / "docs", out / "tok", out / "shards", out / "base", out / "sft"
    lim = preset.eval_limits
    eval_flags = ["--device", device, "--quiet"] + [a for k, v in lim.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    if heldout:
        eval_flags += ["--bpb-text", heldout]
    base_tasks = "bpb" if heldout else "bpb,t0_mc"
    train_tokens = preset.train_tokens
    if preset.max_epochs and (shards / "meta.json").is_file():
        # known once the data is tokenized: never loop over a small corpus more than max_epochs times
        have = json.loads((shards / "meta.json").read_text())["splits"]["train"]["tokens"]
        train_tokens = min(train_tokens, int(preset.max_epochs * have))
    sft_tasks = ["--tasks", "bpb"] if heldout else []
    mix = "synthetic" if heldout else preset.sft_mix
    launcher = ["--standalone", f"--nproc_per_node={preset.nproc}"] if preset.nproc > 1 else []
    workers = str(max(1, min(os.cpu_count() or 1, 16)))
    stages = [
        Stage("data", ["data", "build", *inputs, "--out", str(docs), "--workers", workers], docs / "stats.json"),
        Stage("tokenizer", ["tokenizer", "train", str(docs), "--vocab-size", str(preset.vocab_size), "--out", str(tok)],
              tok),
        Stage("tokenize", ["data", "tokenize", str(docs), "--tokenizer", str(tok), "--out", str(shards), "--overwrite"],
              shards / "meta.json"),
        Stage("pretrain", ["train", "--preset", preset.model, "--data", str(shards), "--tokenizer", str(tok),
                           "--out", str(base), "--tokens", str(train_tokens), "--seq-len", str(preset.seq_len),
                           "--batch-tokens", str(preset.batch_tokens), "--device", device, *preset.train_extra],
              base / "model.safetensors", resume_flag="--resume", launcher=launcher),
        Stage("sft", ["sft", "--base", str(base), "--mix", mix, "--out", str(sft),
                      "--steps", str(preset.sft_steps), "--batch-size", str(preset.sft_batch_size),
                      "--device", device, *preset.sft_extra],
              sft / "model.safetensors", resume_flag="--resume", launcher=launcher),
        Stage("eval-base", ["eval", str(base), "--tasks", base_tasks, "--out", str(out / "eval" / "base.json"),
                            *eval_flags], out / "eval" / "base.json"),
        Stage("eval-sft", ["eval", str(sft), *sft_tasks, "--out", str(out / "eval" / "sft.json"), *eval_flags],
              out / "eval" / "sft.json"),
        # the chat model for transformers / llama.cpp / LM Studio / Ollama (docs/interop.md); Modelfile is written last
        Stage("export", ["export", str(sft), "--format", "hf,gguf", "--quant", "f16,q8_0", "--out", str(out / "export")],
              out / "export" / "Modelfile"),
    ]
    if preset.rl_steps:
        stages = with_rl(stages, preset, out, device, eval_flags, sft_tasks)
    if preset.dpo_steps:
        stages = with_dpo(stages, preset, out, device, heldout)
    if preset.facts_share:
        stages = with_fact_world(stages, preset, out, mix, device, eval_flags)
    return stages


def with_dpo(stages: list[Stage], preset: Preset, out: Path, device: str, heldout: str | None) -> list[Stage]:
    """The DPO stage (issue 20), after SFT: preference pairs (hh-rlhf, or generated ones without
    ../shared/data); it measures held-out preference accuracy and margin before and after itself,
    which the report shows (chatforge.posttrain.dpo.dpo_report_section)."""
    pairs = "synthetic" if heldout else preset.dpo_pairs
    dpo = Stage("dpo", ["dpo", "--base", str(out / "sft"), "--pairs", pairs, "--out", str(out / "dpo"),
                        "--steps", str(preset.dpo_steps), "--device", device, *preset.dpo_extra],
                out / "dpo" / "model.safetensors", resume_flag="--resume")
    after = "rl" if any(s.name == "rl" for s in stages) else "sft"  # the RL stage keeps its place right after SFT
    return [x for s in stages for x in [s, *([dpo] if s.name == after else [])]]


def with_rl(stages: list[Stage], preset: Preset, out: Path, device: str, eval_flags: list[str],
            chat_tasks: list[str]) -> list[Stage]:
    """The RL stages (issue 19): with preset.rl_cold_start, a short SFT of the chat model on the task's
    own conversations (rl-start); then GRPO on preset.rl_task from there (it measures held-out
    accuracy before and after itself); then the RL run's evaluation: the report's RL column."""
    rl, start = out / "rl", out / "sft"
    before = []
    if preset.rl_cold_start:
        start = out / "rl-start"
        before = [Stage("rl-start", ["sft", "--base", str(out / "sft"), "--mix", preset.rl_cold_start_mix,
                                     "--out", str(start), "--steps", str(preset.rl_cold_start), "--device", device,
                                     "--eval-every", "0", "--no-probes", *preset.rl_cold_start_extra],
                        start / "model.safetensors", resume_flag="--resume")]
    extra = {
        "sft": [*before, Stage("rl", ["rl", "--base", str(start), "--task", preset.rl_task, "--out", str(rl),
                                      "--steps", str(preset.rl_steps), "--device", device, *preset.rl_extra],
                               rl / "model.safetensors", resume_flag="--resume")],
        "eval-sft": [Stage("eval-rl", ["eval", str(rl), *(chat_tasks or ["--tasks", "bpb,t0_mc,gsm8k_tools"]),
                                       "--out", str(out / "eval" / "rl.json"), *eval_flags], out / "eval" / "rl.json")],
    }
    return [x for s in stages for x in [s, *extra.get(s.name, [])]]


def with_fact_world(stages: list[Stage], preset: Preset, out: Path, mix: str, device: str,
                    eval_flags: list[str]) -> list[Stage]:
    """The factuality stages (issue 21): a synthetic fact world mixed into pretraining at
    preset.facts_share, a search index over the documents plus every fact-world entity, a knowledge
    probe of the base model whose SFT set (answers, refusals, search calls) SFT mixes in, and a
    second SFT without probing (every fact answered confidently) that the report compares with."""
    fw, index, probe = out / "factworld", out / "search.sqlite", out / "probe"
    by = {s.name: s for s in stages}
    qa = str(fw / "qa.jsonl")
    facts_flags = ["--facts", qa, "--search-index", str(index)]
    by["tokenize"].argv.insert(3, str(fw / "pretrain"))  # after the crawl's docs directory
    sft = by["sft"]
    sft.argv[sft.argv.index("--mix") + 1] = str(probe / "mix.json")
    noprobe = Stage("sft-noprobe", [a if a != str(probe / "mix.json") else str(probe / "mix_confident.json")
                                    for a in sft.argv], out / "sft-noprobe" / "model.safetensors",
                    resume_flag="--resume", launcher=sft.launcher)
    noprobe.argv[noprobe.argv.index("--out") + 1] = str(out / "sft-noprobe")
    noprobe.argv += [] if "--no-probes" in noprobe.argv else ["--no-probes"]
    ev = by["eval-sft"]
    if "--tasks" in ev.argv:
        ev.argv[ev.argv.index("--tasks") + 1] += ",facts"
    ev.argv += facts_flags
    extra = {
        "data": [Stage("factworld", ["data", "factworld", "--out", str(fw), "--share", str(preset.facts_share),
                                     "--docs", str(out / "docs"), "--seen", str(preset.facts_entities),
                                     "--unseen", str(preset.facts_entities)], fw / "world.json")],
        "pretrain": [Stage("index", ["index", "build", str(out / "docs"), str(fw / "web.jsonl"), "--out", str(index)],
                           index),
                     Stage("probe", ["probe", str(out / "base"), "--questions", qa, "--out", str(probe),
                                     "--search-index", str(index), "--mix", mix, "--share", str(preset.facts_sft_share),
                                     "--device", device], probe / "mix.json")],
        "sft": [noprobe],
        "eval-sft": [Stage("eval-facts-noprobe", ["eval", str(out / "sft-noprobe"), "--tasks", "facts",
                                                  "--out", str(out / "eval" / "facts_noprobe.json"), *eval_flags,
                                                  *facts_flags], out / "eval" / "facts_noprobe.json")],
    }
    return [x for s in stages for x in [s, *extra.get(s.name, [])]]


def _marker(out: Path, stage: Stage) -> Path:
    return out / ".speedrun" / f"{stage.name}.json"


def portable_argv(out: Path, argv: list[str]) -> list[str]:
    """argv with the run directory written as {OUT}: a run directory moved or copied elsewhere
    keeps its done markers."""
    return [a.replace(str(out), "{OUT}") for a in argv]


def stage_done(out: Path, stage: Stage) -> dict | None:
    """The stage's marker when it finished with this very command and its output still exists."""
    m = _marker(out, stage)
    if not m.is_file() or not stage.output.exists():
        return None
    rec = json.loads(m.read_text())
    return rec if rec.get("argv") == portable_argv(out, stage.argv) else None


def _run_child(argv: list[str], deadline: float | None) -> int:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(argv, env=env)
    try:
        while True:
            try:
                return proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                if deadline is not None and time.time() > deadline:
                    # like Ctrl-C: the stage stops; its last checkpoint lets the next call resume
                    proc.send_signal(signal.SIGINT)
                    try:
                        proc.wait(timeout=60)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                    return -signal.SIGINT
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise


def speedrun(preset: Preset, out_dir, inputs: list[str] | None = None, device: str | None = None,
             time_limit: float | None = None, until: str | None = None, dry_run: bool = False,
             compare: dict | None = None, start_from: str | None = None) -> Path | None:
    """Run (or resume) the whole pipeline into out_dir; returns the report path (None on dry run
    or when the time limit stopped it early)."""
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if device is None:
        device = preset.device
        if device is None:
            import torch
            device = "cuda" if torch.cuda.is_available() else "cpu"
    started = time.time()
    deadline = started + time_limit if time_limit else None
    in_files, in_desc, heldout = resolve_inputs(preset.inputs, out, preset.input_max_mb, inputs)
    stages = plan(preset, out, in_files, device, heldout)
    names = [s.name for s in stages]
    for flag, name in (("--until", until), ("--from", start_from)):
        if name and name not in names:
            raise ChatforgeError(f"{flag} {name!r} is not a stage; choose one of {', '.join(names)}")
    # --from: stages before it count as done when their output exists, whatever made it (outputs
    # prepared on another machine, e.g. data and tokenizer built on a CPU box, carried to a GPU one)
    given = set(names[:names.index(start_from)]) if start_from else set()
    print(f"speedrun preset {preset.name} ({preset.description}) -> {out}", flush=True)
    print(f"inputs: {in_desc}", flush=True)

    timings_path = out / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}
    timings.update({"preset": preset.name, "preset_description": preset.description, "inputs": in_desc,
                    "usd_per_hour": preset.usd_per_hour, "cost_note": preset.cost_note,
                    "command": f"chatforge speedrun --preset {preset.name} --out {out}",
                    "preset_settings": {k: v for k, v in asdict(preset).items() if k not in ("name", "description")}})
    timings.setdefault("stages", {})
    rerun_downstream = False
    stopped_early = False
    for i in range(len(stages)):
        # re-planned before each stage: a command may depend on an earlier stage's output
        # (the token budget on the tokenized corpus size)
        stages = plan(preset, out, in_files, device, heldout)
        st = stages[i]
        done = None if rerun_downstream else stage_done(out, st)
        if st.name in given:
            if not st.output.exists():
                raise ChatforgeError(f"--from {start_from}: the {st.name} stage's output {st.output} is missing; "
                                     "copy it into the run directory or start from an earlier stage")
            rec = done or (json.loads(_marker(out, st).read_text()) if _marker(out, st).is_file() else {})
            done = {"seconds": rec.get("seconds", 0.0), "command": rec.get("command", st.command()) + " (given)"}
        if done:
            print(f"[{i + 1}/{len(stages)}] {st.name}: done earlier ({done['seconds']:.1f} s), skipped  "
                  f"| {done['command']}", flush=True)
            timings["stages"][st.name] = {"seconds": done["seconds"], "status": "done (earlier run)",
                                          "command": done["command"]}
        else:
            if _marker(out, st).is_file():
                # finished before with another command: its output and everything after it are stale
                for later in stages[i:]:
                    _marker(out, later).unlink(missing_ok=True)
                    if later.output.exists() and later is not stages[0]:
                        target = later.output if later.output.is_dir() else later.output.parent
                        if target != out and out in target.parents:
                            shutil.rmtree(target, ignore_errors=True)
            rerun_downstream = True
            resume = st.resume_flag is not None and (st.output.parent / "checkpoint").exists()
            cmd = st.command(resume)
            print(f"[{i + 1}/{len(stages)}] {st.name}{' (resuming)' if resume else ''}\n$ {cmd}", flush=True)
            if dry_run:
                continue
            if deadline is not None and time.time() > deadline:
                print(f"time limit reached before {st.name}; run the same speedrun command again to continue", flush=True)
                stopped_early = True
                break
            t0 = time.time()
            rc = _run_child(st.exec_argv(resume), deadline)
            secs = time.time() - t0 + (timings["stages"].get(st.name, {}).get("seconds_partial", 0.0))
            if rc != 0:
                timings["stages"][st.name] = {"seconds_partial": secs, "status": "interrupted", "command": cmd}
                atomic_write_json(timings_path, timings)
                if rc == -signal.SIGINT and deadline is not None:
                    print(f"time limit reached during {st.name}; run the same speedrun command again to resume it",
                          flush=True)
                    stopped_early = True
                    break
                raise ChatforgeError(f"stage {st.name} failed (exit {rc}); fix the cause and rerun the speedrun "
                                     f"(finished stages are kept), or run `{cmd}` by hand")
            rec = {"argv": portable_argv(out, st.argv), "command": cmd, "seconds": round(secs, 2),
                   "finished": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}
            atomic_write_json(_marker(out, st), rec)
            timings["stages"][st.name] = {"seconds": rec["seconds"], "status": "ran", "command": cmd}
            atomic_write_json(timings_path, timings)
        if until == st.name:
            stopped_early = True
            break
    if dry_run:
        return None
    timings["wall_seconds_this_call"] = round(time.time() - started, 2)
    atomic_write_json(timings_path, timings)
    from chatforge.eval.report import write_report

    samples = _tokenizer_samples(heldout)
    report = write_report(out, title=f"chatforge report card: {preset.name}", tokenizer_samples=samples,
                          compare=compare)
    total = sum(s.get("seconds", s.get("seconds_partial", 0.0)) for s in timings["stages"].values())
    print(f"{'stopped early; partial ' if stopped_early else ''}report: {report}  (stage time {total / 60:.1f} min)",
          flush=True)
    return None if stopped_early else report


def _tokenizer_samples(heldout: str | None = None) -> list[tuple[str, str]]:
    """Held-out text to measure the tokenizer's compression on (WikiText-2 test, first 200 KB)."""
    if heldout:
        return [("held-out local text (200 KB)", Path(heldout).read_text(encoding="utf-8")[:200_000])]
    try:
        from chatforge.eval.bpb import wikitext_articles
        text = "\n\n".join(wikitext_articles())[:200_000]
        return [("WikiText-2 test (200 KB)", text)]
    except ChatforgeError:
        return []
