"""Start-up checks of ``vdx bot``: is the Bot API there and does it take the token; the ready line.

``getMe`` is asked directly, with short timeouts and a few retries, before anything heavy loads:
PTB's own start-up waits out its 30 s read timeout on a silent host and reports a 404 as a bad
token. Real Telegram answers a revoked token with 401 ``Unauthorized`` and a path it does not know
with 404 ``Not Found`` (https://core.telegram.org/bots/api#making-requests: every answer is JSON
with ``ok``, ``error_code`` and ``description``).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import httpx

from bot import texts
from core.errors import BotApiUnreachable, ConfigError, innermost_reason

log = logging.getLogger(__name__)

TELEGRAM_API_URL = "https://api.telegram.org/bot"  # PTB's default base_url
ATTEMPTS = 4
ATTEMPT_TIMEOUT_S = 4.0
RETRY_DELAYS_S = (1.0, 2.0, 3.0)  # 4 silent tries: 4 x 4 s + 6 s = 22 s before giving up
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})  # busy or restarting; anything else is final


@dataclass(frozen=True)
class BotIdentity:
    """Who the token belongs to, from ``getMe``."""

    id: int
    username: str


class _Retry(Exception):
    """A failure worth another try (no connection, no answer, a 5xx)."""


async def check_bot_api(
    api_url: str,
    token: str,
    *,
    attempts: int = ATTEMPTS,
    timeout: float = ATTEMPT_TIMEOUT_S,
    delays: tuple[float, ...] = RETRY_DELAYS_S,
) -> BotIdentity:
    """``getMe`` at ``api_url`` (``…/bot``, the token appended), retried; one warning per retry.

    Raises :class:`BotApiUnreachable` when the server cannot be reached or is not a Bot API server,
    :class:`ConfigError` when it rejects the token. The token never appears in a message.
    """
    base = api_url.rstrip("/")
    async with httpx.AsyncClient(timeout=timeout) as client:
        for attempt in range(1, attempts + 1):
            try:
                return await _get_me(client, base, token, timeout)
            except _Retry as e:
                reason = str(e)
            if attempt < attempts:
                delay = delays[min(attempt, len(delays)) - 1] if delays else 0.0
                log.warning(
                    "cannot reach the Telegram Bot API at %s (%s); retrying in %g s (attempt %d of %d)",
                    base,
                    reason,
                    delay,
                    attempt + 1,
                    attempts,
                )
                await asyncio.sleep(delay)
    raise BotApiUnreachable(base, reason)


async def _get_me(client: httpx.AsyncClient, base: str, token: str, timeout: float) -> BotIdentity:
    try:
        response = await client.post(f"{base}{token}/getMe")
    except httpx.TimeoutException:
        raise _Retry(f"no answer within {timeout:g} s") from None
    except httpx.HTTPError as e:
        raise _Retry(innermost_reason(e)) from None
    status = response.status_code
    if status == 401:
        raise ConfigError(texts.REJECTED_TOKEN)
    if status == 404:
        raise BotApiUnreachable(
            base,
            "HTTP 404: not a Bot API server; check --api-url or VDX_TELEGRAM_API_URL (it ends in /bot) "
            "and that TELEGRAM_BOT_TOKEN looks like 123456:ABC…",
        )
    if status in RETRY_STATUS:
        raise _Retry(f"HTTP {status}")
    try:
        body = response.json()
        user = body["result"] if body.get("ok") else None
        identity = BotIdentity(int(user["id"]), str(user["username"])) if user else None
    except (ValueError, TypeError, KeyError, AttributeError):
        identity = None
    if identity is None:
        raise BotApiUnreachable(base, f"HTTP {status}: not a Bot API server (its answer is not Bot API JSON)")
    return identity


def ready_line(bot: BotIdentity, *, images: int, model: str, database: str, mode: str) -> str:
    """The one line ``vdx bot`` prints once it serves updates."""
    return f"vdx bot @{bot.username} ready: {images} images, model {model}, database {database}, {mode}"
