"""Chat state in SQLite: sessions, rounds, per-user votes, classifier weights and Telegram file ids.

Everything a chat has taught lives here, so a restarted bot continues every session and buttons on
old messages keep working. Labels, tallies and stats are computed here (not in the bot): the votes
on an image within a session are combined by :func:`core.votes.combine` into a soft label (3 👍 : 0
counts more than 2 : 1; a tie is contested: seen, no label; once voters share enough images each
is weighed by the one-coin Dawid–Skene estimate of their accuracy).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import aiosqlite
import numpy as np

from core.errors import StateUnavailable, VdxError
from core.records import MatchQuery
from core.spreadsheet import csv_text
from core.votes import Consensus, combine

RoundKind = Literal["round", "results"]
RoundStatus = Literal["pending", "sent", "unknown", "failed"]


class StaleRound(VdxError):
    """A button points at a round that does not exist or whose session has ended."""

    def __init__(self, round_id: int | None = None) -> None:
        self.round_id = round_id
        super().__init__("this round is no longer active")


class UnknownSession(VdxError):
    """A session id that the state database does not hold."""

    def __init__(self, session_id: int) -> None:
        self.session_id = session_id
        super().__init__(f"there is no session {session_id}; `vdx sessions` lists them")


class NoSession(VdxError):
    """The chat has no session (active, or at all) to act on."""

    def __init__(self, chat_id: int) -> None:
        self.chat_id = chat_id
        super().__init__("there is no active session in this chat")


@dataclass(frozen=True, eq=False)  # compared by id: numpy arrays have no truth value
class Session:
    """One concept being taught in one chat; ``weights`` is the current classifier vector."""

    id: int
    chat_id: int
    concept: str
    prior: np.ndarray
    weights: np.ndarray
    started_at: float
    ended_at: float | None
    active: bool
    # The decision boundary of ``weights`` at its last fit (cosine score above which an image is
    # more likely 👍 than 👎); None until votes of both kinds were fitted.
    boundary: float | None = None

    @property
    def dim(self) -> int:
        return int(self.prior.shape[0])


@dataclass(frozen=True)
class RoundItem:
    """One image shown at ``position`` (1-based) in a round."""

    position: int
    image_id: str
    url: str
    caption: str = ""
    source: str = ""
    score: float | None = None


@dataclass(frozen=True)
class Round:
    """An album sent to a chat: a labelling round (numbered 1, 2, ...) or a results album."""

    id: int
    session_id: int
    chat_id: int
    number: int
    kind: RoundKind
    items: list[RoundItem]
    status: RoundStatus = "pending"
    album_message_ids: list[int] = field(default_factory=list)
    keyboard_message_id: int | None = None
    created_at: float = 0.0

    def item(self, position: int) -> RoundItem:
        """The image at ``position``; :class:`StaleRound` if there is none."""
        for it in self.items:
            if it.position == position:
                return it
        raise StaleRound(self.id)


@dataclass(frozen=True)
class Tally:
    """Votes on one image of a round, over the whole session (an image can recur in rounds)."""

    position: int
    image_id: str
    up: int = 0
    down: int = 0


@dataclass(frozen=True)
class VoteOutcome:
    """What a button press did: the user's vote on the image now (+1, -1, or 0 = removed)."""

    round_id: int
    session_id: int
    position: int
    image_id: str
    vote: int
    repeated: bool = False  # the same press (callback query id) was processed before: nothing changed


@dataclass(frozen=True)
class VoterStats:
    """One voter in ``/stats``: how many votes, and agreement with the others' consensus."""

    user_id: int
    name: str
    votes: int
    compared: int  # votes on images where the other voters' consensus has a label
    agreement: float | None  # share of those that agree with it
    accuracy: float  # one-coin Dawid–Skene estimate used to weigh the voter


@dataclass(frozen=True)
class Stats:
    """What ``/stats`` shows for a session."""

    concept: str
    active: bool
    rounds: int
    positive: int
    negative: int
    ties: int  # contested images: their votes cancel out (seen, no label)
    voters: int
    votes: int
    shared: int  # images with votes from two or more users
    agreement: float | None  # share of shared images on which every voter agrees
    alpha: float | None = None  # Krippendorff's alpha (nominal) over the shared images
    estimator: str = ""  # how the votes were combined (core.votes)
    per_voter: tuple[VoterStats, ...] = ()

    @property
    def labels(self) -> int:
        return self.positive + self.negative


@dataclass(frozen=True, eq=False)
class MatchView:
    """A listing of a session's matches that ▶ pages through."""

    id: int
    session_id: int
    chat_id: int
    concept: str
    query: MatchQuery
    total: int


@dataclass(frozen=True)
class SessionSummary:
    """One line of ``vdx sessions``."""

    session: Session
    rounds: int
    positive: int
    negative: int
    last_activity: float


@dataclass(frozen=True, eq=False)
class SavedConcept:
    """A classifier a chat kept by name: what ``/find @NAME`` and ``/watch NAME`` start from."""

    id: int
    chat_id: int
    name: str
    concept: str
    prior: np.ndarray
    weights: np.ndarray
    threshold: float | None
    labels: dict[str, int]
    session_id: int | None
    saved_at: float

    @property
    def query(self) -> MatchQuery:
        """What this classifier accepts (the top 100 while it has no boundary), never its 👎 images."""
        from core.explorer import TOP_WITHOUT_BOUNDARY

        rejected = tuple(sorted(i for i, v in self.labels.items() if v < 0))
        cap = TOP_WITHOUT_BOUNDARY if self.threshold is None else None
        return MatchQuery(self.weights, self.threshold, cap, rejected)


@dataclass(frozen=True)
class Watch:
    """A chat watching a saved concept; ``checked_until`` is the newest ``added_at`` (Unix seconds)
    of the images already looked at."""

    chat_id: int
    concept: SavedConcept
    checked_until: int


