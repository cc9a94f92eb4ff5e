"""Streaming CSV readers: compression, line endings, headers, layouts, malformed lines, skip/limit."""

from __future__ import annotations

import csv
import gzip
import zipfile
from pathlib import Path

import pytest

from producer.encode import encode_batch
from producer.events import CSV_COLUMNS, ClickEvent
from producer.readers import MalformedRow, RawBatch, detect_format, read_batches

from tests.builders import SAMPLE

HEADER = ",".join(CSV_COLUMNS)
ELECTRONICS_HEADER = "event_time,order_id,product_id,category_id,category_code,brand,price,user_id"


def data_rows(n: int, start: int = 0) -> list[list[str]]:
    """n distinct, valid OpenCDP rows (the user id numbers them)."""
    return [
        [
            f"2019-10-01 00:{(i // 60) % 60:02d}:{i % 60:02d} UTC",
            ("view", "cart", "purchase")[i % 3],
            str(1000 + i),
            "" if i % 4 == 0 else str(2053013552326770905 + i),
            "" if i % 5 == 0 else "electronics.smartphone",
            "" if i % 7 == 0 else "apple",
            f"{i}.99",
            str(500000000 + i),
            f"session-{i:05d}",
        ]
        for i in range(start, start + n)
    ]


def to_text(rows: list[list[str]], *, header: str | None = HEADER, newline: str = "\n", final_newline: bool = True) -> str:
    lines = ([header] if header is not None else []) + [",".join(r) for r in rows]
    return newline.join(lines) + (newline if final_newline else "")


def write(path: Path, text: str) -> Path:
    data = text.encode()
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(data))
    elif path.suffix == ".zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr(path.stem + ".csv", data)
    else:
        path.write_bytes(data)
    return path


def read_all(path: Path, **kwargs: object) -> tuple[list[list[str]], list[MalformedRow], list[RawBatch]]:
    batches = list(read_batches(path, **kwargs))  # type: ignore[arg-type]
    rows: list[list[str]] = []
    malformed: list[MalformedRow] = []
    for batch in batches:
        assert batch.table.column_names == list(CSV_COLUMNS)
        rows.extend([list(r) for r in zip(*(batch.table[c].to_pylist() for c in CSV_COLUMNS))])
        malformed.extend(batch.malformed)
    return rows, malformed, batches


# ---------------------------------------------------------------- layouts and encodings


@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("newline", ["\n", "\r\n"])
@pytest.mark.parametrize("name", ["clicks.csv", "clicks.csv.gz", "clicks.zip"])
def test_reads_every_row_as_written(tmp_path: Path, header: bool, newline: str, name: str) -> None:
    rows = data_rows(25)
    path = write(tmp_path / name, to_text(rows, header=HEADER if header else None, newline=newline))
    got, malformed, _ = read_all(path)
    assert malformed == []
    assert got == rows  # no header row among the data, no stray '\r' in the last column


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_missing_final_newline_keeps_the_last_row(tmp_path: Path, newline: str) -> None:
    rows = data_rows(3)
    path = write(tmp_path / "f.csv", to_text(rows, newline=newline, final_newline=False))
    assert read_all(path)[0] == rows


def test_blank_fields_are_empty_strings(tmp_path: Path) -> None:
    line = "2019-10-01 00:00:00 UTC,view,1,,,,1.00,2,"
    path = write(tmp_path / "f.csv", f"{HEADER}\n{line}\n")
    rows, _, _ = read_all(path)
    assert rows == [["2019-10-01 00:00:00 UTC", "view", "1", "", "", "", "1.00", "2", ""]]


def test_quoted_fields(tmp_path: Path) -> None:
    lines = [
        '"2019-10-01 00:00:00 UTC","view","1","","kids.toys","acme, inc.","1.50","2","s1"',
        '2019-10-01 00:00:01 UTC,view,1,,,"say ""hi""",1.50,2,s2',
    ]
    path = write(tmp_path / "f.csv", HEADER + "\n" + "\n".join(lines) + "\n")
    rows, malformed, _ = read_all(path)
    assert malformed == []
    assert [r[5] for r in rows] == ["acme, inc.", 'say "hi"']
    assert rows[0][4] == "kids.toys" and rows[0][3] == ""


