"""The SQL that turns a landed (all-text) file into a typed staged table.

Every declared column is cast with TRY_CAST, so one bad value does not abort the load; the values that
did not parse are kept, verbatim, in `_cast_errors` (`column=value; ...`) where the schema check finds
and reports them. Undeclared columns are left in the landed file and not staged.
"""

from __future__ import annotations

from pathlib import Path

from platform_assets.catalog_model import ColumnType, Entity
from resources.duckdb_warehouse import quote_identifier
from resources.source_files import SOURCE_FILE_COLUMN, SOURCE_RECORD_COLUMN

CAST_ERRORS_COLUMN = "_cast_errors"
LOADED_AT_COLUMN = "_loaded_at"
RUN_ID_COLUMN = "_run_id"
LINEAGE_COLUMNS = (SOURCE_FILE_COLUMN, SOURCE_RECORD_COLUMN)

DUCKDB_TYPES: dict[ColumnType, str] = {
    ColumnType.INTEGER: "BIGINT",
    ColumnType.DOUBLE: "DOUBLE",
    ColumnType.STRING: "VARCHAR",
    ColumnType.BOOLEAN: "BOOLEAN",
    ColumnType.DATE: "DATE",
    ColumnType.TIMESTAMP: "TIMESTAMP",
}


def sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def staging_select(entity: Entity, landed_file: Path, run_id: str) -> str:
    typed = []
    cast_errors = []
    for name, column in entity.columns.items():
        raw = quote_identifier(name)
        cast = f"TRY_CAST({raw} AS {DUCKDB_TYPES[column.type]})"
        typed.append(f"{cast} AS {raw}")
        cast_errors.append(
            f"CASE WHEN {raw} IS NOT NULL AND {cast} IS NULL THEN {sql_string(name + '=')} || {raw} END"
        )
    selected = [
        *typed,
        f"NULLIF(concat_ws('; ', {', '.join(cast_errors)}), '') AS {quote_identifier(CAST_ERRORS_COLUMN)}",
        *(quote_identifier(name) for name in LINEAGE_COLUMNS),
        f"{sql_string(run_id)} AS {quote_identifier(RUN_ID_COLUMN)}",
        f"now()::TIMESTAMP AS {quote_identifier(LOADED_AT_COLUMN)}",
    ]
    return f"SELECT {', '.join(selected)} FROM read_parquet({sql_string(str(landed_file))})"
