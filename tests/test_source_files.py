"""CSV source files are read as text, in bounded batches, with the file and record of each row."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from resources.source_files import CsvFormat, SourceFileError, SourceFiles


def test_reads_every_column_as_text_with_file_and_record_numbers(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,amount\n1,2.50\n2,\n")
    (tmp_path / "b.csv").write_text("id,amount\n3,abc\n")
    files = SourceFiles(root=str(tmp_path))
    schema, batches = files.read_csv(files.list("*.csv"), CsvFormat())
    table = pa.Table.from_batches(list(batches), schema=schema)
    assert table.schema.field("amount").type == pa.string()
    assert table.to_pydict() == {
        "id": ["1", "2", "3"],
        "amount": ["2.50", None, "abc"],
        "_source_file": ["a.csv", "a.csv", "b.csv"],
        "_source_record": [1, 2, 1],
    }


def test_batches_are_bounded_by_the_block_size(tmp_path: Path) -> None:
    rows = "\n".join(f"{i},{i * 10}" for i in range(20_000))
    (tmp_path / "big.csv").write_text(f"id,value\n{rows}\n")
    files = SourceFiles(root=str(tmp_path))
    _, batches = files.read_csv(files.list("*.csv"), CsvFormat(), block_size=16 << 10)
    sizes = [batch.num_rows for batch in batches]
    assert len(sizes) > 5 and sum(sizes) == 20_000
    assert max(sizes) < 20_000


def test_files_of_one_entity_must_share_a_header(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,amount\n1,2\n")
    (tmp_path / "b.csv").write_text("id,total\n1,2\n")
    files = SourceFiles(root=str(tmp_path))
    with pytest.raises(
        SourceFileError, match=r"b.csv has columns \['id', 'total'\] but .*a.csv has \['id', 'amount'\]"
    ):
        files.read_csv(files.list("*.csv"), CsvFormat())


def test_no_matching_file_says_which_glob_and_where(tmp_path: Path) -> None:
    with pytest.raises(SourceFileError, match=r"No source file matches 'orders/\*.csv' under"):
        SourceFiles(root=str(tmp_path)).list("orders/*.csv")


def test_a_malformed_row_names_the_file_and_the_record(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("id,amount\n1,2\n2,3,extra\n")
    files = SourceFiles(root=str(tmp_path))
    _, batches = files.read_csv(files.list("*.csv"), CsvFormat())
    with pytest.raises(SourceFileError, match=r"a.csv: malformed CSV"):
        list(batches)
