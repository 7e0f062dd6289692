"""The shape of a source declaration in the catalog, validated strictly: an unknown key or a wrong type
is an error, never ignored."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

SqlName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]*$", max_length=63)]
ColumnName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=63)]


class ColumnType(StrEnum):
    """Logical column types; each layer maps them to its own physical type."""

    INTEGER = "integer"
    DOUBLE = "double"
    STRING = "string"
    BOOLEAN = "boolean"
    DATE = "date"
    TIMESTAMP = "timestamp"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Column(Strict):
    type: ColumnType
    nullable: bool = True
    unique: bool = False
    min: float | None = None
    max: float | None = None
    allowed_values: list[str] | None = None
    description: str | None = None


class Entity(Strict):
    description: str | None = None
    format: Literal["csv"]
    path: str = Field(description="Glob of the entity's files, relative to the source files root.")
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    primary_key: list[ColumnName] = Field(min_length=1)
    columns: dict[ColumnName, Column] = Field(min_length=1)

    def is_nullable(self, column: str) -> bool:
        """Primary-key columns never are, whatever their declaration says."""
        return self.columns[column].nullable and column not in self.primary_key

    def unique_keys(self) -> list[list[str]]:
        """Column sets whose values must be unique: the primary key, and each `unique` column."""
        return [self.primary_key] + [[name] for name, column in self.columns.items() if column.unique]

    @model_validator(mode="after")
    def _primary_key_is_declared(self) -> Entity:
        missing = [key for key in self.primary_key if key not in self.columns]
        if missing:
            raise ValueError(f"primary_key names undeclared column(s) {missing}; declare them under columns")
        return self


class Source(Strict):
    source: SqlName
    description: str | None = None
    owners: list[str] = Field(default_factory=list)
    entities: dict[SqlName, Entity] = Field(min_length=1)