@dataclass(frozen=True)
class ExportRow:
    """One voted image: its label, soft label (see core.votes) and each voter's vote (user id -> +1/-1)."""

    image_id: str
    url: str
    label: int
    votes: dict[int, int]
    soft: float = 0.0


@dataclass(frozen=True)
class Export:
    """A session's labels and classifier, ready to be written as CSV and JSON."""

    session: Session
    voters: list[tuple[int, str]]  # (user id, display name), in order of first vote
    rows: list[ExportRow]

    def labels_csv(self, shown_url: Callable[[str], str] | None = None) -> str:
        """``image_id,url,label,soft_label,<one column per voter>``; a voter's cell is 1, -1 or empty.

        ``label`` is 1, -1 or 0 (contested); ``soft_label`` is in [-1, 1] (2 P(👍) - 1, see core.votes).
        ``shown_url`` rewrites each url (the bot hides the server's paths of folder images). Every cell
        is spreadsheet-safe (display names are anyone's text: never a formula).
        """
        show = shown_url or (lambda url: url)
        header = [
            "image_id",
            "url",
            "label",
            "soft_label",
            *(_voter_column(uid, name) for uid, name in self.voters),
        ]
        rows = (
            [
                r.image_id,
                show(r.url),
                r.label,
                f"{r.soft:.3f}",
                *(r.votes.get(uid, "") for uid, _ in self.voters),
            ]
            for r in self.rows
        )
        return csv_text([header, *rows])

    def classifier_json(self) -> str:
        """The classifier: concept, dimension, unit weight vector and label counts."""
        positive = sum(1 for r in self.rows if r.label > 0)
        negative = sum(1 for r in self.rows if r.label < 0)
        return json.dumps(
            {
                "concept": self.session.concept,
                "dim": self.session.dim,
                "weights": [round(float(x), 7) for x in self.session.weights],
                "boundary": None if self.session.boundary is None else round(self.session.boundary, 7),
                "labels": positive + negative,
                "positive": positive,
                "negative": negative,
            },
            ensure_ascii=False,
        )


def _voter_column(user_id: int, name: str) -> str:
    return f"{name} ({user_id})" if name else str(user_id)


# --- schema -------------------------------------------------------------------------------------

# Every table with an ``image_id`` column (see :meth:`State.rename_images`).
IMAGE_ID_TABLES = ("round_items", "votes", "file_ids", "processed_callbacks", "session_seeds", "alerts_sent")



async def m001_initial(db: aiosqlite.Connection) -> None:
    """Sessions, rounds and their items, votes, weight history, Telegram file ids."""
    await _script(
        db,
        """
        CREATE TABLE sessions (
            id INTEGER PRIMARY KEY,
            chat_id INTEGER NOT NULL,
            concept TEXT NOT NULL,
            prior BLOB NOT NULL,
            weights BLOB NOT NULL,
            started_at REAL NOT NULL,
            ended_at REAL,
            active INTEGER NOT NULL DEFAULT 1
        );
        -- at most one active session per chat
        CREATE UNIQUE INDEX sessions_one_active ON sessions(chat_id) WHERE active = 1;
        CREATE INDEX sessions_chat ON sessions(chat_id, id);

        CREATE TABLE rounds (
            id INTEGER PRIMARY KEY,
            session_id INTEGER NOT NULL REFERENCES sessions(id),
            number INTEGER NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('round', 'results')),
            status TEXT NOT NULL DEFAULT 'pending',
            album_message_ids TEXT NOT NULL DEFAULT '[]',
            keyboard_message_id INTEGER,
            created_at REAL NOT NULL
        );
        CREATE INDEX rounds_session ON rounds(session_id, id);

        CREATE TABLE round_items (
            round_id INTEGER NOT NULL REFERENCES rounds(id),
            position INTEGER NOT NULL,
            image_id TEXT NOT NULL,
            url TEXT NOT NULL,
            caption TEXT NOT NULL DEFAULT '',
            source TEXT NOT NULL DEFAULT '',
            score REAL,
            PRIMARY KEY (round_id, position)
        );

        -- one vote per user per image within a session (round_id: the button it came from)
        CREATE TABLE votes (
            session_id INTEGER NOT NULL REFERENCES sessions(id),
            image_id TEXT NOT NULL,
            user_id INTEGER NOT NULL,
            chat_id INTEGER NOT NULL,
            round_id INTEGER NOT NULL REFERENCES rounds(id),
            vote INTEGER NOT NULL CHECK (vote IN (-1, 1)),
            user_name TEXT NOT NULL DEFAULT '',
            voted_at REAL NOT NULL,
            PRIMARY KEY (session_id, image_id, user_id)
        );

        CREATE TABLE weights_history (
            id INTEGER PRIMARY KEY,
            session_id INTEGER NOT NULL REFERENCES sessions(id),
            weights BLOB NOT NULL,
            labels INTEGER NOT NULL,
            created_at REAL NOT NULL
        );

        CREATE TABLE file_ids (
            image_id TEXT PRIMARY KEY,
            file_id TEXT NOT NULL,
            updated_at REAL NOT NULL
        );
        """,
    )


async def m002_processed_callbacks(db: aiosqlite.Connection) -> None:
    """Button presses already processed, by callback query id: a press Telegram delivers again
    (the bot died before confirming the update) is answered as before and changes nothing."""
    await _script(
        db,
        """
        CREATE TABLE processed_callbacks (
            query_id TEXT PRIMARY KEY,
            round_id INTEGER NOT NULL,
            session_id INTEGER NOT NULL,
            position INTEGER NOT NULL,
            image_id TEXT NOT NULL,
            vote INTEGER NOT NULL CHECK (vote IN (-1, 0, 1)),  -- the user's vote after the press
            processed_at REAL NOT NULL
        );
        CREATE INDEX processed_callbacks_age ON processed_callbacks(processed_at);
        """,
    )


async def _script(db: aiosqlite.Connection, sql: str) -> None:
    # not executescript(): it commits first, and a migration must be one transaction
    for statement in sql.split(";"):
        if statement.strip():
            await db.execute(statement)