def test_quoted_header_is_recognised(tmp_path: Path) -> None:
    header = ",".join(f'"{c}"' for c in CSV_COLUMNS)
    rows = data_rows(2)
    path = write(tmp_path / "f.csv", to_text(rows, header=header))
    assert read_all(path)[0] == rows


@pytest.mark.parametrize("header", [True, False])
def test_electronics_layout(tmp_path: Path, header: bool) -> None:
    lines = [
        "2020-04-24 11:50:39 UTC,2294359932054536986,1515966223509089906,2268105426648170900,electronics.tablet,samsung,162.01,1515915625441993984",
        "2020-04-24 11:50:40 UTC,2294359932054536987,1515966223509089907,,,,0.00,",
        "2020-04-24 11:50:41 UTC,,1515966223509089908,,,,5.00,1515915625441993985",
    ]  # fmt: skip
    text = (ELECTRONICS_HEADER + "\n" if header else "") + "\n".join(lines) + "\n"
    rows, malformed, _ = read_all(write(tmp_path / "e.csv", text))
    assert malformed == []
    assert [r[1] for r in rows] == ["purchase"] * 3
    assert rows[0] == [
        "2020-04-24 11:50:39 UTC",
        "purchase",
        "1515966223509089906",
        "2268105426648170900",
        "electronics.tablet",
        "samsung",
        "162.01",
        "1515915625441993984",
        "order-2294359932054536986",
    ]
    assert rows[1][8] == "order-2294359932054536987"
    assert rows[1][7] == ""  # a blank user id stays blank ...
    assert rows[2][8] == ""  # ... and so does a blank order id
    # ... so the model refuses the row without a user, and accepts the others.
    with pytest.raises(ValueError, match="user_id"):
        ClickEvent.from_csv_fields(rows[1])
    assert ClickEvent.from_csv_fields(rows[0]).user_session == "order-2294359932054536986"
    assert ClickEvent.from_csv_fields(rows[2]).user_session is None


def test_electronics_rows_through_the_encoder(tmp_path: Path) -> None:
    text = ELECTRONICS_HEADER + "\n2020-04-24 11:50:39 UTC,7,1,,,,1.00,\n2020-04-24 11:50:39 UTC,8,1,,,,1.00,9\n"
    (batch,) = list(read_batches(write(tmp_path / "e.csv", text)))
    encoded = encode_batch(batch.table)
    assert encoded.accepted == 1
    assert [reason.split(":")[0] for _, reason in encoded.rejected] == ["user_id"]


def test_format_can_be_forced(tmp_path: Path) -> None:
    # Headerless 9-column data read as opencdp explicitly gives the same rows as auto.
    rows = data_rows(4)
    path = write(tmp_path / "f.csv", to_text(rows, header=None))
    assert read_all(path, fmt="opencdp")[0] == read_all(path)[0] == rows


def test_unknown_layout_raises_a_clear_error(tmp_path: Path) -> None:
    path = write(tmp_path / "odd.csv", "a,b,c,d,e\n1,2,3,4,5\n")
    with pytest.raises(ValueError) as caught:
        list(read_batches(path))
    message = str(caught.value)
    assert "cannot tell the CSV layout" in message
    assert "5 columns" in message
    assert "opencdp" in message and "electronics" in message


@pytest.mark.parametrize(
    ("line", "layout", "has_header"),
    [
        (HEADER, "opencdp", True),
        (HEADER.upper() + "\r\n", "opencdp", True),
        (ELECTRONICS_HEADER, "electronics", True),
        ("2019-10-01 00:00:00 UTC,view,1,,,,1,2,s", "opencdp", False),
        ("2020-04-24 11:50:39 UTC,7,1,,,,1.00,9", "electronics", False),
    ],
)
def test_detect_format(line: str, layout: str, has_header: bool) -> None:
    fmt, header = detect_format(line)
    assert (fmt.name, header) == (layout, has_header)


