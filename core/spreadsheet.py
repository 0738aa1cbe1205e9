"""CSV that is safe to open in a spreadsheet: text cells cannot turn into formulas.

OWASP's rule against CSV (formula) injection (https://owasp.org/www-community/attacks/CSV_Injection):
a cell that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is read as a formula
by Excel, LibreOffice and Google Sheets, so such a cell gets a leading ``'``, which spreadsheets
show as text. Numbers (``-1``, ``+0.5``) are left as they are: a spreadsheet reads them as numbers
either way, and the exports' vote columns are numbers.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def safe_cell(cell: object) -> object:
    """``cell`` as a spreadsheet will not evaluate it: text starting a formula gets a leading ``'``."""
    if isinstance(cell, str) and cell.startswith(FORMULA_STARTS) and not _NUMBER.fullmatch(cell):
        return "'" + cell
    return cell


def csv_text(rows: Iterable[Iterable[object]]) -> str:
    """``rows`` as CSV text (``\\n`` line ends), every cell through :func:`safe_cell`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerows([safe_cell(c) for c in row] for row in rows)
    return out.getvalue()
