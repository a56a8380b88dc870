#!/usr/bin/env bash
# Install chatforge and its test tools into ./.venv, from scratch or on top of an existing one.
# torch goes first and pinned: 2.13.0 is the build this project is tested with on CPU (and the
# one this workplace has on local disk); the package itself asks only for torch>=2.4, so a GPU
# machine keeps whatever CUDA build it has.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install -q "torch==${TORCH_VERSION:-2.13.0}"
fi
.venv/bin/pip install -q -e ".[dev]"
# The web UI's browser test drives Debian's chromium through Playwright (no browser download).
if [ "${CHATFORGE_NO_BROWSER:-0}" != 1 ] && ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "note: could not install chromium; the browser test will be skipped"
fi
# The python tool's sandbox prefers bubblewrap; without it, util-linux unshare does the same job.
if ! command -v bwrap >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null) \
    || echo "note: could not install bubblewrap; the sandbox will use unshare namespaces"
fi
echo "chatforge installed in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
