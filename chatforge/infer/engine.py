"""The generation engine: prefill + incremental decode over the model's KV cache, many rows at once.

One `generate(requests)` call runs a static batch: every request contributes `n` rows. Distinct
prompts are prefilled once each (left-padded to one length, padding masked out); rows of the same
prompt then share a copy of its cache. Each decode step feeds one token per row: the sampled one,
or, after a tool call, the next token of the tool's output (nanochat's "forced tokens"). Finished
or cancelled rows are dropped from the cache so they cost nothing more.

Per-row state machine (the conversation contract in docs/architecture.md):
  text ... <|python_start|> code <|python_end|>  -> run the tool ->  forced:
  <|output_start|> output <|output_end|>  -> text ... <|assistant_end|> (stop)
`generate` yields, after every step, the events of that step (text deltas per part, token ids,
log-probabilities, finish reasons), so callers can stream.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import Iterator

import torch

from chatforge.common import ChatforgeError
from chatforge.infer.decode import draw
from chatforge.infer.tools import OUTPUT_END, OUTPUT_START, Tool, ToolRegistry

_ids = itertools.count()


class ContextTooLong(ChatforgeError):
    """The prompt does not fit in the model's context window (HTTP 400 in the server)."""


@dataclass
class SamplingParams:
    max_tokens: int = 256                # tokens the model may write (tool output not counted)
    temperature: float = 1.0             # 0 = greedy
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None              # row i of a request uses seed + i
    stop: tuple[str, ...] = ()           # stop strings (not included in the output)
    stop_token_ids: tuple[int, ...] | None = None  # None: <|assistant_end|>, <|bos|> and turn starts
    use_tools: bool = True
    # False: decode the reply's text once at the end rather than after every token (no text deltas
    # while it runs; ignored when there are stop strings, which need the text). For callers that
    # only want finished completions, such as RL rollouts: the per-token decoding is host work
    # done for every row at every step
    stream_text: bool = True

    def validate(self) -> None:
        if not (isinstance(self.max_tokens, int) and self.max_tokens >= 1):
            raise ChatforgeError(f"max_tokens must be a positive integer, got {self.max_tokens!r}")
        if not (0 <= self.temperature <= 100):
            raise ChatforgeError(f"temperature must be in [0, 100], got {self.temperature!r}")
        if self.top_p is not None and not (0 < self.top_p <= 1):
            raise ChatforgeError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if self.top_k is not None and not (isinstance(self.top_k, int) and self.top_k >= 1):
            raise ChatforgeError(f"top_k must be a positive integer, got {self.top_k!r}")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ChatforgeError("stop strings must be non-empty strings")


