#!/usr/bin/env bash
# Set up .venv with everything vdx and its tests need. Safe to run again: it only adds what is missing.
#   bash scripts/install.sh               # install (or complete) .venv
#   bash scripts/install.sh --if-changed  # do nothing when pyproject.toml and this script are as last installed
# torch comes from PyTorch's CPU wheel index (PyPI's Linux wheel is the CUDA build, 2.7 GB with its
# nvidia packages). TORCH_SPEC replaces that choice, e.g. for CUDA:
#   TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" bash scripts/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH_VERSION=2.13.0
TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
STAMP=.venv/.vdx-installed

stamp() { "$PY" -c 'import hashlib, sys; print(hashlib.sha256(b"".join(open(p, "rb").read() for p in sys.argv[1:])).hexdigest())' pyproject.toml scripts/install.sh; }
if [ "${1:-}" = "--if-changed" ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp)" ]; then
  echo "install.sh: .venv is up to date with pyproject.toml; nothing to install"
  exit 0
fi

[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  if [ -n "${TORCH_SPEC:-}" ]; then
    # shellcheck disable=SC2086  # TORCH_SPEC may hold options
    pip install $TORCH_SPEC
  # A 5 s timeout and no retries: where the CPU index cannot be reached (a machine that only sees
  # a local mirror or wheel folder), this fails in seconds and pip's own configured source is used.
  elif ! pip install --index-url "$TORCH_INDEX" --timeout 5 --retries 0 "torch==$TORCH_VERSION"; then
    echo "install.sh: PyTorch's CPU index ($TORCH_INDEX) cannot be reached; installing torch==$TORCH_VERSION" \
      "from pip's configured source instead (on Linux, PyPI's wheel is the large CUDA build)" >&2
    pip install "torch==$TORCH_VERSION"
  fi
fi
pip install -e '.[dev]'
# The tests build a tiny CLIP with the real BPE vocabulary, which ships inside this wheel;
# --no-deps: its own dependencies (torchvision, timm) are not needed for that file.
pip install --no-deps open_clip_torch
stamp > "$STAMP"
