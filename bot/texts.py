"""Everything the bot says, in one place (tests and people find the bot by these words)."""

from __future__ import annotations

from core.state import Stats

HELP = (
    "Explore the image collection by concept and teach me what you mean.\n\n"
    "• Send a concept — in groups use /find <concept> — e.g. /find a house by the lake\n"
    "• Or send a photo (or reply /find to one) to search by image.\n"
    "• Vote 👍/👎 on the images, then 🔁 Refine for a sharper round.\n"
    "• ⭐ Results (/results) shows the best images so far.\n\n"
    "/find <concept> — start a session\n"
    "/more — next round (same as 🔁 Refine)\n"
    "/results — best images by the current classifier\n"
    "/stats — rounds, labels and voters\n"
    "/export [N] — labels as CSV and the classifier as JSON (of session N)\n"
    "/sessions — this chat's sessions, by number\n"
    "/reset — end the session\n"
    "/help — this message\n\n"
    "In groups only admins can end a session, or start a new concept while one is running."
)

EMPTY_CONCEPT = "The concept is empty — tell me what you are looking for, e.g. /find a house by the lake"
TRUNCATED = "Your concept is longer than CLIP's limit of 77 tokens, so I searched with its first 77 tokens."
NO_IMAGES = "There are no images yet — run `vdx ingest` to add some, then try again."
STORE_DOWN = "Sorry — search backend unavailable, please try again later."
NO_LONGER_ACTIVE = "This round is no longer active."
NO_SESSION = "There is no active session here. Send a concept (or /find <concept>) to start one."
NO_SESSION_YET = "Nothing to show yet. Send a concept (or /find <concept>) to start a session."
NOT_ALLOWED = "Sorry, this bot is not open to this chat."
ONLY_ADMINS = "Only group admins can stop the session."
UNKNOWN_COMMAND = "Unknown command. See /help for what I understand."
NO_PHOTOS_SENT = "I could not load any of these images, sorry. Try /more or a new concept."
ROUND_MAYBE_LOST = "Telegram took too long to confirm the images; if they did not arrive, press 🔁 Refine."
FAILED = "Something went wrong on my side; please try again."
IMAGE_UNREADABLE = "I could not read that photo; please send it again as a JPEG or PNG."
PHOTO_CONCEPT = "your photo"

CONCEPT_SHOWN_CHARS = 200  # Telegram messages hold 4,096 characters; a concept may hold 5,000
CAPTION_CHARS = 200


def short(text: str, limit: int = CONCEPT_SHOWN_CHARS) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def round_message(concept: str, number: int) -> str:
    """The text above a round's voting keyboard."""
    return (
        f"Round {number} · “{short(concept)}”\n"
        "Tap 👍 or 👎 for each numbered image, then 🔁 Refine for the next round."
    )


def round_caption(position: int, caption: str) -> str:
    """Caption of an album image: its number first, so votes can name it."""
    return f"{position} · {short(caption, CAPTION_CHARS)}" if caption.strip() else str(position)


def results_caption(rank: int, score: float, caption: str) -> str:
    """Caption of a results image: rank and classifier score."""
    text = f"{rank} · score {score:.2f}"
    return f"{text} · {short(caption, CAPTION_CHARS)}" if caption.strip() else text


def results_message(concept: str, shown: int) -> str:
    """The text after a results album."""
    return f"⭐ Top {shown} for “{short(concept)}” by the current classifier."


def vote_answer(position: int, vote: int) -> str:
    """The callback answer for a vote."""
    if vote > 0:
        return f"👍 {position} recorded"
    if vote < 0:
        return f"👎 {position} recorded"
    return f"Vote on {position} removed"


def stopped(concept: str) -> str:
    """The reply when a session ends."""
    return f"Session “{short(concept)}” stopped. Send a new concept to start again."


def only_admins_replace(concept: str) -> str:
    """The reply to a group member's new concept while a session is active."""
    return (
        f"A session on “{short(concept)}” is running in this group; only group admins can start "
        "another one while it is active (or end it with /reset)."
    )


def replaced(concept: str, number: int) -> str:
    """Said after a new concept ended the chat's previous session."""
    return f"Session {number} “{short(concept)}” has ended; its labels are kept: /export {number}"


SESSIONS_SHOWN = 20


def no_such_session(number: str) -> str:
    """``/export N`` or ``/stats N`` for a number the chat never had."""
    return f"There is no session {short(number, 20)} in this chat; /sessions lists them."


def sessions(stats: list[Stats], first: int) -> str:
    """``/sessions``: one line per session (the latest ``SESSIONS_SHOWN``), numbered from ``first``."""
    if not stats:
        return NO_SESSION_YET
    lines = [
        f"{n} · “{short(s.concept, 60)}” · {s.labels} labels · {'active' if s.active else 'ended'}"
        for n, s in enumerate(stats, first)
    ]
    return "\n".join([*lines, "/export N sends session N's labels and classifier."])


def stats(s: Stats, group: bool) -> str:
    """``/stats``: concept, rounds, labels, voters (and agreement in groups)."""
    lines = [
        f"Concept: “{short(s.concept)}”{'' if s.active else ' (ended)'}",
        f"{s.rounds} rounds · {s.labels} labels (👍 {s.positive} / 👎 {s.negative}) · {s.voters} voters",
    ]
    if s.ties:
        lines.append(f"{s.ties} images tied (unlabelled)")
    if group:
        if s.agreement is None:
            lines.append("agreement: no image has votes from two people yet")
        else:
            lines.append(f"agreement: {s.agreement:.0%} of {s.contested} images with two or more voters")
    return "\n".join(lines)


MISSING_TOKEN = (
    "TELEGRAM_BOT_TOKEN is not set: create a bot with @BotFather in Telegram and set "
    "TELEGRAM_BOT_TOKEN to the token it gives you"
)
REJECTED_TOKEN = (
    "the Bot API server rejected TELEGRAM_BOT_TOKEN (401 Unauthorized): check the token, "
    "or get a new one from @BotFather"
)