@dataclass
class Request:
    prompt: list[int]
    params: SamplingParams = field(default_factory=SamplingParams)
    n: int = 1
    id: int = field(default_factory=lambda: next(_ids))
    _cancelled: threading.Event = field(default_factory=threading.Event, repr=False)

    def cancel(self) -> None:
        """Stop this request's rows at the next step (thread-safe: call it from anywhere)."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()


@dataclass
class Event:
    request: Request
    index: int                           # which of the request's n rows
    token: int | None = None             # the token appended this step (None on pure finish)
    logprob: float | None = None         # log p(token) under the model; None for forced tokens
    forced: bool = False
    parts: list[tuple[str, str]] = field(default_factory=list)  # (part type, text delta)
    finish_reason: str | None = None     # "stop" | "length" | "cancelled"


@dataclass
class Completion:
    """A finished row: what `complete` returns and what the server turns into a choice."""
    index: int
    parts: list[dict]                    # [{"type": "text"|"python"|"python_output", "text": ...}]
    token_ids: list[int]
    logprobs: list[float | None]
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int               # tokens the model wrote (tool output excluded)

    @property
    def text(self) -> str:
        return "".join(p["text"] for p in self.parts if p["type"] == "text")


def merge_parts(parts: list[dict], deltas: list[tuple[str, str]]) -> None:
    """Append streamed (type, text) deltas onto a list of parts, joining runs of one type."""
    for kind, text in deltas:
        if parts and parts[-1]["type"] == kind and not parts[-1].get("_closed"):
            parts[-1]["text"] += text
        else:
            parts.append({"type": kind, "text": text})


class _Row:
    """Decode state of one sequence."""

    def __init__(self, req: Request, index: int, prompt_len: int, generator, stop_ids: frozenset[int]):
        self.req, self.index, self.prompt_len, self.generator = req, index, prompt_len, generator
        p = req.params
        self.stop_strings = p.stop
        self.stop_ids = stop_ids  # the request's stop token ids, or the engine's defaults
        self.hold = max((len(s) for s in p.stop), default=1) - 1  # chars held back for stop strings
        self.n_sampled = 0
        self.forced: list[int] = []
        self.tool: Tool | None = None        # inside a tool call
        self.call_ids: list[int] = []
        self.call_emitted = 0
        self.part_ids: list[int] = []        # ids of the current text run (decoded incrementally)
        self.text = ""                       # all assistant text so far (stop-string search)
        self.emitted = 0                     # chars of self.text already emitted
        self.part_base = 0                   # len(self.text) when the current text run began
        self.part_ckpt = 0                   # part_ids[:part_ckpt] decode cleanly to part_done
        self.part_done = ""
        self.finish: str | None = None
        self.lazy = not p.stream_text and not p.stop  # text decoded at the end only


class Engine:
    def __init__(self, model, tokenizer, tools: ToolRegistry | None = None, max_context: int | None = None,
                 fast: bool = True, cuda_graphs: bool = True, compile: bool = False, overlap: bool = True):
        self.model = model
        self.overlap = overlap  # queue the next decode step before this one's host work (_generate)
        # the static decoder (CUDA graphs) needs chatforge's GPT; anything else goes through
        # the generic model(idx, kv_cache=...) contract
        from chatforge.model import GPT
        self.fast = fast and isinstance(model, GPT)
        self.cuda_graphs, self.compile = cuda_graphs, compile
        self._decoder = None
        self.tok = tokenizer
        self.tools = tools if tools is not None else ToolRegistry()
        self.device = next(model.parameters()).device
        self.max_context = int(max_context or model.config.seq_len)
        sid = tokenizer.special_id
        self.assistant_end = sid("<|assistant_end|>")
        self.default_stops = frozenset(sid(t) for t in ("<|assistant_end|>", "<|bos|>", "<|user_start|>",
                                                        "<|system_start|>", "<|assistant_start|>"))
        self.tool_by_start = self.tools.by_start_id(tokenizer)
        self.tool_ends = {sid(t.end) for t in self.tools}
        self.output_start, self.output_end = sid(OUTPUT_START), sid(OUTPUT_END)
        self.lock = threading.Lock()  # one batch on the model at a time

    @classmethod
    def from_run(cls, run_dir, device: str | None = None, tools: bool = True, search_index=None,
                 **options) -> "Engine":
        """Load RUN (model + its tokenizer) for inference; bf16 weights on CUDA. With tools, the
        python tool, and the search tool when a search index is given."""
        from chatforge.common import default_device
        from chatforge.infer.tools import default_tools
        from chatforge.model import load_run

        device = device or default_device()
        dtype = torch.bfloat16 if str(device).startswith("cuda") else None
        model, tok, _ = load_run(run_dir, device=device, dtype=dtype)
        if tok is None:
            raise ChatforgeError(f"{run_dir} has no tokenizer/ directory; it is not a complete run")
        return cls(model, tok, default_tools(search_index, tok) if tools else ToolRegistry(), **options)

    # ------------------------------------------------------------------------------------------
    def chat_prompt(self, messages) -> list[int]:
        """Prompt ids for a chat (ending with <|assistant_start|>), checked against the context."""
        ids = self.tok.render_for_completion(messages)
        self.check_prompt(ids)
        return ids

    def check_prompt(self, ids: list[int]) -> None:
        if not ids:
            raise ChatforgeError("empty prompt; send at least one token of text")
        if len(ids) >= self.max_context:
            raise ContextTooLong(f"prompt is {len(ids)} tokens but the model's context is {self.max_context}; "
                                 "shorten the conversation or the prompt")

    def complete(self, prompt: list[int], params: SamplingParams | None = None, n: int = 1) -> list[Completion]:
        """Run one request to the end; -> its n completions."""
        req = Request(list(prompt), params or SamplingParams(), n)
        return self.run_to_completion([req])[req.id]

    def run_to_completion(self, requests: list[Request]) -> dict[int, list[Completion]]:
        state = {r.id: [dict(parts=[], ids=[], lps=[], fin=None, sampled=0) for _ in range(r.n)] for r in requests}
        for events in self.generate(requests):
            for ev in events:
                s = state[ev.request.id][ev.index]
                if ev.token is not None:
                    s["ids"].append(ev.token)
                    s["lps"].append(ev.logprob)
                    s["sampled"] += not ev.forced
                merge_parts(s["parts"], ev.parts)
                if ev.finish_reason:
                    s["fin"] = ev.finish_reason
        return {r.id: [Completion(i, s["parts"], s["ids"], s["lps"], s["fin"], len(r.prompt), s["sampled"])
                       for i, s in enumerate(state[r.id])] for r in requests}

    # ------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, requests: list[Request], admit=None, max_rows: int = 0) -> Iterator[list[Event]]:
        """Yield the events of each decode step until every row of every request has finished.

        `admit(free_rows, pos, room)`, when given, is asked between steps for more requests to
        join the running batch (continuous batching, fast decoder only): it returns requests with
        at most `free_rows` rows in all, prompts of at most `pos` tokens (they are left-padded up
        to the batch's position) and wanting at most `room` more positions. `max_rows` reserves
        decoder rows for such joiners.
        """
        for r in requests:
            r.params.validate()
            self.check_prompt(r.prompt)
        with self.lock:
            yield from self._generate(requests, admit if self.fast else None, max_rows)

    def _new_rows(self, r: Request) -> list[_Row]:
        rows = []
        stops = self.default_stops if r.params.stop_token_ids is None else frozenset(r.params.stop_token_ids)
        for i in range(r.n):
            g = None
            if r.params.seed is not None:
                g = torch.Generator(device=self.device)
                g.manual_seed(int(r.params.seed) + i)
            rows.append(_Row(r, i, len(r.prompt), g, stops))
        return rows

    @staticmethod
    def _left_pad(prompts: list[list[int]], length: int, pad: int):
        ids = torch.full((len(prompts), length), pad, dtype=torch.long)
        mask = torch.zeros((len(prompts), length), dtype=torch.long)
        for i, p in enumerate(prompts):
            ids[i, length - len(p):] = torch.tensor(p)
            mask[i, length - len(p):] = 1
        return ids, mask

    def _generate(self, requests: list[Request], admit=None, max_rows: int = 0) -> Iterator[list[Event]]:
        dev = self.device
        # distinct prompts, prefilled once each, left-padded to a common length
        uniq: dict[tuple, int] = {}
        for r in requests:
            uniq.setdefault(tuple(r.prompt), len(uniq))
        prompts = list(uniq)
        P = max(len(p) for p in prompts)
        budget = max(r.params.max_tokens for r in requests)
        if any(r.params.use_tools for r in requests) and len(self.tools):
            budget += 1024  # room for forced tool output
        max_len = min(self.max_context, P + budget) if admit is None else self.max_context
        ids, mask = self._left_pad(prompts, P, self.tok.bos_id)
        ragged = bool((mask == 0).any())
        n_rows = sum(r.n for r in requests)
        dec = self._get_decoder(max(len(prompts), n_rows, max_rows), max_len)
        logits = dec.prefill(ids.to(dev), mask.to(dev) if ragged else None)

        rows: list[_Row] = []
        src = []
        for r in requests:
            rows += self._new_rows(r)
            src += [uniq[tuple(r.prompt)]] * r.n
        if src != list(range(len(prompts))):  # some prompt feeds several rows: copy its cache
            index = torch.tensor(src, device=dev)
            dec.select(index)
            logits = logits.index_select(0, index)

        picked = None  # the decoder's own pick for `logits` (see _pick_mode), else None
        while rows:
            ahead, host, pos = None, None, dec.pos  # pos: before any step queued ahead
            if (self.overlap and picked is not None and admit is None and pos < max_len
                    and not any(r.forced for r in rows)):
                # every row's next input is the token just picked, already on the device: queue
                # the next step now, so the GPU computes it while the host does this step's
                # per-row bookkeeping (and the caller handles its events). Rows that finish here
                # get one wasted step; a row that starts a tool call takes the forced output from
                # the step after, and then this path waits for the host again.
                host = _to_host_async(picked[1])  # queued before the next step overwrites it
                pick = self._pick_mode(rows, dec)
                ahead = dec.step(picked[0], pick=pick), pick
                host = host()
            events, nxt, nxt_dev = self._step_tokens(rows, logits, picked, host)
            finished = [j for j, row in enumerate(rows) if row.finish]
            if pos >= max_len:
                for j, row in enumerate(rows):
                    if not row.finish:
                        ev = Event(row.req, row.index)
                        self._finish(row, "length", ev)
                        events.append(ev)
                        finished.append(j)
            yield events
            kept = None  # device index of the rows left, when some finished
            if finished:
                keep = [j for j, row in enumerate(rows) if not row.finish]
                if not keep:
                    return
                if len(keep) < len(rows):
                    kept = torch.tensor(keep, device=dev)
                    dec.select(kept)
                    rows = [rows[j] for j in keep]
                    nxt, nxt_dev = [nxt[j] for j in keep], None
            if ahead is not None:  # the next step already ran for the rows as they were
                logits, pick = ahead
                picked = dec.picked if pick else None
                if kept is not None:
                    logits = logits.index_select(0, kept)
                    picked = (picked[0].index_select(0, kept), picked[1].index_select(1, kept)) if picked else None
                continue
            if admit is not None and dec.k.shape[1] > len(rows):
                joined = admit(dec.k.shape[1] - len(rows), dec.pos, max_len - dec.pos)
                if joined:
                    new_rows, new_logits = self._join(dec, joined)
                    new_events, new_nxt, _ = self._step_tokens(new_rows, new_logits)
                    rows, nxt, nxt_dev = rows + new_rows, nxt + new_nxt, None
                    yield new_events
            # the sampled ids are already on the device unless a row took a forced token or left
            pick = self._pick_mode(rows, dec)
            logits = dec.step(nxt_dev if nxt_dev is not None else torch.tensor(nxt, dtype=torch.long).to(dev), pick=pick)
            picked = dec.picked if pick else None

    @staticmethod
    def _pick_mode(rows: list[_Row], dec):
        """What the decoder should pick inside its step: True for an all-greedy batch; on CUDA
        graphs, ("sample", temperature, top_k, top_p) when every row samples with the same settings
        and none is seeded (a seeded row draws from its own generator); else False (the engine
        samples from the logits, `_sample_rows`)."""
        params = [r.req.params for r in rows]
        if all(p.temperature == 0 for p in params):
            return True
        if not getattr(dec, "use_graphs", False):
            return False
        first = params[0]
        mode = (first.temperature, first.top_k, first.top_p)
        if any(r.generator is not None or (p.temperature, p.top_k, p.top_p) != mode for r, p in zip(rows, params)):
            return False
        return ("sample", *mode)

    def _join(self, dec, requests: list[Request]):
        """Prefill late requests into free decoder rows, left-padded to the batch position."""
        for r in requests:
            r.params.validate()
            self.check_prompt(r.prompt)
            if len(r.prompt) > dec.pos:
                raise ValueError(f"a joining prompt ({len(r.prompt)} tokens) must fit before position {dec.pos}")
        prompts = [r.prompt for r in requests for _ in range(r.n)]
        L = max(len(p) for p in prompts)
        ids, mask = self._left_pad(prompts, L, self.tok.bos_id)
        logits = dec.join(ids.to(self.device), mask.to(self.device))
        return [row for r in requests for row in self._new_rows(r)], logits

    def _get_decoder(self, rows: int, max_len: int):
        from chatforge.infer.decode import BUCKET, ModelDecoder, StaticDecoder

        if not self.fast:
            return ModelDecoder(self.model, rows, max_len)
        d = self._decoder
        if d is None or d.k.shape[1] < rows or d.max_len < max_len:
            # grow to a power-of-two batch and a whole bucket so later batches reuse it (and its graphs)
            rows = max(rows, d.k.shape[1] if d is not None else 1)
            rows = 1 << (rows - 1).bit_length()
            max_len = max(max_len, d.max_len if d is not None else 0)
            max_len = min(-(-max_len // BUCKET) * BUCKET, max(self.max_context, max_len))
            self._decoder = d = None
            d = StaticDecoder(self.model, rows, max_len, cuda_graphs=self.cuda_graphs, compile=self.compile)
            self._decoder = d
        return d

    # ------------------------------------------------------------------------------------------
    def _step_tokens(self, rows: list[_Row], logits: torch.Tensor, picked=None, host=None):
        """Pick every row's next token (forced, or sampled from `logits`) and update its state.
        `picked`: the decoder's own pick for these logits (`_pick_mode`), else None; `host`: its
        [2, B] (id, log-prob) rows already copied to the host, else None.
        -> (events, next ids, the same ids as a device tensor or None when some row's differ)"""
        if picked is not None:
            # the one device->host copy of the step
            sampled_dev, both = picked[0], host if host is not None else picked[1].cpu()
            sampled, logprobs = [int(t) for t in both[0].tolist()], both[1].tolist()
        else:
            sampled, logprobs, sampled_dev = _sample_rows(logits, rows)
        events, nxt = [], []
        for j, row in enumerate(rows):
            if row.req.cancelled and not row.finish:
                row.finish = "cancelled"
                events.append(Event(row.req, row.index, finish_reason="cancelled"))
                nxt.append(self.tok.bos_id)
                continue
            if row.forced:
                tok, lp, forced = row.forced.pop(0), None, True
            else:
                tok, lp, forced = sampled[j], logprobs[j], False
                row.n_sampled += 1
            ev = Event(row.req, row.index, tok, lp, forced)
            self._advance(row, tok, forced, ev)
            if not row.finish and not forced and row.n_sampled >= row.req.params.max_tokens:
                self._finish(row, "length", ev)
            events.append(ev)
            nxt.append(tok)
        return events, nxt, sampled_dev if nxt == sampled else None

    def _advance(self, row: _Row, tok: int, forced: bool, ev: Event) -> None:
        p = row.req.params
        stops = row.stop_ids
        if forced:
            return  # tool output: already reported as a part when the tool ran
        if row.tool is not None:  # inside a tool call
            if tok in self.tool_ends or tok in stops or len(row.call_ids) >= row.tool.max_call_tokens:
                self._run_tool(row, ev)
                if tok in stops:
                    self._finish(row, "stop", ev)
                return
            row.call_ids.append(tok)
            if row.lazy:
                return
            code = self.tok.decode(row.call_ids)
            if not code.endswith("\ufffd"):
                ev.parts.append((row.tool.name, code[row.call_emitted:]))
                row.call_emitted = len(code)
            return
        if tok in stops:
            self._finish(row, "stop", ev)
            return
        if p.use_tools and tok in self.tool_by_start:
            self._flush_text(row, ev, final=True)
            row.tool, row.call_ids, row.call_emitted = self.tool_by_start[tok], [], 0
            return
        if self.tok.is_special(tok):
            return  # stray special token (e.g. a tool token with tools off): not text
        row.part_ids.append(tok)
        if not row.lazy:
            self._flush_text(row, ev, final=False)

    def _run_tool(self, row: _Row, ev: Event) -> None:
        tool, code = row.tool, self.tok.decode(row.call_ids)
        if len(code) > row.call_emitted:
            ev.parts.append((tool.name, code[row.call_emitted:]))
        out = self.tools.call(tool, code)
        ev.parts.append((f"{tool.name}_output", out))
        row.forced = [self.output_start, *self.tok.encode(out), self.output_end]
        row.tool, row.call_ids = None, []
        row.part_ids, row.part_base, row.part_ckpt, row.part_done = [], len(row.text), 0, ""

    def _flush_text(self, row: _Row, ev: Event, final: bool) -> None:
        """Emit the text decoded so far, holding back a possible partial UTF-8 char / stop string."""
        # decode only the ids after the last clean boundary: O(new tokens) per step, not O(reply)
        tail = self.tok.decode(row.part_ids[row.part_ckpt:])
        if not tail.endswith("\ufffd"):
            row.part_done += tail
            row.part_ckpt = len(row.part_ids)
            part = row.part_done
        else:  # maybe the first bytes of a multi-byte char: wait for the rest unless final
            part = row.part_done + (tail if final else tail[:-1])
        row.text = row.text[:row.part_base] + part
        if final:
            row.part_ids, row.part_base, row.part_ckpt, row.part_done = [], len(row.text), 0, ""
        limit = len(row.text)
        for s in row.stop_strings:
            k = row.text.find(s, max(0, row.emitted - len(s) + 1))
            if k != -1:
                row.text = row.text[:k]
                limit = k
                row.finish = "stop"
        if not row.finish and not final:
            limit -= row.hold
        if limit > row.emitted:
            ev.parts.append(("text", row.text[row.emitted:limit]))
            row.emitted = limit
        if row.finish:
            ev.finish_reason = row.finish

    def _finish(self, row: _Row, reason: str, ev: Event) -> None:
        if row.tool is None:
            self._flush_text(row, ev, final=True)
        if not row.finish:
            row.finish = reason
        ev.finish_reason = row.finish


def _to_host_async(t: torch.Tensor):
    """Start copying a small device tensor to the host; -> a function that waits for the copy and
    returns it. The wait covers only work queued before the copy, not later steps."""
    if t.device.type != "cuda":
        out = t.clone()
        return lambda: out
    out = torch.empty(t.shape, dtype=t.dtype, pin_memory=True)
    out.copy_(t, non_blocking=True)
    done = torch.cuda.Event()
    done.record()

    def wait():
        done.synchronize()
        return out
    return wait


def _sample_rows(logits: torch.Tensor, rows: list[_Row]) -> tuple[list[int], list[float], torch.Tensor]:
    """Sample one token per row under that row's own temperature/top-k/top-p/seed.

    Vectorised over rows; only seeded rows draw their noise one by one (each has its own
    generator). Returns token ids and their log-probabilities under the unmodified model
    distribution (host lists, from one device->host copy), and the ids as a device tensor.
    Few ops on purpose: on a GPU each is a kernel launch paid on the host every token.
    """
    B, V = logits.shape
    dev = logits.device
    choice = logits.argmax(-1)
    temps_l = [r.req.params.temperature for r in rows]
    if any(t > 0 for t in temps_l):  # decided on the host: no device sync for greedy batches
        ks = [min(r.req.params.top_k or V, V) for r in rows]
        ps = [r.req.params.top_p if r.req.params.top_p is not None else 1.0 for r in rows]
        prm = torch.tensor([temps_l, ks, ps], device=dev)  # one host->device copy
        # some row cuts: the candidates are the largest top-k's (min, not max, decides: a row
        # without top-k must not switch off another row's cut; then they are the whole vocab)
        cut = max(ks) if min(ks) < V or min(ps) < 1.0 else None

        def noise(probs):
            # a seeded row draws its uniforms from its own generator over its own candidates only,
            # so its draws don't depend on what else is in the batch
            u = torch.rand_like(probs)
            for j, r in enumerate(rows):
                if r.generator is not None and temps_l[j] > 0:
                    u[j, :ks[j]].uniform_(generator=r.generator)
            return u

        drawn = draw(logits, prm[0].clamp_min(1e-5), prm[1], prm[2], cut, noise)
        choice = torch.where(prm[0] == 0, choice, drawn)
    lp = torch.log_softmax(logits.float(), -1).gather(1, choice[:, None]).squeeze(1)
    # one device->host copy per step; ids are exact in float32 (vocabularies are far below 2**24)
    both = torch.stack([choice.to(lp.dtype), lp]).cpu()  # (decode.greedy_pick: the same, in the graph)
    return [int(t) for t in both[0].tolist()], both[1].tolist(), choice
