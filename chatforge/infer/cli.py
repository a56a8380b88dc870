"""CLI for the inference stage: `chatforge chat RUN`; the engine options `chatforge serve` shares."""


def add_engine_args(p):
    """Options of the engine behind `chat` and `serve`."""
    p.add_argument("--device", default=None, help="cpu | cuda | cuda:N (default: cuda when available)")
    p.add_argument("--no-tools", action="store_true", help="do not run the model's python tool calls")
    add_unsafe_tool_arg(p)
    p.add_argument("--search-index", help="a search index (chatforge index build): the model may search it; "
                   "models trained with the fact world search when the system prompt offers it "
                   "(chat uses that prompt by default then)")
    p.add_argument("--no-cuda-graphs", action="store_true", help="decode eagerly (no CUDA graph capture)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the decode step: ~1.8x faster decode at batch 1 on an H100 (d12), "
                   "once it has compiled for each new batch size and 256-token context bucket")


def add_unsafe_tool_arg(p):
    p.add_argument("--unsafe-python-tool", action="store_true",
                   help="where no sandbox is available (bubblewrap or user namespaces), run the model's "
                   "python code anyway, unisolated (it can read your files and use the network)")


def announce_isolation(args) -> None:
    """Apply --unsafe-python-tool and print, once at start-up, which isolation the python tool has."""
    from chatforge.infer.sandbox import allow_unsafe, describe_isolation

    if getattr(args, "unsafe_python_tool", False):
        allow_unsafe()
    if not getattr(args, "no_tools", False):
        print(describe_isolation(), flush=True)


def engine_from_args(args):
    """The Engine for `args.run` with the options add_engine_args defined."""
    from chatforge.infer.engine import Engine

    announce_isolation(args)
    return Engine.from_run(args.run, device=args.device, tools=not args.no_tools,
                           search_index=getattr(args, "search_index", None), cuda_graphs=not args.no_cuda_graphs, compile=args.compile)


def _chat(args):
    from chatforge.infer.chat import run_chat

    return run_chat(args)


def register(sub):
    p = sub.add_parser("chat", help="terminal chat with a model (streaming, tool calls shown)")
    p.add_argument("run", help="run directory (from `chatforge sft`, or `chatforge train` for a base model)")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--temperature", type=float, default=0.7, help="0 = greedy (default 0.7)")
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--max-tokens", type=int, default=1024, help="most tokens per reply")
    p.add_argument("--seed", type=int, default=None)
    add_engine_args(p)
    p.set_defaults(func=_chat)
