"""Everything the bot says, in one place (tests and people find the bot by these words)."""

from __future__ import annotations

from core.explorer import MatchEstimate
from core.state import SavedConcept, Stats

HELP = (
    "Explore the image collection by concept and teach me what you mean.\n\n"
    "• Send a concept — in groups use /find <concept> — e.g. /find a house by the lake\n"
    "• Or send a photo (or reply /find to one) to search by image; a caption moves it: at night\n"
    "• Combine: /find a red car -truck (less truck) · /find a cat + a hat (both)\n"
    "• Vote 👍/👎 on the images, then 🔁 Refine for a sharper round.\n"
    "• ⭐ Results (/results) shows the images the classifier accepts, 9 at a time (▶ for more).\n\n"
    "/find <concept> — start a session\n"
    "/more — next round (same as 🔁 Refine)\n"
    "/results — every image the classifier accepts, best first, and how many\n"
    "/stats — rounds, labels and voters\n"
    "/export [N] — labels and matches as CSV, the classifier as JSON (of session N)\n"
    "/sessions — this chat's sessions, by number\n"
    "/save NAME — keep this classifier; /concepts lists them, /find @NAME continues one, /forget NAME\n"
    "/watch NAME — post new images it accepts whenever images are added; /unwatch NAME\n"
    "/reset — end the session\n"
    "/help — this message\n\n"
    "In groups only admins can end a session, or start a new concept while one is running."
)

EMPTY_CONCEPT = "The concept is empty — tell me what you are looking for, e.g. /find a house by the lake"
TRUNCATED = "Your concept is longer than the model reads (77 tokens for CLIP), so I searched with its start."
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
ONLY_NEGATIVE_TERMS = "Tell me what to look for, not only what to leave out — e.g. /find a red car -truck"


def too_many_terms(limit: int) -> str:
    """The reply to a concept with more than ``limit`` + / - terms."""
    return f"That is too many terms — use at most {limit} (each + or - starts one)."


def photo_concept(text: str) -> str:
    """The concept name of a photo session, with the words that move it."""
    text = " ".join(text.split())
    return f"{PHOTO_CONCEPT} + {text}" if text else PHOTO_CONCEPT


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


def results_message(concept: str, shown: int, estimate: MatchEstimate | None = None) -> str:
    """The text after a results album: what it is, and how many images match."""
    return f"⭐ Top {shown} for “{short(concept)}” by the classifier, with every vote so far.\n" + matches(
        estimate
    )


def matches_message(concept: str, first: int, last: int, total: int, threshold: float | None) -> str:
    """The text after a page of matches: which ranks these are, and how many images match."""
    span = f"{first}–{last}" if last > first else str(first)
    if threshold is None:
        return (
            f"⭐ {span} of the top {total} for “{short(concept)}”. "
            "Vote 👍 and 👎 so the classifier can tell which images match."
        )
    noun = "image that matches" if total == 1 else "images that match"
    return f"⭐ {span} of {total} {noun} “{short(concept)}” (score above {threshold:.2f})."


def results_count(concept: str, shown: int, total: int, threshold: float | None) -> str:
    """The text after a results album: what it is, and how many images match (counted in the store)."""
    head = f"⭐ Top {shown} for “{short(concept)}” by the classifier, with every vote so far.\n"
    if threshold is None:
        return head + (
            f"Vote 👍 and 👎 on a few images and I can tell how many in the collection match; "
            f"▶ shows the next of the top {total} by score."
        )
    if total == 0:
        return head + (
            f"No image scores above the decision boundary ({threshold:.2f}) yet: these are the closest. "
            "Vote on more rounds (🔁 Refine) to sharpen it."
        )
    noun = "image in the collection scores" if total == 1 else "images in the collection score"
    return head + f"{total} {noun} above the decision boundary ({threshold:.2f}); ▶ shows the next ones."


def matches_file(rows: int, total: int, threshold: float | None) -> str:
    """Caption of ``matches.csv``."""
    what = f"score above {threshold:.2f}" if threshold is not None else "the top by score: no boundary yet"
    return f"{rows} of {total} matches ({what}), best first"


def matches_cut(rows: int, total: int, session_id: int) -> str:
    """When ``matches.csv`` had to be cut to fit Telegram's document limit."""
    return (
        f"matches.csv holds the best {rows} of {total} matches: Telegram takes documents up to 50 MB. "
        f"For all of them run `vdx export {session_id} --out DIR` where the bot runs."
    )


BAD_NAME = "Give the concept a one-word name of up to 32 letters, digits, - or _, e.g. /save red_fox"


def unknown_concept(name: str) -> str:
    """When a name is not one of the chat's saved concepts."""
    return f"There is no saved concept “{short(name, 40)}” here. /concepts lists them."


def _boundary(threshold: float | None) -> str:
    return "no boundary yet" if threshold is None else f"boundary {threshold:.2f}"


def saved(c: SavedConcept, replaced: bool) -> str:
    """The reply to /save."""
    pos = sum(1 for v in c.labels.values() if v > 0)
    neg = sum(1 for v in c.labels.values() if v < 0)
    verb = "Updated" if replaced else "Saved"
    return (
        f"{verb} “{short(c.concept)}” as {c.name}: 👍 {pos} / 👎 {neg} labels, {_boundary(c.threshold)}.\n"
        f"/find @{c.name} continues it; /watch {c.name} tells you when new images match it."
    )


