"""Settings: the one place that reads the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from core.errors import ConfigError

Dialect = Literal["auto", "clickhouse", "myscale"]
Device = Literal["auto", "cpu", "cuda"]

DEFAULT_MODEL = "openai/clip-vit-base-patch32"


@dataclass(frozen=True)
class Settings:
    """Everything configurable, read once from the environment by :meth:`from_env`."""

    data_dir: Path = Path("data")
    db_url: str = ""  # empty: embedded chDB under data_dir
    db_dialect: Dialect = "auto"
    db_cluster: str = ""  # a ClickHouse/MyScale cluster name: replicated tables behind a Distributed table
    table: str = "images"
    clip_model: str = DEFAULT_MODEL
    text_model: str = ""  # a separate (e.g. multilingual) text tower for concepts; empty: the model's own
    device: Device = "auto"
    torch_threads: int | None = None
    telegram_token: str = ""
    telegram_api_url: str = ""
    allowed_chats: frozenset[int] = field(default_factory=frozenset)
    album_size: int = 9
    alert_interval: float = 10.0  # seconds between looks for newly ingested images (alerts)
    # Show the 👍/👎 split on group keyboards while people vote (off: only how many voted, so later
    # voters are not swayed by the majority; the split shows once the round is refined).
    group_tallies: bool = False

    @property
    def embedded_db_path(self) -> Path:
        """Directory of the embedded chDB database."""
        return self.data_dir / "chdb"

    @property
    def effective_db_url(self) -> str:
        """``VDX_DB_URL``, or the ``chdb:///abs/path`` of the embedded default."""
        return self.db_url or f"chdb://{self.embedded_db_path.resolve()}"

    @property
    def state_path(self) -> Path:
        """SQLite file with sessions, rounds, votes and classifier weights."""
        return self.data_dir / "state.sqlite3"

    @property
    def heartbeat_path(self) -> Path:
        """Touched by a running bot each time Telegram answers (the container's health check reads it)."""
        return self.data_dir / "bot.heartbeat"

    @property
    def image_cache_dir(self) -> Path:
        """Thumbnails (JPEG, longest side <= 1280 px) keyed by image id."""
        return self.data_dir / "images"

    def with_(self, **changes: object) -> Settings:
        """A copy with some fields changed (validated again)."""
        return _validated(replace(self, **changes))  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read ``VDX_*`` and ``TELEGRAM_BOT_TOKEN`` from ``env`` (default: ``os.environ``)."""
        env = os.environ if env is None else env

        def get(name: str, default: str = "") -> str:
            return env.get(name, default).strip()

        threads = get("VDX_TORCH_THREADS")
        album = get("VDX_ALBUM_SIZE", "9")
        interval = get("VDX_ALERT_INTERVAL", "10")
        try:
            alert_interval = float(interval)
        except ValueError:
            raise ConfigError(f"VDX_ALERT_INTERVAL must be a number of seconds, got {interval!r}") from None
        tallies = get("VDX_GROUP_TALLIES", "0").lower()
        if tallies not in _BOOLEANS:
            raise ConfigError(f"VDX_GROUP_TALLIES must be 1 or 0 (true/false, on/off), got {tallies!r}")
        try:
            torch_threads = int(threads) if threads else None
        except ValueError:
            raise ConfigError(f"VDX_TORCH_THREADS must be a whole number, got {threads!r}") from None
        try:
            album_size = int(album)
        except ValueError:
            raise ConfigError(f"VDX_ALBUM_SIZE must be a whole number from 2 to 10, got {album!r}") from None
        allowed: set[int] = set()
        for part in get("VDX_ALLOWED_CHATS").replace(";", ",").split(","):
            if part.strip():
                try:
                    allowed.add(int(part))
                except ValueError:
                    raise ConfigError(
                        f"VDX_ALLOWED_CHATS must be comma-separated chat ids, got {part.strip()!r}"
                    ) from None
        return _validated(
            cls(
                data_dir=Path(get("VDX_DATA_DIR", "data") or "data"),
                db_url=get("VDX_DB_URL"),
                db_dialect=get("VDX_DB_DIALECT", "auto").lower() or "auto",  # type: ignore[arg-type]
                db_cluster=get("VDX_DB_CLUSTER"),
                table=get("VDX_TABLE", "images") or "images",
                clip_model=get("VDX_CLIP_MODEL", DEFAULT_MODEL) or DEFAULT_MODEL,
                text_model=get("VDX_TEXT_MODEL"),
                device=get("VDX_DEVICE", "auto").lower() or "auto",  # type: ignore[arg-type]
                torch_threads=torch_threads,
                telegram_token=get("TELEGRAM_BOT_TOKEN"),
                telegram_api_url=get("VDX_TELEGRAM_API_URL"),
                allowed_chats=frozenset(allowed),
                album_size=album_size,
                alert_interval=alert_interval,
                group_tallies=_BOOLEANS[tallies],
            )
        )


_BOOLEANS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
    "": False,
}


def _validated(s: Settings) -> Settings:
    if s.db_dialect not in ("auto", "clickhouse", "myscale"):
        raise ConfigError(f"VDX_DB_DIALECT must be auto, clickhouse or myscale, got {s.db_dialect!r}")
    if s.device not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"VDX_DEVICE must be auto, cpu or cuda, got {s.device!r}")
    if s.db_cluster and not s.db_cluster.replace("_", "").isalnum():
        raise ConfigError(f"VDX_DB_CLUSTER must be letters, digits and underscores, got {s.db_cluster!r}")
    if not s.table.replace("_", "").isalnum():
        raise ConfigError(f"VDX_TABLE must be letters, digits and underscores, got {s.table!r}")
    if s.torch_threads is not None and s.torch_threads < 1:
        raise ConfigError(f"VDX_TORCH_THREADS must be at least 1, got {s.torch_threads}")
    if not 1 <= s.alert_interval <= 3600:
        raise ConfigError(f"VDX_ALERT_INTERVAL must be from 1 to 3600 seconds, got {s.alert_interval:g}")
    if not 2 <= s.album_size <= 10:
        raise ConfigError(f"VDX_ALBUM_SIZE must be from 2 to 10 (Telegram albums), got {s.album_size}")
    if s.db_url and not s.db_url.startswith(("chdb://", "http://", "https://")):
        raise ConfigError(
            f"VDX_DB_URL must start with chdb://, http:// or https://, got {s.db_url.split('://')[0]!r}"
        )
    return s