async def m004_match_views(db: aiosqlite.Connection) -> None:
    """Listings of a classifier's matches: what each ▶ button pages through (weight, boundary, cap,
    rejected ids), kept so that every page comes from the same classifier."""
    await _script(
        db,
        """
        CREATE TABLE match_views (
            id INTEGER PRIMARY KEY,
            session_id INTEGER NOT NULL REFERENCES sessions(id),
            weights BLOB NOT NULL,
            threshold REAL,
            cap INTEGER,
            excluded TEXT NOT NULL DEFAULT '[]',
            total INTEGER NOT NULL DEFAULT 0,
            created_at REAL NOT NULL
        );
        CREATE INDEX match_views_session ON match_views(session_id, id);
        """,
    )


async def m005_saved_concepts(db: aiosqlite.Connection) -> None:
    """Concepts a chat saved by name (weight, prior, boundary, labels), and the labels a session
    started from a saved concept begins with."""
    await _script(
        db,
        """
        CREATE TABLE saved_concepts (
            id INTEGER PRIMARY KEY,
            chat_id INTEGER NOT NULL,
            name TEXT NOT NULL,
            concept TEXT NOT NULL,
            prior BLOB NOT NULL,
            weights BLOB NOT NULL,
            threshold REAL,
            labels TEXT NOT NULL DEFAULT '{}',
            session_id INTEGER REFERENCES sessions(id),
            saved_at REAL NOT NULL
        );
        CREATE UNIQUE INDEX saved_concepts_name ON saved_concepts(chat_id, name COLLATE NOCASE);

        -- labels a session inherits from the saved concept it was started from (its own votes win)
        CREATE TABLE session_seeds (
            session_id INTEGER NOT NULL REFERENCES sessions(id),
            image_id TEXT NOT NULL,
            label INTEGER NOT NULL CHECK (label IN (-1, 1)),
            PRIMARY KEY (session_id, image_id)
        );
        """,
    )


async def m006_watches(db: aiosqlite.Connection) -> None:
    """Chats watching saved concepts for new images, how far each has looked, and what was posted."""
    await _script(
        db,
        """
        CREATE TABLE watches (
            chat_id INTEGER NOT NULL,
            concept_id INTEGER NOT NULL REFERENCES saved_concepts(id) ON DELETE CASCADE,
            checked_until INTEGER NOT NULL,
            created_at REAL NOT NULL,
            PRIMARY KEY (chat_id, concept_id)
        );
        CREATE TABLE alerts_sent (
            chat_id INTEGER NOT NULL,
            concept_id INTEGER NOT NULL REFERENCES saved_concepts(id) ON DELETE CASCADE,
            image_id TEXT NOT NULL,
            sent_at REAL NOT NULL,
            PRIMARY KEY (chat_id, concept_id, image_id)
        );
        """,
    )


Migration = Callable[[aiosqlite.Connection], Awaitable[None]]


async def m003_session_boundary(db: aiosqlite.Connection) -> None:
    """The decision boundary of a session's current weight (NULL until one was learned)."""
    await db.execute("ALTER TABLE sessions ADD COLUMN boundary REAL")


# Append only: position i (1-based) is schema version i. Never edit a released migration.
MIGRATIONS: list[Migration] = [
    m001_initial,
    m002_processed_callbacks,
    m003_session_boundary,
    m004_match_views,
    m005_saved_concepts,
    m006_watches,
]
# Telegram keeps an unconfirmed update for at most 24 hours (https://core.telegram.org/bots/api#getting-updates):
# a processed press is remembered twice as long, then forgotten.
PROCESSED_CALLBACKS_KEPT_S = 48 * 3600
SCHEMA_VERSION = len(MIGRATIONS)


async def migrate(db: aiosqlite.Connection) -> int:
    """Bring the schema to :data:`SCHEMA_VERSION`, one committed step per migration; returns it."""
    async with db.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    version = int(row[0]) if row else 0
    if version > SCHEMA_VERSION:
        raise VdxError(
            f"the state database was written by a newer vdx (schema {version}, this one knows "
            f"{SCHEMA_VERSION}); upgrade vdx or point VDX_DATA_DIR elsewhere"
        )
    for number in range(version + 1, SCHEMA_VERSION + 1):
        await db.execute("BEGIN IMMEDIATE")
        try:
            await MIGRATIONS[number - 1](db)
            # PRAGMA takes no parameters; ``number`` is an int from this module, not input
            await db.execute(f"PRAGMA user_version = {int(number)}")
            await db.commit()
        except BaseException:
            await db.rollback()
            raise
    return SCHEMA_VERSION


def _vec_to_blob(v: np.ndarray) -> bytes:
    return np.asarray(v, dtype="<f4").reshape(-1).tobytes()


def _blob_to_vec(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype="<f4").astype(np.float32)


# --- the store ----------------------------------------------------------------------------------


