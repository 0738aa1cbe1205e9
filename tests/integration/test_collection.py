"""A collection that stays true to the photos and the model: real files, real chDB, the tiny CLIP."""

from __future__ import annotations

import csv
import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.cli import main
from core.config import Settings
from core.encoder import ClipEncoder
from core.errors import ModelMismatch
from core.events import CollectionEvents, ImagesIngested
from core.ingest import cache_path, ingest_folder, reembed, stable_id
from core.records import ImageBatch
from core.store import ClickHouseStore, open_store
from tests.tiny_clip import build_clip_dir


def photo(path: Path, seed: int, size: tuple[int, int] = (64, 48)) -> Path:
    """A JPEG whose bytes depend on ``seed``."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path, "JPEG")
    return path


def sha_id(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:20]


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir: Path) -> Iterator[ClipEncoder]:
    enc = ClipEncoder(str(tiny_clip_dir), device="cpu", torch_threads=1, batch_size=4)
    yield enc
    enc.close()


@pytest.fixture
def store(settings: Settings) -> Iterator[ClickHouseStore]:
    s = open_store(settings)
    yield s
    s.close()


def ingest(root: Path, store: ClickHouseStore, encoder: ClipEncoder, settings: Settings, **kw: object):  # type: ignore[no-untyped-def]
    return ingest_folder(root, store, encoder, settings, batch_size=4, progress=False, **kw)  # type: ignore[arg-type]


def test_two_folders_with_the_same_names_are_both_stored(
    tmp_path: Path, store: ClickHouseStore, encoder: ClipEncoder, settings: Settings
) -> None:
    a = [photo(tmp_path / "camera-a" / f"IMG_{i:04d}.jpg", i) for i in range(3)]
    b = [photo(tmp_path / "camera-b" / f"IMG_{i:04d}.jpg", 100 + i) for i in range(3)]
    assert ingest(tmp_path / "camera-a", store, encoder, settings).new == 3
    second = ingest(tmp_path / "camera-b", store, encoder, settings)
    assert (second.new, second.unchanged, second.duplicates) == (3, 0, [])
    assert store.count() == 6
    urls = {h.url for h in store.get([sha_id(p) for p in a + b])}
    assert urls == {p.resolve().as_uri() for p in a + b}  # each row keeps the path it came from


def test_a_subfolder_re_ingest_stores_nothing_new(
    tmp_path: Path, store: ClickHouseStore, encoder: ClipEncoder, settings: Settings
) -> None:
    for i in range(6):
        photo(tmp_path / "all" / ("2024" if i % 2 else "2023") / f"p{i}.jpg", i)
    assert ingest(tmp_path / "all", store, encoder, settings).new == 6
    sub = ingest(tmp_path / "all" / "2024", store, encoder, settings)
    assert (sub.new, sub.changed, sub.unchanged, sub.total) == (0, 0, 3, 3)
    assert store.count() == 6


def test_a_changed_file_is_re_embedded_and_its_row_and_thumbnail_replaced(
    tmp_path: Path, store: ClickHouseStore, encoder: ClipEncoder, settings: Settings
) -> None:
    root = tmp_path / "photos"
    target = photo(root / "cat.jpg", 1)
    photo(root / "dog.jpg", 2)
    ingest(root, store, encoder, settings)
    old_id = sha_id(target)
    _, [old_vector] = store.vectors([old_id])
    photo(target, 99, size=(80, 80))  # the same name now holds another photo
    report = ingest(root, store, encoder, settings)
    assert (report.new, report.changed, report.unchanged) == (0, 1, 1)
    new_id = sha_id(target)
    assert store.ids_present([old_id, new_id]) == {new_id} and store.count() == 2
    assert not cache_path(settings, old_id).exists()
    with Image.open(cache_path(settings, new_id)) as im:
        assert im.size == (80, 80)
    _, [new_vector] = store.vectors([new_id])
    expected = encoder.embed_images([Image.open(cache_path(settings, new_id))])[0]
    assert float(new_vector @ expected) > 0.99 and float(new_vector @ old_vector) < 0.999
    assert store.knn(expected, 1)[0].url == target.resolve().as_uri()


def test_prune_removes_the_rows_and_thumbnails_of_deleted_files(
    tmp_path: Path, store: ClickHouseStore, encoder: ClipEncoder, settings: Settings
) -> None:
    root = tmp_path / "photos"
    files = [photo(root / f"p{i}.jpg", i) for i in range(4)]
    other = photo(tmp_path / "elsewhere" / "x.jpg", 50)
    ingest(root, store, encoder, settings)
    ingest(tmp_path / "elsewhere", store, encoder, settings)
    gone = [sha_id(files[0]), sha_id(files[3])]
    files[0].unlink()
    files[3].unlink()
    kept = ingest(root, store, encoder, settings)
    assert (kept.gone, kept.removed, store.count()) == (2, 0, 5)  # reported, not removed
    assert "--prune" in kept.summary()
    pruned = ingest(root, store, encoder, settings, prune=True)
    assert (pruned.removed, pruned.unchanged, pruned.gone) == (2, 2, 0)
    assert store.count() == 3 and not store.ids_present(gone)
    assert not any(cache_path(settings, i).exists() for i in gone)
    assert sha_id(other) in store.ids_present([sha_id(other)])  # another folder's rows are untouched
    hits = store.knn(np.ones(store.dim, np.float32), 10)
    assert {h.id for h in hits}.isdisjoint(gone)  # and search no longer returns them


def test_byte_identical_copies_are_stored_once_and_reported(
    tmp_path: Path, store: ClickHouseStore, encoder: ClipEncoder, settings: Settings
) -> None:
    root = tmp_path / "photos"
    original = photo(root / "a" / "beach.jpg", 7)
    (root / "b").mkdir()
    shutil.copy(original, root / "b" / "beach-copy.jpg")
    shutil.copy(original, root / "c.jpg")
    photo(root / "d.jpg", 8)
    report = ingest(root, store, encoder, settings)
    assert (report.new, len(report.duplicates), store.count()) == (2, 2, 2)
    assert {Path(d).name for d, _ in report.duplicates} == {"beach-copy.jpg", "c.jpg"}
    assert {of for _, of in report.duplicates} == {str(original.resolve())}
    assert "duplicate" in report.summary() and "same bytes as" in report.summary()


def test_moved_file_keeps_its_row_under_the_new_path(
    tmp_path: Path, store: ClickHouseStore, encoder: ClipEncoder, settings: Settings
) -> None:
    root = tmp_path / "photos"
    old = photo(root / "old" / "x.jpg", 3)
    ingest(root, store, encoder, settings)
    new = root / "new" / "x.jpg"
    new.parent.mkdir()
    old.rename(new)
    report = ingest(root, store, encoder, settings, prune=True)
    assert (report.new, report.moved, report.removed, store.count()) == (0, 1, 0, 1)
    [hit] = store.get([sha_id(new)])
    assert hit.url == new.resolve().as_uri()


def store_as_vdx01(store: ClickHouseStore, encoder: ClipEncoder, root: Path, files: list[Path]) -> list[str]:
    """Store ``files`` as vdx 0.1 did: ids from the path relative to the folder given, file:// urls."""
    old_ids = [stable_id(f.relative_to(root).as_posix()) for f in files]
    store.dim = encoder.dim
    store.insert(
        ImageBatch(
            ids=old_ids,
            urls=[f.resolve().as_uri() for f in files],
            vectors=encoder.embed_images([Image.open(f) for f in files]),
            captions=["p"] * len(files),
            sources=["folder"] * len(files),
        )
    )
    return old_ids


