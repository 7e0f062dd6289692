{#-
    Rows deleted at a source leave the staged tables (soft deletes, key scans, snapshot deliveries), and
    every table model with them, since a table is rebuilt whole. An incremental model only ever replaces
    the keys its new rows bring, so a deleted key would stay in it forever: give it this post-hook, which
    deletes the rows whose key is no longer in the relation the model is built from (one anti-join on the
    key; a full build deletes nothing). The key of a staged table is never null, so NOT IN is exact.
-#}
{% macro delete_rows_missing_from(relation, key) %}
    delete from {{ this }}
    where {{ key }} not in (select {{ key }} from {{ relation }} where {{ key }} is not null)
{% endmacro %}