class State:
    """Async access to the state database. Open with :meth:`open`; every write commits before returning."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self._db = db
        self.path = path
        # aiosqlite runs statements one by one on its thread, but a read-then-write spans several
        # awaits: the lock keeps two coroutines from interleaving inside one transaction.
        self._lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def open(cls, path: Path | str) -> State:
        """Open (creating and migrating if needed) the SQLite file at ``path``."""
        path = Path(path)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            db = await aiosqlite.connect(path, isolation_level=None)  # explicit transactions below
        except (OSError, sqlite3.Error) as e:
            raise StateUnavailable(str(path), str(e)) from e
        db.row_factory = aiosqlite.Row
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            # In WAL mode, NORMAL loses nothing when the process is killed (the WAL is written at
            # each commit); only a power cut can drop the last commits. That is what "a vote that
            # was answered survives kill -9" needs, at a fraction of FULL's fsync cost.
            await db.execute("PRAGMA synchronous = NORMAL")
            await db.execute("PRAGMA foreign_keys = ON")
            await db.execute("PRAGMA busy_timeout = 5000")
            await migrate(db)
        except sqlite3.Error as e:
            await db.close()
            raise StateUnavailable(str(path), str(e)) from e
        except BaseException:
            await db.close()
            raise
        return cls(db, path)

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        if not self._closed:
            self._closed = True
            await self._db.close()

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                await self._db.rollback()
                raise
            await self._db.commit()

    async def _one(self, sql: str, params: Sequence[object] = ()) -> aiosqlite.Row | None:
        async with self._db.execute(sql, params) as cur:
            return await cur.fetchone()

    async def _all(self, sql: str, params: Sequence[object] = ()) -> list[aiosqlite.Row]:
        async with self._db.execute(sql, params) as cur:
            return list(await cur.fetchall())

    # sessions

    async def start_session(
        self, chat_id: int, concept: str, prior: np.ndarray, weights: np.ndarray | None = None
    ) -> Session:
        """End the chat's active session, if any, and start a new one."""
        now = time.time()
        w = prior if weights is None else weights
        async with self._tx() as db:
            await db.execute(
                "UPDATE sessions SET active = 0, ended_at = ? WHERE chat_id = ? AND active = 1",
                (now, chat_id),
            )
            cur = await db.execute(
                "INSERT INTO sessions (chat_id, concept, prior, weights, started_at, active) "
                "VALUES (?, ?, ?, ?, ?, 1)",
                (chat_id, concept, _vec_to_blob(prior), _vec_to_blob(w), now),
            )
            session_id = cur.lastrowid
            await db.execute(
                "INSERT INTO weights_history (session_id, weights, labels, created_at) VALUES (?, ?, 0, ?)",
                (session_id, _vec_to_blob(w), now),
            )
        session = await self.session(int(session_id or 0))
        assert session is not None
        return session

    async def session(self, session_id: int) -> Session | None:
        """A session by id, active or not."""
        row = await self._one("SELECT * FROM sessions WHERE id = ?", (session_id,))
        return _session(row) if row else None

    async def active_session(self, chat_id: int) -> Session | None:
        """The chat's active session, if any."""
        row = await self._one("SELECT * FROM sessions WHERE chat_id = ? AND active = 1", (chat_id,))
        return _session(row) if row else None

    async def latest_session(self, chat_id: int) -> Session | None:
        """The chat's most recent session, active or ended."""
        row = await self._one("SELECT * FROM sessions WHERE chat_id = ? ORDER BY id DESC LIMIT 1", (chat_id,))
        return _session(row) if row else None

    async def chat_sessions(self, chat_id: int) -> list[Session]:
        """Every session of the chat, oldest first: session ``n`` of a chat is item ``n - 1``."""
        rows = await self._all("SELECT * FROM sessions WHERE chat_id = ? ORDER BY id", (chat_id,))
        return [_session(r) for r in rows]

    async def chat_session(self, chat_id: int, number: int) -> Session | None:
        """The chat's ``number``-th session (1 = its first), active or ended."""
        if not 1 <= number <= 2**62:  # beyond SQLite's integers: there is no such session
            return None
        row = await self._one(
            "SELECT * FROM sessions WHERE chat_id = ? ORDER BY id LIMIT 1 OFFSET ?", (chat_id, number - 1)
        )
        return _session(row) if row else None

    async def session_number(self, session_id: int) -> int:
        """The session's number within its chat (1 = the chat's first session)."""
        row = await self._one(
            "SELECT COUNT(*) FROM sessions WHERE chat_id = (SELECT chat_id FROM sessions WHERE id = ?) "
            "AND id <= ?",
            (session_id, session_id),
        )
        return int(row[0]) if row else 0

    async def end_session(self, chat_id: int) -> Session | None:
        """End the chat's active session; returns it, or None if there was none."""
        session = await self.active_session(chat_id)
        if session is None:
            return None
        async with self._tx() as db:
            await db.execute(
                "UPDATE sessions SET active = 0, ended_at = ? WHERE id = ? AND active = 1",
                (time.time(), session.id),
            )
        return await self.session(session.id)

    async def save_weights(
        self, session_id: int, weights: np.ndarray, labels: int, boundary: float | None = None
    ) -> None:
        """Store a refit's weight (and its decision boundary) as the session's current classifier and in its history."""
        blob, now = _vec_to_blob(weights), time.time()
        async with self._tx() as db:
            await db.execute(
                "UPDATE sessions SET weights = ?, boundary = ? WHERE id = ?",
                (blob, None if boundary is None else float(boundary), session_id),
            )
            await db.execute(
                "INSERT INTO weights_history (session_id, weights, labels, created_at) VALUES (?, ?, ?, ?)",
                (session_id, blob, labels, now),
            )

    async def weights_history(self, session_id: int) -> list[tuple[np.ndarray, int]]:
        """Every weight the session had, oldest first, with the number of labels it was fitted on."""
        rows = await self._all(
            "SELECT weights, labels FROM weights_history WHERE session_id = ? ORDER BY id", (session_id,)
        )
        return [(_blob_to_vec(r["weights"]), int(r["labels"])) for r in rows]

    # rounds

    async def add_round(self, session_id: int, kind: RoundKind, items: Sequence[RoundItem]) -> Round:
        """Record a round (before it is sent, so its buttons resolve as soon as they exist)."""
        now = time.time()
        async with self._tx() as db:
            row = await self._one(
                "SELECT COALESCE(MAX(number), 0) FROM rounds WHERE session_id = ? AND kind = ?",
                (session_id, kind),
            )
            number = int(row[0]) + 1 if row else 1
            cur = await db.execute(
                "INSERT INTO rounds (session_id, number, kind, created_at) VALUES (?, ?, ?, ?)",
                (session_id, number, kind, now),
            )
            round_id = int(cur.lastrowid or 0)
            await db.executemany(
                "INSERT INTO round_items (round_id, position, image_id, url, caption, source, score) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (round_id, it.position, it.image_id, it.url, it.caption, it.source, it.score)
                    for it in items
                ],
            )
        rnd = await self.round_by_id(round_id)
        assert rnd is not None
        return rnd

    async def round_by_id(self, round_id: int) -> Round | None:
        """A round with its items, or None."""
        row = await self._one(
            "SELECT r.*, s.chat_id FROM rounds r JOIN sessions s ON s.id = r.session_id WHERE r.id = ?",
            (round_id,),
        )
        if row is None:
            return None
        items = await self._all("SELECT * FROM round_items WHERE round_id = ? ORDER BY position", (round_id,))
        return Round(
            id=int(row["id"]),
            session_id=int(row["session_id"]),
            chat_id=int(row["chat_id"]),
            number=int(row["number"]),
            kind=row["kind"],
            items=[
                RoundItem(int(i["position"]), i["image_id"], i["url"], i["caption"], i["source"], i["score"])
                for i in items
            ],
            status=row["status"],
            album_message_ids=[int(x) for x in json.loads(row["album_message_ids"])],
            keyboard_message_id=row["keyboard_message_id"],
            created_at=float(row["created_at"]),
        )

    async def active_round(self, round_id: int) -> Round:
        """The round, if its session is still active; else :class:`StaleRound`."""
        row = await self._one(
            "SELECT s.active FROM rounds r JOIN sessions s ON s.id = r.session_id WHERE r.id = ?", (round_id,)
        )
        if row is None or not row["active"]:
            raise StaleRound(round_id)
        rnd = await self.round_by_id(round_id)
        if rnd is None:
            raise StaleRound(round_id)
        return rnd

    async def mark_round(
        self,
        round_id: int,
        status: RoundStatus,
        album_message_ids: Sequence[int] = (),
        keyboard_message_id: int | None = None,
    ) -> None:
        """Record how sending a round went and which messages carry it."""
        async with self._tx() as db:
            await db.execute(
                "UPDATE rounds SET status = ?, album_message_ids = ?, "
                "keyboard_message_id = COALESCE(?, keyboard_message_id) WHERE id = ?",
                (status, json.dumps([int(m) for m in album_message_ids]), keyboard_message_id, round_id),
            )

    async def rounds(self, session_id: int, kind: RoundKind = "round") -> int:
        """How many rounds of ``kind`` the session has had."""
        row = await self._one(
            "SELECT COUNT(*) FROM rounds WHERE session_id = ? AND kind = ?", (session_id, kind)
        )
        return int(row[0]) if row else 0

    # votes

    async def toggle_vote(
        self,
        round_id: int,
        position: int,
        user_id: int,
        vote: int,
        user_name: str = "",
        *,
        chat_id: int | None = None,
        query_id: str | None = None,
    ) -> VoteOutcome:
        """Record ``user_id``'s ±1 vote on the image at ``position``: the same vote again removes it,
        the other one switches it. :class:`StaleRound` if the round's session has ended (or, given
        ``chat_id``, belongs to another chat).

        Given the press's ``query_id``, it is recorded in the vote's transaction; the same id again
        (Telegram delivering the press a second time) returns the first outcome, ``repeated``, and
        changes nothing."""
        if vote not in (1, -1):
            raise ValueError(f"a vote is +1 or -1, got {vote!r}")
        async with self._tx() as db:
            if query_id is not None:
                seen = await self._one("SELECT * FROM processed_callbacks WHERE query_id = ?", (query_id,))
                if seen is not None:
                    return VoteOutcome(
                        int(seen["round_id"]),
                        int(seen["session_id"]),
                        int(seen["position"]),
                        seen["image_id"],
                        int(seen["vote"]),
                        repeated=True,
                    )
            row = await self._one(
                "SELECT r.session_id, s.chat_id, s.active, i.image_id FROM rounds r "
                "JOIN sessions s ON s.id = r.session_id "
                "JOIN round_items i ON i.round_id = r.id AND i.position = ? WHERE r.id = ?",
                (position, round_id),
            )
            if row is None or not row["active"] or chat_id is not None and row["chat_id"] != chat_id:
                raise StaleRound(round_id)
            key = (row["session_id"], row["image_id"], user_id)
            old = await self._one(
                "SELECT vote FROM votes WHERE session_id = ? AND image_id = ? AND user_id = ?", key
            )
            now = time.time()
            if old is not None and int(old["vote"]) == vote:
                await db.execute(
                    "DELETE FROM votes WHERE session_id = ? AND image_id = ? AND user_id = ?", key
                )
                now_vote = 0
            else:
                await db.execute(
                    "INSERT INTO votes (session_id, image_id, user_id, chat_id, round_id, vote, user_name, "
                    "voted_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (session_id, image_id, user_id) DO UPDATE SET vote = excluded.vote, "
                    "round_id = excluded.round_id, user_name = excluded.user_name, voted_at = excluded.voted_at",
                    (*key, row["chat_id"], round_id, vote, user_name, now),
                )
                now_vote = vote
            if query_id is not None:
                await db.execute(
                    "INSERT INTO processed_callbacks "
                    "(query_id, round_id, session_id, position, image_id, vote, processed_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (query_id, round_id, row["session_id"], position, row["image_id"], now_vote, now),
                )
                await db.execute(
                    "DELETE FROM processed_callbacks WHERE processed_at < ?",
                    (now - PROCESSED_CALLBACKS_KEPT_S,),
                )
        return VoteOutcome(round_id, int(row["session_id"]), position, row["image_id"], now_vote)

    async def tallies(self, round_id: int) -> list[Tally]:
        """👍/👎 counts for each image of the round, counting the session's votes on that image."""
        rows = await self._all(
            "SELECT i.position, i.image_id, "
            "COALESCE(SUM(v.vote > 0), 0) AS up, COALESCE(SUM(v.vote < 0), 0) AS down "
            "FROM round_items i JOIN rounds r ON r.id = i.round_id "
            "LEFT JOIN votes v ON v.session_id = r.session_id AND v.image_id = i.image_id "
            "WHERE i.round_id = ? GROUP BY i.position, i.image_id ORDER BY i.position",
            (round_id,),
        )
        return [Tally(int(r["position"]), r["image_id"], int(r["up"]), int(r["down"])) for r in rows]

    async def consensus(self, session_id: int) -> Consensus:
        """Every vote of the session combined (core.votes): soft labels, voter accuracies, agreement."""
        rows = await self._all(
            "SELECT image_id, user_id, vote FROM votes WHERE session_id = ? ORDER BY image_id, user_id",
            (session_id,),
        )
        return combine((r["image_id"], int(r["user_id"]), int(r["vote"])) for r in rows)

    async def labels(self, session_id: int) -> dict[str, int]:
        """Image id -> +1/-1 by the combined votes of the session; contested images (ties) are left out.

        A session started from a saved concept also has that concept's labels, for the images nobody
        in this session has voted on."""
        consensus = await self.consensus(session_id)
        seeds = await self._seeds(session_id, consensus.soft_labels().keys())
        return {**{i: int(v) for i, v in seeds.items()}, **consensus.labels()}

    async def soft_labels(self, session_id: int) -> dict[str, float]:
        """Image id -> soft label in [-1, 1] for every voted image; contested ones are 0.0. A saved
        concept's labels count fully (+-1.0) for the images not voted on in this session."""
        soft = (await self.consensus(session_id)).soft_labels()
        return {**await self._seeds(session_id, soft.keys()), **soft}

    async def _seeds(self, session_id: int, voted: Iterable[str]) -> dict[str, float]:
        """The saved concept's labels this session started with, less the images voted on here."""
        rows = await self._all("SELECT image_id, label FROM session_seeds WHERE session_id = ?", (session_id,))
        skip = set(voted)
        return {r["image_id"]: float(r["label"]) for r in rows if r["image_id"] not in skip}

    async def shown(self, session_id: int) -> list[str]:
        """Every image shown in the session's labelling rounds, oldest round first."""
        rows = await self._all(
            "SELECT i.image_id FROM round_items i JOIN rounds r ON r.id = i.round_id "
            "WHERE r.session_id = ? AND r.kind = 'round' ORDER BY r.id, i.position",
            (session_id,),
        )
        return list(dict.fromkeys(r["image_id"] for r in rows))

    async def recent_rounds(self, session_id: int, n: int, kind: RoundKind = "round") -> list[Round]:
        """The session's ``n`` most recent rounds of ``kind``, newest first."""
        rows = await self._all(
            "SELECT id FROM rounds WHERE session_id = ? AND kind = ? ORDER BY id DESC LIMIT ?",
            (session_id, kind, int(n)),
        )
        rounds = [await self.round_by_id(int(r["id"])) for r in rows]
        return [r for r in rounds if r is not None]

    async def latest_round(self, session_id: int, kind: RoundKind = "round") -> Round | None:
        """The session's most recent round of ``kind``, or None."""
        row = await self._one(
            "SELECT id FROM rounds WHERE session_id = ? AND kind = ? ORDER BY id DESC LIMIT 1",
            (session_id, kind),
        )
        return await self.round_by_id(int(row["id"])) if row else None

    # match listings

    async def add_match_view(self, session_id: int, query: MatchQuery, total: int) -> MatchView:
        """Keep ``query`` (and how many it matched) so that its pages can be fetched later."""
        async with self._tx() as db:
            cur = await db.execute(
                "INSERT INTO match_views (session_id, weights, threshold, cap, excluded, total, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    session_id,
                    _vec_to_blob(query.weights),
                    query.threshold,
                    query.cap,
                    json.dumps(list(query.excluded)),
                    total,
                    time.time(),
                ),
            )
            view_id = int(cur.lastrowid or 0)
        view = await self.match_view(view_id)
        assert view is not None
        return view

    async def match_view(self, view_id: int) -> MatchView | None:
        """A kept listing with its session's chat and concept, or None."""
        row = await self._one(
            "SELECT m.*, s.chat_id, s.concept FROM match_views m JOIN sessions s ON s.id = m.session_id "
            "WHERE m.id = ?",
            (view_id,),
        )
        if row is None:
            return None
        query = MatchQuery(
            _blob_to_vec(row["weights"]),
            row["threshold"],
            row["cap"],
            tuple(str(i) for i in json.loads(row["excluded"])),
        )
        return MatchView(
            int(row["id"]),
            int(row["session_id"]),
            int(row["chat_id"]),
            row["concept"],
            query,
            int(row["total"]),
        )

    # saved concepts

    async def save_concept(
        self,
        chat_id: int,
        name: str,
        session: Session,
        weights: np.ndarray,
        threshold: float | None,
        labels: dict[str, int],
    ) -> tuple[SavedConcept, bool]:
        """Keep the chat's classifier as ``name`` (replacing one of that name); returns it and whether
        it replaced another."""
        now = time.time()
        async with self._tx() as db:
            old = await self._one(
                "SELECT id FROM saved_concepts WHERE chat_id = ? AND name = ? COLLATE NOCASE", (chat_id, name)
            )
            values = (
                session.concept,
                _vec_to_blob(session.prior),
                _vec_to_blob(weights),
                threshold,
                json.dumps(labels, sort_keys=True),
                session.id,
                now,
            )
            if old is None:
                await db.execute(
                    "INSERT INTO saved_concepts (chat_id, name, concept, prior, weights, threshold, labels, "
                    "session_id, saved_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (chat_id, name, *values),
                )
            else:
                await db.execute(
                    "UPDATE saved_concepts SET name = ?, concept = ?, prior = ?, weights = ?, threshold = ?, "
                    "labels = ?, session_id = ?, saved_at = ? WHERE id = ?",
                    (name, *values, old["id"]),
                )
        saved = await self.saved_concept(chat_id, name)
        assert saved is not None
        return saved, old is not None

    async def saved_concept(self, chat_id: int, name: str) -> SavedConcept | None:
        """The chat's saved concept called ``name`` (case-insensitive), or None."""
        row = await self._one(
            "SELECT * FROM saved_concepts WHERE chat_id = ? AND name = ? COLLATE NOCASE", (chat_id, name)
        )
        return _saved(row) if row else None

    async def saved_concepts(self, chat_id: int) -> list[SavedConcept]:
        """The chat's saved concepts, by name."""
        rows = await self._all(
            "SELECT * FROM saved_concepts WHERE chat_id = ? ORDER BY name COLLATE NOCASE", (chat_id,)
        )
        return [_saved(r) for r in rows]

    async def forget_concept(self, chat_id: int, name: str) -> SavedConcept | None:
        """Delete a saved concept (and its watch); returns what was deleted, or None."""
        saved = await self.saved_concept(chat_id, name)
        if saved is None:
            return None
        async with self._tx() as db:
            await db.execute("DELETE FROM alerts_sent WHERE concept_id = ?", (saved.id,))
            await db.execute("DELETE FROM watches WHERE concept_id = ?", (saved.id,))
            await db.execute("DELETE FROM saved_concepts WHERE id = ?", (saved.id,))
        return saved

    async def start_from_saved(self, chat_id: int, saved: SavedConcept) -> Session:
        """A new session of the chat that continues a saved concept: its prior, weight and labels."""
        session = await self.start_session(chat_id, saved.concept, saved.prior, saved.weights)
        async with self._tx() as db:
            await db.executemany(
                "INSERT INTO session_seeds (session_id, image_id, label) VALUES (?, ?, ?)",
                [(session.id, i, int(v)) for i, v in saved.labels.items() if v in (1, -1)],
            )
        return session

    # watches

    async def watch(self, chat_id: int, saved: SavedConcept, checked_until: int) -> bool:
        """Subscribe the chat to new images matching ``saved``; False if it already was."""
        async with self._tx() as db:
            cur = await db.execute(
                "INSERT OR IGNORE INTO watches (chat_id, concept_id, checked_until, created_at) VALUES (?, ?, ?, ?)",
                (chat_id, saved.id, int(checked_until), time.time()),
            )
            return bool(cur.rowcount)

    async def unwatch(self, chat_id: int, saved: SavedConcept) -> bool:
        """End the chat's watch of ``saved``; False if there was none."""
        async with self._tx() as db:
            cur = await db.execute(
                "DELETE FROM watches WHERE chat_id = ? AND concept_id = ?", (chat_id, saved.id)
            )
            return bool(cur.rowcount)

    async def watches(self) -> list[Watch]:
        """Every watch of every chat."""
        rows = await self._all(
            "SELECT w.chat_id AS w_chat, w.checked_until, c.* FROM watches w "
            "JOIN saved_concepts c ON c.id = w.concept_id ORDER BY w.created_at"
        )
        return [Watch(int(r["w_chat"]), _saved(r), int(r["checked_until"])) for r in rows]

    async def alerted(self, chat_id: int, concept_id: int) -> set[str]:
        """Images already posted to the chat for this watched concept."""
        rows = await self._all(
            "SELECT image_id FROM alerts_sent WHERE chat_id = ? AND concept_id = ?", (chat_id, concept_id)
        )
        return {r["image_id"] for r in rows}

    async def record_alert(
        self, chat_id: int, concept_id: int, image_ids: Sequence[str], checked_until: int
    ) -> bool:
        """Before posting: note the images as posted and move the watch's mark, in one transaction.
        False if the watch is gone (unwatched meanwhile): then nothing is posted."""
        now = time.time()
        async with self._tx() as db:
            cur = await db.execute(
                "UPDATE watches SET checked_until = MAX(checked_until, ?) WHERE chat_id = ? AND concept_id = ?",
                (int(checked_until), chat_id, concept_id),
            )
            if not cur.rowcount:
                return False
            await db.executemany(
                "INSERT OR IGNORE INTO alerts_sent (chat_id, concept_id, image_id, sent_at) VALUES (?, ?, ?, ?)",
                [(chat_id, concept_id, i, now) for i in image_ids],
            )
        return True

    # Telegram file ids

    async def file_id(self, image_id: str) -> str | None:
        """The Telegram ``file_id`` of an uploaded image, if it was uploaded before."""
        row = await self._one("SELECT file_id FROM file_ids WHERE image_id = ?", (image_id,))
        return row["file_id"] if row else None

    async def file_ids(self, image_ids: Sequence[str]) -> dict[str, str]:
        """Known ``file_id``s of ``image_ids``."""
        if not image_ids:
            return {}
        marks = ",".join("?" * len(image_ids))
        rows = await self._all(
            f"SELECT image_id, file_id FROM file_ids WHERE image_id IN ({marks})", image_ids
        )
        return {r["image_id"]: r["file_id"] for r in rows}

    async def put_file_ids(self, file_ids: dict[str, str]) -> None:
        """Remember the ``file_id`` Telegram gave each uploaded image."""
        if not file_ids:
            return
        now = time.time()
        async with self._tx() as db:
            await db.executemany(
                "INSERT INTO file_ids (image_id, file_id, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (image_id) DO UPDATE SET file_id = excluded.file_id, updated_at = excluded.updated_at",
                [(k, v, now) for k, v in file_ids.items()],
            )

    async def forget_file_ids(self, image_ids: Sequence[str]) -> None:
        """Drop ``file_id``s Telegram no longer accepts."""
        async with self._tx() as db:
            await db.executemany("DELETE FROM file_ids WHERE image_id = ?", [(i,) for i in image_ids])

    # reports

    async def rename_images(self, renamed: Mapping[str, str]) -> int:
        """Carry every vote, round, seed, alert and uploaded-photo record from each old image id to its
        new one (``{old: new}``: the same photo under a new id); returns how many votes moved."""
        moved = 0
        async with self._tx() as db:
            for old, new in renamed.items():
                for table in IMAGE_ID_TABLES:
                    # A row that already exists under the new id wins; the old one is then dropped.
                    cur = await db.execute(
                        f"UPDATE OR IGNORE {table} SET image_id = ? WHERE image_id = ?",  # noqa: S608 (a constant)
                        (new, old),
                    )
                    if table == "votes":
                        moved += max(cur.rowcount, 0)
                    await db.execute(f"DELETE FROM {table} WHERE image_id = ?", (old,))  # noqa: S608
        return moved

    async def _existing_session(self, session_id: int) -> Session:
        session = await self.session(session_id)
        if session is None:
            raise UnknownSession(session_id)
        return session

    async def sessions(self) -> list[SessionSummary]:
        """Every session, newest first, with its rounds, labels and when anything last happened in it."""
        rows = await self._all(
            "SELECT s.*, "
            "(SELECT COUNT(*) FROM rounds r WHERE r.session_id = s.id AND r.kind = 'round') AS n_rounds, "
            "(SELECT MAX(r.created_at) FROM rounds r WHERE r.session_id = s.id) AS last_round, "
            "(SELECT MAX(v.voted_at) FROM votes v WHERE v.session_id = s.id) AS last_vote "
            "FROM sessions s ORDER BY s.id DESC"
        )
        out = []
        for r in rows:
            labels = await self.labels(int(r["id"]))
            times = [float(t) for t in (r["started_at"], r["ended_at"], r["last_round"], r["last_vote"]) if t]
            out.append(
                SessionSummary(
                    _session(r),
                    int(r["n_rounds"]),
                    sum(1 for v in labels.values() if v > 0),
                    sum(1 for v in labels.values() if v < 0),
                    max(times),
                )
            )
        return out

    async def stats(self, session_id: int) -> Stats:
        """Rounds, labels (+/−), voters and agreement between voters for a session."""
        session = await self._existing_session(session_id)
        per_image = await self._all(
            "SELECT image_id, COUNT(*) AS n, MIN(vote) AS lo, MAX(vote) AS hi "
            "FROM votes WHERE session_id = ? GROUP BY image_id",
            (session_id,),
        )
        names = await self._voter_names(session_id)
        consensus = await self.consensus(session_id)
        shared = [r for r in per_image if int(r["n"]) >= 2]
        agreeing = sum(1 for r in shared if r["lo"] == r["hi"])
        labels = [e.label for e in consensus.images.values()]
        return Stats(
            concept=session.concept,
            active=session.active,
            rounds=await self.rounds(session_id),
            positive=labels.count(1),
            negative=labels.count(-1),
            ties=labels.count(0),
            voters=len(consensus.voters),
            votes=sum(int(r["n"]) for r in per_image),
            shared=len(shared),
            agreement=agreeing / len(shared) if shared else None,
            alpha=consensus.alpha,
            estimator=consensus.estimator,
            per_voter=tuple(
                VoterStats(u, names.get(u, ""), v.votes, v.compared, v.agreement, v.accuracy)
                for u, v in sorted(consensus.voters.items(), key=lambda kv: -kv[1].votes)
            ),
        )

    async def _voter_names(self, session_id: int) -> dict[int, str]:
        rows = await self._all(
            "SELECT user_id, user_name FROM votes WHERE session_id = ? ORDER BY voted_at, rowid",
            (session_id,),
        )
        names: dict[int, str] = {}
        for r in rows:
            names[int(r["user_id"])] = r["user_name"] or names.get(int(r["user_id"]), "")
        return names

    async def export(self, session_id: int) -> Export:
        """The session's voted images with each voter's vote, the combined label and soft label, and its classifier."""
        session = await self._existing_session(session_id)
        votes = await self._all(
            "SELECT v.image_id, v.user_id, v.user_name, v.vote, "
            "(SELECT i.url FROM round_items i WHERE i.round_id = v.round_id AND i.image_id = v.image_id "
            " LIMIT 1) AS url "
            "FROM votes v WHERE v.session_id = ? ORDER BY v.voted_at, v.rowid",
            (session_id,),
        )
        voters: dict[int, str] = {}
        rows: dict[str, ExportRow] = {}
        for v in votes:
            uid = int(v["user_id"])
            if uid not in voters or v["user_name"]:
                voters[uid] = v["user_name"] or voters.get(uid, "")
            row = rows.setdefault(v["image_id"], ExportRow(v["image_id"], v["url"] or "", 0, {}))
            row.votes[uid] = int(v["vote"])
        consensus = combine((r.image_id, uid, vote) for r in rows.values() for uid, vote in r.votes.items())
        soft = consensus.soft_labels()
        final = [
            ExportRow(r.image_id, r.url, consensus.images[r.image_id].label, r.votes, soft[r.image_id])
            for r in rows.values()
        ]
        return Export(session, list(voters.items()), final)


