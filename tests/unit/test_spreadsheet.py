"""OWASP's CSV-injection rule: text that would start a formula is written as text."""

from __future__ import annotations

import csv
import io

import pytest

from core.spreadsheet import csv_text, safe_cell


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("+1+2", "'+1+2"),
        ("-2+3", "'-2+3"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("-1", "-1"),
        ("+0.5", "+0.5"),
        ("1e3", "1e3"),
        ("Ann (12)", "Ann (12)"),
        ("", ""),
        (-1, -1),
        (3, 3),
    ],
)
def test_formula_starts_get_a_quote_and_numbers_do_not(cell: object, written: object) -> None:
    assert safe_cell(cell) == written


def test_csv_text_quotes_what_needs_quoting_and_neutralises_every_cell() -> None:
    text = csv_text([["name", "vote"], ['=cmd|"/c calc"!A1', -1], ["a,b", 1]])
    rows = list(csv.reader(io.StringIO(text)))
    assert rows == [["name", "vote"], ['\'=cmd|"/c calc"!A1', "-1"], ["a,b", "1"]]
