# CPU image of vdx: the bot, the CLI and the embedded chDB database.
#   docker build -t vdx .
#   docker run --rm -v vdx-data:/data -v /path/to/clip:/model:ro \
#     -e TELEGRAM_BOT_TOKEN=... -e VDX_CLIP_MODEL=/model vdx            # starts the bot
#   docker run --rm -v vdx-data:/data -v /path/to/photos:/photos:ro \
#     -e VDX_CLIP_MODEL=/model -v /path/to/clip:/model:ro vdx ingest folder /photos
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VDX_DATA_DIR=/data \
    HF_HOME=/data/hf

WORKDIR /app

# torch from the CPU wheel index first, so the project's "torch>=2.2" does not pull a CUDA build.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml README.md ./
COPY core ./core
COPY bot ./bot
RUN pip install .

RUN useradd --create-home --uid 1000 vdx && mkdir -p /data && chown vdx /data
USER vdx
VOLUME ["/data"]

ENTRYPOINT ["vdx"]
CMD ["bot"]