def _saved(row: aiosqlite.Row) -> SavedConcept:
    return SavedConcept(
        id=int(row["id"]),
        chat_id=int(row["chat_id"]),
        name=row["name"],
        concept=row["concept"],
        prior=_blob_to_vec(row["prior"]),
        weights=_blob_to_vec(row["weights"]),
        threshold=row["threshold"],
        labels={str(k): int(v) for k, v in json.loads(row["labels"]).items()},
        session_id=row["session_id"],
        saved_at=float(row["saved_at"]),
    )


def _session(row: aiosqlite.Row) -> Session:
    return Session(
        id=int(row["id"]),
        chat_id=int(row["chat_id"]),
        concept=row["concept"],
        prior=_blob_to_vec(row["prior"]),
        weights=_blob_to_vec(row["weights"]),
        started_at=float(row["started_at"]),
        ended_at=row["ended_at"],
        active=bool(row["active"]),
        boundary=None if row["boundary"] is None else float(row["boundary"]),
    )


def rename_images(path: Path, renamed: Mapping[str, str]) -> int:
    """:meth:`State.rename_images` on the state file at ``path`` from synchronous code (the command
    line, or a command the bot serves in one of its threads); 0 when there is no state yet."""
    import asyncio

    if not renamed or not path.exists():
        return 0

    async def run() -> int:
        state = await State.open(path)
        try:
            return await state.rename_images(renamed)
        finally:
            await state.close()

    return asyncio.run(run())
