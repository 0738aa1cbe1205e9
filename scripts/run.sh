#!/usr/bin/env bash
# Set everything up and start the bot on the embedded database under VDX_DATA_DIR (default ./data).
#   TELEGRAM_BOT_TOKEN=... bash scripts/run.sh [PHOTOS_DIR]
# With PHOTOS_DIR, its images are ingested first (resumable: stored photos are skipped).
# The install runs only when pyproject.toml (or install.sh) changed since the last one, so the bot
# starts without the package index; the token and the model are checked before any ingest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh --if-changed
.venv/bin/vdx bot --check
if [ $# -gt 0 ]; then
  .venv/bin/vdx ingest folder "$1"
fi
exec .venv/bin/vdx bot
