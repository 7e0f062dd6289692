{#-
    One row per order, built incrementally: each run recomputes the orders whose order or payment changed
    within `fct_orders_lookback_days` (default 3) of the latest change already in the table, plus any order
    not in the table yet, and replaces those rows by order_id (delete+insert), so re-runs never duplicate.
    On BigQuery the same replacement is a MERGE on order_id (dbt-bigquery has no delete+insert).
    An order deleted from the staged orders is deleted here too, by the post-hook (macros/deletes.sql).
    `dbt build --full-refresh` rebuilds it from scratch.
-#}
{{
    config(
        materialized='incremental',
        unique_key='order_id',
        incremental_strategy=('merge' if target.type == 'bigquery' else 'delete+insert'),
        on_schema_change='fail',
        post_hook="{{ delete_rows_missing_from(ref('stg_shop__orders'), 'order_id') }}",
    )
}}

{% set lookback_days = var('fct_orders_lookback_days', 3) %}

with orders as (
    select * from {{ ref('stg_shop__orders') }}
),

items as (
    select * from {{ ref('int_order_items_summary') }}
),

payments as (
    select * from {{ ref('int_order_payments') }}
),

joined as (
    select
        orders.order_id,
        orders.customer_id,
        orders.order_ts,
        orders.order_date,
        orders.status,
        orders.currency,
        orders.amount,
        orders.is_revenue,
        coalesce(items.item_lines, 0) as item_lines,
        coalesce(items.items_quantity, 0) as items_quantity,
        coalesce(items.items_amount, 0) as items_amount,
        coalesce(payments.payment_status, 'unpaid') as payment_status,
        payments.payment_method,
        coalesce(payments.paid_amount, 0) as paid_amount,
        coalesce(payments.refunded_amount, 0) as refunded_amount,
        payments.paid_at,
        greatest(orders.updated_at, coalesce(payments.payment_updated_at, orders.updated_at)) as source_updated_at
    from orders
    left join items on items.order_id = orders.order_id
    left join payments on payments.order_id = orders.order_id
)

select * from joined
{% if is_incremental() %}
where
    -- An empty table has no max: the comparison is null and the second condition takes every order.
    source_updated_at >= (
        select {{ timestamp_minus_days('max(source_updated_at)', lookback_days) }}
        from {{ this }}
    )
    or order_id not in (select order_id from {{ this }})
{% endif %}
