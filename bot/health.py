"""The bot's heartbeat and ``python -m bot.health``, the container's HEALTHCHECK.

While ``vdx bot`` serves, it asks Telegram ``getMe`` every :data:`EVERY_S` seconds and touches
``VDX_DATA_DIR/bot.heartbeat`` when the answer comes. The check passes while that file is younger
than :data:`STALE_AFTER_S`: the process is alive, its event loop runs and Telegram takes its token.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from core.config import Settings

if TYPE_CHECKING:
    from telegram import Bot

log = logging.getLogger(__name__)

EVERY_S = 30.0
STALE_AFTER_S = 3 * EVERY_S  # two missed beats are tolerated (a slow Telegram answer, a busy host)


async def keep_heartbeat(bot: Bot, path: Path, every: float = EVERY_S) -> None:
    """Touch ``path`` after each successful ``getMe``, every ``every`` seconds, until cancelled."""
    from telegram.error import TelegramError

    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            await bot.get_me(read_timeout=10, connect_timeout=10)
        except TelegramError as e:  # the file ages; the check fails once it is stale
            log.warning("heartbeat: Telegram did not answer getMe: %s", e)
        else:
            path.touch()
        await asyncio.sleep(every)


def healthy(path: Path, now: float | None = None, stale_after: float = STALE_AFTER_S) -> bool:
    """Whether the heartbeat at ``path`` is fresh."""
    try:
        age = (time.time() if now is None else now) - path.stat().st_mtime
    except FileNotFoundError:
        return False
    return age < stale_after


def main() -> int:
    """0 when the bot's heartbeat is fresh, 1 (with one line saying why) when not."""
    path = Settings.from_env().heartbeat_path
    if healthy(path):
        return 0
    print(f"unhealthy: no heartbeat in {path} within {STALE_AFTER_S:g} s", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
