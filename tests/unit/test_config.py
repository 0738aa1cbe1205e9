"""Settings read from the environment: defaults, overrides and clear errors for bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config import DEFAULT_MODEL, Settings
from core.errors import ConfigError


def test_defaults_use_embedded_database_under_data_dir() -> None:
    s = Settings.from_env({})
    assert s.data_dir == Path("data")
    assert s.effective_db_url == f"chdb://{Path('data/chdb').resolve()}"
    assert (s.db_dialect, s.table, s.clip_model, s.device, s.album_size) == (
        "auto",
        "images",
        DEFAULT_MODEL,
        "auto",
        9,
    )
    assert s.allowed_chats == frozenset()
    assert s.group_tallies is False  # groups see how many voted, not the split, until Refine


def test_environment_overrides() -> None:
    s = Settings.from_env(
        {
            "VDX_DATA_DIR": "/srv/vdx",
            "VDX_DB_URL": "http://u:p@db:8123/vdx",
            "VDX_DB_DIALECT": "MyScale",
            "VDX_TABLE": "photos_2",
            "VDX_CLIP_MODEL": "/models/clip",
            "VDX_DEVICE": "cpu",
            "VDX_TORCH_THREADS": "2",
            "VDX_ALLOWED_CHATS": "-100123, 42",
            "VDX_ALBUM_SIZE": "4",
            "VDX_GROUP_TALLIES": "On",
            "TELEGRAM_BOT_TOKEN": " 123:abc ",
        }
    )
    assert s.state_path == Path("/srv/vdx/state.sqlite3")
    assert s.effective_db_url == "http://u:p@db:8123/vdx"
    assert s.db_dialect == "myscale"
    assert s.table == "photos_2"
    assert s.torch_threads == 2
    assert s.allowed_chats == {-100123, 42}
    assert s.album_size == 4
    assert s.group_tallies is True
    assert s.telegram_token == "123:abc"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"VDX_DB_DIALECT": "postgres"}, "VDX_DB_DIALECT"),
        ({"VDX_DEVICE": "tpu"}, "VDX_DEVICE"),
        ({"VDX_TABLE": "images; DROP TABLE x"}, "VDX_TABLE"),
        ({"VDX_TORCH_THREADS": "many"}, "VDX_TORCH_THREADS"),
        ({"VDX_ALLOWED_CHATS": "12,abc"}, "VDX_ALLOWED_CHATS"),
        ({"VDX_ALBUM_SIZE": "11"}, "VDX_ALBUM_SIZE"),
        ({"VDX_DB_URL": "mysql://x"}, "VDX_DB_URL"),
        ({"VDX_GROUP_TALLIES": "sometimes"}, "VDX_GROUP_TALLIES"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        Settings.from_env(env)
