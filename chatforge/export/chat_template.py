"""Our conversation format (tokenizer/chat.py) as a Jinja chat template, and as Ollama's Go template.

The Jinja template is what transformers' `apply_chat_template`, llama.cpp (`--jinja`),
llama-cpp-python and LM Studio run. Rendered and then tokenized with special tokens recognised, it
gives exactly `render_for_completion` / `render_conversation`'s ids, because the special tokens cut
the text into the same pieces our renderer encodes one by one. Two cases cannot agree, and no
template could make them: message text that itself contains special-token text (we encode it as
plain text, HF tokenizes the whole rendered string with specials recognised), and two adjacent
assistant `text` parts (we encode them separately, the template's output is one string).

Like `render_for_completion`, `add_generation_prompt=True` drops a trailing assistant message
before opening a new assistant turn.
"""

from __future__ import annotations

CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- for m in messages -%}"
    # only loop.last, no slicing or `set`: the Jinja subsets of llama.cpp (minja) and LM Studio run it too
    "{%- if add_generation_prompt and loop.last and m['role'] == 'assistant' -%}"
    "{%- elif m['role'] == 'system' or m['role'] == 'user' -%}"
    "{{- '<|' + m['role'] + '_start|>' -}}"
    "{%- if m['content'] is string -%}{{- m['content'] -}}"
    "{%- else -%}{%- for p in m['content'] -%}{{- p['text'] -}}{%- endfor -%}{%- endif -%}"
    "{{- '<|' + m['role'] + '_end|>' -}}"
    "{%- elif m['role'] == 'assistant' -%}"
    "{{- '<|assistant_start|>' -}}"
    "{%- if m['content'] is string -%}{{- m['content'] -}}"
    "{%- else -%}{%- for p in m['content'] -%}"
    "{%- if p['type'] == 'python' -%}{{- '<|python_start|>' + p['text'] + '<|python_end|>' -}}"
    "{%- elif p['type'] == 'search' -%}{{- '<|search_start|>' + p['text'] + '<|search_end|>' -}}"
    "{%- elif p['type'] == 'python_output' or p['type'] == 'search_output' -%}"
    "{{- '<|output_start|>' + p['text'] + '<|output_end|>' -}}"
    "{%- else -%}{{- p['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|assistant_end|>' -}}"
    "{%- else -%}"
    "{{- raise_exception('roles are system, user and assistant, not ' + m['role']) -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant_start|>' -}}{%- endif -%}"
)

# Ollama renders prompts with Go templates, not Jinja; tool parts do not exist in its message model,
# so this covers system / user / assistant text. <|bos|> comes from the GGUF's add_bos_token.
OLLAMA_TEMPLATE = (
    "{{- range .Messages }}"
    "{{- if eq .Role \"system\" }}<|system_start|>{{ .Content }}<|system_end|>"
    "{{- else if eq .Role \"user\" }}<|user_start|>{{ .Content }}<|user_end|>"
    "{{- else if eq .Role \"assistant\" }}<|assistant_start|>{{ .Content }}<|assistant_end|>"
    "{{- end }}"
    "{{- end }}<|assistant_start|>"
)