def test_rows_of_the_path_based_id_scheme_are_re_keyed_not_duplicated(
    tmp_path: Path, store: ClickHouseStore, encoder: ClipEncoder, settings: Settings
) -> None:
    root = tmp_path / "photos"
    files = [photo(root / "sub" / f"p{i}.jpg", i) for i in range(3)]
    old_ids = store_as_vdx01(store, encoder, root, files)
    settings.image_cache_dir.mkdir(parents=True)
    for i, f in zip(old_ids, files, strict=True):
        shutil.copy(f, cache_path(settings, i))
    report = ingest(root, store, encoder, settings)
    assert (report.changed, report.rekeyed, report.new, store.count()) == (3, 3, 0, 3)
    assert store.ids_present(old_ids) == set()
    assert store.ids_present([sha_id(f) for f in files]) == {sha_id(f) for f in files}
    assert not any(cache_path(settings, i).exists() for i in old_ids)
    assert "re-keyed" in report.summary()
    again = ingest(root, store, encoder, settings)
    assert (again.changed, again.unchanged) == (0, 3)


def test_ingest_publishes_the_new_ids(
    tmp_path: Path, store: ClickHouseStore, encoder: ClipEncoder, settings: Settings
) -> None:
    events = CollectionEvents()
    seen: list[ImagesIngested] = []
    unsubscribe = events.subscribe(seen.append)
    events.subscribe(lambda e: 1 / 0)  # a failing listener does not stop the ingest
    files = [photo(tmp_path / "p" / f"{i}.jpg", i) for i in range(6)]
    ingest(tmp_path / "p", store, encoder, settings, events=events)
    assert sorted(i for e in seen for i in e.ids) == sorted(sha_id(f) for f in files)
    assert all(e.source == "folder" for e in seen) and store.count() == 6
    assert store.ids_present(list(seen[0].ids)) == set(seen[0].ids)  # stored before the event
    assert len(seen) >= 2  # one event per stored batch
    before = len(seen)
    unsubscribe()
    photo(tmp_path / "p" / "new.jpg", 40)
    ingest(tmp_path / "p", store, encoder, settings, events=events)
    assert len(seen) == before  # nothing after unsubscribing


