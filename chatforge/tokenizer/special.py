"""Special tokens, reserved up front for every stage. Their ids are the last ids of the vocab.

Never produced from plain text unless a caller explicitly allows them.
"""

BOS = "<|bos|>"  # document boundary: precedes every pretraining document and every conversation

SPECIAL_TOKENS = [
    BOS,
    "<|system_start|>", "<|system_end|>",
    "<|user_start|>", "<|user_end|>",
    "<|assistant_start|>", "<|assistant_end|>",  # assistant_end is also the end-of-turn stop token
    "<|python_start|>", "<|python_end|>",        # a python tool call written by the assistant
    "<|output_start|>", "<|output_end|>",        # a tool's output, written by the engine
    "<|search_start|>", "<|search_end|>",        # a search tool call (its results use output_*)
] + [f"<|reserved_{i}|>" for i in range(7)]      # spares, so later stages need no vocab change

assert len(SPECIAL_TOKENS) == len(set(SPECIAL_TOKENS)) == 20
