"""chatforge.model: the Llama-compatible GPT (gpt.py) and run directories (run_dir.py)."""

from chatforge.model.gpt import GPT, GPTConfig, KVCache, sample_next
from chatforge.model.run_dir import load_run, model_state_dict, save_run, unwrap

__all__ = ["GPT", "GPTConfig", "KVCache", "sample_next", "load_run", "save_run", "model_state_dict", "unwrap"]
