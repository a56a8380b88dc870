"""Export a run directory to other runtimes: a Hugging Face folder (transformers) and GGUF
(llama.cpp, LM Studio, Ollama). A mapping table plus metadata, checked by loading the result in
the target runtime (tests/export), never a second model implementation."""
