#!/usr/bin/env bash
# Set up .venv with everything vdx and its tests need. Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip --disable-pip-version-check -q "$@"; }
pip install --upgrade pip
# torch first, pinned to a CPU build: an unpinned requirement can pull a multi-GB CUDA build.
# TORCH_SPEC overrides it (e.g. TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cpu").
.venv/bin/python -c "import torch" 2>/dev/null || pip install ${TORCH_SPEC:-torch==2.13.0}
pip install -e '.[dev]'
# The tests build a tiny CLIP with the real BPE vocabulary, which ships inside this wheel;
# --no-deps: its own dependencies (torchvision, timm) are not needed for that file.
pip install --no-deps open_clip_torch
