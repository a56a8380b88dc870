"""`chatforge serve RUN`: the OpenAI-compatible API and the web chat page in one process."""

from chatforge.common import ChatforgeError
from chatforge.infer.cli import add_engine_args, engine_from_args


def _serve(args):
    import json
    from pathlib import Path

    import uvicorn

    from chatforge.serve.app import create_app

    run = Path(args.run)
    if not (run / "config.json").is_file():
        raise ChatforgeError(f"{run} is not a run directory (no config.json); pass the directory `chatforge train` or `chatforge sft` wrote")
    engine = engine_from_args(args)
    kind = json.loads((run / "config.json").read_text()).get("kind", "base")
    name = args.name or f"chatforge-{run.resolve().name}"
    app = create_app(engine, name, max_batch=args.max_batch, kind=kind)
    print(f"serving {name} ({kind}, context {engine.max_context}) on http://{args.host}:{args.port}/  "
          f"(OpenAI API at /v1, web chat at /)", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    except OSError as e:
        raise ChatforgeError(f"cannot listen on {args.host}:{args.port}: {e}; pick another --port") from None


def register(sub):
    p = sub.add_parser("serve", help="OpenAI-compatible server + web chat UI")
    p.add_argument("run", help="run directory (from `chatforge train` or `chatforge sft`)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    add_engine_args(p)
    p.add_argument("--max-batch", type=int, default=32, help="most sequences decoded together")
    p.add_argument("--name", default=None, help="model id clients pass as `model` (default chatforge-<run dir name>)")
    p.add_argument("--log-level", default="warning")
    p.set_defaults(func=_serve)
