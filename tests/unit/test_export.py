"""The matches file the chat gets: compressed when large, cut to the document limit, best rows kept."""

from __future__ import annotations

import csv
import gzip
import io

import numpy as np

from core.export import Bundle, folder_name, matches_document, safe_name, soft_label
from core.records import Scored
from core.state import Export, ExportRow, Session


def bundle(n: int) -> Bundle:
    rng = np.random.default_rng(0)
    w = np.ones(4, np.float32) / 2
    session = Session(1, 5, "red fox", w, w, 0.0, None, True)
    rows = [ExportRow("i00001", "https://e.org/1", 1, {7: 1})]
    scores = np.sort(rng.uniform(0.2, 0.9, n))[::-1]
    matches = [
        Scored(
            f"i{k:05d}",
            f"https://e.org/{k}?{'x' * 40}",
            float(s),
            f"caption {k} " + "y" * int(rng.integers(0, 60)),
        )
        for k, s in enumerate(scores)
    ]
    return Bundle(Export(session, [(7, "Ann")], rows), matches, 0.2, n)


def rows_of(content: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(content.decode())))


def test_a_small_file_is_plain_csv_with_labels() -> None:
    doc = matches_document(bundle(50))
    assert doc.filename == "matches.csv" and not doc.cut
    rows = rows_of(doc.content)
    assert len(rows) == 50 and rows[1]["label"] == "1" and rows[0]["label"] == ""


def test_a_large_file_is_gzipped_and_cut_to_the_limit_keeping_the_best() -> None:
    b = bundle(20_000)
    doc = matches_document(b, gzip_above=100_000)
    assert doc.filename == "matches.csv.gz" and not doc.cut
    assert len(rows_of(gzip.decompress(doc.content))) == 20_000
    limit = len(doc.content) // 3
    cut = matches_document(b, limit=limit, gzip_above=100_000)
    assert cut.cut and len(cut.content) <= limit and cut.total == 20_000
    rows = rows_of(gzip.decompress(cut.content))
    assert len(rows) == cut.rows > 5000
    assert [r["image_id"] for r in rows] == [m.id for m in b.matches[: cut.rows]]


def test_names_and_soft_labels() -> None:
    assert safe_name("../etc/passwd") == "etc_passwd" and safe_name("") == "image"
    assert folder_name("A  Red Fox / at night") == "a_red_fox_at_night"
    assert soft_label({1: 1, 2: 1, 3: -1}) == 2 / 3
