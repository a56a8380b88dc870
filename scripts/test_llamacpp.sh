#!/usr/bin/env bash
# The slow llama.cpp tests of the GGUF export (tests/export/test_gguf.py -m slow), with
# llama-cpp-python installed into ./.venv first if it is missing. It builds llama.cpp from source
# (CPU only, portable AVX2 code, no multimodal library): a few minutes on an idle 2-core machine.
#   bash scripts/test_llamacpp.sh            # extra pytest arguments are passed on
set -euo pipefail
cd "$(dirname "$0")/.."
if ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
    .venv/bin/pip install -q -e ".[llamacpp]"
fi
.venv/bin/python -m pytest tests/export -m slow -q -rs "$@"
