"""Load test of `chatforge serve`: 64 concurrent streaming clients with hostile requests mixed in.

    python benchmarks/serve_load.py [--run RUN] [--clients 64] [--rounds 3] [--max-tokens 32]

Starts the real server (`python -m chatforge serve`, a subprocess with --api-key) on a tiny model
(RUN, default runs/cpu-tiny-ref/sft when present, else a random d2 model with a synthetic
tokenizer), then for each round launches at once:
  - `clients` valid streaming chat requests (they retry on 429 after Retry-After, as OpenAI
    clients do), timed: time to first content and total time;
  - as many hostile ones: malformed JSON, wrong types, a 2 MiB body, a chunked body over the cap,
    max_tokens over the cap, a wrong API key, a foreign Origin, and clients that hang up mid-stream.
The server admits 2 x clients generations at once, so every request is really parsed and run
(the 429 path itself is tested in tests/serve/test_security.py).
Checks: the server never crashes (same pid, /health answers), every valid request ends with
`data: [DONE]`, every hostile one gets its 4xx (or was cut by its own client), and after the
load the server is idle (nothing in flight, queued or decoding) with its RSS back near the
baseline taken after a warm-up round. Prints latency percentiles and the memory check.
The baseline for the ratio column is the same request alone on the idle server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

KEY = "sk-load-test"
AUTH = {"Authorization": f"Bearer {KEY}"}


def tiny_run(tmp: Path) -> Path:
    """A random d2 chat model with a synthetic tokenizer (no data, no training)."""
    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from inference import synthetic_tokenizer

    from chatforge.model import GPT, GPTConfig, save_run

    tok = synthetic_tokenizer(1024)
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_preset("d2", vocab_size=tok.vocab_size, seq_len=512))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.normal_(0, 1.0 if "embed" in name else 0.1)
    return save_run(tmp / "load-run", model, tok, kind="sft")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))] if xs else float("nan")


class Load:
    def __init__(self, url: str, model: str, max_tokens: int):
        self.url, self.model, self.max_tokens = url, model, max_tokens
        self.ttft, self.total, self.retries_429 = [], [], 0
        self.failures: list[str] = []

    def body(self, i, **kw):
        return {"model": self.model, "messages": [{"role": "user", "content": f"client {i}: tell me a story"}],
                "max_tokens": self.max_tokens, "temperature": 0.8, "seed": i, "stream": True, **kw}

    async def valid(self, client, i):
        for _ in range(200):
            t0 = time.perf_counter()
            first, done = None, False
            async with client.stream("POST", "/v1/chat/completions", json=self.body(i), headers=AUTH) as r:
                if r.status_code == 429:
                    self.retries_429 += 1
                    await r.aread()
                    await asyncio.sleep(float(r.headers.get("retry-after", "1")))
                    continue
                if r.status_code != 200:
                    self.failures.append(f"valid {i}: HTTP {r.status_code} {(await r.aread())[:200]!r}")
                    return
                async for line in r.aiter_lines():
                    if line == "data: [DONE]":
                        done = True
                    elif line.startswith("data: ") and first is None and '"content": "' in line \
                            and '"content": ""' not in line:
                        first = time.perf_counter() - t0
            if not done:
                self.failures.append(f"valid {i}: stream ended without [DONE]")
                return
            self.total.append(time.perf_counter() - t0)
            self.ttft.append(first if first is not None else self.total[-1])
            return
        self.failures.append(f"valid {i}: still refused (429) after 200 tries")

    async def hostile(self, client, i):
        u = "/v1/chat/completions"
        kind = i % 8
        if kind == 7:  # hang up mid-stream: the server must cancel, not leak the generation
            async with client.stream("POST", u, json=self.body(i, max_tokens=400), headers=AUTH) as r:
                async for n, _ in _enumerate(r.aiter_lines()):
                    if n > 3:
                        break
            return
        if kind == 0:
            r = await client.post(u, content=b"{not json", headers={**AUTH, "Content-Type": "application/json"})
            want = {400}
        elif kind == 1:
            r = await client.post(u, json=self.body(i, temperature="hot"), headers=AUTH)
            want = {400}
        elif kind == 2:
            r = await client.post(u, json=self.body(i, pad="x" * (2 << 20)), headers=AUTH)
            want = {413}
        elif kind == 3:
            async def chunks():
                yield b'{"model": "m", "messages": [{"role": "user", "content": "'
                for _ in range(40):
                    yield b"z" * 65536
                yield b'"}]}'
            r = await client.post(u, content=chunks(), headers={**AUTH, "Content-Type": "application/json"})
            want = {413}
        elif kind == 4:
            r = await client.post(u, json=self.body(i, max_tokens=10 ** 9), headers=AUTH)
            want = {400}
        elif kind == 5:
            r = await client.post(u, json=self.body(i), headers={"Authorization": "Bearer wrong"})
            want = {401}
        else:
            r = await client.post(u, json=self.body(i), headers={**AUTH, "Origin": "https://evil.example"})
            want = {403}
        if r.status_code not in want:
            self.failures.append(f"hostile kind {kind}: HTTP {r.status_code}, wanted {want}")

    async def round(self, clients: int):
        limits = httpx.Limits(max_connections=4 * clients, max_keepalive_connections=2 * clients)
        async with httpx.AsyncClient(base_url=self.url, timeout=300, limits=limits) as client:
            jobs = [self.valid(client, i) for i in range(clients)] + [self.hostile(client, i) for i in range(clients)]
            await asyncio.gather(*jobs)


async def _enumerate(ait):
    n = 0
    async for x in ait:
        yield n, x
        n += 1


def wait_idle(url: str, timeout: float = 60) -> dict:
    t = time.monotonic()
    while time.monotonic() - t < timeout:
        h = httpx.get(url + "/health", timeout=10).json()
        if h["busy_rows"] == 0 and h["queued"] == 0 and h["in_flight"] == 0:
            return h
        time.sleep(0.1)
    raise AssertionError(f"server not idle after the load: {h}")


def run_load(run: Path, clients: int = 64, rounds: int = 3, max_tokens: int = 32) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "chatforge", "serve", str(run), "--port", str(port),
                             "--device", "cpu",
                             "--api-key", KEY, "--no-tools", "--max-tokens-cap", "512",
                             "--max-concurrent", str(2 * clients)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        model = httpx.get(url + "/v1/models", headers=AUTH).json()["data"][0]["id"]
        load = Load(url, model, max_tokens)
        alone = []
        for i in range(5):  # the baseline: one request on the idle server
            t = time.perf_counter()
            asyncio.run(_one(load, i))
            alone.append(time.perf_counter() - t)
        asyncio.run(load.round(clients))  # warm-up round: allocator pools, thread pools
        wait_idle(url)
        time.sleep(1)
        base_rss = rss_kb(proc.pid)
        load.ttft, load.total, load.failures = [], [], []
        t0 = time.perf_counter()
        rss_rounds = []
        for _ in range(rounds):
            asyncio.run(load.round(clients))
            wait_idle(url)
            rss_rounds.append(rss_kb(proc.pid) / 1024)
        wall = time.perf_counter() - t0
        health = wait_idle(url)
        time.sleep(1)
        end_rss = rss_kb(proc.pid)
        alive = proc.poll() is None
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    return {"clients": clients, "rounds": rounds, "max_tokens": max_tokens, "valid_done": len(load.total),
            "valid_expected": clients * rounds, "failures": load.failures, "retries_429": load.retries_429,
            "ttft": load.ttft, "total": load.total, "alone": alone, "wall_s": wall,
            "base_rss_mb": base_rss / 1024, "end_rss_mb": end_rss / 1024, "alive": alive, "rss_rounds": rss_rounds,
            "health": health, "server_log_tail": out[-2000:]}


async def _one(load, i):
    async with httpx.AsyncClient(base_url=load.url, timeout=120) as c:
        await load.valid(c, i)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default=None)
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()
    ref = Path(__file__).resolve().parents[1] / "runs/cpu-tiny-ref/sft"
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run) if args.run else (ref if (ref / "model.safetensors").is_file() else tiny_run(Path(tmp)))
        r = run_load(run, args.clients, args.rounds, args.max_tokens)
    print(f"model {run}; {r['clients']} streaming clients + {r['clients']} hostile per round, {r['rounds']} rounds, "
          f"max_tokens {r['max_tokens']}, {r['wall_s']:.1f} s")
    alone_ttft = statistics.median(r["alone"])
    print(f"{'latency (s)':26s} {'p50':>7s} {'p90':>7s} {'p99':>7s} {'max':>7s}   p50 vs alone (idle server)")
    for name, xs in (("time to first token", r["ttft"]), ("whole reply", r["total"])):
        print(f"{name:26s} {pct(xs, 50):7.2f} {pct(xs, 90):7.2f} {pct(xs, 99):7.2f} {max(xs):7.2f}   "
              f"{pct(xs, 50) / alone_ttft:10.1f}x" if name == "whole reply" else
              f"{name:26s} {pct(xs, 50):7.2f} {pct(xs, 90):7.2f} {pct(xs, 99):7.2f} {max(xs):7.2f}")
    print(f"alone (idle server, whole reply): median {alone_ttft:.2f} s")
    print(f"valid requests completed: {r['valid_done']}/{r['valid_expected']} (429 retries: {r['retries_429']}); "
          f"failures: {len(r['failures'])}; server alive: {r['alive']}")
    print(f"server RSS: {r['base_rss_mb']:.0f} MB after warm-up -> {r['end_rss_mb']:.0f} MB after the load "
          f"({r['end_rss_mb'] - r['base_rss_mb']:+.0f} MB; after each round: "
          f"{', '.join(f'{x:.0f}' for x in r['rss_rounds'])} MB); idle: {json.dumps(r['health'])}")
    for f in r["failures"][:10]:
        print("  FAIL", f)
    ok = r["alive"] and not r["failures"] and r["valid_done"] == r["valid_expected"]
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