def test_empty_file_yields_nothing(tmp_path: Path) -> None:
    assert list(read_batches(write(tmp_path / "empty.csv", ""))) == []


def test_header_only_file_yields_no_rows(tmp_path: Path) -> None:
    rows, malformed, _ = read_all(write(tmp_path / "h.csv", HEADER + "\n"))
    assert rows == [] and malformed == []


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        list(read_batches(tmp_path / "nope.csv"))


def test_empty_zip(tmp_path: Path) -> None:
    path = tmp_path / "empty.zip"
    with zipfile.ZipFile(path, "w"):
        pass
    with pytest.raises(ValueError, match="empty"):
        list(read_batches(path))


def test_zip_reads_the_first_file_member(tmp_path: Path) -> None:
    rows = data_rows(3)
    path = tmp_path / "nested.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("folder/", b"")
        archive.writestr("folder/2019-Oct.csv", to_text(rows))
        archive.writestr("folder/other.csv", to_text(data_rows(2, start=100)))
    assert read_all(path)[0] == rows


def test_on_bytes_counts_the_whole_plain_file(tmp_path: Path) -> None:
    path = write(tmp_path / "f.csv", to_text(data_rows(50)))
    seen: list[int] = []
    list(read_batches(path, block_bytes=128, on_bytes=seen.append))
    assert sum(seen) == path.stat().st_size
    assert len(seen) > 5


# ---------------------------------------------------------------- malformed lines


def test_truncated_last_line_is_malformed(tmp_path: Path) -> None:
    rows = data_rows(5)
    truncated = ",".join(data_rows(1, start=5)[0])[:40]  # cut inside the fourth field
    path = write(tmp_path / "f.csv", to_text(rows) + truncated)
    got, malformed, batches = read_all(path)
    assert got == rows
    assert malformed == [MalformedRow(text=truncated, reason=f"expected 9 columns, got {truncated.count(',') + 1}")]
    assert sum(b.rows_read for b in batches) == 6


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_lines_with_too_many_or_too_few_columns_are_malformed(tmp_path: Path, newline: str) -> None:
    rows = data_rows(6)
    too_many = ",".join(rows[0]) + ",extra,more"
    too_few = ",".join(rows[1][:7])
    single = "garbage"
    lines = [",".join(rows[0]), too_many, ",".join(rows[1]), too_few, single, *(",".join(r) for r in rows[2:])]
    path = write(tmp_path / "f.csv", HEADER + newline + newline.join(lines) + newline)
    got, malformed, batches = read_all(path)
    assert got == rows
    assert [(m.text, m.reason) for m in malformed] == [
        (too_many, "expected 9 columns, got 11"),
        (too_few, "expected 9 columns, got 7"),
        (single, "expected 9 columns, got 1"),
    ]
    assert sum(b.rows_read for b in batches) == len(lines)


def test_malformed_lines_across_tiny_blocks(tmp_path: Path) -> None:
    rows = data_rows(30)
    lines = [",".join(r) if i % 4 else "x,y" for i, r in enumerate(rows)]
    path = write(tmp_path / "f.csv", HEADER + "\n" + "\n".join(lines) + "\n")
    got, malformed, _ = read_all(path, block_bytes=64)
    assert got == [r for i, r in enumerate(rows) if i % 4]
    assert len(malformed) == len(rows[::4])
    assert {m.reason for m in malformed} == {"expected 9 columns, got 2"}


# ---------------------------------------------------------------- skip / limit and streaming


