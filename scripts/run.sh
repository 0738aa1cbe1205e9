#!/usr/bin/env bash
# Set everything up and start the bot on the embedded database under VDX_DATA_DIR (default ./data).
#   TELEGRAM_BOT_TOKEN=... bash scripts/run.sh [PHOTOS_DIR]
# With PHOTOS_DIR, its images are ingested first (resumable: stored photos are skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
if [ $# -gt 0 ]; then
  .venv/bin/vdx ingest folder "$1"
fi
exec .venv/bin/vdx bot
