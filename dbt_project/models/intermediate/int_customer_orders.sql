-- One row per customer who ordered: order dates, counts and values. Cancelled orders count as orders
-- but earn nothing; returned orders stay in the gross lifetime value and leave the net one.
with orders as (
    select
        o.customer_id,
        o.order_date,
        o.amount,
        o.is_revenue,
        coalesce(p.paid_amount, 0) as paid_amount,
        coalesce(p.refunded_amount, 0) as refunded_amount
    from {{ ref('stg_shop__orders') }} as o
    left join {{ ref('int_order_payments') }} as p on p.order_id = o.order_id
)
select
    customer_id,
    min(order_date) as first_order_date,
    max(order_date) as last_order_date,
    count(*) as order_count,
    count(case when is_revenue then 1 end) as revenue_order_count,
    {{ round_float('coalesce(sum(case when is_revenue then amount end), 0)', 2) }} as lifetime_value,
    {{ round_float('sum(paid_amount) - sum(refunded_amount)', 2) }} as net_lifetime_value
from orders
group by customer_id
