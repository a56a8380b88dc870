"""`chatforge serve RUN`: the OpenAI-compatible API and the web chat page in one process."""

from chatforge.common import ChatforgeError
from chatforge.infer.cli import add_engine_args, engine_from_args


def _serve(args):
    import json
    import os
    from pathlib import Path

    import uvicorn

    from chatforge.serve.app import create_app
    from chatforge.serve.security import Policy, is_loopback

    api_key = args.api_key or os.environ.get("CHATFORGE_API_KEY") or None
    loopback = is_loopback(args.host)
    if not loopback and not api_key:
        raise ChatforgeError(f"binding {args.host} exposes the server beyond this machine; pass --api-key KEY "
                             "(or set CHATFORGE_API_KEY): clients then send 'Authorization: Bearer KEY'")
    run = Path(args.run)
    if not (run / "config.json").is_file():
        raise ChatforgeError(f"{run} is not a run directory (no config.json); pass the directory `chatforge train` or `chatforge sft` wrote")
    engine = engine_from_args(args)
    kind = json.loads((run / "config.json").read_text()).get("kind", "base")
    name = args.name or f"chatforge-{run.resolve().name}"
    policy = Policy(api_key=api_key, loopback_only=loopback, cors_origins=tuple(args.cors_origin),
                    max_body_bytes=args.max_body_kb << 10, max_concurrent=args.max_concurrent)
    app = create_app(engine, name, max_batch=args.max_batch, kind=kind, policy=policy,
                     max_tokens_cap=args.max_tokens_cap)
    print(f"serving {name} ({kind}, context {engine.max_context}) on http://{args.host}:{args.port}/  "
          f"(OpenAI API at /v1, web chat at /)", flush=True)
    print(f"security: {'API key required' if api_key else 'no API key (loopback only)'}; "
          f"bodies <= {args.max_body_kb} KiB; "
          f"<= {args.max_concurrent} generations at once (then 429); max_tokens <= "
          f"{args.max_tokens_cap or engine.max_context}; CORS: same origin"
          + (f" + {', '.join(args.cors_origin)}" if args.cors_origin else ""), flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    except OSError as e:
        raise ChatforgeError(f"cannot listen on {args.host}:{args.port}: {e}; pick another --port") from None


def register(sub):
    p = sub.add_parser("serve", help="OpenAI-compatible server + web chat UI")
    p.add_argument("run", help="run directory (from `chatforge train` or `chatforge sft`)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback; any other needs --api-key)")
    p.add_argument("--port", type=int, default=8000)
    add_engine_args(p)
    p.add_argument("--max-batch", type=int, default=32, help="most sequences decoded together")
    p.add_argument("--name", default=None, help="model id clients pass as `model` (default chatforge-<run dir name>)")
    p.add_argument("--log-level", default="warning")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1 (default: "
                   "$CHATFORGE_API_KEY); required when --host is not a loopback address")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="also let web pages from ORIGIN (e.g. https://app.example) call the API (repeatable); "
                   "the built-in web chat is same-origin and needs none")
    p.add_argument("--max-body-kb", type=int, default=1024, help="largest request body (default 1024 KiB)")
    p.add_argument("--max-concurrent", type=int, default=64,
                   help="most generations queued or running at once; beyond it requests get 429 + Retry-After")
    p.add_argument("--max-tokens-cap", type=int, default=None,
                   help="most tokens one request may ask for (default: the model's context length)")
    p.set_defaults(func=_serve)
