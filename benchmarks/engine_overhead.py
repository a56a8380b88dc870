"""The engine's host-side cost per token, with the model taken out.

On a GPU the d12 decode step is a CUDA graph replay of ~0.1-0.2 ms, so whatever the engine does
around it on the host (sampling ops, log-probs, device->host copies, text decoding, stop checks,
events, per-row bookkeeping) is what limits batch-1 speed. This runs the real `Engine.generate`
loop, but the decoder is replaced by one that returns precomputed logits instantly (a pool of
random [rows, vocab] tensors, cycled so tokens and text vary; special tokens masked so rows never
stop early). Everything else is the engine's own code.

Reports microseconds per generated token: the total (time inside the stub decoder excluded),
and a phase breakdown from timing wrappers
around the engine's own functions (the wrappers add ~1 us per call, so phases slightly overstate):
  sample   = `_sample_rows` (argmax / top-k / top-p / draw, log-prob, the one copy to host)
  rows     = the rest of `_step_tokens`: per-row state machine, events, stop checks
  text     = `_flush_text` (incremental detokenization + stop-string search; part of rows)
  loop     = everything else in `generate` (feeding tokens to the decoder, row bookkeeping, yield)
The batch-32 column "us/step" is per decode step (32 tokens). "torch ops/step" counts the aten ops
the engine dispatches per decode step outside the decoder (views included): on a GPU most are a
kernel launch or a copy, the part of the host cost a CPU run cannot show in microseconds. The
greedy pick (argmax + log-prob) that StaticDecoder does inside its CUDA graph is run eagerly by
the stub, uncounted and untimed (as the model's part, like the stub's own indexing).
Note that on a CPU "sample" also contains the sampling math itself (softmax/sort over the vocab),
which a GPU does in microseconds.

    python benchmarks/engine_overhead.py                  # batch 1 and 32, greedy / sampled / seeded
    python benchmarks/engine_overhead.py --tokens 512 --batch 1
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

sys.path.insert(0, str(Path(__file__).resolve().parent))


STUB_SECONDS = [0.0]  # time spent inside the stub decoder: the model's part, not the engine's


class FixedLogitsDecoder:
    """The decoder interface of chatforge.infer.decode with no model behind it."""

    def __init__(self, pool: torch.Tensor, max_len: int):
        rows = pool.shape[1]
        self.pool = pool
        self.k = torch.empty(1, rows)  # the engine reads k.shape[1] as the row capacity
        self.max_len, self.rows, self.pos, self.i = max_len, rows, 0, 0
        self.picked = None

    def _next(self):
        self.i += 1
        return self.pool[self.i % len(self.pool), :self.rows]

    def prefill(self, ids, mask):
        self.rows, self.pos = ids.shape[0], ids.shape[1]
        with _disable_current_modes():
            return self._next()

    def select(self, index):
        self.rows = len(index)

    def step(self, tokens, pick=False):
        # an all-greedy step: StaticDecoder picks argmax + log-prob as part of the step (inside the
        # CUDA graph on a GPU); here those ops run eagerly and count under "loop"
        self.pos += 1
        t0 = time.perf_counter()
        with _disable_current_modes():  # the decoder's own ops are not the engine's host cost
            logits = self._next()
            self.picked = None
            if pick:
                from chatforge.infer.decode import greedy_pick
                self.picked = greedy_pick(logits)
        STUB_SECONDS[0] += time.perf_counter() - t0
        return logits


def make_engine(vocab: int, device):
    from chatforge.infer.engine import Engine
    from chatforge.model import GPT, GPTConfig
    from inference import synthetic_tokenizer

    tok = synthetic_tokenizer(vocab)
    model = GPT(GPTConfig.from_preset("d2", vocab_size=vocab, seq_len=4096)).to(device).eval()

    pools = {}

    class StubEngine(Engine):
        def _get_decoder(self, rows, max_len):
            if rows not in pools:  # made once: its cost is not the engine's
                g = torch.Generator().manual_seed(0)
                pool = torch.randn(64, rows, tok.vocab_size, generator=g) * 3
                pool[..., tok.n_ordinary:] = float("-inf")  # never a stop / tool token
                pools[rows] = pool.to(self.device)
            return FixedLogitsDecoder(pools[rows], max_len)

    return StubEngine(model, tok), tok


class OpCounter(TorchDispatchMode):
    """Counts aten ops (each one a kernel launch or more on a GPU, ~5-20 us of host time there)."""

    def __init__(self):
        super().__init__()
        self.n = 0
        self.host_copies = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        if func is torch.ops.aten._local_scalar_dense.default or (
                func is torch.ops.aten._to_copy.default and str((kwargs or {}).get("device", "")) == "cpu"):
            self.host_copies += 1
        return func(*args, **(kwargs or {}))


class PhaseTimer:
    """Wraps functions in place and accumulates their inclusive wall time."""

    def __init__(self):
        self.t = defaultdict(float)
        self.undo = []

    def wrap(self, obj, name, label):
        fn = getattr(obj, name)
        t = self.t

        def timed(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                t[label] += time.perf_counter() - t0
        had = name in vars(obj)
        old = vars(obj).get(name)
        setattr(obj, name, timed)
        self.undo.append((obj, name, had, old))

    def restore(self):
        for obj, name, had, old in reversed(self.undo):
            if had:
                setattr(obj, name, old)
            else:
                delattr(obj, name)
        self.undo.clear()


def run(engine, prompts, params):
    from chatforge.infer.engine import Request

    reqs = [Request(p, params) for p in prompts]
    n = 0
    STUB_SECONDS[0] = 0.0
    t0 = time.perf_counter()
    for events in engine.generate(reqs):
        n += sum(ev.token is not None for ev in events)
    return time.perf_counter() - t0 - STUB_SECONDS[0], n


def measure(engine, prompts, params, repeats):
    import chatforge.infer.engine as eng

    run(engine, prompts, params)  # warm-up
    best = min(run(engine, prompts, params) for _ in range(repeats))
    total, n = best
    pt = PhaseTimer()
    pt.wrap(eng, "_sample_rows", "sample")
    pt.wrap(engine, "_step_tokens", "step_tokens")
    pt.wrap(engine, "_flush_text", "text")
    try:
        t_all, n2 = run(engine, prompts, params)  # one instrumented pass for the split
    finally:
        pt.restore()
    with OpCounter() as oc:
        _, n3 = run(engine, prompts, params)
    steps = n3 / len(prompts)
    ph = {k: v / n2 * 1e6 for k, v in pt.t.items()}
    ph["ops"] = oc.n / steps

    ph["rows"] = ph.get("step_tokens", 0) - ph.get("sample", 0)
    ph["loop"] = t_all / n2 * 1e6 - ph.get("step_tokens", 0)
    return total / n * 1e6, ph


def main(argv=None):
    from chatforge.infer.engine import SamplingParams

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", default="1,32")
    ap.add_argument("--tokens", type=int, default=128, help="new tokens per row")
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--vocab", type=int, default=32768)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    engine, tok = make_engine(args.vocab, device)
    modes = {
        "greedy": dict(temperature=0),
        "greedy, text decoded at the end (RL)": dict(temperature=0, stream_text=False),
        "sampled T=0.8 top-k 50 top-p 0.95": dict(temperature=0.8, top_k=50, top_p=0.95),
        "sampled T=0.8, seeded": dict(temperature=0.8, seed=1),
    }
    g = torch.Generator().manual_seed(0)
    print(f"engine host overhead, model stubbed out; device {device}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), vocab {tok.vocab_size}, {args.tokens} new tokens per row")
    print()
    print("| batch | mode | us/token | us/step | sample | rows (text) | loop | torch ops/step |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for b in [int(x) for x in args.batch.split(",")]:
        prompts = torch.randint(0, tok.n_ordinary, (b, args.prompt_len), generator=g).tolist()
        for name, kw in modes.items():
            sp = SamplingParams(max_tokens=args.tokens, stop_token_ids=(), use_tools=False, **kw)
            us, ph = measure(engine, prompts, sp, args.repeats)
            print(f"| {b} | {name} | {us:.1f} | {us * b:.0f} | {ph.get('sample', 0):.1f} | "
                  f"{ph['rows']:.1f} ({ph.get('text', 0):.1f}) | {ph['loop']:.1f} | {ph['ops']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
