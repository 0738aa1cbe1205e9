"""The ``vdx`` command line against the real embedded chDB store and the tiny CLIP model."""

from __future__ import annotations

import _thread
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.cli import main
from core.config import Settings
from core.ingest import read_folder
from core.store import open_store
from tests.imageserver import make_photos, serve_directory, unsplash_row, write_tsv

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _tiny_model(tiny_clip_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VDX_CLIP_MODEL", str(tiny_clip_dir))
    monkeypatch.setenv("VDX_DEVICE", "cpu")
    monkeypatch.setenv("VDX_TORCH_THREADS", "1")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_explains_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for command in (
        "ingest",
        "search",
        "info",
        "index",
        "bot",
        "VDX_CLIP_MODEL",
        'vdx search "a house by the lake"',
    ):
        assert command in text
    for sub in (
        ["ingest", "unsplash"],
        ["ingest", "folder"],
        ["ingest", "vectors"],
        ["search"],
        ["index"],
        ["bot"],
    ):
        with pytest.raises(SystemExit):
            main([*sub, "--help"])
        assert "example" in capsys.readouterr().out


def test_ingest_folder_then_search_info_and_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_photos(tmp_path / "photos", 8)
    code, out, _ = run(capsys, "ingest", "folder", str(tmp_path / "photos"), "--batch-size", "3")
    assert code == 0 and "8 new" in out and "0 broken" in out
    code, out, _ = run(capsys, "ingest", "folder", str(tmp_path / "photos"))
    assert code == 0 and "0 new, 0 changed, 8 unchanged" in out

    code, out, _ = run(capsys, "search", "a photo of a dog", "-k", "3")
    rows = out.strip().splitlines()[1:]
    assert code == 0 and len(rows) == 3
    assert all("file:///" in r for r in rows)

    code, out, _ = run(capsys, "search", "a photo of a dog", "-k", "5", "--json")
    hits = json.loads(out)
    assert code == 0 and len(hits) == 5
    assert {"id", "url", "distance"} <= set(hits[0])
    assert [h["distance"] for h in hits] == sorted(h["distance"] for h in hits)

    code, out, _ = run(capsys, "info")
    assert code == 0
    info = dict(line.split(":", 1) for line in out.splitlines())
    assert info["backend"].strip() == "chdb" and info["rows"].strip() == "8" and info["dim"].strip() == "16"
    assert info["index"].strip() == "none"
    code, out, _ = run(capsys, "info", "--json")
    assert json.loads(out)["rows"] == 8

    code, out, _ = run(capsys, "index", "status")
    assert code == 0 and out.strip() == "index: none"


def test_ingest_unsplash_reports_broken_rows(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photos = tmp_path / "photos"
    make_photos(photos, 3)
    with serve_directory(photos) as server:
        rows = [
            unsplash_row("okokokokok0", server.url("photo_00.jpg"), "A first photo"),
            unsplash_row("gone0000404", server.url("gone.jpg")),
            unsplash_row("okokokokok1", server.url("photo_01.png")),
            unsplash_row("nourl000000", ""),
        ]
        tsv = write_tsv(tmp_path / "photos.tsv000", rows)
        code, out, _ = run(capsys, "ingest", "unsplash", str(tsv), "--workers", "2")
    assert code == 0
    assert "2 new" in out and "2 broken" in out
    assert "broken gone0000404: HTTP 404" in out and "broken nourl000000: no image URL" in out


def test_ingest_vectors_then_search(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "emb" / "img_emb").mkdir(parents=True)
    (tmp_path / "emb" / "metadata").mkdir()
    X = np.random.default_rng(3).normal(size=(25, 16)).astype(np.float32)
    np.save(tmp_path / "emb" / "img_emb" / "img_emb_0.npy", X)
    pd.DataFrame(
        {"url": [f"https://example.org/{i}.jpg" for i in range(25)], "caption": ["c"] * 25}
    ).to_parquet(tmp_path / "emb" / "metadata" / "metadata_0.parquet")
    code, out, _ = run(capsys, "ingest", "vectors", str(tmp_path / "emb"))
    assert code == 0 and "25 new" in out
    code, out, _ = run(capsys, "search", "anything", "-k", "4", "--json")
    assert code == 0 and len(json.loads(out)) == 4


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ingest", "unsplash", "{tmp}/photos.tsv000"], "no such file or directory"),
        (["ingest", "unsplash", "{tmp}/wrong.tsv"], "missing column(s) photo_image_url"),
        (["ingest", "folder", "{tmp}/nowhere"], "no such directory"),
        (["ingest", "vectors", "{tmp}/nothing.npy"], "no such file"),
        (["search", "a dog"], "no images yet"),
        (["--model", "{tmp}/no-model", "ingest", "folder", "{tmp}/photos"], "VDX_CLIP_MODEL"),
    ],
)
def test_bad_input_exits_non_zero_with_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    make_photos(tmp_path / "photos", 2)
    (tmp_path / "wrong.tsv").write_text("photo_id\tphoto_url\nabc\thttps://unsplash.com/photos/abc\n")
    code, out, err = run(capsys, *[a.format(tmp=tmp_path) for a in argv])
    assert code == 2
    assert err.startswith("vdx: error: ") and message in err
    assert "Traceback" not in err and out == ""


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["search"], ["search", "x", "-k", "0"], ["ingest", "photos", "x"], ["index", "rebuild"]):
        with pytest.raises(SystemExit) as done:
            main(argv)
        assert done.value.code == 2
    capsys.readouterr()


