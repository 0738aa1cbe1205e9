#!/usr/bin/env bash
# Install what is missing, lint, type-check and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
.venv/bin/ruff check core bot tests bench
.venv/bin/mypy
.venv/bin/python -m pytest -q "$@"
