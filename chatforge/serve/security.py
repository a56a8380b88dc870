"""What stands between the network and the API: one ASGI middleware, checks in this order.

- Host (when bound to loopback): the Host header must name loopback (localhost, 127.0.0.1, [::1]),
  so a web page cannot reach this server by DNS rebinding a name of its own to 127.0.0.1.
- Origin (CORS): the web UI is served by this server, so it is same-origin and needs no CORS.
  A browser request from another origin is refused (403) unless that origin was allowed with
  --cors-origin; allowed origins get CORS headers and their preflights answered. Browsers send
  Origin on every cross-origin POST (fetch and plain HTML forms alike), so another site cannot
  start generations on a user's local server, even without an API key.
- API key (--api-key, required for non-loopback binds): `Authorization: Bearer KEY` on /v1/*, as
  the OpenAI API does (compared in constant time). The page itself and /health stay open; the
  page asks for the key when the API answers 401.
- Body size: Content-Length over the cap is 413 before anything is read; a chunked body is
  counted as it arrives and cut off at the cap.
- Concurrency: more than `max_concurrent` generations in flight (queued or running) is 429 with
  Retry-After, instead of an unbounded queue. A generation leaves the count when its response
  ends, including when the client disconnects (which also cancels it: see app._events).
The max_tokens cap lives in app.sampling_params, which parses the body.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from dataclasses import dataclass, field

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}
GENERATION_PATHS = {"/v1/chat/completions", "/v1/completions"}


def is_loopback(host: str) -> bool:
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Policy:
    api_key: str | None = None
    loopback_only: bool = True          # bound to a loopback address: enforce the Host check
    cors_origins: tuple[str, ...] = ()  # extra origins allowed to call the API from a browser
    max_body_bytes: int = 1 << 20
    max_concurrent: int = 64
    retry_after_s: int = 1
    in_flight: int = field(default=0, init=False)
    refused: dict = field(default_factory=dict, init=False)  # reason -> count (for /health)


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header[: host_header.find("]") + 1]
    return host_header.rsplit(":", 1)[0]


class SecurityMiddleware:
    def __init__(self, app, policy: Policy):
        self.app, self.policy = app, policy

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        p = self.policy
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        path, method = scope["path"], scope["method"]
        origin = headers.get("origin")
        host = headers.get("host", "")

        if p.loopback_only and _host_name(host) not in LOOPBACK_NAMES:
            return await self._refuse(send, 403, f"Host {host!r} is not this loopback server's", "bad_host")
        same_origin = origin is not None and origin.split("://", 1)[-1] == host
        allowed_origin = origin if origin in p.cors_origins else None
        if origin is not None and not same_origin and allowed_origin is None:
            return await self._refuse(send, 403, f"cross-origin requests from {origin} are not allowed "
                                      "(start the server with --cors-origin to allow one)", "bad_origin")
        cors = [(b"access-control-allow-origin", allowed_origin.encode()), (b"vary", b"Origin")] \
            if allowed_origin else []
        if method == "OPTIONS" and allowed_origin:  # preflight
            return await self._reply(send, 204, b"", cors + [
                (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                (b"access-control-allow-headers", b"authorization, content-type"),
                (b"access-control-max-age", b"600")])

        if p.api_key and path.startswith("/v1/"):
            auth = headers.get("authorization", "")
            given = auth[7:] if auth[:7].lower() == "bearer " else ""
            if not hmac.compare_digest(given.encode(), p.api_key.encode()):
                return await self._refuse(send, 401, "missing or wrong API key: send the header "
                                          "'Authorization: Bearer KEY'", "invalid_api_key", cors,
                                          type_="authentication_error")

        if method == "POST":
            length = headers.get("content-length")
            if length is not None and (not length.isdigit() or int(length) > p.max_body_bytes):
                return await self._refuse(send, 413, f"request body over {p.max_body_bytes} bytes",
                                          "body_too_large", cors)
            body, more = [], True
            size = 0
            while more:
                msg = await receive()
                if msg["type"] == "http.disconnect":
                    return
                chunk = msg.get("body", b"")
                size += len(chunk)
                if size > p.max_body_bytes:
                    return await self._refuse(send, 413, f"request body over {p.max_body_bytes} bytes",
                                              "body_too_large", cors)
                body.append(chunk)
                more = msg.get("more_body", False)
            receive = _replay(b"".join(body), receive)

        generation = method == "POST" and path in GENERATION_PATHS
        if generation:
            if p.in_flight >= p.max_concurrent:
                return await self._refuse(send, 429, f"{p.in_flight} generations in flight, the most this "
                                          f"server runs; retry in {p.retry_after_s} s", "rate_limit_exceeded",
                                          cors + [(b"retry-after", str(p.retry_after_s).encode())],
                                          type_="rate_limit_error")
            p.in_flight += 1
        if cors:
            send = _with_headers(send, cors)
        try:
            await self.app(scope, receive, send)
        finally:
            if generation:
                p.in_flight -= 1

    async def _refuse(self, send, status, message, code, headers=(), type_="invalid_request_error"):
        self.policy.refused[code] = self.policy.refused.get(code, 0) + 1
        body = json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()
        await self._reply(send, status, body, [(b"content-type", b"application/json"), *headers])

    @staticmethod
    async def _reply(send, status, body, headers):
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", str(len(body)).encode()), *headers]})
        await send({"type": "http.response.body", "body": body})


def _replay(body: bytes, receive):
    """A receive() that hands the app the body we already read, then the client's later messages
    (so http.disconnect still reaches the generation it should cancel)."""
    sent = False

    async def replay():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()
    return replay


def _with_headers(send, extra):
    async def wrapped(msg):
        if msg["type"] == "http.response.start":
            msg = dict(msg, headers=[*msg.get("headers", []), *extra])
        await send(msg)
    return wrapped
