"""CSV as spreadsheets export it: the separator from the header, a decimal comma in ';'
files, and a file cut mid-row refused, whatever its separator."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from greenloop.csvfile import Dialect, sniff
from greenloop.data import BatchRejected, read_table

FRAME = pd.DataFrame({"city": ["Lyon", "Nice", "Lyon"], "x": [1.5, -0.25, 3.0],
                      "n": [1, 2, 3], "y": ["yes", "no", "yes"]})


def _write(tmp_path: Path, text: str, name: str = "b.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("sep", [";", "\t", "|"])
def test_other_separators_read_as_the_comma_file(tmp_path: Path, sep: str) -> None:
    path = tmp_path / "b.csv"
    FRAME.to_csv(path, index=False, sep=sep)
    pd.testing.assert_frame_equal(read_table(path), FRAME)


def test_semicolon_file_with_decimal_commas(tmp_path: Path) -> None:
    text = "city;x;n;y\nLyon;1,5;1;yes\nNice;-0,25;2;no\nLyon;3,0;3;yes\n"
    got = read_table(_write(tmp_path, text))
    pd.testing.assert_frame_equal(got, FRAME)
    assert got["x"].dtype == np.float64


def test_comma_file_is_read_as_before(tmp_path: Path) -> None:
    # a ';' inside a text field of a comma file changes nothing
    frame = FRAME.assign(city=["Lyon;Rhône", "Nice", "Lyon"])
    path = tmp_path / "b.csv"
    frame.to_csv(path, index=False)
    pd.testing.assert_frame_equal(read_table(path), frame)


def test_sniff_reads_only_what_it_must() -> None:
    assert sniff(b"a,b\n", b"1;2\n") == Dialect()
    assert sniff(b"a;b\n", b"1.5;2\n") == Dialect(";")
    assert sniff(b"a;b\n", b"1,5;2\n") == Dialect(";", ",")
    assert sniff(b"a;b\n", b"\"Paris, FR\";2\n") == Dialect(";")  # text with a comma
    assert sniff(b"a\tb\n", b"1,5\t2\n") == Dialect("\t")  # decimal commas only with ';'
    assert sniff(b"y\n", b"1\n") == Dialect()


def test_truncated_semicolon_file_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "city;x;n;y\nLyon;1,5;1;yes\nNice;-0,2")
    with pytest.raises(BatchRejected, match="truncated CSV .last line has 2 of 4 fields"):
        read_table(path)


@pytest.mark.parametrize("name", ["b.csv.gz", "b.csv.bz2", "b.csv.xz", "b.csv.zip", "b.tsv",
                                  "b.txt"])
def test_compressed_and_tab_files_read_as_the_comma_file(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    sep = "\t" if name.endswith((".tsv", ".txt")) else ","
    if name.endswith(".zip"):  # pandas names the member after the archive
        FRAME.to_csv(path, index=False, compression={"method": "zip", "archive_name": "b.csv"})
    else:
        FRAME.to_csv(path, index=False, sep=sep)  # compression inferred from the name
    pd.testing.assert_frame_equal(read_table(path), FRAME)


def test_broken_archives_are_refused_with_the_reason(tmp_path: Path) -> None:
    whole = tmp_path / "whole.csv.gz"
    FRAME.to_csv(whole, index=False)
    cut = tmp_path / "cut.csv.gz"
    cut.write_bytes(whole.read_bytes()[:-12])  # a download interrupted
    with pytest.raises(BatchRejected, match=r"cut.csv.gz: not a readable .gz archive"):
        read_table(cut)
    two = tmp_path / "two.csv.zip"
    with zipfile.ZipFile(two, "w") as z:
        z.writestr("a.csv", "x,y\n1,2\n")
        z.writestr("b.csv", "x,y\n3,4\n")
    with pytest.raises(BatchRejected, match="holds 2 files, not one CSV"):
        read_table(two)
    gz_cut_mid_row = tmp_path / "row.csv.gz"
    gz_cut_mid_row.write_bytes(gzip.compress(b"x,y,z\n1,2,3\n4,5"))
    with pytest.raises(BatchRejected, match="truncated CSV"):
        read_table(gz_cut_mid_row)


def test_an_archive_that_inflates_past_the_limit_is_refused(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    from greenloop import csvfile

    path = tmp_path / "bomb.csv.gz"
    path.write_bytes(gzip.compress(b"x,y\n" + b"1,2\n" * 5000))  # 20 kB from ~100 bytes
    monkeypatch.setattr(csvfile, "MAX_DECOMPRESSED_BYTES", 10_000)
    with pytest.raises(BatchRejected, match="decompresses to over"):
        read_table(path)


@pytest.mark.parametrize("name", ["b.csv", "b.csv.gz"])
def test_a_windows_1252_export_reads_as_its_utf8_twin(tmp_path: Path, name: str) -> None:
    """Excel on Windows saves CSV in its code page: é, ü and € are one byte each."""
    frame = FRAME.assign(city=["Besançon", "Zürich", "Besançon"], y=["oui €", "non", "oui €"])
    text = frame.to_csv(index=False, sep=";", decimal=",")
    utf8 = tmp_path / "utf8.csv"
    utf8.write_text(text, encoding="utf-8")
    ansi = tmp_path / name
    data = text.encode("cp1252")
    ansi.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    with pytest.raises(UnicodeDecodeError):
        data.decode("utf-8")  # not UTF-8: the fallback is what reads it
    pd.testing.assert_frame_equal(read_table(ansi), read_table(utf8))
    pd.testing.assert_frame_equal(read_table(utf8), frame)
    bom = tmp_path / "bom.csv"
    bom.write_text(text, encoding="utf-8-sig")
    pd.testing.assert_frame_equal(read_table(bom), frame)


def test_a_file_neither_utf8_nor_windows_1252_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "b.csv"
    path.write_bytes(b"city,x,n,y\nLyon\x81,1.5,1,yes\nNice,2.0,2,no\n")  # 0x81: in neither
    with pytest.raises(BatchRejected, match="b.csv: unreadable csv .*utf-8"):
        read_table(path)
