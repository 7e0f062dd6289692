{{ config(meta={'dagster': {'ref': {'name': 'fct_daily_revenue'}}}) }}
-- The mart must account for every revenue-bearing order: its total equals the staged total.
with mart as (
    select {{ round_float('sum(revenue)', 2) }} as revenue from {{ ref('fct_daily_revenue') }}
),
orders as (
    select {{ round_float('coalesce(sum(amount), 0)', 2) }} as revenue from {{ ref('stg_shop__orders') }} where is_revenue
)
select mart.revenue as mart_revenue, orders.revenue as order_revenue
from mart cross join orders
where abs(mart.revenue - orders.revenue) > 0.01 * (select count(*) from {{ ref('fct_daily_revenue') }})
