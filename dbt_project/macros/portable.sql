{#-
    Small cross-database helpers for what dbt's own macros (dbt.datediff, dbt.bool_or, dbt.type_*, ...)
    leave out. Each dispatches on the adapter: `default__` is the DuckDB spelling (also right for
    BigQuery unless a `bigquery__` version exists), `postgres__` and `bigquery__` cover the differences.
    On DuckDB they give the same column types and values as the DuckDB-only SQL they replaced.
-#}

{#- round(value, places) of a DOUBLE / FLOAT64 / double precision value, keeping it a float.
    Postgres has round(numeric, int) only: round through numeric and back. -#}
{% macro round_float(expression, places) -%}
    {{ return(adapter.dispatch('round_float')(expression, places)) }}
{%- endmacro %}

{% macro default__round_float(expression, places) -%}
    round({{ expression }}, {{ places }})
{%- endmacro %}

{% macro postgres__round_float(expression, places) -%}
    cast(round(cast({{ expression }} as numeric), {{ places }}) as double precision)
{%- endmacro %}


{#- The 64-bit float type (DuckDB DOUBLE, Postgres double precision, BigQuery FLOAT64). dbt.type_float()
    is FLOAT on DuckDB, a 32-bit REAL there. Cast an integer to it before `/` to divide as fractions
    on every engine (Postgres truncates bigint / bigint). -#}
{% macro type_double() -%}
    {{ return(adapter.dispatch('type_double')()) }}
{%- endmacro %}

{% macro default__type_double() -%}
    double
{%- endmacro %}

{% macro postgres__type_double() -%}
    double precision
{%- endmacro %}

{% macro bigquery__type_double() -%}
    float64
{%- endmacro %}


{#- A timestamp `days` days earlier, still a timestamp. dbt.dateadd returns a DATETIME on BigQuery,
    which does not compare with TIMESTAMP columns. `days` is a number known at compile time. -#}
{% macro timestamp_minus_days(timestamp, days) -%}
    {{ return(adapter.dispatch('timestamp_minus_days')(timestamp, days)) }}
{%- endmacro %}

{% macro default__timestamp_minus_days(timestamp, days) -%}
    {{ dbt.dateadd('day', -1 * (days | int), timestamp) }}
{%- endmacro %}

{% macro bigquery__timestamp_minus_days(timestamp, days) -%}
    timestamp_sub({{ timestamp }}, interval {{ days | int }} day)
{%- endmacro %}


{#- numerator / denominator as a fraction (64-bit float) on every engine, also for two integers. -#}
{% macro ratio(numerator, denominator) -%}
    cast({{ numerator }} as {{ type_double() }}) / {{ denominator }}
{%- endmacro %}
