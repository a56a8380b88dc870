"""OpenAI-compatible HTTP API + the web chat page, on FastAPI.

    POST /v1/chat/completions   messages -> assistant reply (stream via SSE, ending `data: [DONE]`)
    POST /v1/completions        raw text continuation (base models)
    GET  /v1/models, GET /health, GET / (web chat, static files, no CDN)

Errors have OpenAI's shape `{"error": {"message", "type", "param", "code"}}` with a 4xx status for
anything the client can fix. Host/Origin checks, the API key, the body-size and concurrency caps
are one middleware in security.py; the max_tokens cap is checked here. Tool calls (python) are
rendered into `content` as fenced blocks, so any OpenAI client shows them, and listed (non-streamed)
in OpenAI's `tool_calls` shape (already run; the output rides along); `chatforge_parts` (an
extra field) carries them as typed parts for the web page.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path

from fastapi import FastAPI, Request as HTTPRequest
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from chatforge.common import ChatforgeError
from chatforge.infer.engine import ContextTooLong, Engine, Request, SamplingParams, merge_parts
from chatforge.serve.scheduler import DONE, Scheduler
from chatforge.serve.security import Policy, SecurityMiddleware

STATIC = Path(__file__).with_name("static")
MAX_N = 16
MAX_STOP = 4


class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type_: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.type = status, message, param, code, type_

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"message": self.message, "type": self.type, "param": self.param,
                                       "code": self.code}}, status_code=self.status)


# ---------------------------------------------------------------------------------- rendering
FENCE_OPEN = {"python": "\n```python\n", "python_output": "\n```output\n",
              "search": "\n```search\n", "search_output": "\n```output\n"}


class ContentRenderer:
    """Streamed parts -> `content` text; tool parts become fenced code blocks."""

    def __init__(self):
        self.kind = "text"

    def render(self, parts: list[tuple[str, str]]) -> str:
        out = []
        for kind, text in parts:
            if kind != self.kind:
                if self.kind != "text":
                    out.append("\n```\n")
                if kind != "text":
                    out.append(FENCE_OPEN.get(kind, f"\n```{kind}\n"))
                self.kind = kind
            out.append(text)
        return "".join(out)

    def close(self) -> str:
        if self.kind != "text":
            self.kind = "text"
            return "\n```\n"
        return ""


_TOOL_ARG = {"python": "code", "search": "query"}


def openai_tool_calls(parts: list[dict]) -> list[dict]:
    """The calls among a reply's parts in OpenAI's `tool_calls` shape (each with its output as
    `chatforge_output`): the server already ran them, so clients only show them (non-streamed replies)."""
    calls = []
    for j, p in enumerate(parts):
        if p["type"] in _TOOL_ARG:
            out = parts[j + 1]["text"] if j + 1 < len(parts) and parts[j + 1]["type"] == p["type"] + "_output" else None
            calls.append({"id": f"call_{len(calls)}", "type": "function", "chatforge_output": out,
                          "function": {"name": p["type"], "arguments": json.dumps({_TOOL_ARG[p["type"]]: p["text"]})}})
    return calls


# ---------------------------------------------------------------------------------- validation
def _num(body, name, lo, hi, default, integer=False):
    v = body.get(name, default)
    if v is None:
        return default
    ok_type = isinstance(v, int) if integer else isinstance(v, (int, float))
    if isinstance(v, bool) or not ok_type:
        raise APIError(400, f"'{name}' must be {'an integer' if integer else 'a number'}, got {v!r}", name,
                       "invalid_type")
    if not (lo <= v <= hi):
        raise APIError(400, f"'{name}' must be between {lo} and {hi}, got {v!r}", name, "invalid_value")
    return v


def sampling_params(body: dict, default_stop_ids, use_tools: bool,
                    max_tokens_cap: int = 1 << 20) -> tuple[SamplingParams, int]:
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    if not (isinstance(stop, list) and all(isinstance(s, str) and s for s in stop)) or len(stop) > MAX_STOP:
        raise APIError(400, f"'stop' must be a non-empty string or a list of at most {MAX_STOP} of them",
                       "stop", "invalid_value")
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    params = SamplingParams(
        max_tokens=_num({"max_tokens": max_tokens}, "max_tokens", 1, max_tokens_cap, min(256, max_tokens_cap),
                        integer=True),
        temperature=float(_num(body, "temperature", 0, 2, 1.0)),
        top_p=float(_num(body, "top_p", 1e-9, 1, 1.0)),
        top_k=_num(body, "top_k", 1, 1 << 30, None, integer=True),
        seed=_num(body, "seed", -(1 << 63), (1 << 63) - 1, None, integer=True),
        stop=tuple(stop), stop_token_ids=default_stop_ids, use_tools=use_tools)
    n = _num(body, "n", 1, MAX_N, 1, integer=True)
    return params, n


def _stream_flag(body) -> tuple[bool, bool]:
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise APIError(400, f"'stream' must be a boolean, got {stream!r}", "stream", "invalid_type")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise APIError(400, "'stream_options' must be an object", "stream_options", "invalid_type")
    return stream, bool(opts.get("include_usage", False))


def chat_messages(body) -> list[dict]:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise APIError(400, "'messages' must be a non-empty list of {role, content} objects", "messages")
    out = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise APIError(400, f"messages[{i}] must be an object", f"messages[{i}]")
        role = m.get("role")
        role = "system" if role == "developer" else role
        if role not in ("system", "user", "assistant"):
            raise APIError(400, f"messages[{i}].role {role!r} is not supported; use system, user or assistant",
                           f"messages[{i}].role")
        content = m.get("chatforge_parts") or m.get("content")
        if content is None:
            content = ""
        if not isinstance(content, (str, list)):
            raise APIError(400, f"messages[{i}].content must be a string or a list of parts",
                           f"messages[{i}].content")
        out.append({"role": role, "content": content})
    return out


# ---------------------------------------------------------------------------------- the app
def create_app(engine: Engine, model_name: str, max_batch: int = 32, kind: str = "sft",
               policy: Policy | None = None, max_tokens_cap: int | None = None) -> FastAPI:
    """`policy`: the network guards (default: loopback only, no key, 1 MiB bodies, 64 generations);
    `max_tokens_cap`: the most tokens one request may ask for (default: the model's context)."""
    app = FastAPI(title="chatforge", docs_url=None, redoc_url=None)
    policy = policy or Policy()
    max_tokens_cap = max_tokens_cap or engine.max_context
    app.add_middleware(SecurityMiddleware, policy=policy)
    app.state.policy = policy
    sched = Scheduler(engine, max_rows=max_batch)
    app.state.scheduler, app.state.engine = sched, engine
    created = int(time.time())
    tok = engine.tok

    @app.exception_handler(APIError)
    async def _api_error(_, e: APIError):
        return e.response()

    @app.exception_handler(404)
    async def _not_found(req, _):
        return APIError(404, f"no route {req.method} {req.url.path}", code="not_found").response()

    @app.exception_handler(405)
    async def _bad_method(req, _):
        return APIError(405, f"method {req.method} not allowed on {req.url.path}", code="method_not_allowed").response()

    @app.exception_handler(Exception)
    async def _internal(_, e: Exception):
        return APIError(500, f"internal error: {type(e).__name__}: {e}", type_="server_error").response()

    async def read_body(req: HTTPRequest) -> dict:
        try:
            body = json.loads(await req.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise APIError(400, f"request body is not valid JSON: {e}", code="invalid_json") from None
        if not isinstance(body, dict):
            raise APIError(400, "request body must be a JSON object", code="invalid_json")
        model = body.get("model")
        if model != model_name:
            raise APIError(404, f"the model {model!r} does not exist; this server has {model_name!r}",
                           "model", "model_not_found")
        return body

    def check(ids):
        try:
            engine.check_prompt(ids)
        except ContextTooLong as e:
            raise APIError(400, str(e), "messages", "context_length_exceeded") from None
        except ChatforgeError as e:
            raise APIError(400, str(e)) from None

    def check_n(n):
        if n > sched.max_rows:
            raise APIError(400, f"'n' is {n} but this server decodes at most {sched.max_rows} sequences at once",
                           "n", "invalid_value")

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, "batches": sched.batches, "joined": sched.joined,
                "cancelled_rows": sched.cancelled_rows,
                "busy_rows": sched.busy_rows, "in_flight": policy.in_flight, "refused": policy.refused,
                "queued": sched.inbox.qsize() + len(sched.waiting)}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created,
                                            "owned_by": "chatforge", "context_length": engine.max_context,
                                            "kind": kind}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(req: HTTPRequest):
        body = await read_body(req)
        messages = chat_messages(body)
        try:
            ids = tok.render_for_completion(messages)
        except ChatforgeError as e:
            raise APIError(400, str(e), "messages") from None
        check(ids)
        params, n = sampling_params(body, None, use_tools=True, max_tokens_cap=max_tokens_cap)
        check_n(n)
        stream, include_usage = _stream_flag(body)
        want_lp = body.get("logprobs") is True
        r = Request(ids, params, n)
        return await _respond(req, r, stream, include_usage, chat=True, logprobs=want_lp)

    @app.post("/v1/completions")
    async def completions(req: HTTPRequest):
        body = await read_body(req)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            prompt = prompt[0]
        if isinstance(prompt, str):
            ids = [tok.bos_id] + tok.encode(prompt)
        elif isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool)
                                                         and 0 <= t < tok.vocab_size for t in prompt):
            ids = list(prompt)
        else:
            raise APIError(400, "'prompt' must be a string (or a list of token ids)", "prompt")
        check(ids)
        params, n = sampling_params(body, (tok.bos_id,), use_tools=False, max_tokens_cap=max_tokens_cap)
        check_n(n)
        stream, include_usage = _stream_flag(body)
        want_lp = body.get("logprobs") not in (None, False, 0)
        r = Request(ids, params, n)
        return await _respond(req, r, stream, include_usage, chat=False, logprobs=want_lp)

    async def _respond(http: HTTPRequest, r: Request, stream: bool, include_usage: bool, chat: bool, logprobs: bool):
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]
        obj = "chat.completion" if chat else "text_completion"
        sink = sched.submit(r)
        if stream:
            return StreamingResponse(_stream(http, r, sink, rid, obj, include_usage, chat, logprobs),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await _collect(http, r, sink, rid, obj, chat, logprobs)

    def _lp_entry(token: int, lp: float) -> dict:
        b = tok.token_bytes(token)
        return {"token": b.decode("utf-8", "replace"), "logprob": lp, "bytes": list(b), "top_logprobs": []}

    async def _events(http: HTTPRequest, r: Request, sink: asyncio.Queue):
        """Engine events for r, until done; cancels r when the client goes away."""
        next_check = time.monotonic() + 0.5
        try:
            while True:
                try:
                    item = await asyncio.wait_for(sink.get(), timeout=0.5)
                except asyncio.TimeoutError:
                    item = None
                if time.monotonic() >= next_check:  # also while events keep flowing
                    next_check = time.monotonic() + 0.5
                    if await http.is_disconnected():
                        r.cancel()
                        return
                if item is None:
                    continue
                if item is DONE:
                    return
                if isinstance(item, Exception):
                    raise APIError(500, f"generation failed: {item}", type_="server_error")
                yield item
        finally:
            r.cancel()  # no-op when finished; stops the rows when the client disconnected

    async def _collect(http, r, sink, rid, obj, chat, logprobs):
        parts = [[] for _ in range(r.n)]
        lps = [[] for _ in range(r.n)]
        finish = [None] * r.n
        sampled = [0] * r.n
        async for events in _events(http, r, sink):
            for ev in events:
                merge_parts(parts[ev.index], ev.parts)
                if ev.token is not None and not ev.forced:
                    sampled[ev.index] += 1
                    if logprobs and ev.logprob is not None:
                        lps[ev.index].append(_lp_entry(ev.token, ev.logprob))
                if ev.finish_reason:
                    finish[ev.index] = ev.finish_reason
        choices = []
        for i in range(r.n):
            rend = ContentRenderer()
            content = rend.render([(p["type"], p["text"]) for p in parts[i]]) + rend.close()
            fr = "length" if finish[i] == "length" else "stop"
            if chat:
                msg = {"role": "assistant", "content": content}
                if any(p["type"] != "text" for p in parts[i]):
                    msg["chatforge_parts"] = parts[i]
                    msg["tool_calls"] = openai_tool_calls(parts[i])
                c = {"index": i, "message": msg, "finish_reason": fr,
                     "logprobs": {"content": lps[i]} if logprobs else None}
            else:
                c = {"index": i, "text": content, "finish_reason": fr, "logprobs": _completion_lps(lps[i]) if logprobs else None}
            choices.append(c)
        usage = {"prompt_tokens": len(r.prompt), "completion_tokens": sum(sampled),
                 "total_tokens": len(r.prompt) + sum(sampled)}
        return {"id": rid, "object": obj, "created": int(time.time()), "model": model_name,
                "choices": choices, "usage": usage}

    def _completion_lps(entries):
        return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
                "top_logprobs": None, "text_offset": None}

    async def _stream(http, r, sink, rid, obj, include_usage, chat, logprobs):
        obj = obj + ".chunk" if chat else obj
        created = int(time.time())
        renderers = [ContentRenderer() for _ in range(r.n)]
        sampled = [0] * r.n

        def chunk(choices, usage=None):
            d = {"id": rid, "object": obj, "created": created, "model": model_name, "choices": choices}
            if usage is not None:
                d["usage"] = usage
            return f"data: {json.dumps(d, ensure_ascii=False)}\n\n"

        if chat:
            yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                          "finish_reason": None} for i in range(r.n)])
        try:
            async for events in _events(http, r, sink):
                choices = []
                for ev in events:
                    if ev.token is not None and not ev.forced:
                        sampled[ev.index] += 1
                    rend = renderers[ev.index]
                    text = rend.render(ev.parts)
                    if ev.finish_reason:
                        text += rend.close()
                    lp = None
                    if logprobs and ev.token is not None and ev.logprob is not None:
                        lp = [_lp_entry(ev.token, ev.logprob)]
                    if not text and not ev.finish_reason and lp is None:
                        continue
                    fr = None if not ev.finish_reason else ("length" if ev.finish_reason == "length" else "stop")
                    if chat:
                        delta = {"content": text} if text else {}
                        if ev.parts:  # typed parts: clients that render tool blocks skip the fences
                            delta["chatforge_parts"] = [{"type": k, "text": t} for k, t in ev.parts]
                        c = {"index": ev.index, "delta": delta, "logprobs": {"content": lp} if lp else None,
                             "finish_reason": fr}
                    else:
                        c = {"index": ev.index, "text": text, "logprobs": _completion_lps(lp) if lp else None,
                             "finish_reason": fr}
                    choices.append(c)
                if choices:
                    yield chunk(choices)
        except APIError as e:
            yield f"data: {json.dumps({'error': {'message': e.message, 'type': e.type}})}\n\n"
            return
        if r.cancelled and await http.is_disconnected():
            return
        if include_usage:
            n_tok = sum(sampled)
            yield chunk([], {"prompt_tokens": len(r.prompt), "completion_tokens": n_tok,
                             "total_tokens": len(r.prompt) + n_tok})
        yield "data: [DONE]\n\n"

    # ------------------------------------------------------------------------------ web page
    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