def test_broken_files_are_named_by_path_and_listed_in_a_csv(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_clip_dir: Path
) -> None:
    root = tmp_path / "photos"
    photo(root / "good.jpg", 1)
    for i in range(30):
        (root / "bad").mkdir(exist_ok=True)
        (root / "bad" / f"notes{i:02d}.jpg").write_text(f"not a photo, note {i}")
    code = main(["ingest", "folder", str(root), "--model", str(tiny_clip_dir)])
    out = capsys.readouterr().out
    assert code == 0  # something was stored
    assert f"broken {(root / 'bad' / 'notes00.jpg').resolve()}: not an image (text)" in out
    assert len(out.splitlines()) <= 25 and "… and 10 more" in out
    csv_path = Path(out.split("full list: ")[1].split()[0])
    assert csv_path.is_absolute() and csv_path.parent == (tmp_path / "data" / "reports").resolve()
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 30 and all(r["status"] == "broken" and r["item"].endswith(".jpg") for r in rows)

    (root / "good.jpg").unlink()
    assert main(["ingest", "folder", str(root / "bad"), "--model", str(tiny_clip_dir)]) == 1  # nothing stored
    assert "nothing of 30 could be stored" in capsys.readouterr().err


def test_a_second_model_of_the_same_size_is_refused_then_reembed_switches(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_clip_dir: Path
) -> None:
    other = build_clip_dir(tmp_path / "other-clip", seed=1)  # the same 16-d architecture, other weights
    root = tmp_path / "photos"
    for i in range(5):
        photo(root / f"p{i}.jpg", i)
    first = ["--model", str(tiny_clip_dir)]
    second = ["--model", str(other)]
    assert main(["ingest", "folder", str(root), *first]) == 0
    capsys.readouterr()
    for argv in (["ingest", "folder", str(root)], ["search", "a dog"]):
        assert main([*argv, *second]) == 2
        err = capsys.readouterr().err
        assert err.startswith("vdx: error: the collection was embedded with ")
        assert str(tiny_clip_dir) in err and str(other) in err and "--reembed" in err
        assert len(err) < 600 and err.count("\n") == 1
    assert main(["info", *second]) == 0
    info = capsys.readouterr().out
    assert f"model:       {tiny_clip_dir} (16-d, sha256:" in info and f"configured:  {other}" in info

    assert main(["ingest", "folder", str(root), "--reembed", *second]) == 0
    out = capsys.readouterr().out
    assert "reembed: 5 new" in out and "0 new, 0 changed, 5 unchanged" in out
    assert main(["search", "a dog", *second]) == 0
    assert main(["search", "a dog", *first]) == 2 and str(other) in capsys.readouterr().err


