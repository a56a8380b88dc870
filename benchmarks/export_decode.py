"""Decode speed of an exported model in llama.cpp against our engine, on the CPU (informative).

    python benchmarks/export_decode.py --preset d12 --threads 8      # needs llama-cpp-python

A random-weight model of the preset's shape (speed does not depend on the values) with a
synthetic byte-level BPE vocabulary of --vocab ids is saved as a run, exported with
`chatforge export`'s GGUF code (f32 / f16 / q8_0), and decoded greedily for --new-tokens tokens
after a short prompt: by our Engine (fp32 weights, KV cache, torch on --threads threads) and by
llama.cpp through llama-cpp-python (same threads). Timed: the decode steps only (from the first
new token to the last), after a warm-up generation. Same process, same machine: read the ratios.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def synthetic_tokenizer(vocab_size: int):
    """A valid BPE vocabulary of vocab_size ids (specials included), made without training: the
    decode speed depends on the vocabulary's size only."""
    from chatforge.tokenizer import SPECIAL_TOKENS, Tokenizer

    target = vocab_size - len(SPECIAL_TOKENS)
    letters = list(range(97, 123)) + [32]
    tb = [bytes([i]) for i in range(256)]
    merges, queue = [], list(letters)
    for left in queue:  # breadth-first: every string over a-z and space, shortest first (all distinct)
        for b in letters:
            if len(tb) >= target:
                return Tokenizer(merges)
            merges.append((left, b, len(tb)))
            queue.append(len(tb))
            tb.append(tb[left] + bytes([b]))
    return Tokenizer(merges)


def time_ours(model, tok, prompt, n, threads):
    from chatforge.infer.engine import Engine, Request, SamplingParams

    torch.set_num_threads(threads)
    engine = Engine(model, tok)
    params = SamplingParams(max_tokens=n, temperature=0, stop_token_ids=(), use_tools=False)
    stamps = []
    for _ in engine.generate([Request(list(prompt), params, 1)]):
        stamps.append(time.perf_counter())
    return (n - 1) / (stamps[-1] - stamps[0])


def time_llama(path, prompt, n, threads):
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=len(prompt) + n + 8, n_threads=threads,
                          n_threads_batch=threads, verbose=False)
    llm.eval(prompt)
    nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    t0 = time.perf_counter()
    for _ in range(n - 1):
        llm.eval([nxt])
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    return (n - 1) / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="d12")
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--threads", default="2", help="thread counts to measure, comma-separated (e.g. 4,16)")
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--quants", default="f32,f16,q8_0")
    ap.add_argument("--out", help="where the run and GGUF files go (default: a temp dir)")
    args = ap.parse_args()

    from chatforge.export.gguf import export_gguf
    from chatforge.model import GPT, GPTConfig
    from chatforge.model.run_dir import save_run

    out = Path(args.out or tempfile.mkdtemp(prefix="export_decode."))
    torch.manual_seed(0)
    tok = synthetic_tokenizer(args.vocab)
    model = GPT(GPTConfig.from_preset(args.preset, vocab_size=tok.vocab_size, seq_len=2048))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.02)
    model.eval()
    save_run(out / "run", model, tok, kind="sft", step=0)
    t0 = time.time()
    quants = args.quants.split(",")
    files = export_gguf(out / "run", out / "gguf", quants=quants)
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?")
    print(f"{args.preset}: {model.num_params() / 1e6:.1f} M params, vocab {tok.vocab_size}; exported "
          f"{', '.join(quants)} in {time.time() - t0:.1f} s; {args.new_tokens} new tokens; {cpu}, "
          f"{os.cpu_count()} logical CPUs; torch {torch.__version__}")
    prompt = [tok.bos_id] + list(range(300, 315))
    print("| threads | runtime | weights | decode tok/s | vs chatforge |\n|---|---|---|---|---|")
    for threads in map(int, args.threads.split(",")):
        time_ours(model, tok, prompt, 8, threads)  # warm-up
        ours = time_ours(model, tok, prompt, args.new_tokens, threads)
        rows = [("chatforge Engine", "fp32", ours)]
        for q, f in zip(quants, files):
            time_llama(f, prompt, 8, threads)
            rows.append(("llama.cpp", q, time_llama(f, prompt, args.new_tokens, threads)))
        for name, w, r in rows:
            print(f"| {threads} | {name} | {w} | {r:.1f} | {r / ours:.2f}x |", flush=True)

if __name__ == "__main__":
    main()
