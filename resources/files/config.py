"""How a file entity is delivered: format, compression and parsing options, as declared in the catalog."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from resources.files.headers import HeaderNormalization

Compression = Literal["infer", "none", "gzip", "bz2", "zip", "zstd"]
"""How a delivered file is compressed; `infer` goes by its suffix."""


class FileFormat(BaseModel):
    """Parsing options of one file entity. Text formats (CSV, JSON, JSON Lines) land as text columns, exactly
    as delivered; typed formats (Parquet, Avro) keep their own types."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["csv", "json", "jsonl", "parquet", "avro"]
    compression: Compression = Field(
        default="infer", description="`infer` goes by the file suffix (.gz, .bz2, .zip, .zst)."
    )
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quote_char: str = Field(default='"', min_length=1, max_length=1)
    header: bool = Field(default=True, description="CSV: the first line names the columns.")
    column_names: list[str] | None = Field(default=None, description="CSV without a header: the names.")
    encoding: str = "utf-8"
    normalize_headers: HeaderNormalization | None = Field(
        default=None,
        description="`snake_case`: stage every delivered column under its name in lower snake case "
        "(`Order ID` -> `order_id`, `Größe` -> `grosse`), which the catalog then declares "
        "(`resources/files/headers.py`).",
    )
    record_path: str | None = Field(
        default=None, description="JSON documents: dotted path to the array of records, e.g. `data.items`."
    )


MalformedPolicy = Literal["fail", "skip"]
"""`fail` stops the extraction at the first malformed record; `skip` sets it aside in quarantine (with file
and line number) and goes on."""

BadFilePolicy = Literal["fail", "skip"]
"""What a delivered file that cannot be read at all does to the others of its entity (a truncated or damaged
archive, a zip of several files, not the declared format or encoding): `fail` fails the raw step naming it,
and nothing of the run lands; `skip` sets it aside (not landed, listed in the materialization's
`files_set_aside` with its error, and in the landing quarantine) and lands the rest."""