def test_reembed_resumes_after_an_interruption(
    tmp_path: Path, settings: Settings, tiny_clip_dir: Path
) -> None:
    root = tmp_path / "photos"
    files = [photo(root / f"p{i}.jpg", i) for i in range(8)]
    old = ClipEncoder(str(tiny_clip_dir), device="cpu", torch_threads=1, batch_size=4)
    new = ClipEncoder(str(build_clip_dir(tmp_path / "other", seed=2)), device="cpu", torch_threads=1)
    with open_store(settings) as store:
        ingest_folder(root, store, old, settings, batch_size=4, progress=False)

        side = store.sibling("__reembed")
        side_insert = side.insert
        calls = {"n": 0}

        def insert_then_stop(batch: ImageBatch) -> int:
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt  # Ctrl-C while the second batch is stored
            return side_insert(batch)

        store.sibling = lambda suffix: side  # type: ignore[method-assign]
        side.insert = insert_then_stop  # type: ignore[method-assign]
        with pytest.raises(KeyboardInterrupt):
            reembed(store, new, settings, batch_size=4, progress=False)
        assert store.model() is not None and store.model().name == str(tiny_clip_dir)  # type: ignore[union-attr]
        side.insert = side_insert  # type: ignore[method-assign]
        done = reembed(store, new, settings, batch_size=4, progress=False)
        first = 1  # the first batch (a quarter of 4) was kept
        assert (done.new, done.unchanged) == (8 - first, first)
        assert store.model().name == new.model_name and store.count() == 8  # type: ignore[union-attr]
        _, vectors = store.vectors([sha_id(f) for f in files])
        expected = new.embed_images([Image.open(cache_path(settings, sha_id(f))) for f in files])
        assert np.min(np.sum(vectors * expected, axis=1)) > 0.99
        with pytest.raises(ModelMismatch):
            ingest_folder(root, store, old, settings, progress=False)


def test_an_ingest_in_a_child_process_stores_what_one_in_threads_does(
    tmp_path: Path, encoder: ClipEncoder, settings: Settings
) -> None:
    """The bot runs a served ingest's reading and embedding in a child process: same rows, same
    vectors, broken files named the same way, thumbnails written, nothing half-written left."""
    for i in range(7):
        photo(tmp_path / "photos" / f"p{i}.jpg", i)
    (tmp_path / "photos" / "notes.jpg").write_text("not a photo")
    reports = {}
    vectors = {}
    for mode in (False, True):
        s = Settings(data_dir=tmp_path / f"data-{mode}", clip_model=str(encoder.model_name), device="cpu")
        store = open_store(s)
        try:
            reports[mode] = ingest(tmp_path / "photos", store, encoder, s, in_child=mode)
            ids, matrix = store.vectors([r.id for r in store.all_rows()])
            vectors[mode] = dict(zip(ids, matrix, strict=True))
            assert all(cache_path(s, i).exists() for i in ids)
            assert list(s.image_cache_dir.glob(".*.tmp")) == []
        finally:
            store.close()
    threads, child = reports[False], reports[True]
    assert (child.new, child.broken) == (threads.new, threads.broken) == (7, threads.broken)
    assert [path for path, _ in child.broken] == [str((tmp_path / "photos" / "notes.jpg").resolve())]
    assert vectors[True].keys() == vectors[False].keys()
    for image_id, v in vectors[False].items():
        np.testing.assert_allclose(vectors[True][image_id], v, atol=1e-5)


def test_votes_on_path_keyed_rows_follow_them_to_their_content_ids(
    tmp_path: Path,
    encoder: ClipEncoder,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A chat voted on photos of a vdx 0.1 collection; `vdx ingest folder` re-keys them by content
    and the session's labels are still there under the new ids."""
    import asyncio

    from core.state import RoundItem, State

    root = tmp_path / "photos"
    files = [photo(root / f"p{i}.jpg", i) for i in range(3)]
    store = open_store(settings)
    try:
        old_ids = store_as_vdx01(store, encoder, root, files)
    finally:
        store.close()

    async def vote() -> int:
        state = await State.open(settings.state_path)
        try:
            session = await state.start_session(1, "a photo", np.ones(encoder.dim, dtype=np.float32))
            items = [RoundItem(i + 1, image_id, "u") for i, image_id in enumerate(old_ids)]
            rnd = await state.add_round(session.id, "round", items)
            await state.toggle_vote(rnd.id, 1, 7, 1)
            await state.toggle_vote(rnd.id, 2, 7, -1)
            return session.id
        finally:
            await state.close()

    async def labels(session_id: int) -> dict[str, int]:
        state = await State.open(settings.state_path)
        try:
            return await state.labels(session_id)
        finally:
            await state.close()

    session_id = asyncio.run(vote())
    monkeypatch.setenv("VDX_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("VDX_CLIP_MODEL", str(encoder.model_name))
    monkeypatch.setenv("VDX_DEVICE", "cpu")
    assert main(["ingest", "folder", str(root)]) == 0
    assert "3 rows of the earlier path-based id scheme were re-keyed by content; their 2 votes were kept" in (
        capsys.readouterr().out
    )
    assert asyncio.run(labels(session_id)) == {sha_id(files[0]): 1, sha_id(files[1]): -1}