@pytest.mark.parametrize("block_bytes", [64, 100, 1 << 20])
@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize(
    ("skip", "limit"),
    [(0, None), (1, None), (7, None), (0, 1), (0, 13), (5, 10), (39, 1), (39, None), (40, None), (100, 5), (3, 0)],
)
def test_skip_and_limit_count_data_lines(
    tmp_path: Path, block_bytes: int, header: bool, skip: int, limit: int | None
) -> None:
    rows = data_rows(40)
    path = write(tmp_path / "f.csv", to_text(rows, header=HEADER if header else None))
    got, malformed, batches = read_all(path, skip=skip, limit=limit, block_bytes=block_bytes)
    end = None if limit is None else skip + limit
    assert got == rows[skip:end]
    assert malformed == []
    assert sum(b.rows_read for b in batches) == len(rows[skip:end])


@pytest.mark.parametrize("name", ["f.csv.gz", "f.zip"])
def test_skip_and_limit_in_compressed_files(tmp_path: Path, name: str) -> None:
    rows = data_rows(40)
    path = write(tmp_path / name, to_text(rows, newline="\r\n"))
    assert read_all(path, skip=11, limit=17, block_bytes=64)[0] == rows[11:28]


def test_skip_and_limit_count_malformed_lines_too(tmp_path: Path) -> None:
    rows = data_rows(10)
    lines = [",".join(r) for r in rows]
    lines[3] = "broken,line"
    path = write(tmp_path / "f.csv", HEADER + "\n" + "\n".join(lines) + "\n")
    got, malformed, _ = read_all(path, skip=2, limit=4, block_bytes=64)  # lines 2..5, one of them broken
    assert got == [rows[2], rows[4], rows[5]]
    assert [m.text for m in malformed] == ["broken,line"]


def test_small_blocks_stream_many_small_batches(tmp_path: Path) -> None:
    rows = data_rows(300)
    text = to_text(rows)
    path = write(tmp_path / "f.csv", text)
    longest = max(len(line) + 1 for line in text.splitlines())
    shortest = min(len(line) + 1 for line in text.splitlines()[1:])
    got, _, batches = read_all(path, block_bytes=256)
    assert got == rows
    assert len(batches) >= len(text) // (256 + longest)
    # A batch never holds more than one block plus the line carried over from the previous one.
    assert max(b.rows_read for b in batches) <= (256 + longest) // shortest
    # The default block size reads the same small file as one batch.
    assert len(read_all(path)[2]) == 1


def test_read_batches_is_lazy(tmp_path: Path) -> None:
    path = write(tmp_path / "f.csv", to_text(data_rows(200)))
    batches = read_batches(path, block_bytes=64)
    first = next(batches)
    assert first.rows_read < 200
    batches.close()


# ---------------------------------------------------------------- the real sample


def test_real_sample_matches_the_csv_module(tmp_path: Path) -> None:
    if not SAMPLE.exists():
        pytest.skip(f"real sample not found: {SAMPLE} (the shared data folder is absent)")
    with SAMPLE.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        assert next(reader) == list(CSV_COLUMNS)
        expected = list(reader)
    got, malformed, batches = read_all(SAMPLE, block_bytes=1 << 16)
    assert malformed == []
    assert len(batches) > 5
    assert got == expected
    part, _, _ = read_all(SAMPLE, skip=1000, limit=2500, block_bytes=1 << 16)
    assert part == expected[1000:3500]
    # Compressed copies (in tmp_path only) read the same.
    data = SAMPLE.read_bytes()
    (tmp_path / "s.csv.gz").write_bytes(gzip.compress(data))
    with zipfile.ZipFile(tmp_path / "s.zip", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("2019-Oct.csv", data)
    for name in ("s.csv.gz", "s.zip"):
        assert read_all(tmp_path / name, block_bytes=1 << 16)[0] == expected


def test_text_lines_helper(tmp_path: Path) -> None:
    from producer.readers import iter_text_lines

    text = to_text(data_rows(3), newline="\r\n")
    path = write(tmp_path / "f.csv.gz", text)
    lines = list(iter_text_lines(path))
    assert all(line.endswith("\n") and not line.endswith("\r\n") for line in lines)  # CRLF translated
    assert [line.rstrip("\n") for line in lines] == text.split("\r\n")[:-1]
