"""A session taught through the bot, then listed and exported with the command line in every format."""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.cli import main
from tests.e2e.conftest import BotFactory, ImageServer, callback_answer, fill_store, jpeg, next_round
from tests.e2e.fake_bot_api import FakeBotApi

CHAT = 505
CONCEPT = "a red fox in the snow"


async def _vote(fake: FakeBotApi, keyboard: dict[str, Any], button: str) -> None:
    since = fake.mark()
    await callback_answer(fake, fake.press(CHAT, CHAT, keyboard, button))
    await fake.wait_for(
        "editMessageReplyMarkup", lambda c: c.params.get("message_id") == keyboard["message_id"], since=since
    )


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """``vdx ARGV`` (in a worker thread: it runs its own event loop); its output."""
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


class _Figures(HTMLParser):
    """The html export's cards: each figure's data attributes and its image source."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: list[dict[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "figure":
            self.figures.append(a)
        elif tag == "img" and self.figures:
            self.figures[-1]["src"] = a.get("src", "")
        elif tag in ("script", "link") or (tag == "img" and not a.get("src", "").startswith("data:")):
            raise AssertionError(f"the page needs something from outside: <{tag} {a}>")


@pytest.fixture
def taught(bot_settings: Any, store: Any, images: ImageServer, tmp_path: Path) -> Any:
    return fill_store(bot_settings, store, images, 120, seed=9, photos=tmp_path / "photos")


async def test_sessions_and_every_export_format_of_a_session_made_through_the_bot(
    fake: FakeBotApi,
    start_bot: BotFactory,
    taught: Any,
    store: Any,
    bot_settings: Any,
    tiny_clip_dir: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with start_bot():
        since = fake.mark()
        fake.user_message(CHAT, CHAT, CONCEPT)
        r1 = await next_round(fake, taught, CHAT, since=since)
        for button in ("👍 1", "👍 2", "👎 8", "👎 9"):
            await _vote(fake, r1.keyboard, button)
        since = fake.mark()
        fake.user_message(CHAT, CHAT, "/more")
        await next_round(fake, taught, CHAT, since=since)
    positive, negative = {r1.ids[0], r1.ids[1]}, {r1.ids[7], r1.ids[8]}
    store.close()  # the embedded database is one process's at a time: the bot has stopped, the CLI opens it

    monkeypatch.setenv("VDX_CLIP_MODEL", str(tiny_clip_dir))
    monkeypatch.setenv("VDX_DEVICE", "cpu")
    data = ["--data-dir", str(bot_settings.data_dir)]

    sessions = json.loads(await cli(capsys, *data, "sessions", "--json"))
    assert len(sessions) == 1
    s = sessions[0]
    assert (s["chat"], s["concept"], s["rounds"], s["positive"], s["negative"]) == (CHAT, CONCEPT, 2, 2, 2)
    assert s["boundary"] is not None and s["matches"] > 0 and s["last_activity"] > 0
    table = await cli(capsys, *data, "sessions")
    assert CONCEPT in table and "+2/-2" in table and str(s["matches"]) in table
    sid = str(s["session"])

    # csv
    out = tmp_path / "csv"
    await cli(capsys, *data, "export", sid, "--out", str(out))
    labels = list(csv.DictReader(io.StringIO((out / "labels.csv").read_text())))
    assert {r["image_id"] for r in labels if r["label"] == "1"} == positive
    assert {r["image_id"] for r in labels if r["label"] == "-1"} == negative
    assert all(r["soft_label"] in ("1.0000", "0.0000") for r in labels)
    matches = list(csv.DictReader(io.StringIO((out / "matches.csv").read_text())))
    assert len(matches) == s["matches"]
    scores = [float(r["score"]) for r in matches]
    assert scores == sorted(scores, reverse=True) and min(scores) > s["boundary"]
    assert not {r["image_id"] for r in matches} & negative
    model = json.loads((out / "classifier.json").read_text())
    assert model["threshold"] == pytest.approx(s["boundary"], abs=1e-6) and len(model["weights"]) == store.dim

    # parquet and jsonl hold the same rows
    await cli(capsys, *data, "export", sid, "--out", str(tmp_path / "pq"), "--format", "parquet")
    pq_matches = pd.read_parquet(tmp_path / "pq" / "matches.parquet")
    assert list(pq_matches["image_id"]) == [r["image_id"] for r in matches]
    pq_labels = pd.read_parquet(tmp_path / "pq" / "labels.parquet")
    assert set(pq_labels["image_id"]) == positive | negative
    assert all(
        dict(v) == {CHAT: 1 if i in positive else -1}
        for i, v in zip(pq_labels["image_id"], pq_labels["votes"], strict=True)
    )
    await cli(capsys, *data, "export", sid, "--out", str(tmp_path / "jl"), "--format", "jsonl")
    jl = [json.loads(line) for line in (tmp_path / "jl" / "matches.jsonl").read_text().splitlines()]
    assert [r["image_id"] for r in jl] == [r["image_id"] for r in matches]
    jl_labels = [json.loads(line) for line in (tmp_path / "jl" / "labels.jsonl").read_text().splitlines()]
    assert {r["image_id"]: r["soft_label"] for r in jl_labels} == {
        i: 1.0 if i in positive else 0.0 for i in positive | negative
    }

    # imagefolder: links to folder originals, copies of cached thumbnails for downloaded images
    out = tmp_path / "if"
    await cli(capsys, *data, "export", sid, "--out", str(out), "--format", "imagefolder")
    root = out / "a_red_fox_in_the_snow"
    for group, ids in (
        ("positive", positive),
        ("negative", negative),
        ("matches", {r["image_id"] for r in matches}),
    ):
        files = {p.stem: p for p in (root / group).iterdir()}
        assert set(files) == ids, group
        for image_id, path in files.items():
            if taught.sources[image_id] == "folder":
                assert (
                    path.is_symlink()
                    and path.resolve() == (tmp_path / "photos" / f"{image_id}.jpg").resolve()
                )
            else:
                assert not path.is_symlink()
                assert path.read_bytes() == (bot_settings.image_cache_dir / f"{image_id}.jpg").read_bytes()
    assert (out / "matches.csv").exists()

    # html: one page, every image embedded, score and label on each card
    out = tmp_path / "html"
    await cli(capsys, *data, "export", sid, "--out", str(out), "--format", "html")
    page = out / "index.html"
    parser = _Figures()
    parser.feed(page.read_text())
    cards = parser.figures
    assert len(cards) == len(matches) + 4
    by_id = {c["data-id"]: c for c in cards}
    assert {i for i, c in by_id.items() if c["data-label"] == "1"} == positive
    assert {i for i, c in by_id.items() if c["data-label"] == "-1"} == negative
    for c in cards:
        raw = base64.b64decode(c["src"].removeprefix("data:image/jpeg;base64,"))
        assert raw == (bot_settings.image_cache_dir / f"{c['data-id']}.jpg").read_bytes()
    assert [float(c["data-score"]) for c in cards[: len(matches)]] == pytest.approx(scores, abs=1e-3)
    _render_offline(page, tmp_path)

    # search with the exported classifier: the same count of matches, the same best images
    found = json.loads(
        await cli(
            capsys,
            *data,
            "search",
            "--classifier",
            str(tmp_path / "csv" / "classifier.json"),
            "-k",
            "5",
            "--json",
        )
    )
    assert found["total"] == s["matches"] and [m["id"] for m in found["matches"]] == [
        r["image_id"] for r in matches[:5]
    ]
    photo = tmp_path / "query.jpg"
    photo.write_bytes(jpeg(4242, side=64))
    text = await cli(capsys, *data, "search", "--image", str(photo), "-k", "4")
    assert len(text.strip().splitlines()) == 5


def _render_offline(page: Path, tmp_path: Path) -> None:
    """Open the page in headless Chromium without network and check that the images were drawn."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (apt-get install chromium): the page was only parsed")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--proxy-server=127.0.0.1:9",  # nothing outside the file may load
            f"--user-data-dir={tmp_path / 'chrome'}",
            "--window-size=1000,800",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    with Image.open(shot) as im:
        pixels = np.asarray(im.convert("RGB"), dtype=np.float32)
    # The thumbnails are random coloured blocks: a page that drew them is far from uniform.
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3)[::97], axis=0)) > 50
