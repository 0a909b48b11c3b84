"""``fastgrad train``'s input: a numeric CSV file with a header row, read with a one-line error
naming the file, the line and the column for every problem."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, TextIO, Tuple

import numpy as np

from .common import CliError, checked_name, shown

__all__ = ["read_csv", "read_csv_cells", "MAX_LINE_CHARS", "separator_hint", "no_header_hint"]

#: the longest line read (a row of 100,000 numbers of 20 characters fits); a longer one is an
#: error, so that a file without line breaks (/dev/zero) cannot take all the memory
MAX_LINE_CHARS = 1 << 24


def read_csv(path: Path) -> Tuple[List[str], np.ndarray]:
    """Read a numeric CSV with a header row: ``(column names, (rows, columns) float64 array)``.

    Blank lines and lines starting with '#' are skipped.  Raises :class:`CliError` with a
    one-line message naming the file, the line and the column for every problem: a missing or
    unreadable file, no header, no data rows, a row of the wrong length, an empty or
    non-numeric cell, NaN or infinity, duplicate column names, a first row of numbers (no header),
    a line longer than :data:`MAX_LINE_CHARS`.
    """
    return _read(path, None)


def read_csv_cells(path: Path) -> Tuple[List[str], np.ndarray, List[List[str]]]:
    """:func:`read_csv`, and the text of every cell as the file has it (stripped), so that a
    command that writes the rows back (``predict``) writes them as they were."""
    cells: List[List[str]] = []
    header, table = _read(path, cells)
    return header, table, cells


def _read(path: Path, cells: Optional[List[List[str]]]) -> Tuple[List[str], np.ndarray]:
    """read_csv's work; the text of each row is appended to ``cells`` when it is a list."""
    name = str(path)
    checked_name(name)
    try:
        if not path.exists():
            raise CliError(f"{name}: no such file")
        if path.is_dir():
            raise CliError(f"{name}: is a directory, expected a CSV file")
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header, rows = _read_rows(name, fh, cells)
    except OSError as e:
        raise CliError(f"{name}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise CliError(f"{name}: not a UTF-8 text file; expected a CSV file") from None
    except csv.Error as e:
        raise CliError(f"{name}: not a readable CSV file: {e}") from None
    if header is None:
        raise CliError(f"{name}: the file is empty; expected a header row and rows of numbers")
    if not rows:
        raise CliError(f"{name}: has a header but no data rows{no_header_hint(header)}")
    return header, np.asarray(rows, dtype=np.float64)


def _read_rows(name: str, fh: TextIO,
               cells: Optional[List[List[str]]] = None) -> Tuple[Optional[List[str]], List[List[float]]]:
    """The header and the rows of numbers of the open CSV file ``fh`` (``name``: its path); the
    rows' text is appended to ``cells`` when it is a list."""
    header: Optional[List[str]] = None
    rows: List[List[float]] = []
    reader = csv.reader(_bounded_lines(name, fh))
    for row in reader:
        line = reader.line_num
        if not row or all(not c.strip() for c in row) or row[0].lstrip().startswith("#"):
            continue
        if header is None:
            header = _header(f"{name} line {line}", row)
            continue
        if len(row) != len(header):
            raise CliError(f"{name} line {line}: expected {len(header)} cells (as the header), got {len(row)}")
        rows.append([_number(name, line, h, c, header) for h, c in zip(header, row)])
        if cells is not None:
            cells.append([c.strip() for c in row])
    return header, rows


def _bounded_lines(name: str, fh: TextIO) -> Iterator[str]:
    """The lines of ``fh``, each read with at most MAX_LINE_CHARS characters; CliError for a longer one."""
    number = 0
    while True:
        line = fh.readline(MAX_LINE_CHARS + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE_CHARS:
            raise CliError(f"{shown(name)} line {number}: longer than {MAX_LINE_CHARS:,} characters; "
                           "expected a CSV file of lines of numbers")
        yield line


def _number(name: str, line: int, column: str, cell: str, header: Sequence[str]) -> float:
    """The number in ``cell``; CliError for an empty cell, text, NaN or infinity."""
    s = cell.strip()
    if not s:
        raise CliError(f"{name} line {line}, column {column!r}: empty cell (missing values are not supported)")
    try:
        v = float(s)
    except ValueError:
        raise CliError(f"{name} line {line}, column {column!r}: {s!r} is not a number{separator_hint(header)}") from None
    if math.isnan(v):
        raise CliError(f"{name} line {line}, column {column!r}: NaN (missing values are not supported)")
    if math.isinf(v):
        raise CliError(f"{name} line {line}, column {column!r}: {s!r} is infinite")
    return v


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _header(where: str, cells: Sequence[str]) -> List[str]:
    """The column names of a header row (``where``: 'FILE line N'), or CliError: a name that is
    empty or repeated.  (Names may be numbers: pandas writes 0,1,2,... for unnamed columns.)"""
    header = [c.strip() for c in cells]
    for j, h in enumerate(header):
        if not h:
            raise CliError(f"{where}: column {j + 1} of the header has no name")
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise CliError(f"{where}: duplicate column name {dup[0]!r} in the header")
    return header


def no_header_hint(header: Sequence[str]) -> str:
    """A hint for a file whose first row is data, read as the header: '' unless every name is a number."""
    if not all(_is_number(h) for h in header):
        return ""
    return ("; the first row holds only numbers: does the file have a header row with column names? (lines "
            "starting with '#' are skipped as comments, so np.savetxt's '# x,y' header is not read)")


def separator_hint(header: Sequence[str]) -> str:
    """A hint for a file separated by ';' or tabs, read as one column: '' when none shows."""
    for sep in (";", "\t"):
        if any(sep in h for h in header):
            return f"; fields must be separated by commas (the header holds {sep!r})"
    return ""
