# CPU image of vdx: the bot, the CLI and the embedded chDB database.
#   docker build -t vdx .
#   docker run -d --name vdx -v vdx-data:/data -v /srv/models/clip:/models/clip:ro \
#     -e TELEGRAM_BOT_TOKEN=... -e VDX_CLIP_MODEL=/models/clip vdx          # starts the bot
# The model: a folder saved with save_pretrained() (README: Models on an offline machine) mounted
# read-only under /models, or a hub name downloaded on first start into /data/hf (needs internet).
# Ingest into the embedded database while the bot is stopped (one process opens it at a time):
#   docker stop vdx && docker run --rm -v vdx-data:/data -v /path/to/photos:/photos:ro \
#     -v /srv/models/clip:/models/clip:ro -e VDX_CLIP_MODEL=/models/clip vdx ingest folder /photos
# or use a ClickHouse server, where ingest runs beside the bot: see compose.yaml.
# Webhook instead of polling (port 8443 is exposed):
#   docker run ... -p 8443:8443 vdx bot --webhook-url https://example.org/vdx --listen 0.0.0.0
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VDX_DATA_DIR=/data \
    HF_HOME=/data/hf

# tini as PID 1: it forwards SIGTERM (docker stop) to vdx, which stops cleanly, and reaps children.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# torch from the CPU wheel index first, so the project's "torch>=2.2" does not pull a CUDA build.
# TORCH_SPEC replaces it, e.g. --build-arg TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
ARG TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
# hadolint ignore=DL3013
RUN pip install ${TORCH_SPEC}

COPY pyproject.toml README.md ./
COPY core ./core
COPY bot ./bot
# hadolint ignore=DL3013
RUN pip install .

RUN useradd --create-home --uid 1000 vdx && mkdir -p /data /models && chown vdx /data
USER 1000
VOLUME ["/data"]
EXPOSE 8443

# Healthy while the running bot's heartbeat (a getMe answered within the last 90 s) is fresh.
HEALTHCHECK --interval=60s --timeout=15s --start-period=180s --retries=3 CMD ["python", "-m", "bot.health"]

ENTRYPOINT ["tini", "--", "vdx"]
CMD ["bot"]