def test_locked_database_is_explained(tmp_path: Path) -> None:
    """A second process on the same embedded directory gets the 'in use' message, not a chDB trace."""
    env = {**os.environ, "VDX_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(REPO)}
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from core.config import Settings; from core.store import open_store; "
            "s = open_store(Settings.from_env(), dim=16); s.ensure_schema(); print('ready', flush=True); "
            "sys.stdin.read(); s.close()",
        ],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        done = subprocess.run(
            [sys.executable, "-m", "core.cli", "info"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        holder.communicate("", timeout=60)
    assert done.returncode == 2
    assert "in use by another vdx process" in done.stderr and "VDX_DB_URL" in done.stderr
    assert "Traceback" not in done.stderr and "Code: 76" not in done.stderr


def test_model_and_table_of_different_sizes_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    np.save(tmp_path / "v.npy", np.eye(3, 8, dtype=np.float32))
    pd.DataFrame({"id": ["a", "b", "c"], "url": ["u", "v", "w"]}).to_csv(tmp_path / "v.csv", index=False)
    assert run(capsys, "ingest", "vectors", str(tmp_path / "v.npy"))[0] == 0
    make_photos(tmp_path / "photos", 2)
    for argv in (["ingest", "folder", str(tmp_path / "photos")], ["search", "a dog"]):
        code, _, err = run(capsys, *argv)
        assert (
            code == 2
            and "VDX_CLIP_MODEL does not match the image table: expected 8-d vectors, got 16-d" in err
        )
    code, out, _ = run(capsys, "info")
    assert "rows:        3" in out


def test_ctrl_c_stops_cleanly_and_says_how_to_resume(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(150):
        Image.new("RGB", (48, 48), (i, 255 - i, 90)).save(photos / f"p{i:03d}.png")
    cache = Settings.from_env().image_cache_dir

    def press_ctrl_c() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and len(list(cache.glob("*.jpg"))) < 40:  # read-ahead is 8
            time.sleep(0.02)
        _thread.interrupt_main(signal.SIGINT)  # what the terminal's Ctrl-C does to the main thread

    presser = threading.Thread(target=press_ctrl_c)
    presser.start()
    code, _, err = run(capsys, "ingest", "folder", str(photos), "--batch-size", "2")
    presser.join()
    assert code == 130, err
    assert "run again to resume" in err and "Traceback" not in err
    stored = int(err.split("interrupted; ")[1].split(" images")[0])
    assert 0 < stored < 150
    with open_store(Settings.from_env()) as store:
        assert store.count() == stored
        assert store.ids_present([p.stem for p in cache.glob("*.jpg")]) == store.ids_present(
            [im.id for im in read_folder(photos)]
        )  # every stored row has its thumbnail
    code, out, _ = run(capsys, "ingest", "folder", str(photos))
    assert code == 0 and f"{150 - stored} new, 0 changed, {stored} unchanged" in out
