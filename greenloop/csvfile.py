"""CSV files as people export them: the separator read from the header line, a decimal
comma where the separator is ';' (spreadsheets in most of Europe), and a file cut mid-row
refused instead of read with its missing fields as NaN.

Comma-separated files take pandas' default path unchanged: the sniffing reads only the
first two lines, which the completeness check reads anyway. A compressed CSV (`.gz`,
`.bz2`, `.xz`, or a `.zip` holding one file), as exports are often mailed or
downloaded, is decompressed in memory first (a batch, not a whole dataset) and then read
by the same rules. Text is UTF-8 (with or without a byte-order mark); a file that is not
valid UTF-8 is read as Windows-1252, as Excel on Windows exports it.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import lzma
import re
import zipfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import pandas as pd

# Tried in this order when the header has no comma; a header with a comma is comma-separated.
OTHER_SEPARATORS = (";", "\t", "|")
# A field like 12,5 or -0,25: with ';' between fields, a comma inside a number is a decimal.
_DECIMAL_COMMA = re.compile(r"(?:^|;)\s*\"?-?\d+,\d+\"?\s*(?=;|$)")


class TruncatedCsv(ValueError):
    """The last line has fewer fields than the header and no line end."""


class UnreadableArchive(ValueError):
    """A compressed file that does not decompress to one CSV."""


COMPRESSED = (".gz", ".bz2", ".xz", ".zip")
# What a file that is not UTF-8 is read as: Windows-1252, the code page of Excel's "CSV"
# export in Western Europe and the Americas. Five byte values are undefined in it, so a
# file holding one of them is still refused.
FALLBACK_ENCODING = "cp1252"
# A batch, not a dataset: a file that inflates past this is refused before it fills memory.
MAX_DECOMPRESSED_BYTES = 1 << 30


def _decompressed(path: Path) -> bytes:
    """The one file inside a compressed `path`, at most MAX_DECOMPRESSED_BYTES of it."""
    suffix = path.suffix.lower()
    try:
        with ExitStack() as stack:
            if suffix == ".zip":
                archive = stack.enter_context(zipfile.ZipFile(path))
                names = [n for n in archive.namelist() if not n.endswith("/")]
                if len(names) != 1:
                    raise UnreadableArchive(f"the zip archive holds {len(names)} files, "
                                            f"not one CSV")
                member: IO[bytes] = stack.enter_context(archive.open(names[0]))
            else:
                opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}[suffix]
                member = stack.enter_context(opener(path, "rb"))
            data = member.read(MAX_DECOMPRESSED_BYTES + 1)
    except UnreadableArchive:
        raise
    except (OSError, EOFError, lzma.LZMAError, zipfile.BadZipFile) as e:
        # A cut or corrupt archive: name it, not the codec's internals.
        raise UnreadableArchive(f"not a readable {suffix} archive ({e})") from e
    if len(data) > MAX_DECOMPRESSED_BYTES:
        raise UnreadableArchive(f"decompresses to over {MAX_DECOMPRESSED_BYTES >> 20} MiB")
    return data


@dataclass(frozen=True)
class Dialect:
    sep: str = ","
    decimal: str = "."


def read_csv(path: Path) -> pd.DataFrame:
    if path.suffix.lower() not in COMPRESSED:
        head, second, tail, size = _ends(path)
        source: Path | io.BytesIO = path
    else:
        data = _decompressed(path)
        head, second = (data.splitlines(keepends=True) + [b"", b""])[:2]
        tail, size, source = data[-65536:], len(data), io.BytesIO(data)
    dialect = sniff(head, second)
    _check_complete(head, tail, size, dialect.sep)
    options = {} if dialect == Dialect() else {"sep": dialect.sep, "decimal": dialect.decimal}
    try:
        return pd.read_csv(source, low_memory=False, **options)
    except UnicodeDecodeError as not_utf8:
        if isinstance(source, io.BytesIO):
            source.seek(0)
        try:  # Excel on Windows saves "CSV" in its ANSI code page: é, ü, € as one byte
            return pd.read_csv(source, low_memory=False, encoding=FALLBACK_ENCODING, **options)
        except UnicodeDecodeError:  # not that either: refused as not UTF-8
            raise not_utf8 from None


def sniff(head: bytes, second: bytes) -> Dialect:
    """The separator from the header line; a decimal comma only for ';' files whose first
    row writes a number with one."""
    header = head.decode("utf-8", "replace")
    if "," in header:
        return Dialect()
    sep = next((s for s in OTHER_SEPARATORS if s in header), ",")
    if sep == ";" and _DECIMAL_COMMA.search(second.decode("utf-8", "replace").rstrip("\r\n")):
        return Dialect(sep, ",")
    return Dialect(sep)


def _ends(path: Path) -> tuple[bytes, bytes, bytes, int]:
    with path.open("rb") as f:
        head = f.readline()
        second = f.readline()
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - 65536))
        tail = f.read()
    return head, second, tail, size


def _check_complete(head: bytes, tail: bytes, size: int, sep: str) -> None:
    """A CSV cut mid-row (a copy interrupted, a writer that crashed): its last line must
    end with a newline or carry as many fields as the header."""
    if not head.strip() or tail.endswith(b"\n"):
        return
    last = tail.rsplit(b"\n", 1)[-1]
    if last == head.rstrip(b"\r\n") and size == len(head):
        return  # a header-only file without a newline: rejected later as "no rows"
    try:
        n_head = len(next(csv.reader([head.decode("utf-8", "replace")], delimiter=sep)))
        n_last = len(next(csv.reader([last.decode("utf-8", "replace")], delimiter=sep)))
    except (csv.Error, StopIteration):
        n_head, n_last = 1, 0
    if n_last < n_head:
        raise TruncatedCsv(f"truncated CSV (last line has {n_last} of {n_head} fields and "
                           f"no line end)")
