"""`chatforge export RUN --format hf,gguf --out DIR [--dtype float32] [--quant f16,q8_0]`."""

from __future__ import annotations

from chatforge.common import ChatforgeError

FORMATS = ("hf", "gguf")


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def cmd_export(args):
    import time
    from pathlib import Path

    formats = _split(args.format)
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ChatforgeError(f"unknown --format {','.join(bad) or args.format!r}; use hf, gguf or hf,gguf")
    out = Path(args.out or f"{args.run.rstrip('/')}-export")
    written = []
    t0 = time.time()
    if "hf" in formats:
        from chatforge.export.hf import export_hf

        written += export_hf(args.run, out, dtype=args.dtype)
    if "gguf" in formats:
        from chatforge.export.gguf import export_gguf

        written += export_gguf(args.run, out, quants=_split(args.quant), progress=True)
    for p in written:
        print(f"{p}  ({p.stat().st_size / 1e6:.1f} MB)")
    print(f"exported {args.run} -> {out} in {time.time() - t0:.1f}s")
    return 0


def register(sub):
    p = sub.add_parser("export", help="export a run to Hugging Face (transformers) and GGUF (llama.cpp, Ollama)",
                       description="Write a folder that transformers' AutoModelForCausalLM / AutoTokenizer load "
                                   "(with a chat template) and/or GGUF files with an Ollama Modelfile. "
                                   "How to run them: docs/interop.md")
    p.add_argument("run", help="run directory (chatforge train / sft output)")
    p.add_argument("--format", default="hf", help="hf, gguf, or hf,gguf (default hf)")
    p.add_argument("--out", help="output folder (default RUN-export)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                   help="weights dtype of the HF folder (default float32)")
    p.add_argument("--quant", default="f16", help="GGUF types, comma-separated: f32, f16, bf16, q8_0, q5_1, q5_0, "
                                                  "q4_1, q4_0 (default f16)")
    p.set_defaults(func=cmd_export, _parser=p)
