"""A fake Telegram Bot API server on 127.0.0.1 for end-to-end tests and benchmarks.

It speaks the Bot API the way python-telegram-bot 22 uses it (form or multipart POSTs whose
non-string values are JSON-encoded, or JSON bodies) at ``/bot{token}/{method}``, keeps a record of
every request, and lets a test inject updates (messages, photos, button presses) that the bot
receives through real ``getUpdates`` long polling. Where Telegram validates something that a bot
can get wrong (album size, ``callback_data`` length, unfetchable media URLs, rate limits), it
answers with Telegram's own error JSON.

Flood limits (on unless a test passes ``limits=None``), see :class:`FloodLimits`:

- Bot FAQ, "My bot is hitting limits, how do I avoid this?"
  (https://core.telegram.org/bots/faq#my-bot-is-hitting-limits-how-do-i-avoid-this): "When sending
  messages inside a particular chat, avoid sending more than one message per second. We may allow
  short bursts that go over this limit, but eventually you'll begin receiving 429 errors. [...] the
  API will not allow more than 30 messages per second or so. [...] your bot will not be able to
  send more than 20 messages per minute to the same group." Modelled as a token bucket per chat
  (1 a second, bursts of ``chat_burst``), at most 20 in any 60 s per group (negative chat id), at
  most 30 in any second overall.
- Editing counts as sending: "For bots the limits for message editing are the same as for message
  sending [...] They share the limit" (Telegram's levlam, https://github.com/tdlib/td/issues/2592).
- "You can call answerCallbackQuery without any limits, editing of the message in question is still
  subject to per chat limits" (levlam, https://github.com/tdlib/telegram-bot-api/issues/648): only
  the methods in ``FLOOD_COUNTED`` (sending, copying, forwarding, editing messages) count;
  answerCallbackQuery, getUpdates, getChatMember, getFile, sendChatAction and the like do not.
- An album (``sendMediaGroup``) counts as one request, as python-telegram-bot's ``AIORateLimiter``
  counts it (telegram/ext/_aioratelimiter.py); Telegram does not document how albums count.
- Over a limit Telegram answers HTTP 429 ``{"ok": false, "error_code": 429, "description": "Too Many
  Requests: retry after N", "parameters": {"retry_after": N}}`` with N whole seconds (Bot API,
  https://core.telegram.org/bots/api#responseparameters: "retry_after: In case of exceeding flood
  control, the number of seconds left to wait before the request can be repeated"). A refused
  request is not counted.

Failures a test injects, per method: :meth:`FakeBotApi.fail_next` answers the next call(s) of a
method with an error JSON (flood control's 429 with ``retry_after`` by default, or any status and
description, e.g. ``"Bad Request: query is too old and response timeout expired or query ID is
invalid"``, Telegram's answer to a late ``answerCallbackQuery``). Rules kept as Telegram keeps them:

- A reply (``reply_parameters.message_id``) to a message that no longer exists is refused with
  400 "message to be replied not found" unless ``allow_sending_without_reply`` is set
  (https://core.telegram.org/bots/api#replyparameters); :meth:`FakeBotApi.user_deletes` removes a
  message as a person deleting it would.
- ``getUpdates`` with an ``offset`` confirms (forgets) every update below it, and only then
  (https://core.telegram.org/bots/api#getupdates). :meth:`FakeBotApi.hold_polls` models a
  confirmation that never reaches Telegram (the bot is killed first): polls wait, their offsets
  are not applied, and the updates stay queued for the next bot to poll.
- A callback query can be answered only for a short while after the press; Telegram does not
  document how long (reports put it at 10-15 s, e.g. github.com/yagop/node-telegram-bot-api
  issues, github.com/LonamiWebs/Telethon/issues/4073). ``callback_answer_window`` (seconds, off
  by default) makes later answers fail with 400 "query is too old and response timeout expired or
  query ID is invalid".
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import math
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from PIL import Image

JSON = dict[str, Any]

BOT_ID = 1000
BOT_USERNAME = "VdxTestBot"
DEFAULT_TOKEN = f"{BOT_ID}:fake-token-for-tests"

# Values that are text even when they look like JSON (a caption "42" must stay a string).
_TEXT_FIELDS = frozenset(
    {"text", "caption", "callback_query_id", "url", "file_id", "parse_mode", "title", "description"}
)
# Methods that only change how the bot looks or what a chat shows; the fake accepts and records them.
_HARMLESS = frozenset(
    m.lower()
    for m in (
        "setChatMenuButton",
        "setMyName",
        "setMyDefaultAdministratorRights",
        "pinChatMessage",
        "unpinChatMessage",
        "setMessageReaction",
        "deleteMessages",
    )
)
# Requests that send or edit a message in a chat: the ones Telegram's flood limits count.
FLOOD_COUNTED = frozenset(
    m.lower()
    for m in (
        "sendMessage",
        "sendPhoto",
        "sendMediaGroup",
        "sendDocument",
        "sendVideo",
        "sendAnimation",
        "sendAudio",
        "sendVoice",
        "sendVideoNote",
        "sendSticker",
        "sendLocation",
        "sendVenue",
        "sendContact",
        "sendPoll",
        "sendDice",
        "copyMessage",
        "copyMessages",
        "forwardMessage",
        "forwardMessages",
        "editMessageText",
        "editMessageCaption",
        "editMessageMedia",
        "editMessageReplyMarkup",
        "editMessageLiveLocation",
        "stopMessageLiveLocation",
        "stopPoll",
    )
)
_MAX_UPLOAD = 64 * 1024 * 1024  # Telegram accepts 50 MB documents; albums of photos need > 1 MiB
# "Bots can currently send files of any type of up to 50 MB in size" (https://core.telegram.org/bots/api#senddocument);
# a larger upload is answered 413 "Request Entity Too Large".
MAX_DOCUMENT = 50 * 1000 * 1000


class ApiError(Exception):
    """An error the fake answers with Telegram's JSON shape."""

    def __init__(self, status: int, description: str, parameters: JSON | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters


@dataclass(frozen=True)
class FloodLimits:
    """Telegram's flood limits (see the module docstring for where each number comes from)."""

    chat_per_second: float = 1.0  # "avoid sending more than one message per second" in one chat
    chat_burst: int = 3  # "we may allow short bursts": Telegram gives no number; 3 back to back
    group_per_minute: int = 20  # "not [...] more than 20 messages per minute to the same group"
    overall_per_second: int = 30  # "not [...] more than 30 messages per second or so"


class _FloodControl:
    """Decides, at each counted request's arrival, whether it is over a limit and for how long."""

    def __init__(self, limits: FloodLimits) -> None:
        self.limits = limits
        self._chat: dict[int, tuple[float, float]] = {}  # chat -> (bucket level, when)
        self._group: dict[int, deque[float]] = {}  # group chat -> arrival times in the last minute
        self._overall: deque[float] = deque()  # arrival times in the last second

    def admit(self, chat: int | None, now: float) -> float:
        """0 and the request is counted, or the seconds until it would be allowed (not counted)."""
        lim = self.limits
        waits = [0.0]
        while self._overall and self._overall[0] <= now - 1.0:
            self._overall.popleft()
        if len(self._overall) >= lim.overall_per_second:
            waits.append(self._overall[0] + 1.0 - now)
        level = 0.0
        group: deque[float] | None = None
        if chat is not None:
            level, at = self._chat.get(chat, (0.0, now))
            level = max(0.0, level - (now - at) * lim.chat_per_second)
            if level + 1 > lim.chat_burst:
                waits.append((level + 1 - lim.chat_burst) / lim.chat_per_second)
            if chat < 0:
                group = self._group.setdefault(chat, deque())
                while group and group[0] <= now - 60.0:
                    group.popleft()
                if len(group) >= lim.group_per_minute:
                    waits.append(group[0] + 60.0 - now)
        wait = max(waits)
        if wait > 0:
            return wait
        self._overall.append(now)
        if chat is not None:
            self._chat[chat] = (level + 1, now)
            if group is not None:
                group.append(now)
        return 0.0


@dataclass
class Call:
    """One request the bot made: method, decoded parameters, uploaded files, arrival time, answer."""

    seq: int
    method: str
    params: JSON
    files: dict[str, bytes]  # multipart part name -> uploaded bytes
    time: float  # time.perf_counter() when the request arrived
    filenames: dict[str, str] = field(default_factory=dict)  # part name -> file name sent
    contents: list[bytes] = field(default_factory=list)  # photo bytes as "Telegram" got them, in order
    done: bool = False  # the fake has answered it
    ok: bool = True
    result: Any = None
    error: str = ""

    @property
    def chat_id(self) -> int | None:
        """The ``chat_id`` parameter as an int, if the method has one."""
        value = self.params.get("chat_id")
        return int(value) if value is not None else None


@dataclass
class Delivered:
    """An injected update and when ``getUpdates`` handed it to the bot."""

    update: JSON
    queued_at: float
    sent_at: float | None = None
    sent: asyncio.Event = field(default_factory=asyncio.Event)


def button_texts(markup: JSON | None) -> list[str]:
    """All inline button texts of a ``reply_markup``, row by row."""
    if not markup:
        return []
    return [b["text"] for row in markup.get("inline_keyboard", []) for b in row]


class FakeBotApi:
    """The fake server. ``async with FakeBotApi() as fake: fake.base_url`` -> ``http://127.0.0.1:PORT/bot``."""

    def __init__(
        self,
        token: str = DEFAULT_TOKEN,
        *,
        fetch_timeout: float = 3.0,
        limits: FloodLimits | None = FloodLimits(),
    ) -> None:
        self.token = token
        self.limits = limits
        self._flood = _FloodControl(limits) if limits is not None else None
        self.tokens = {token}
        self.calls: list[Call] = []
        self.admins: dict[int, set[int]] = {}  # chat id -> user ids that getChatMember calls admins
        self.names: dict[int, str] = {}  # user id -> the first name people chose (any text)
        self.unfetchable: set[str] = set()  # URL prefixes this "Telegram" cannot download
        self.fetch_timeout = fetch_timeout
        self.files: dict[str, bytes] = {}  # file_id -> content (uploads, photos users sent)
        self.file_paths: dict[str, str] = {}  # file path (getFile) -> file_id
        self.messages: dict[int, dict[int, JSON]] = {}  # chat -> message_id -> message sent or received
        self.fetched_urls: list[str] = []
        self._failures: dict[str, list[tuple[int, JSON]]] = {}
        self._pending: list[Delivered] = []
        self._polls_held = False
        self.callback_answer_window: float | None = None
        self._pressed_at: dict[str, float] = {}
        self._deliveries: dict[int, Delivered] = {}
        self.last_update_id = 0  # id of the update queued last (see :meth:`delivery`)
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._file_ids = itertools.count(1)
        self._callback_ids = itertools.count(1)
        self._group_ids = itertools.count(1)
        self._new_update = asyncio.Condition()
        self._new_call = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> FakeBotApi:
        """Listen on 127.0.0.1 on a free port."""
        app = web.Application(client_max_size=_MAX_UPLOAD)
        app.router.add_route("*", "/bot{token}/{path:.+}", self._handle)
        app.router.add_route("*", "/file/bot{token}/{path:.+}", self._download)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        # trust_env=False: never send loopback fetches through a proxy from the environment.
        self._http = aiohttp.ClientSession(trust_env=False)
        return self

    async def stop(self) -> None:
        """Stop listening; long polls in flight are answered by aiohttp's shutdown."""
        async with self._new_update:
            self._new_update.notify_all()
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> FakeBotApi:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """What to give PTB as ``base_url`` and ``base_file_url`` (PTB appends the token)."""
        return f"http://127.0.0.1:{self.port}/bot"

    # ------------------------------------------------------------------ injection API
    def user(self, user: int, name: str | None = None) -> JSON:
        """A Telegram ``User`` object for a person (named as in :attr:`names`, if there)."""
        first = name or self.names.get(user) or f"User{user}"
        return {"id": user, "is_bot": False, "first_name": first, "username": f"user{user}"}

    def chat(self, chat: int, chat_type: str = "private") -> JSON:
        """A Telegram ``Chat`` object; groups get a title, private chats a first name."""
        if chat_type == "private":
            return {"id": chat, "type": "private", "first_name": f"User{chat}"}
        return {"id": chat, "type": chat_type, "title": f"Group {chat}"}

    def user_message(
        self,
        chat: int,
        user: int,
        text: str,
        chat_type: str = "private",
        *,
        reply_to: JSON | int | None = None,
        deliver: bool = True,
    ) -> JSON:
        """Queue a text message from ``user`` in ``chat``; a leading ``/command`` gets its entity.

        ``deliver=False`` only records the message (one the bot never saw, e.g. hidden by privacy mode).
        """
        msg = self._incoming(chat, user, chat_type)
        msg["text"] = text
        if text.startswith("/"):
            command = text.split(maxsplit=1)[0]
            msg["entities"] = [{"type": "bot_command", "offset": 0, "length": _utf16_len(command)}]
        if reply_to is not None:
            msg["reply_to_message"] = self._message(chat, reply_to)
        if deliver:
            self._queue({"message": msg})
        return msg

    def user_photo(
        self,
        chat: int,
        user: int,
        jpeg: bytes,
        chat_type: str = "private",
        *,
        caption: str | None = None,
        deliver: bool = True,
    ) -> JSON:
        """Queue a photo from ``user``; the bot can download ``jpeg`` through getFile."""
        msg = self._incoming(chat, user, chat_type)
        msg["photo"] = [self._photo_size(jpeg, 90), self._photo_size(jpeg, 800)]
        if caption is not None:
            msg["caption"] = caption
            if caption.startswith("/"):
                command = caption.split(maxsplit=1)[0]
                msg["caption_entities"] = [
                    {"type": "bot_command", "offset": 0, "length": _utf16_len(command)}
                ]
        self._queue({"message": msg})
        return msg

    def press(self, chat: int, user: int, message: JSON | int, button_text: str) -> str:
        """Queue a callback query for the button whose text starts with ``button_text``; returns its id.

        An exact match wins over a prefix match, so ``"👍 1"`` does not pick ``"👍 10"``.
        """
        msg = self._message(chat, message)
        buttons = [b for row in (msg.get("reply_markup") or {}).get("inline_keyboard", []) for b in row]
        exact = [b for b in buttons if b["text"] == button_text]
        prefix = [b for b in buttons if _button_matches(b["text"], button_text)]
        found = (exact or prefix)[:1]
        if not found:
            raise LookupError(
                f"no button {button_text!r} on message {msg['message_id']}: {button_texts(msg.get('reply_markup'))}"
            )
        if "callback_data" not in found[0]:
            raise LookupError(f"button {found[0]['text']!r} carries no callback_data")
        return self._callback(chat, user, msg, found[0]["callback_data"])

    def forged_callback(
        self, chat: int, user: int, data: str, message: JSON | int | None = None, *, inline: bool = False
    ) -> str:
        """Queue a callback query with arbitrary ``data`` (as a modified client could send).

        ``inline=True``: a press on an inline-mode message, which carries ``inline_message_id`` and no
        ``message`` (https://core.telegram.org/bots/api#callbackquery).
        """
        if inline:
            return self._callback(chat, user, None, data)
        msg = self._message(chat, message) if message is not None else self._last_bot_message(chat)
        return self._callback(chat, user, msg, data)

    def user_deletes(self, chat: int, message: JSON | int) -> None:
        """A person deletes a message: replies quoting it are refused from now on."""
        mid = message["message_id"] if isinstance(message, Mapping) else int(message)
        self.messages.get(chat, {}).pop(mid, None)

    def hold_polls(self, held: bool = True) -> None:
        """While held, ``getUpdates`` never applies its offset (as if it never arrived) and returns nothing."""
        self._polls_held = held
        if not held:
            asyncio.get_running_loop().create_task(self._wake_polls())

    async def _wake_polls(self) -> None:
        async with self._new_update:
            self._new_update.notify_all()

    def fail_next(
        self,
        method: str,
        status: int = 429,
        retry_after: int = 1,
        description: str | None = None,
        *,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` calls of ``method`` with an error (default: Telegram's flood-control 429).

        ``method`` ``"download"`` fails file downloads (``/file/bot<token>/<path>``). ``{path}`` in
        ``description`` becomes the request's path as sent (token included), as an error page of a
        proxy or a self-hosted server may echo it.
        """
        if status == 429:
            body: JSON = {
                "ok": False,
                "error_code": 429,
                "description": description or f"Too Many Requests: retry after {retry_after}",
                "parameters": {"retry_after": retry_after},
            }
        else:
            body = {"ok": False, "error_code": status, "description": description or "Bad Request"}
        self._failures.setdefault(method, []).extend([(status, body)] * times)

    def delivery(self, update_id: int) -> Delivered:
        """When an injected update was queued and handed to the bot."""
        return self._deliveries[update_id]

    def throttled(self, since: int = 0) -> list[Call]:
        """Requests (from sequence ``since``) answered 429 by the flood limits or by :meth:`fail_next`."""
        return [c for c in self.calls[since:] if c.done and c.error.startswith("Too Many Requests")]

    def mark(self) -> int:
        """The sequence number the next recorded call will get (use with ``since=``)."""
        return len(self.calls)

    # ------------------------------------------------------------------ waiting and reading
    def find(
        self, method: str, predicate: Callable[[Call], bool] | None = None, *, since: int = 0
    ) -> list[Call]:
        """Answered, successful calls of ``method`` (from sequence ``since``) that satisfy ``predicate``."""
        return [
            c
            for c in self.calls[since:]
            if c.method == method and c.done and c.ok and (predicate is None or predicate(c))
        ]

    async def wait_for(
        self,
        method: str,
        predicate: Callable[[Call], bool] | None = None,
        timeout: float = 10.0,
        *,
        count: int = 1,
        since: int = 0,
    ) -> list[Call]:
        """Wait until ``count`` successful calls of ``method`` match; returns them all (oldest first)."""
        deadline = time.monotonic() + timeout
        async with self._new_call:
            while True:
                found = self.find(method, predicate, since=since)
                if len(found) >= count:
                    return found
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [
                        f"{c.method}{'' if c.ok else ' (' + c.error + ')'}"
                        for c in self.calls[since:]
                        if c.method != "getUpdates"
                    ]
                    raise TimeoutError(
                        f"waited {timeout}s for {count} x {method}, got {len(found)}; calls since {since}: {seen}"
                    )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._new_call.wait(), left)

    async def wait_for_reply(
        self,
        chat: int,
        predicate: Callable[[str], bool] | None = None,
        timeout: float = 10.0,
        *,
        since: int = 0,
    ) -> Call:
        """The first ``sendMessage`` to ``chat`` whose text satisfies ``predicate``."""
        calls = await self.wait_for(
            "sendMessage",
            lambda c: c.chat_id == chat and (predicate is None or predicate(str(c.params.get("text", "")))),
            timeout,
            since=since,
        )
        return calls[0]

    async def settle(self, quiet: float = 0.3, timeout: float = 10.0) -> None:
        """Wait until no request other than ``getUpdates`` arrived for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            busy = [c for c in self.calls if c.method != "getUpdates"]
            last = busy[-1].time if busy else 0.0
            if time.perf_counter() - last >= quiet and not self._pending:
                return
            await asyncio.sleep(quiet / 3)

    # ------------------------------------------------------------------ HTTP
    async def _handle(self, request: web.Request) -> web.Response:
        token, path = request.match_info["token"], request.match_info["path"]
        if "/" in path:  # base_file_url == base_url: /bot{token}/{file_path}
            return await self._download(request)
        arrived = time.perf_counter()
        try:
            params, files, names = await _read_params(request)
        except ValueError as e:
            return _error(400, f"Bad Request: {e}")
        call = Call(len(self.calls), path, params, files, arrived, filenames=names)
        self.calls.append(call)
        try:
            if token not in self.tokens:
                raise ApiError(401, "Unauthorized")
            if (injected := self._injected(path, request)) is not None:
                call.ok, call.error = False, injected[1]["description"]
                return web.json_response(injected[1], status=injected[0])
            if self._flood is not None and path.lower() in FLOOD_COUNTED:
                wait = self._flood.admit(call.chat_id, time.monotonic())
                if wait > 0:
                    seconds = max(1, math.ceil(wait))
                    raise ApiError(429, f"Too Many Requests: retry after {seconds}", {"retry_after": seconds})
            handler = getattr(self, f"_api_{path.lower()}", None)
            if handler is not None:
                result = await handler(params, call)
            elif path.lower() in _HARMLESS:
                result = True
            else:
                raise ApiError(404, "Not Found")
            call.result = result
            return web.json_response({"ok": True, "result": result})
        except ApiError as e:
            call.ok, call.error = False, e.description
            body = {"ok": False, "error_code": e.status, "description": e.description}
            if e.parameters:
                body["parameters"] = e.parameters
            return web.json_response(body, status=e.status)
        finally:
            call.done = True
            async with self._new_call:
                self._new_call.notify_all()

    def _injected(self, method: str, request: web.Request) -> tuple[int, JSON] | None:
        """The failure queued for ``method`` by :meth:`fail_next`, ``{path}`` in it filled in as requested."""
        failures = self._failures.get(method) or self._failures.get(method.lower())
        if not failures:
            return None
        status, body = failures.pop(0)
        return status, {**body, "description": body["description"].replace("{path}", request.raw_path)}

    async def _download(self, request: web.Request) -> web.Response:
        if request.match_info["token"] not in self.tokens:
            return _error(401, "Unauthorized")
        if (injected := self._injected("download", request)) is not None:
            return web.json_response(injected[1], status=injected[0])
        file_id = self.file_paths.get(request.match_info["path"])
        if file_id is None:
            return _error(404, "Not Found")
        return web.Response(body=self.files[file_id], content_type="application/octet-stream")

    # ------------------------------------------------------------------ Bot API methods
    async def _api_getme(self, p: JSON, call: Call) -> JSON:
        return {
            "id": BOT_ID,
            "is_bot": True,
            "first_name": "VDX test",
            "username": BOT_USERNAME,
            "can_join_groups": True,
            "can_read_all_group_messages": False,
            "supports_inline_queries": False,
        }

    async def _api_getupdates(self, p: JSON, call: Call) -> list[JSON]:
        offset = int(p.get("offset") or 0)
        timeout = float(p.get("timeout") or 0)
        limit = int(p.get("limit") or 100)
        deadline = time.monotonic() + timeout
        async with self._new_update:
            if self._polls_held:  # this poll "never arrives": no offset applied, nothing handed out
                while self._polls_held and (left := deadline - time.monotonic()) > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._new_update.wait(), left)
                return []
            if offset:  # Telegram forgets every update below the offset: they are confirmed
                self._pending = [d for d in self._pending if d.update["update_id"] >= offset]
            while not self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                try:
                    await asyncio.wait_for(self._new_update.wait(), left)
                except TimeoutError:
                    return []
            batch = self._pending[:limit]
        now = time.perf_counter()
        for d in batch:
            if d.sent_at is None:
                d.sent_at = now
                d.sent.set()
        return [d.update for d in batch]

    async def _api_deletewebhook(self, p: JSON, call: Call) -> bool:
        return True

    async def _api_setwebhook(self, p: JSON, call: Call) -> bool:
        return True

    async def _api_getwebhookinfo(self, p: JSON, call: Call) -> JSON:
        return {"url": "", "has_custom_certificate": False, "pending_update_count": len(self._pending)}

    async def _api_setmycommands(self, p: JSON, call: Call) -> bool:
        for c in p.get("commands") or []:
            if not 1 <= len(c.get("command", "")) <= 32 or not 1 <= len(c.get("description", "")) <= 256:
                raise ApiError(400, "Bad Request: BOT_COMMAND_INVALID")
        return True

    async def _api_deletemycommands(self, p: JSON, call: Call) -> bool:
        return True

    async def _api_setmydescription(self, p: JSON, call: Call) -> bool:
        return True

    async def _api_setmyshortdescription(self, p: JSON, call: Call) -> bool:
        return True

    async def _api_sendchataction(self, p: JSON, call: Call) -> bool:
        return True

    async def _api_sendmessage(self, p: JSON, call: Call) -> JSON:
        text = str(p.get("text", ""))
        if not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        if _utf16_len(text) > 4096:
            raise ApiError(400, "Bad Request: message is too long")
        _check_markup(p.get("reply_markup"))
        msg = self._outgoing(p)
        msg["text"] = text
        return msg

    async def _api_sendphoto(self, p: JSON, call: Call) -> JSON:
        _check_caption(p.get("caption"))
        _check_markup(p.get("reply_markup"))
        content = _checked_photo(await self._media_content(p.get("photo"), call, "photo"))
        call.contents = [content]
        msg = self._outgoing(p)
        msg["photo"] = [self._photo_size(content, 90), self._photo_size(content, 800)]
        if p.get("caption"):
            msg["caption"] = p["caption"]
        return msg

    async def _api_senddocument(self, p: JSON, call: Call) -> JSON:
        _check_caption(p.get("caption"))
        doc = p.get("document")
        content = await self._media_content(doc, call, "document")
        if len(content) > MAX_DOCUMENT:
            raise ApiError(413, "Request Entity Too Large")
        part = (
            doc.removeprefix("attach://")
            if isinstance(doc, str) and doc.startswith("attach://")
            else "document"
        )
        name = call.filenames.get(part) or "document"
        file_id = self._new_file(content, f"documents/{name}")
        msg = self._outgoing(p)
        msg["document"] = {
            "file_id": file_id,
            "file_unique_id": f"u{file_id}",
            "file_name": name,
            "file_size": len(content),
        }
        if p.get("caption"):
            msg["caption"] = p["caption"]
        return msg

    async def _api_sendmediagroup(self, p: JSON, call: Call) -> list[JSON]:
        if "reply_markup" in p:
            raise ApiError(400, "Bad Request: sendMediaGroup takes no reply_markup")
        media = p.get("media")
        if not isinstance(media, list) or not 2 <= len(media) <= 10:
            raise ApiError(400, "Bad Request: media must include 2-10 items")
        contents = []
        for item in media:
            if item.get("type") not in ("photo", "video", "document", "audio"):
                raise ApiError(400, "Bad Request: wrong media type")
            _check_caption(item.get("caption"))
            # One bad item fails the whole album, as on Telegram.
            content = await self._media_content(item.get("media"), call, None)
            contents.append(_checked_photo(content) if item["type"] == "photo" else content)
        call.contents = contents
        group = f"album{next(self._group_ids)}"
        out = []
        for item, content in zip(media, contents, strict=True):
            msg = self._outgoing(p)
            msg["media_group_id"] = group
            msg["photo"] = [self._photo_size(content, 90), self._photo_size(content, 800)]
            if item.get("caption"):
                msg["caption"] = item["caption"]
            out.append(msg)
        return out

    async def _api_editmessagereplymarkup(self, p: JSON, call: Call) -> JSON:
        msg = self._target(p)
        markup = p.get("reply_markup")
        _check_markup(markup)
        if (markup or None) == (msg.get("reply_markup") or None):
            raise ApiError(
                400,
                "Bad Request: message is not modified: specified new message content and reply markup "
                "are exactly the same as a current content and reply markup of the message",
            )
        return _edited(msg, markup)

    async def _api_editmessagetext(self, p: JSON, call: Call) -> JSON:
        msg = self._target(p)
        text = str(p.get("text", ""))
        if not text.strip():
            raise ApiError(400, "Bad Request: message text is empty")
        markup = p.get("reply_markup")
        _check_markup(markup)
        if text == msg.get("text") and (markup or None) == (msg.get("reply_markup") or None):
            raise ApiError(400, "Bad Request: message is not modified")
        msg["text"] = text
        return _edited(msg, markup)

    async def _api_answercallbackquery(self, p: JSON, call: Call) -> bool:
        query_id = str(p.get("callback_query_id") or "")
        pressed, window = self._pressed_at.get(query_id), self.callback_answer_window
        expired = window is not None and pressed is not None and call.time - pressed > window
        if not query_id or expired:
            raise ApiError(
                400, "Bad Request: query is too old and response timeout expired or query ID is invalid"
            )
        if len(str(p.get("text") or "")) > 200:
            raise ApiError(400, "Bad Request: MESSAGE_TOO_LONG")
        return True

    async def _api_getchatmember(self, p: JSON, call: Call) -> JSON:
        chat, user = int(p["chat_id"]), int(p["user_id"])
        if user in self.admins.get(chat, set()):
            return {
                "status": "administrator",
                "user": self.user(user),
                "can_be_edited": False,
                "is_anonymous": False,
                "can_manage_chat": True,
                "can_delete_messages": True,
                "can_manage_video_chats": True,
                "can_restrict_members": True,
                "can_promote_members": False,
                "can_change_info": True,
                "can_invite_users": True,
                "can_post_stories": False,
                "can_edit_stories": False,
                "can_delete_stories": False,
            }
        return {"status": "member", "user": self.user(user)}

    async def _api_getchatadministrators(self, p: JSON, call: Call) -> list[JSON]:
        chat = int(p["chat_id"])
        return [
            await self._api_getchatmember({"chat_id": chat, "user_id": u}, call)
            for u in self.admins.get(chat, ())
        ]

    async def _api_getfile(self, p: JSON, call: Call) -> JSON:
        file_id = str(p.get("file_id", ""))
        if file_id not in self.files:
            raise ApiError(400, "Bad Request: invalid file_id")
        path = next(k for k, v in self.file_paths.items() if v == file_id)
        return {
            "file_id": file_id,
            "file_unique_id": f"u{file_id}",
            "file_size": len(self.files[file_id]),
            "file_path": path,
        }

    async def _api_deletemessage(self, p: JSON, call: Call) -> bool:
        self.messages.get(int(p["chat_id"]), {}).pop(int(p["message_id"]), None)
        return True

    async def _api_close(self, p: JSON, call: Call) -> bool:
        return True

    async def _api_logout(self, p: JSON, call: Call) -> bool:
        return True

    # ------------------------------------------------------------------ helpers
    def _queue(self, payload: JSON) -> int:
        update_id = next(self._update_ids)
        delivered = Delivered({"update_id": update_id, **payload}, time.perf_counter())
        self._deliveries[update_id] = delivered
        self._pending.append(delivered)
        self.last_update_id = update_id

        async def wake() -> None:
            async with self._new_update:
                self._new_update.notify_all()

        asyncio.get_running_loop().create_task(wake())
        return update_id

    def _incoming(self, chat: int, user: int, chat_type: str) -> JSON:
        msg: JSON = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": self.chat(chat, chat_type),
            "from": self.user(user),
        }
        self.messages.setdefault(chat, {})[msg["message_id"]] = msg
        return msg

    def _outgoing(self, p: JSON) -> JSON:
        if p.get("chat_id") is None:
            raise ApiError(400, "Bad Request: chat_id is empty")
        chat = int(p["chat_id"])
        reply = p.get("reply_parameters")
        if isinstance(reply, dict) and not reply.get("allow_sending_without_reply"):
            target = int(reply.get("chat_id") or chat)
            if int(reply.get("message_id") or 0) not in self.messages.get(target, {}):
                raise ApiError(400, "Bad Request: message to be replied not found")
        known = next(iter(self.messages.get(chat, {}).values()), None)
        chat_obj = known["chat"] if known else self.chat(chat, "private" if chat > 0 else "group")
        msg: JSON = {
            "message_id": next(self._message_ids),
            "date": int(time.time()),
            "chat": chat_obj,
            "from": {"id": BOT_ID, "is_bot": True, "first_name": "VDX test", "username": BOT_USERNAME},
        }
        if p.get("reply_markup"):
            msg["reply_markup"] = p["reply_markup"]
        self.messages.setdefault(chat, {})[msg["message_id"]] = msg
        return msg

    def _target(self, p: JSON) -> JSON:
        if p.get("inline_message_id"):
            raise ApiError(400, "Bad Request: inline messages are not supported by this fake")
        chat, mid = p.get("chat_id"), p.get("message_id")
        msg = self.messages.get(int(chat), {}).get(int(mid)) if chat is not None and mid is not None else None
        if msg is None:
            raise ApiError(400, "Bad Request: message to edit not found")
        return msg

    def _message(self, chat: int, message: JSON | int) -> JSON:
        mid = message["message_id"] if isinstance(message, Mapping) else int(message)
        try:
            return self.messages[chat][mid]
        except KeyError:
            raise LookupError(f"no message {mid} in chat {chat}") from None

    def _last_bot_message(self, chat: int) -> JSON:
        for msg in reversed(list(self.messages.get(chat, {}).values())):
            if msg["from"]["id"] == BOT_ID:
                return msg
        raise LookupError(f"the bot sent nothing to chat {chat}")

    def _callback(self, chat: int, user: int, msg: JSON | None, data: str) -> str:
        query_id = f"cq{next(self._callback_ids)}"
        query: JSON = {"id": query_id, "from": self.user(user), "chat_instance": f"ci{chat}", "data": data}
        if msg is None:
            query["inline_message_id"] = f"inline{query_id}"
        else:
            query["message"] = json.loads(json.dumps(msg))  # a snapshot, as Telegram sends it
        self._pressed_at[query_id] = time.perf_counter()
        self._queue({"callback_query": query})
        return query_id

    def _new_file(self, content: bytes, path: str) -> str:
        file_id = f"file{next(self._file_ids)}"
        self.files[file_id] = content
        self.file_paths[f"{path.rsplit('/', 1)[0]}/{file_id}_{path.rsplit('/', 1)[-1]}"] = file_id
        return file_id

    def _photo_size(self, content: bytes, side: int) -> JSON:
        file_id = self._new_file(content, f"photos/{side}.jpg")
        return {
            "file_id": file_id,
            "file_unique_id": f"u{file_id}",
            "width": side,
            "height": side,
            "file_size": len(content),
        }

    async def _media_content(self, ref: Any, call: Call, part: str | None) -> bytes:
        """Bytes of an ``attach://name`` upload, a known ``file_id``, a URL this fake downloads, or part ``part``."""
        if ref is None and part is not None and part in call.files:
            ref = f"attach://{part}"  # PTB uploads a lone file as a part named after the parameter
        if isinstance(ref, str) and ref.startswith("attach://"):
            name = ref.removeprefix("attach://")
            if name not in call.files:
                raise ApiError(400, f"Bad Request: file of attach://{name} not found")
            if not call.files[name]:
                raise ApiError(400, "Bad Request: file must be non-empty")
            return call.files[name]
        if isinstance(ref, str) and ref.startswith(("http://", "https://")):
            return await self._fetch(ref)
        if isinstance(ref, str) and ref in self.files:
            return self.files[ref]
        raise ApiError(400, "Bad Request: wrong file identifier/HTTP URL specified")

    async def _fetch(self, url: str) -> bytes:
        if any(url.startswith(prefix) for prefix in self.unfetchable):
            raise ApiError(400, "Bad Request: failed to get HTTP URL content")
        assert self._http is not None
        try:
            async with self._http.get(url, timeout=aiohttp.ClientTimeout(total=self.fetch_timeout)) as r:
                if r.status != 200:
                    raise ApiError(400, "Bad Request: failed to get HTTP URL content")
                body = await r.read()
        except (aiohttp.ClientError, TimeoutError):
            raise ApiError(400, "Bad Request: failed to get HTTP URL content") from None
        if not body:
            raise ApiError(400, "Bad Request: wrong type of the web page content")
        self.fetched_urls.append(url)
        return body


# ---------------------------------------------------------------------- request decoding
async def _read_params(request: web.Request) -> tuple[JSON, dict[str, bytes], dict[str, str]]:
    """Decode a Bot API request: JSON body, urlencoded form, or multipart with file parts."""
    params: JSON = {}
    files: dict[str, bytes] = {}
    names: dict[str, str] = {}
    ctype = request.content_type
    if request.method == "GET":
        raw: Mapping[str, str] = request.query
    elif ctype == "application/json":
        body = await request.read()
        return (json.loads(body) if body else {}), files, names
    elif ctype.startswith("multipart/"):
        reader = await request.multipart()
        form: dict[str, str] = {}
        while (part := await reader.next()) is not None:
            if not isinstance(part, aiohttp.BodyPartReader) or part.name is None:
                raise ValueError("nested multipart is not supported")
            if part.filename is not None:
                files[part.name] = bytes(await part.read())
                names[part.name] = part.filename
            else:
                form[part.name] = await part.text()
        raw = form
    else:
        raw = await request.post()  # type: ignore[assignment]
    for key, value in raw.items():
        params[key] = _decode(key, str(value))
    return params, files, names


def _decode(key: str, value: str) -> Any:
    # PTB JSON-encodes every non-string value; strings travel as they are.
    if key in _TEXT_FIELDS:
        return value
    try:
        return json.loads(value)
    except ValueError:
        return value


def _error(status: int, description: str) -> web.Response:
    return web.json_response({"ok": False, "error_code": status, "description": description}, status=status)


def _utf16_len(text: str) -> int:
    """Telegram measures text in UTF-16 code units."""
    return len(text.encode("utf-16-le")) // 2


def _button_matches(text: str, wanted: str) -> bool:
    """``"👍 3 ·2"`` matches ``"👍 3"``, but ``"👍 10"`` does not match ``"👍 1"``."""
    return text == wanted or (text.startswith(wanted) and not text[len(wanted)].isdigit())


def _checked_photo(content: bytes) -> bytes:
    """Telegram refuses photos it cannot decode."""
    try:
        with Image.open(io.BytesIO(content)) as im:
            im.verify()
    except (OSError, SyntaxError, ValueError):
        raise ApiError(400, "Bad Request: IMAGE_PROCESS_FAILED") from None
    return content


def _check_caption(caption: Any) -> None:
    if caption is not None and _utf16_len(str(caption)) > 1024:
        raise ApiError(400, "Bad Request: message caption is too long")


def _edited(msg: JSON, markup: Any) -> JSON:
    """Apply an edit's reply_markup (none removes it) and stamp the edit time."""
    if markup:
        msg["reply_markup"] = markup
    else:
        msg.pop("reply_markup", None)
    msg["edit_date"] = int(time.time())
    return msg


def _check_markup(markup: Any) -> None:
    """Telegram's checks on inline keyboards that a bot can fail."""
    if not markup:
        return
    if not isinstance(markup, dict):
        raise ApiError(400, "Bad Request: can't parse reply keyboard markup JSON object")
    rows = markup.get("inline_keyboard")
    if rows is None:
        return  # reply keyboards, force_reply: accepted as they are
    for row in rows:
        for button in row:
            if not str(button.get("text", "")).strip():
                raise ApiError(400, "Bad Request: BUTTON_TEXT_EMPTY")
            data = button.get("callback_data")
            if data is not None and not 1 <= len(str(data).encode()) <= 64:
                raise ApiError(400, "Bad Request: BUTTON_DATA_INVALID")
