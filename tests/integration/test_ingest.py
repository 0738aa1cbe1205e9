"""Ingest into the real embedded chDB store: folders, an Unsplash-format TSV over loopback HTTP, vectors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.config import Settings
from core.encoder import ClipEncoder
from core.errors import DimensionMismatch, IngestError
from core.ingest import (
    IngestInterrupted,
    cache_path,
    ingest_folder,
    ingest_images,
    ingest_unsplash,
    ingest_vectors,
    read_folder,
    read_unsplash,
    sized_url,
    stable_id,
)
from core.records import ImageBatch
from core.store import ClickHouseStore, open_store
from tests.imageserver import make_photos, serve_directory, unsplash_row, write_tsv


@pytest.fixture(scope="module")
def encoder(tiny_clip_dir: Path) -> Iterator[ClipEncoder]:
    enc = ClipEncoder(str(tiny_clip_dir), device="cpu", torch_threads=1, batch_size=4)
    yield enc
    enc.close()


@pytest.fixture
def store(settings: Settings) -> Iterator[ClickHouseStore]:
    s = open_store(settings)
    yield s
    s.close()  # one embedded database per process: release it before the next test's directory


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    make_photos(root, 10)
    return root


def _thumbnails_ok(settings: Settings, ids: list[str]) -> None:
    for image_id in ids:
        with Image.open(cache_path(settings, image_id)) as im:
            assert im.format == "JPEG" and im.mode == "RGB"
            assert max(im.size) <= 1280


def test_folder_ingest_stores_each_photo_once_with_a_thumbnail(
    photos: Path, store: ClickHouseStore, encoder: ClipEncoder, settings: Settings
) -> None:
    report = ingest_folder(photos, store, encoder, settings, batch_size=4, progress=False)
    assert (report.stored, report.skipped_existing, report.broken) == (10, 0, [])
    assert store.count() == 10
    ids = [im.id for im in read_folder(photos)]
    assert len(set(ids)) == 10
    _thumbnails_ok(settings, ids)
    by_name = {Path(im.location).name: im.id for im in read_folder(photos)}
    with Image.open(cache_path(settings, by_name["photo_00.jpg"])) as big:
        assert big.size == (1280, 960)  # 2000x1500 scaled to fit 1280
    hits = store.get(ids)
    assert {h.source for h in hits} == {"folder"}
    assert {h.caption for h in hits} >= {"photo 00", "photo 02"}
    assert all(h.url.startswith("file:///") for h in hits)
    _, vectors = store.vectors(ids)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    # The stored vector is the image's embedding (up to the thumbnail's JPEG loss).
    assert float(vectors[0] @ encoder.embed_images([Image.open(cache_path(settings, ids[0]))])[0]) > 0.99

    again = ingest_folder(photos, store, encoder, settings, batch_size=4, progress=False)
    assert (again.stored, again.skipped_existing) == (0, 10)
    assert store.count() == 10

    make_photos(photos / "copies", 3)  # the same bytes as three stored photos: reported, not stored
    more = ingest_folder(photos, store, encoder, settings, batch_size=4, progress=False)
    assert (more.new, more.unchanged, more.total) == (0, 10, 13)
    assert sorted(Path(d).name for d, _ in more.duplicates) == [
        "photo_00.jpg",
        "photo_01.png",
        "photo_02.webp",
    ]
    assert all("/copies/" in d and "/copies/" not in of for d, of in more.duplicates)
    assert store.count() == 10


def test_folder_ids_are_stable_and_limit_takes_the_first_files(photos: Path) -> None:
    first = read_folder(photos, limit=4)
    assert [im.id for im in first] == [im.id for im in read_folder(photos)][:4]
    assert [im.id for im in first] == [im.id for im in read_folder(photos, limit=4)]


def test_exif_rotated_photo_is_stored_upright(
    tmp_path: Path, store: ClickHouseStore, encoder: ClipEncoder, settings: Settings
) -> None:
    root = tmp_path / "rotated"
    root.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.new("RGB", (300, 100), (10, 200, 30)).save(root / "sideways.jpg", exif=exif.tobytes())
    ingest_folder(root, store, encoder, settings, progress=False)
    [image] = read_folder(root)
    with Image.open(cache_path(settings, image.id)) as im:
        assert im.size == (100, 300)


def test_missing_or_empty_folder_is_a_clear_error(
    tmp_path: Path, store: ClickHouseStore, encoder: ClipEncoder, settings: Settings
) -> None:
    with pytest.raises(IngestError, match="no such directory"):
        ingest_folder(tmp_path / "nope", store, encoder, settings, progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(IngestError, match="no jpg"):
        ingest_folder(tmp_path / "empty", store, encoder, settings, progress=False)
    assert store.count() == 0


def _unsplash_set(photos: Path, base: str) -> list[dict[str, str]]:
    names = ["photo_00.jpg", "photo_01.png", "nested/deeper/photo_02.webp", "photo_03.jpeg", "photo_04.jpg"]
    rows = [
        unsplash_row(
            f"good{i:07d}",
            f"{base}/{name}",
            description=f"Photo number {i}" if i % 2 else "",
            ai_description=f"a generated photo {i}",
        )
        for i, name in enumerate(names[:5])
    ]
    rows.insert(2, unsplash_row("missing4040", f"{base}/no/such/file.jpg"))
    rows.insert(4, unsplash_row("textfile000", f"{base}/notes.txt"))
    rows.append(unsplash_row("emptyurl000", ""))
    rows.append(rows[0])  # a duplicated row counts once
    return rows


def test_unsplash_ingest_skips_and_lists_exactly_the_broken_rows(
    photos: Path, tmp_path: Path, store: ClickHouseStore, encoder: ClipEncoder, settings: Settings
) -> None:
    with serve_directory(photos) as server:
        tsv = write_tsv(tmp_path / "photos.tsv000", _unsplash_set(photos, server.base_url))
        server.fail_times["/photo_01.png"] = 2  # two 503s, then the image: retried, not broken
        report = ingest_unsplash(tsv, store, encoder, settings, workers=4, batch_size=2, progress=False)
        assert report.total == 8
        assert report.stored == 5 and store.count() == 5
        broken = dict(report.broken)
        assert set(broken) == {"missing4040", "textfile000", "emptyurl000"}
        assert "404" in broken["missing4040"]
        assert "not an image" in broken["textfile000"]
        assert "no image URL" in broken["emptyurl000"]
        assert "missing4040" in report.summary() and "3 broken" in report.summary()
        assert server.requests["/photo_01.png"] == 3
        assert server.requests["/no/such/file.jpg"] == 1  # a 404 is final: no retries
        assert all(p.endswith("?w=640") for p in server.raw_paths)

        hits = {h.id: h for h in store.get([f"good{i:07d}" for i in range(5)])}
        assert hits["good0000000"].caption == "a generated photo 0 — Photo by Ada Lovelace on Unsplash"
        assert hits["good0000001"].caption == "Photo number 1 — Photo by Ada Lovelace on Unsplash"
        assert hits["good0000001"].url == f"{server.base_url}/photo_01.png"  # stored without ?w=
        assert {h.source for h in hits.values()} == {"unsplash"}
        _thumbnails_ok(settings, list(hits))

        served = sum(server.requests.values())
        again = ingest_unsplash(tsv, store, encoder, settings, workers=4, progress=False)
        assert (again.stored, again.skipped_existing) == (0, 5)
        assert {i for i, _ in again.broken} == {"missing4040", "textfile000", "emptyurl000"}
        assert sum(server.requests.values()) - served == 2  # only the broken URLs are tried again


def test_interrupted_ingest_keeps_a_consistent_store_and_resumes(
    photos: Path, store: ClickHouseStore, encoder: ClipEncoder, settings: Settings
) -> None:
    class CtrlCAfterFirstBatch:
        """The real store; Ctrl-C arrives while the second batch is being inserted."""

        def __init__(self, inner: ClickHouseStore) -> None:
            self.inner, self.inserts = inner, 0

        def __getattr__(self, name: str) -> object:
            return getattr(self.inner, name)

        def insert(self, batch: ImageBatch) -> int:
            self.inserts += 1
            if self.inserts == 2:
                raise KeyboardInterrupt
            return self.inner.insert(batch)

    images = read_folder(photos)
    store.dim = encoder.dim  # a new table, as ingest sizes it (the wrapper would set its own attribute)
    wrapped: Any = CtrlCAfterFirstBatch(store)
    with pytest.raises(IngestInterrupted) as stopped:
        ingest_images(
            images,
            wrapped,
            encoder,
            settings.image_cache_dir,
            source="folder",
            workers=2,
            batch_size=4,
            progress=False,
        )
    first = 1  # the first batch is a quarter of batch_size: the model starts while the pipeline fills
    assert stopped.value.report.stored == first
    assert store.count() == first
    stored = store.ids_present([im.id for im in images])
    _thumbnails_ok(settings, sorted(stored))  # every stored row has its thumbnail

    resumed = ingest_images(images, store, encoder, settings.image_cache_dir, source="folder", progress=False)
    assert (resumed.stored, resumed.skipped_existing) == (10 - first, first)
    assert store.count() == 10


def test_unsplash_table_in_numbered_parts_and_csv_names(tmp_path: Path) -> None:
    folder = tmp_path / "lite"
    folder.mkdir()
    write_tsv(folder / "photos.csv000", [unsplash_row("a0000000000", "http://x/a.jpg")])
    write_tsv(folder / "photos.csv001", [unsplash_row("b0000000000", "http://x/b.jpg?ixid=1")])
    (folder / "keywords.csv000").write_text("photo_id\tkeyword\n")
    images = read_unsplash(folder)
    assert [im.id for im in images] == ["a0000000000", "b0000000000"]
    assert images[1].location == "http://x/b.jpg?ixid=1&w=640"
    assert [im.id for im in read_unsplash(folder, limit=1)] == ["a0000000000"]
    assert sized_url("https://images.unsplash.com/photo-1") == "https://images.unsplash.com/photo-1?w=640"


def test_unsplash_wrong_columns_or_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="no such file"):
        read_unsplash(tmp_path / "photos.tsv000")
    comma = tmp_path / "comma.tsv"
    comma.write_text("photo_id,photo_url,photo_image_url\nabc,http://x,http://y\n")
    with pytest.raises(IngestError, match="missing column.*photo_id"):
        read_unsplash(comma)
    keywords = write_tsv(
        tmp_path / "keywords.tsv000", [{"photo_id": "a", "keyword": "dog"}], ["photo_id", "keyword"]
    )
    with pytest.raises(IngestError, match="photo_image_url"):
        read_unsplash(keywords)
    (tmp_path / "empty").mkdir()
    with pytest.raises(IngestError, match=r"photos\.tsv"):
        read_unsplash(tmp_path / "empty")


def _clip_retrieval_output(root: Path, parts: list[int], dim: int = 16) -> np.ndarray:
    """``img_emb/img_emb_N.npy`` + ``metadata/metadata_N.parquet``, as clip-retrieval inference writes."""
    rng = np.random.default_rng(1)
    (root / "img_emb").mkdir(parents=True)
    (root / "metadata").mkdir()
    matrices = []
    for part, n in enumerate(parts):
        X = (rng.normal(size=(n, dim)) * 3).astype(np.float32)  # not normalised on purpose
        np.save(root / "img_emb" / f"img_emb_{part}.npy", X)
        pd.DataFrame(
            {
                "image_path": [f"/data/{part}/{i}.jpg" for i in range(n)],
                "caption": [f"caption {part}-{i}" for i in range(n)],
                "url": [f"https://example.org/{part}/{i}.jpg" for i in range(n)],
            }
        ).to_parquet(root / "metadata" / f"metadata_{part}.parquet")
        matrices.append(X)
    return np.concatenate(matrices)


def test_ingest_vectors_from_clip_retrieval_layout(tmp_path: Path, settings: Settings) -> None:
    X = _clip_retrieval_output(tmp_path / "emb", [30, 12])
    with open_store(settings, dim=16) as store:
        report = ingest_vectors(tmp_path / "emb", store, chunk_rows=16, progress=False)
        assert (report.stored, report.total, report.broken) == (42, 42, [])
        assert store.count() == 42
        first = stable_id("https://example.org/1/3.jpg")
        [hit] = store.get([first])
        assert (hit.url, hit.caption, hit.source) == ("https://example.org/1/3.jpg", "caption 1-3", "vectors")
        _, stored = store.vectors([first])
        np.testing.assert_allclose(stored[0], X[33] / np.linalg.norm(X[33]), atol=1e-5)
        assert store.knn(X[33], 1)[0].id == first

        again = ingest_vectors(tmp_path / "emb", store, progress=False)
        assert (again.stored, again.skipped_existing) == (0, 42)


def test_ingest_vectors_single_npy_with_csv_ids_and_bad_rows(tmp_path: Path, settings: Settings) -> None:
    X = np.eye(4, 16, dtype=np.float32) * 2
    X[2] = 0  # a zero vector cannot be normalised: reported, not stored
    np.save(tmp_path / "vecs.npy", X)
    pd.DataFrame({"id": ["a", "b", "c", "d"], "url": ["u1", "u2", "u3", "u4"]}).to_csv(
        tmp_path / "vecs.csv", index=False
    )
    with open_store(settings, dim=16) as store:
        report = ingest_vectors(tmp_path / "vecs.npy", store, progress=False)
        assert report.stored == 3 and report.broken == [("c", "zero or non-finite vector")]
        assert store.ids_present(["a", "b", "c", "d"]) == {"a", "b", "d"}

        pd.DataFrame({"id": ["a", "b"]}).to_csv(tmp_path / "vecs.csv", index=False)
        with pytest.raises(IngestError, match="2 rows but"):
            ingest_vectors(tmp_path / "vecs.npy", store, progress=False)
        np.save(tmp_path / "other.npy", np.ones((2, 8), np.float32))
        pd.DataFrame({"id": ["x", "y"]}).to_csv(tmp_path / "other.csv", index=False)
        with pytest.raises(DimensionMismatch):
            ingest_vectors(tmp_path / "other.npy", store, progress=False)
        with pytest.raises(IngestError, match="no metadata"):
            np.save(tmp_path / "lonely.npy", X)
            ingest_vectors(tmp_path / "lonely.npy", store, progress=False)
        assert store.count() == 3


def test_exports_name_folder_images_relative_to_the_ingested_folder(tmp_path: Path) -> None:
    from core.config import Settings
    from core.ingest import ingested_folders, remember_folder, shared_url

    settings = Settings(data_dir=tmp_path / "data")
    outer, inner = tmp_path / "photos", tmp_path / "photos" / "trips"
    inner.mkdir(parents=True)
    remember_folder(settings, outer)
    remember_folder(settings, inner)
    remember_folder(settings, outer)  # once is enough
    folders = ingested_folders(settings)
    assert folders == [inner.resolve(), outer.resolve()]
    assert shared_url((inner / "2024" / "a b.jpg").as_uri(), folders) == "2024/a b.jpg"
    assert shared_url((outer / "c.png").as_uri(), folders) == "c.png"
    assert shared_url("file:///elsewhere/secret/d.jpg", folders) == "d.jpg"  # never the absolute path
    assert shared_url("https://images.unsplash.com/x?w=640", folders) == "https://images.unsplash.com/x?w=640"