def concept_list(concepts: list[SavedConcept], watched: set[int]) -> str:
    """The reply to /concepts."""
    if not concepts:
        return "No saved concepts yet. Teach one, then /save NAME."
    lines = ["Saved concepts:"]
    for c in concepts:
        eye = " · 🔔 watched" if c.id in watched else ""
        lines.append(
            f"• {c.name} — “{short(c.concept, 60)}” · {len(c.labels)} labels · {_boundary(c.threshold)}{eye}"
        )
    lines.append("/find @NAME continues one · /watch NAME · /forget NAME")
    return "\n".join(lines)


def forgotten(name: str) -> str:
    """The reply to /forget."""
    return f"Forgot {name}."


def watch_needs_boundary(name: str) -> str:
    """/watch on a concept that cannot tell matches yet."""
    return (
        f"{name} has no decision boundary yet: vote both 👍 and 👎 in a session "
        f"(/find @{name}), then /save {name} again and /watch it."
    )


def watching(name: str, new: bool) -> str:
    """The reply to /watch."""
    if not new:
        return f"Already watching {name}."
    return f"🔔 Watching {name}: when new images are added I will post the ones it accepts."


def unwatched(name: str, removed: bool) -> str:
    """The reply to /unwatch."""
    return f"Stopped watching {name}." if removed else f"{name} was not being watched."


def alert(name: str, concept: str, shown: int, total: int) -> str:
    """The text after an alert album."""
    noun = "new image matches" if total == 1 else "new images match"
    more = f" (the best {shown} above)" if shown < total else ""
    return f"🔔 {total} {noun} {name} (“{short(concept, 80)}”){more}. /unwatch {name} to stop."


LAST_PAGE = "That was the last page of matches."


def vote_answer(position: int, vote: int, hidden: bool = False) -> str:
    """The callback answer for a vote: the voter's own vote (in groups the split stays hidden until 🔁 Refine)."""
    after = " (your vote; the group's split shows after 🔁 Refine)" if hidden else ""
    if vote > 0:
        return f"👍 {position} recorded{after}"
    if vote < 0:
        return f"👎 {position} recorded{after}"
    return f"Vote on {position} removed"


def stopped(concept: str) -> str:
    """The reply when a session ends."""
    return f"Session “{short(concept)}” stopped. Send a new concept to start again."


def nothing_else(concept: str, best: int) -> str:
    """A refine that found nothing unlabelled above the classifier's decision boundary."""
    return (
        f"Nothing else here looks like “{short(concept)}”: every image I have not shown you scores below "
        f"what you taught me. ⭐ Results has the {best} best; send a new concept to explore something else."
    )


def matches(estimate: MatchEstimate | None) -> str:
    """How many images in the collection match, as far as the classifier can tell."""
    if estimate is None:
        return "Vote 👍 and 👎 on a few images and I can estimate how many in the collection match."
    return f"About {estimate.count} images in the collection score above the decision boundary."


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


def stats(s: Stats, group: bool, image_model: str = "", text_model: str = "") -> str:
    """``/stats``: concept, rounds, labels, voters (agreement in groups) and the models."""
    lines = [
        f"Concept: “{short(s.concept)}”{'' if s.active else ' (ended)'}",
        f"{s.rounds} rounds · {s.labels} labels (👍 {s.positive} / 👎 {s.negative}) · {s.voters} voters",
    ]
    if s.ties:
        lines.append(f"{s.ties} images contested (votes cancel out: not shown again, no label)")
    if group:
        if s.agreement is None:
            lines.append("agreement: no image has votes from two people yet")
        else:
            alpha = "n/a" if s.alpha is None else f"{s.alpha:.2f}"
            lines.append(
                f"agreement: Krippendorff's α {alpha} over {s.shared} images with two or more voters "
                f"(1 = always agree, 0 = no better than chance); unanimous on {s.agreement:.0%}"
            )
        lines.append(f"votes combined by {s.estimator}")
        for v in s.per_voter[:MAX_VOTERS_SHOWN]:
            who = short(v.name, 40) or str(v.user_id)
            with_others = (
                f"agrees with the others on {v.agreement:.0%} of {v.compared}"
                if v.agreement is not None
                else "no overlap with the others yet"
            )
            lines.append(f"• {who}: {v.votes} votes, {with_others}, weight {v.accuracy:.2f}")
    if image_model:
        lines.append(f"image model: {model_name(image_model)}")
        lines.append(f"text model: {model_name(text_model) if text_model else 'the image model’s own'}")
    return "\n".join(lines)


MAX_VOTERS_SHOWN = 20


def model_name(name: str) -> str:
    """A model as people know it: a hub name as is, a local directory by its last two path parts."""
    parts = [p for p in name.replace("\\", "/").split("/") if p]
    if name.startswith(("/", ".", "~")) and len(parts) > 2:
        return "…/" + "/".join(parts[-2:])
    return name


MISSING_TOKEN = (
    "TELEGRAM_BOT_TOKEN is not set: create a bot with @BotFather in Telegram and set "
    "TELEGRAM_BOT_TOKEN to the token it gives you"
)
REJECTED_TOKEN = (
    "the Bot API server rejected TELEGRAM_BOT_TOKEN (401 Unauthorized): check the token, "
    "or get a new one from @BotFather"
)


def bot_api_failed(reason: str) -> str:
    """``vdx bot`` could not talk to the Bot API server (``reason`` already free of the token)."""
    return f"the Bot API server failed the bot: {short(reason, 200)} (check VDX_TELEGRAM_API_URL and the network)"


def bot_crashed(reason: str) -> str:
    """``vdx bot`` stopped on an error nobody expected (``reason`` already free of the token)."""
    return f"the bot stopped on an unexpected error: {short(reason, 200)} (the log above has the details)"
