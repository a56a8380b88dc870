"""chatforge: raw web pages to a chat assistant, end to end.

Pipeline stages, one package each (read them in this order):
  data/       raw crawl (WARC/HTML/JSONL/text) -> clean documents -> token shards
  tokenizer/  byte-level BPE (our trainer), tiktoken-backed encoding, chat rendering
  model/      Llama-compatible decoder-only Transformer (+ KV cache)
  train/      pretraining loop (CPU to multi-GPU), checkpoints, sampling
  posttrain/  SFT (and later reward models, DPO, RL)
  infer/      KV-cache generation engine, tools (python sandbox), terminal chat
  serve/      OpenAI-compatible HTTP server and web chat UI
  eval/       bits-per-byte, benchmarks, report card
  pipeline/   the speedrun: every stage in one resumable command
"""

__version__ = "0.1.0"
